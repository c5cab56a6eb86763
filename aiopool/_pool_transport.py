"""`PoolTransport`: the default transport, one exchange through the connection pool.

One call of `handle_request` leases a connection for the request's route (its origin, and the
proxy it goes through), sends the request, reads the response head, and returns the response
with its body streaming on that connection. It keeps the safe-replay rules (docs/design.md,
"Safe replay"; Go's `shouldRetryRequest`), silently and boundedly:
- a request that fails on a reused socket before any response byte is sent again on a fresh
  socket when nothing of it was written, or it is idempotent (`Request.replayable`);
- a 408 on a reused HTTP/1.1 socket (the server gave up on the idle socket) is retried whatever
  the method, as is an HTTP/2 request the server provably never processed (GOAWAY, a refused
  stream, a socket refused in its preface); the body must be re-readable in every case.
Each retry is counted in `stats().retries`; `stats().reused` counts the response once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ._backend import HAPPY_EYEBALLS_DELAY, NetworkOptions, SocketDialer, SocketOption
from ._config import DEFAULT_HEAD_LIMITS, HeadLimits, Timeout, TimeoutTypes
from ._exceptions import ClientClosed, LocalProtocolError, TimeoutException, TransportError
from ._expect import (
    DEFAULT_EXPECT_CONTINUE_THRESHOLD,
    DEFAULT_EXPECT_CONTINUE_TIMEOUT,
    prepare_expect,
)
from ._h1_codec import CodecFactory
from ._h1_h11 import H11Codec
from ._h2engine import H2EngineName, select_engine
from ._models import Request, Response
from ._pool import ConnectionPool, Dialer
from ._proxy import ProxyRoutes, ProxyTypes, proxy_tls_context, route
from ._resolver import Resolver
from ._stats import PoolStats, TraceHook
from ._tls import CertTypes, LazySSLContext, VerifyTypes, check_cert
from ._trace import tracer_for
from ._transport import Transport

__all__ = ("DEFAULT_TIMEOUT", "HTTP1Parser", "PoolTransport")

DEFAULT_TIMEOUT = Timeout(30.0, connect=10.0)

HTTP1Parser = Literal["auto", "h11", "httptools"]
# What "auto" means; tests switch it to run the suite on each parser.
DEFAULT_HTTP1_PARSER: HTTP1Parser = "auto"

# Go's http2 transport retries unprocessed requests up to 6 times (with backoff). Fewer is not
# enough: when a server retires every connection after N streams (nginx's keepalive_requests),
# the streams a GOAWAY refuses are retried on sibling connections that are as close to their
# own limit, and the soak saw 3 retries run out against a healthy nginx. Each retry is safe
# (the server said it never acted on the request); the bound only stops a refusal storm.
_MAX_UNPROCESSED_RETRIES = 6
# A stale-socket retry asks the pool for a fresh socket, but a socket another request releases
# meanwhile goes straight to the longest waiter (late binding, docs/pool.md), so the retry may
# land on another reused socket and meet the same race there. Go retries for as long as the
# failures are on reused sockets (each one is closed, a failure on a fresh socket is final);
# the bound only stops a server that drops every reused request from looping one forever.
_MAX_STALE_RETRIES = 10


class PoolTransport(Transport):
    """The pool-backed transport every `Client` uses unless given another.

    Takes the pool, protocol, TLS, proxy and `Expect` options `Client` documents (the client
    passes its own through); `timeout` is the default for requests whose `timeout` is None.
    `dialer` opens sockets (see `aiopool.Dialer`): the network seam, for tests and for
    custom networking; the network options (`uds`, `local_address`, `socket_options`,
    `resolver`, `happy_eyeballs_delay`) configure the default dialer, so they cannot be given
    with one (`TypeError`). `stats()` is a snapshot of the pool.
    """

    def __init__(
        self,
        *,
        max_connections: int | None = 100,
        max_connections_per_host: int | None = 10,
        max_idle_per_host: int = 10,
        max_idle: int = 100,
        idle_timeout: float = 90.0,
        http1: bool = True,
        http2: bool = True,
        http2_ping_interval: float | None = None,
        http2_ping_timeout: float = 15.0,
        http1_parser: HTTP1Parser = "auto",
        http2_engine: H2EngineName = "auto",
        max_response_header_bytes: int = DEFAULT_HEAD_LIMITS.max_bytes,
        max_response_headers: int = DEFAULT_HEAD_LIMITS.max_count,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        verify: VerifyTypes = True,
        trace: TraceHook | None = None,
        proxy: ProxyTypes = None,
        trust_env: bool = True,
        expect_continue_threshold: int | None = DEFAULT_EXPECT_CONTINUE_THRESHOLD,
        expect_continue_timeout: float = DEFAULT_EXPECT_CONTINUE_TIMEOUT,
        dialer: Dialer | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        socket_options: Sequence[SocketOption] | None = None,
        resolver: Resolver | None = None,
        happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY,
        cert: CertTypes | None = None,
        keepalive: bool = True,
    ) -> None:
        if not (http1 or http2):
            raise ValueError("at least one of http1 and http2 must be enabled")
        network = _network_options(
            uds, local_address, socket_options, resolver, happy_eyeballs_delay
        )
        if dialer is not None and network is not None:
            raise TypeError(
                "uds, local_address, socket_options, resolver and happy_eyeballs_delay "
                "configure the default dialer: with dialer=, the dialer decides"
            )
        if uds is not None:
            if proxy is not None:
                raise TypeError("uds= and proxy= exclude each other: every socket goes to uds")
            # Every connection goes to the unix socket: there is no route for a proxy to take.
            trust_env_proxies = False
        else:
            trust_env_proxies = trust_env
        # Decided per request URL, from this (parsed once, here): raises InvalidURL early.
        self._proxies = ProxyRoutes.build(proxy, trust_env_proxies)
        check_cert(cert, verify)
        self._keepalive = keepalive
        self.timeout = Timeout.coerce(timeout)
        self._trace = trace
        if expect_continue_threshold is not None and expect_continue_threshold < 0:
            raise ValueError("expect_continue_threshold must be >= 0 or None")
        if not expect_continue_timeout >= 0:  # (also refuses NaN)
            raise ValueError("expect_continue_timeout must be >= 0")
        self._expect = (expect_continue_threshold, expect_continue_timeout)
        # ALPN (RFC 7301) offers what we speak, h2 first: the server picks.
        alpn = (["h2"] if http2 else []) + (["http/1.1"] if http1 else [])
        # (An object, not a bound method: the pool must not hold a reference back to us, or a
        # client dropped unclosed would wait for the cycle collector.)
        ssl_context = LazySSLContext(verify, alpn=alpn, cert=cert, trust_env=trust_env)
        self._pool = ConnectionPool(
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            max_idle_per_host=max_idle_per_host,
            max_idle=max_idle,
            idle_timeout=idle_timeout,
            ssl_context=ssl_context,
            http1=http1,
            http2=http2,
            http2_ping_interval=http2_ping_interval,
            http2_ping_timeout=http2_ping_timeout,
            http1_codec=_http1_codec(http1_parser),
            http2_engine=select_engine(http2_engine) if http2 else None,
            trace=trace,
            dialer=dialer if dialer is not None else SocketDialer(network or NetworkOptions()),
            head_limits=HeadLimits(max_response_header_bytes, max_response_headers),
            # For https:// proxies.
            proxy_ssl_context=proxy_tls_context(verify, trust_env),
            keepalive=keepalive,
        )

    def __repr__(self) -> str:
        return f"<PoolTransport {self._pool!r}>"

    @property
    def proxied(self) -> bool:
        """Whether any request may go through a proxy (`proxy=`, or one from the environment)."""
        return self._proxies is not None

    @property
    def is_closed(self) -> bool:
        return self._pool.closed

    @property
    def has_connections(self) -> bool:
        """Whether any socket or dial is open (for the leak warning of an unclosed client)."""
        return self._pool.has_connections

    def stats(self) -> PoolStats:
        """A snapshot of the pool, overall and per origin."""
        return self._pool.stats()

    async def close_idle_connections(self) -> None:
        """Close the idle sockets: see `Client.close_idle_connections`."""
        await self._pool.close_idle_connections()

    async def aclose(self) -> None:
        """Close every connection: see `Client.aclose`. Idempotent."""
        if not self._pool.closed:
            await self._pool.aclose()

    def close_nowait(self) -> None:
        """Abort every socket and dial at once (for a client being garbage-collected)."""
        self._pool.close_nowait()

    async def handle_request(self, request: Request) -> Response:
        """Send `request` through the pool; return its response, body unread.

        Raises `ClientClosed` once closed, and the `TransportError` family (with `.request`
        set): `PoolTimeout`, `ConnectError`/`ConnectTimeout`, `WriteError`/`WriteTimeout`,
        `ReadError`/`ReadTimeout`, `RemoteProtocolError`, `LocalProtocolError`, `ProxyError`,
        after the retries above. On any error nothing stays leased.
        """
        pool = self._pool
        if pool.closed:
            raise ClientClosed("the client has been closed")
        timeout = request.timeout if request.timeout is not None else self.timeout
        # The pool key: the origin and its proxy. (Without proxies, the origin: the client's
        # request builder strips a Proxy-Authorization there is nobody to send to.)
        routes = self._proxies
        origin = request.url.origin if routes is None else route(routes, request)
        # Who hears this request's trace events: None (the usual case) builds no events at all.
        tracer = request._tracer = tracer_for(self._trace, request._trace_hook)
        if request.content is not None:
            prepare_expect(request, *self._expect)
        if not self._keepalive:
            # RFC 9112 section 9.6: the client says it closes after this response, and does
            # (h11 and llhttp then refuse to pool the socket), whatever Connection the caller
            # set, as Go writes it under DisableKeepAlives. HTTP/2 drops the field (a
            # connection-specific one) and is kept to one stream per socket by the pool.
            request.headers["Connection"] = "close"
        stale_retries = 0
        unprocessed_retries = 0
        while True:
            try:
                conn, info = await pool.acquire(
                    origin,
                    timeout,
                    fresh=stale_retries > 0,
                    count=not (stale_retries or unprocessed_retries),
                    tracer=tracer,
                )
            except TransportError as exc:
                # The new socket was refused before any request went out on it (a GOAWAY in
                # the HTTP/2 preface): dial again, as for a stream a GOAWAY left unprocessed.
                if exc.unprocessed and unprocessed_retries < _MAX_UNPROCESSED_RETRIES:
                    unprocessed_retries += 1
                    pool.note_retry(origin, "unprocessed")
                    continue
                exc.request = request
                raise
            request._written = False
            try:
                head, body = await conn.send(request, timeout)
            except TransportError as exc:
                # HTTP/2 told us the server never acted on it (GOAWAY, REFUSED_STREAM, a lowered
                # stream limit): send it again elsewhere, whatever its method, a few times at
                # most.
                if (
                    exc.unprocessed
                    and unprocessed_retries < _MAX_UNPROCESSED_RETRIES
                    and request.rereadable
                ):
                    unprocessed_retries += 1
                    pool.note_retry(origin, "unprocessed")
                    continue
                # Go's rule (docs/pool.md, "Stale reuse"): a request that failed on a reused
                # socket before any response byte is retried on a fresh socket if nothing of it
                # was written, or it is idempotent (`Request.replayable`): a POST that reached
                # the socket is never sent twice. The socket was closed and discarded by `send`.
                if (
                    stale_retries < _MAX_STALE_RETRIES
                    and info.reused
                    and conn.stale_failure(info.was_idle)
                    and request.replayable
                    and not isinstance(exc, TimeoutException | LocalProtocolError)
                ):
                    stale_retries += 1
                    pool.note_retry(origin, "stale_socket")
                    continue
                exc.request = request
                raise
            # The same race, answered: a server that gave up on an idle keep-alive socket may
            # send "408 Request Timeout" and close just as our request goes out on it. RFC 9110
            # section 15.5.9: the client "MAY repeat that request"; Chromium does, on reused
            # sockets (HttpNetworkTransaction::DoReadHeadersComplete), as does Firefox.
            if (
                head.status_code == 408
                and info.reused
                and not conn.multiplexed
                and stale_retries < _MAX_STALE_RETRIES
                and request.rereadable  # (a 408 says the request was not processed)
            ):
                body.abort()  # closed, never pooled: the server is closing it anyway
                stale_retries += 1
                pool.note_retry(origin, "request_timeout_408")
                continue
            break
        pool.note_response(origin, info)
        return Response(
            head.status_code,
            reason=head.reason,
            headers=head.headers,
            http_version=head.http_version,
            request=request,
            conn_info=info,
            stream=body,
        )


def _network_options(
    uds: str | None,
    local_address: str | None,
    socket_options: Sequence[SocketOption] | None,
    resolver: Resolver | None,
    happy_eyeballs_delay: float,
) -> NetworkOptions | None:
    """The default dialer's options, checked; None when all are the defaults.

    Raises `TypeError` for a wrong type and `ValueError` for a bad value (a local address that
    is not an IP address, a negative delay, uds= with local_address=).
    """
    if (
        uds is None
        and local_address is None
        and socket_options is None
        and resolver is None
        and happy_eyeballs_delay == HAPPY_EYEBALLS_DELAY
    ):
        return None
    if uds is not None and not isinstance(uds, str):
        raise TypeError(f"uds must be a str path, not {type(uds).__name__}")
    if uds is not None and local_address is not None:
        raise ValueError("uds= and local_address= exclude each other (a unix socket has no IP)")
    if local_address is not None:
        from ._resolver import is_ip_address

        if not isinstance(local_address, str) or not is_ip_address(local_address):
            raise ValueError(f"local_address must be an IP address, not {local_address!r}")
    options = tuple(socket_options or ())
    for option in options:
        if not (isinstance(option, tuple) and len(option) == 3):
            raise TypeError(f"socket_options must be (level, option, value) tuples, not {option!r}")
    if resolver is not None and not isinstance(resolver, Resolver):
        raise TypeError(f"resolver must have an async resolve(host, port), not {resolver!r}")
    if not happy_eyeballs_delay >= 0:
        raise ValueError(f"happy_eyeballs_delay must be >= 0, not {happy_eyeballs_delay}")
    return NetworkOptions(uds, local_address, options, resolver, happy_eyeballs_delay)


def _http1_codec(parser: HTTP1Parser) -> CodecFactory:
    """The HTTP/1.1 codec `parser` names ("auto": llhttp when httptools is installed)."""
    if parser == "auto":
        parser = DEFAULT_HTTP1_PARSER
    if parser == "h11":
        return H11Codec
    if parser not in ("auto", "httptools"):
        raise ValueError(f"http1_parser must be 'auto', 'h11' or 'httptools', not {parser!r}")
    try:
        from ._h1_httptools import HttptoolsCodec
    except ImportError:
        if parser == "httptools":
            raise ImportError(
                "http1_parser='httptools' needs httptools: pip install aiopool[speedups]"
            ) from None
        return H11Codec
    return HttptoolsCodec
