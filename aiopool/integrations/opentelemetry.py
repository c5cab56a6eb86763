"""OpenTelemetry for aiopool: client spans, HTTP metrics and trace-context propagation.

    otel = OpenTelemetryMiddleware()                      # global providers, or pass your own
    async with aiopool.Client(middleware=[otel], trace=otel.connection_hook()) as client:
        otel.instrument_client(client)                    # http.client.open_connections
        await client.get("https://example.org/")

What is recorded follows the stable HTTP semantic conventions
(https://opentelemetry.io/docs/specs/semconv/http/http-spans/ and .../http-metrics/):

- a CLIENT span per request hop (each redirect is a span of its own, as the conventions ask of
  instrumentations that can see each hop), named by the method ("GET"; "HTTP" for a method
  outside the known set), with `http.request.method` (`_OTHER` plus
  `http.request.method_original` for an unknown one), `url.full` (credentials replaced by
  `REDACTED:REDACTED`, the values of signature-bearing query parameters by `REDACTED`),
  `server.address`, `server.port`, then `http.response.status_code`,
  `network.protocol.version` ("1.1", "2") and, on failure, `error.type`;
- the `http.client.request.duration` histogram (seconds, the conventions' advised buckets) with
  the same low-cardinality attributes (no URL);
- with `connection_hook()` given to the client as its trace hook, the
  `http.client.connection.duration` histogram: from the socket's TCP connect to its close, per
  socket the pool held;
- with `instrument_client(client)`, the `http.client.open_connections` gauge (an observable
  UpDownCounter), by `http.connection.state` "active" / "idle", read from `client.stats()`;
- the `traceparent` (and whatever else the global propagator carries: `tracestate`,
  `baggage`) injected into every request hop's headers, so the server continues the trace.

When a span ends: when the response head arrives (or the request fails before it), which is
when the middleware's `call_next` returns; reading the body is not part of it, for
`client.get()` as for `client.stream()`. The conventions ask exactly this of a client whose
body may be read, or never read and cleaned up, later ("HTTP client span duration": the span
SHOULD NOT end in the cleanup phase but after the response headers are read); httpx's and
aiohttp's OpenTelemetry instrumentations end theirs at the same point. The duration histogram
measures the same interval (as .NET's `System.Net.Http` meter does).

Not seen from a middleware, hence not recorded: the pool's own silent replays of a request
whose reused socket had died (they happen inside one hop, in one span), `network.peer.address`,
and `http.request.resend_count` (each hop arrives as a fresh request).

`error.type` values: the status code as a string ("404", "503") for a response >= 400, else
the exception's class, fully qualified under the name it is public by ("aiopool.ConnectError",
"aiopool.ReadTimeout", "asyncio.CancelledError"; another library's as
`module.QualifiedName`). A response >= 400, an exception and a cancellation set the span status
to ERROR; the exception is also recorded on the span as an event (its message never holds a
password: aiopool masks them).

Needs the OpenTelemetry API (`pip install aiopool[opentelemetry]`); an SDK (or another
implementation) makes it record anything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from timeit import default_timer
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.propagate import inject
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import SpanKind, Status, StatusCode

import aiopool

from .._client import Client
from .._exceptions import LocalProtocolError
from .._headers import Headers, validate_header
from .._models import Request, Response
from .._trace import TraceEvent, TraceHook
from .._transport import Handler
from .._urls import URL
from .._version import __version__
from ._observed import ObservedClients, split_origin

__all__ = ("OpenTelemetryMiddleware",)

# The semantic-conventions version the attribute names and instruments follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.27.0"

# http.request.method: the methods of RFC 9110 section 9, PATCH (RFC 5789) and QUERY
# (draft-ietf-httpbis-safe-method-w-body), as the conventions define "known"; anything else is
# recorded as "_OTHER". The conventions require a way to override the list, and name the
# environment variable for it.
DEFAULT_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
KNOWN_METHODS_ENV: Final = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"

# url.full: "Query string values for the following keys SHOULD be redacted by default and
# replaced by the value REDACTED" (matched case-sensitively). The conventions' list has changed
# between releases (AWS's SigV2 names, then SigV4's); both are kept, since either kind of
# signed URL is still in use.
DEFAULT_SENSITIVE_QUERY_PARAMETERS: Final = frozenset(
    {
        "AWSAccessKeyId",
        "Signature",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "sig",
        "X-Goog-Signature",
    }
)

# The conventions' advised explicit bucket boundaries, in seconds.
REQUEST_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)  # fmt: skip
CONNECTION_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0
)  # fmt: skip

# Sockets whose connect a connection hook remembers, waiting for their close. A socket that
# failed in its HTTP/2 preface is never reported closed (it never entered the pool), so the
# table is bounded: past this, the oldest entry is forgotten.
_MAX_TRACKED_CONNECTIONS = 4096

# Given at span creation; not set again when the response's attributes are added.
_CREATION_ATTRIBUTES: Final = frozenset({"http.request.method", "server.address", "server.port"})

_PROTOCOL_VERSIONS: Final = {"HTTP/1.1": "1.1", "HTTP/2": "2", "HTTP/1.0": "1.0"}

# The key OpenTelemetry's exporters set in the context around their own HTTP calls so that
# instrumented clients do not trace them (what the contrib instrumentations check). A private
# name of the API, present since 1.0: looked up, not imported, in case it moves.
_SUPPRESS_KEY: str | None = getattr(otel_context, "_SUPPRESS_INSTRUMENTATION_KEY", None)


class _HeadersSetter(Setter[Headers]):
    """Sets a propagation field on aiopool `Headers`, replacing any of the same name (a
    request sent again through the middleware carries the current span's context only)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        try:
            validate_header(key.encode("latin-1"), value.encode("latin-1"))
        except (LocalProtocolError, UnicodeEncodeError):
            # A propagator's field that is not a legal header (baggage from elsewhere holding
            # a newline, say) is left out rather than failing the request.
            return
        carrier[key] = value


_SETTER = _HeadersSetter()


class OpenTelemetryMiddleware:
    """Client spans, HTTP client metrics and context propagation; see the module's docstring.

    `tracer_provider` / `meter_provider`: None uses the global ones (`opentelemetry.trace`,
    `opentelemetry.metrics`), as set when the middleware is made. `known_methods` overrides the
    methods recorded as themselves (default: `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`, a
    comma-separated list, else RFC 9110's, PATCH and QUERY); `sensitive_query_parameters`
    overrides the query keys whose values `url.full` redacts (a full override, as the
    conventions specify). One middleware may serve many clients.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        known_methods: Iterable[str] | None = None,
        sensitive_query_parameters: Iterable[str] | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(
            __name__, __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(__name__, __version__, meter_provider, schema_url=SCHEMA_URL)
        if known_methods is None:
            env = os.environ.get(KNOWN_METHODS_ENV)
            known_methods = env.split(",") if env is not None else DEFAULT_KNOWN_METHODS
        self._known_methods = frozenset(m.strip() for m in known_methods if m.strip())
        self._sensitive = frozenset(
            DEFAULT_SENSITIVE_QUERY_PARAMETERS
            if sensitive_query_parameters is None
            else sensitive_query_parameters
        )
        self._request_duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=REQUEST_DURATION_BUCKETS,
        )
        self._connection_duration = meter.create_histogram(
            "http.client.connection.duration",
            unit="s",
            description="The duration of the successfully established outbound HTTP connections.",
            explicit_bucket_boundaries_advisory=CONNECTION_DURATION_BUCKETS,
        )
        self._clients = ObservedClients()
        meter.create_observable_up_down_counter(
            "http.client.open_connections",
            callbacks=[self._observe_open_connections],
            unit="{connection}",
            description=(
                "Number of outbound HTTP connections that are currently active or idle on "
                "the client."
            ),
        )

    def __repr__(self) -> str:
        return f"<OpenTelemetryMiddleware clients={len(self._clients)}>"

    # Per client ---------------------------------------------------------------------------------

    def connection_hook(self) -> TraceHook:
        """A trace hook for one client (`Client(trace=otel.connection_hook())`) that records
        `http.client.connection.duration`: each socket's life from its TCP connect to its
        close, as the pool reports them. Make one per client (socket numbers are per client).
        To keep a trace hook of your own as well, call both from one function."""
        return _ConnectionTimer(self._connection_duration)

    def instrument_client(self, client: Client) -> None:
        """Report `client`'s sockets in `http.client.open_connections` (read from
        `client.stats()` whenever metrics are collected, from any thread; see
        `aiopool.integrations._observed`). Call it on the client's event loop. The client is
        held weakly and stops being reported once closed. Raises `TypeError` for something
        that is not an `aiopool.Client`."""
        self._clients.add(client)

    def uninstrument_client(self, client: Client) -> None:
        """Stop reporting `client`'s sockets (nothing if it was not instrumented)."""
        self._clients.discard(client)

    # The middleware -----------------------------------------------------------------------------

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        if _SUPPRESS_KEY is not None and otel_context.get_value(_SUPPRESS_KEY):
            return await call_next(request)
        method = request.method
        url = request.url
        known = method if method in self._known_methods else "_OTHER"
        # Span name: "{method}" with no target for a client (no url.template is known);
        # "HTTP" when the method is _OTHER (semconv http-spans, "Name").
        name = "HTTP" if known == "_OTHER" else known
        # The attributes sampling may look at are given at creation ("SHOULD be provided at
        # span creation time"): method, server.address, server.port, url.full.
        attributes: dict[str, Any] = {
            "http.request.method": known,
            "server.address": url.host,
            "server.port": url.port,
            "url.full": self._url_full(url),
        }
        if known != method:
            attributes["http.request.method_original"] = method
        span = self._tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        metric_attributes: dict[str, Any] = {
            "http.request.method": known,
            "server.address": url.host,
            "server.port": url.port,
        }
        ctx = trace.set_span_in_context(span)
        inject(request.headers, context=ctx, setter=_SETTER)
        token = otel_context.attach(ctx)
        start = default_timer()
        try:
            response = await call_next(request)
        except BaseException as exc:
            elapsed = default_timer() - start
            error = _error_type(exc)
            span.set_attribute("error.type", error)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc) or error))
            span.end()
            metric_attributes["error.type"] = error
            self._request_duration.record(elapsed, metric_attributes)
            raise
        finally:
            otel_context.detach(token)
        elapsed = default_timer() - start
        status = response.status_code
        version = _PROTOCOL_VERSIONS.get(response.http_version)
        # Gathered first and set at once: the SDK takes a lock and checks the value per call.
        metric_attributes["http.response.status_code"] = status
        if version is not None:
            metric_attributes["network.protocol.version"] = version
        if status >= 400:
            # 4xx and 5xx: ERROR for a CLIENT span, with no description (the status code
            # says it), and error.type the code as a string (semconv http-spans, "Status").
            metric_attributes["error.type"] = str(status)
            span.set_status(Status(StatusCode.ERROR))
        span.set_attributes(
            {k: v for k, v in metric_attributes.items() if k not in _CREATION_ATTRIBUTES}
        )
        span.end()
        self._request_duration.record(elapsed, metric_attributes)
        return response

    def _url_full(self, url: URL) -> str:
        """url.full: the absolute URL with its fragment, credentials as REDACTED:REDACTED
        (the client strips them from requests it sends; a request made by hand may hold them)
        and the values of sensitive query keys as REDACTED."""
        if url.has_userinfo:
            scheme, _, rest = url.without_userinfo().unmasked.partition("://")
            text = f"{scheme}://REDACTED:REDACTED@{rest}"
        else:
            text = url.unmasked
        if "?" in text and self._sensitive:
            text = _redact_query(text, self._sensitive)
        return text

    def _observe_open_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        # One observation per attribute set: two clients talking to one origin are summed.
        totals: dict[tuple[str, str, int], int] = {}
        for _, stats in self._clients.snapshots():
            for origin, host in stats.hosts.items():
                _, address, port = split_origin(origin)
                for state, count in (("active", host.active), ("idle", host.idle)):
                    key = (state, address, port)
                    totals[key] = totals.get(key, 0) + count
        return [
            Observation(
                count,
                {"http.connection.state": state, "server.address": address, "server.port": port},
            )
            for (state, address, port), count in totals.items()
        ]


class _ConnectionTimer:
    """The trace hook behind `connection_hook()`: times each socket of one client."""

    __slots__ = ("_histogram", "_open")

    def __init__(self, histogram: Any) -> None:
        self._histogram = histogram
        # conn_id -> [connected at (loop time), origin, protocol version or None]
        self._open: dict[int, list[Any]] = {}

    def __repr__(self) -> str:
        return f"<aiopool OpenTelemetry connection hook: {len(self._open)} open>"

    def __call__(self, event: TraceEvent, /) -> None:
        name = event.name
        conn_id = event.conn_id
        if conn_id is None:
            return
        opened = self._open
        if name == "connect_done":
            if event.info.get("error") is None:
                if len(opened) >= _MAX_TRACKED_CONNECTIONS:
                    del opened[next(iter(opened))]
                opened[conn_id] = [event.time, event.origin, None]
        elif name == "got_conn":
            entry = opened.get(conn_id)
            if entry is not None:
                entry[2] = _PROTOCOL_VERSIONS.get(event.info.get("http_version", ""))
        elif name == "tls_handshake_done":
            if event.info.get("error") is not None:  # never established: not measured
                opened.pop(conn_id, None)
        elif name == "conn_closed":
            entry = opened.pop(conn_id, None)
            if entry is not None:
                connected_at, origin, version = entry
                _, address, port = split_origin(origin)
                attributes: dict[str, Any] = {"server.address": address, "server.port": port}
                if version is not None:
                    attributes["network.protocol.version"] = version
                self._histogram.record(max(0.0, event.time - connected_at), attributes)


def _redact_query(text: str, sensitive: frozenset[str]) -> str:
    head, hash_, fragment = text.partition("#")
    base, _, query = head.partition("?")
    parts: Sequence[str] = query.split("&")
    changed = False
    redacted = []
    for part in parts:
        key, eq, _ = part.partition("=")
        if eq and key in sensitive:
            part = f"{key}=REDACTED"
            changed = True
        redacted.append(part)
    if not changed:
        return text
    return f"{base}?{'&'.join(redacted)}{hash_}{fragment}"


def _error_type(exc: BaseException) -> str:
    """error.type for an exception: its class's fully-qualified name, by the module it is
    public from (aiopool's from `aiopool`, asyncio's from `asyncio`), builtins bare."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("aiopool."):
        if getattr(aiopool, cls.__name__, None) is cls:
            module = "aiopool"
    elif module.startswith("asyncio.") and getattr(asyncio, cls.__name__, None) is cls:
        module = "asyncio"
    return f"{module}.{cls.__qualname__}"
