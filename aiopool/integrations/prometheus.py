"""Prometheus metrics for aiopool, on `prometheus_client`: the pool's books and request durations.

    from prometheus_client import start_http_server
    from aiopool.integrations.prometheus import PoolCollector, RequestDurationMiddleware

    collector = PoolCollector()                       # registered in prometheus_client's REGISTRY
    durations = RequestDurationMiddleware()
    async with aiopool.Client(middleware=[durations]) as client:
        collector.add(client, name="payments")
        start_http_server(9100)                       # or serve generate_latest() from your app

`PoolCollector` is a custom collector: nothing is counted on the request path; each scrape
reads a fresh `client.stats()` of every client it was given (from the scraping thread, safely:
see `aiopool.integrations._observed`) and yields

- counters (they only grow, so `rate()` applies): `aiopool_requests_total`,
  `aiopool_connections_opened_total`, `aiopool_requests_reused_total` per origin,
  `aiopool_connections_closed_total` per client (a socket may close after its origin's pool is
  gone), `aiopool_retries_total` by reason ("stale_socket", "request_timeout_408",
  "unprocessed": see `PoolStats.retries`);
- gauges per origin, what the pool holds now: `aiopool_connections_active`,
  `aiopool_connections_idle`, `aiopool_connections_connecting`, `aiopool_requests_waiting`,
  `aiopool_http2_streams_open`.

Every sample carries `client` (the name given to `add`, "default" unless told) and, per
origin, `origin` ("https://example.org:443"); origins come and go with the pool's hosts.

`RequestDurationMiddleware` observes each request hop into the `aiopool_request_duration_seconds`
histogram, labelled `method` (RFC 9110's methods, PATCH and QUERY; anything else "_OTHER", so
the label set stays bounded), `origin`, `code` (the status, "" when none came) and `error`
(the exception class's name, e.g. "ConnectError", "" for a response). The time is from the
request hop to its response head, as OpenTelemetry's `http.client.request.duration` measures
it (see `aiopool.integrations.opentelemetry`); the buckets are the semantic conventions'.

Needs `prometheus_client` (`pip install aiopool[prometheus]`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from timeit import default_timer
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._client import Client
from .._models import Request, Response
from .._stats import HostStats
from .._transport import Handler
from ._observed import ObservedClients

__all__ = ("PoolCollector", "RequestDurationMiddleware")

# (metric name, help, HostStats field): gauges, one sample per origin.
_GAUGES: Final = (
    ("aiopool_connections_active", "Sockets carrying a request now.", "active"),
    ("aiopool_connections_idle", "Sockets open and idle, ready for reuse.", "idle"),
    ("aiopool_connections_connecting", "Sockets being dialed.", "connecting"),
    ("aiopool_requests_waiting", "Requests waiting for a connection.", "waiting"),
    ("aiopool_http2_streams_open", "HTTP/2 streams open now.", "streams"),
)
# Counters, one sample per origin (the `_total` suffix is added by prometheus_client).
_COUNTERS: Final = (
    ("aiopool_requests", "Requests that asked the pool for a connection.", "requests"),
    ("aiopool_connections_opened", "Sockets dialed and handed to the pool.", "opened"),
    (
        "aiopool_requests_reused",
        "Requests whose response came on a socket that had carried an earlier request.",
        "reused",
    ),
)

# The semantic conventions' advised boundaries for HTTP request durations, in seconds (the
# same as OpenTelemetry's http.client.request.duration, so the two can be compared).
DEFAULT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0
)  # fmt: skip

_KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)


class PoolCollector(Collector):
    """A `prometheus_client` collector over `client.stats()` of the clients it was given.

    `registry`: where it registers itself (prometheus_client's default `REGISTRY`; None: not
    registered, call `registry.register(collector)` yourself). Raises `ValueError` if the
    registry already holds a collector of these metric names (prometheus_client's rule).
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._clients = ObservedClients()
        self._names: set[str] = set()
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def __repr__(self) -> str:
        return f"<PoolCollector clients={len(self._clients)}>"

    def add(self, client: Client, name: str = "default") -> None:
        """Report `client` under `client="<name>"`. Call it on the client's event loop. The
        client is held weakly and no longer reported once closed. Raises `ValueError` for a
        name already in use by another client of this collector (their samples would clash)
        and `TypeError` for something that is not an `aiopool.Client`."""
        with self._lock:
            if name in self._clients.labels():
                raise ValueError(f"a client named {name!r} is already reported")
            self._clients.add(client, name)

    def remove(self, client: Client) -> None:
        """Stop reporting `client` (nothing if it was not reported)."""
        self._clients.discard(client)

    def describe(self) -> Iterable[Metric]:
        # Names without samples, so `register` can refuse a duplicate without a scrape (and
        # without reading any client from the registering thread).
        families: list[Metric] = []
        families += [GaugeMetricFamily(n, h, labels=("client", "origin")) for n, h, _ in _GAUGES]
        families += [
            CounterMetricFamily(n, h, labels=("client", "origin")) for n, h, _ in _COUNTERS
        ]
        families.append(_closed_family())
        families.append(_retries_family())
        return families

    def collect(self) -> Iterable[Metric]:
        snapshots = list(self._clients.snapshots())
        gauges = {n: GaugeMetricFamily(n, h, labels=("client", "origin")) for n, h, _ in _GAUGES}
        counters = {
            n: CounterMetricFamily(n, h, labels=("client", "origin")) for n, h, _ in _COUNTERS
        }
        closed = _closed_family()
        retries = _retries_family()
        for label, stats in snapshots:
            for origin, host in sorted(stats.hosts.items()):
                for name, _, field in _GAUGES:
                    gauges[name].add_metric((label, origin), _field(host, field))
                for name, _, field in _COUNTERS:
                    counters[name].add_metric((label, origin), _field(host, field))
            closed.add_metric((label,), stats.connections_closed)
            for reason, count in sorted(stats.retries.items()):
                retries.add_metric((label, reason), count)
        yield from gauges.values()
        yield from counters.values()
        yield closed
        yield retries


def _field(host: HostStats, name: str) -> int:
    value: int = getattr(host, name)
    return value


def _closed_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "aiopool_connections_closed",
        "Sockets the pool let go of, for any reason, all origins.",
        labels=("client",),
    )


def _retries_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "aiopool_retries",
        "Requests sent again by the pool, by reason.",
        labels=("client", "reason"),
    )


class RequestDurationMiddleware:
    """Observes each request hop into `aiopool_request_duration_seconds` (see the module).

    `registry`: where the histogram is registered (`REGISTRY` by default); `buckets`: its upper
    bounds in seconds (the semantic conventions' by default). Raises `ValueError` if the
    registry already has that metric name (make one middleware per registry and share it
    between clients).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self._histogram = Histogram(
            "aiopool_request_duration_seconds",
            "Time from sending a request hop to its response head.",
            labelnames=("method", "origin", "code", "error"),
            buckets=tuple(buckets),
            registry=registry,
        )

    def __repr__(self) -> str:
        return "<RequestDurationMiddleware aiopool_request_duration_seconds>"

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        origin = request.url.origin
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        where = f"{origin.scheme}://{host}:{origin.port}"
        start = default_timer()
        try:
            response = await call_next(request)
        except BaseException as exc:
            self._histogram.labels(method, where, "", type(exc).__name__).observe(
                default_timer() - start
            )
            raise
        self._histogram.labels(method, where, str(response.status_code), "").observe(
            default_timer() - start
        )
        return response
