"""The public `Client`: builds requests, follows redirects, leases connections, retries safely.

`await client.get(url)` returns with the body read and the connection already back in the pool:
the leak-proof default. Streaming is only through `async with client.stream(...)`, whose exit
releases the connection on every path.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack

from ._auth import AuthTypes
from ._backend import HAPPY_EYEBALLS_DELAY, SocketOption
from ._config import (
    DEFAULT_HEAD_LIMITS,
    DEFAULT_MAX_RESPONSE_SIZE,
    Timeout,
    TimeoutTypes,
)
from ._cookies import Cookies, CookieTypes
from ._decoders import MAX_RATIO
from ._exceptions import ClientClosed, TransportError
from ._expect import DEFAULT_EXPECT_CONTINUE_THRESHOLD, DEFAULT_EXPECT_CONTINUE_TIMEOUT
from ._h2engine import H2EngineName
from ._headers import HeaderTypes
from ._models import Request, RequestContent, Response
from ._pool import Dialer
from ._pool_transport import DEFAULT_TIMEOUT, HTTP1Parser, PoolTransport
from ._proxy import ProxyTypes
from ._redirects import REDIRECT_STATUSES, add_jar_cookie, follow, store_cookies
from ._request_builder import UNSET, RequestBuilder
from ._resolver import Resolver
from ._stats import PoolStats, TraceHook
from ._tls import CertTypes, VerifyTypes
from ._transport import Middleware, Transport, chain
from ._urls import URL, QueryParams

__all__ = ("Client", "StreamContext")

_UNSET: Any = UNSET  # (one sentinel: `json` and `auth` go on to the builder as given)


class RequestOptions(TypedDict, total=False):
    """The keywords `get()`, `post()` and the other verb methods take (as `request()`)."""

    params: QueryParams | None
    headers: HeaderTypes | None
    content: RequestContent | str | None
    json: Any
    timeout: TimeoutTypes
    auth: AuthTypes | None
    follow_redirects: bool
    max_redirects: int
    max_response_size: int | None
    trace: TraceHook | None


# Go, requests and aiohttp follow redirects by default, Go and aiohttp up to 10 (requests 30);
# httpx has not since 0.20. Following is what most callers expect of a client, and the usual
# risk of it, credentials carried to wherever a server points, is closed here: they never
# leave the origin they were given for (see `_redirects`).
_FOLLOW_REDIRECTS = True
_MAX_REDIRECTS = 10

# The options that configure the default `PoolTransport`, with their defaults: given together
# with `transport=`, they would be silently ignored, so that is refused.
_POOL_DEFAULTS: dict[str, Any] = {
    "max_connections": 100,
    "max_connections_per_host": 10,
    "max_idle_per_host": 10,
    "max_idle": 100,
    "idle_timeout": 90.0,
    "http1": True,
    "http2": True,
    "http2_ping_interval": None,
    "http2_ping_timeout": 15.0,
    "http1_parser": "auto",
    "http2_engine": "auto",
    "max_response_header_bytes": DEFAULT_HEAD_LIMITS.max_bytes,
    "max_response_headers": DEFAULT_HEAD_LIMITS.max_count,
    "verify": True,
    "proxy": None,
    "trust_env": True,
    "expect_continue_threshold": DEFAULT_EXPECT_CONTINUE_THRESHOLD,
    "expect_continue_timeout": DEFAULT_EXPECT_CONTINUE_TIMEOUT,
    "dialer": None,
    "uds": None,
    "local_address": None,
    "socket_options": None,
    "resolver": None,
    "happy_eyeballs_delay": HAPPY_EYEBALLS_DELAY,
    "cert": None,
    "keepalive": True,
}


class Client:
    """An HTTP client with a connection pool. Use as `async with aiopool.Client() as client:`.

    Pool limits: `max_connections` (busy + connecting sockets over all hosts), per host
    `max_connections_per_host` (every socket to one origin, the lease semaphore), idle sockets
    kept `max_idle_per_host` per host and `max_idle` in all, each for at most `idle_timeout`
    seconds. `None` removes a cap.

    Protocols: `http2=True` offers h2 by ALPN on https (the server chooses); `http1=False`
    speaks only HTTP/2 (h2c by prior knowledge on http://). `http2_ping_interval` (seconds,
    off by default) sends a PING on an HTTP/2 socket that has been silent that long and closes
    it if nothing answers within `http2_ping_timeout` (15 s), as Go's `ReadIdleTimeout` and
    `PingTimeout` do.

    `http1_parser`: "httptools" (llhttp, fast; `pip install aiopool[speedups]`), "h11" (pure
    Python, the reference), or "auto" (the default: httptools when installed, else h11).
    `http2_engine`: "jh2" (h2's fork with compiled parts; the speedups extra), "h2" (the
    reference), or "auto" (jh2 when installed, else h2).

    Requests: `base_url` is prefixed to relative request URLs (`base_url="https://api/v1"`,
    then `get("users")` or `get("/users")` asks for `https://api/v1/users`); `headers` are
    sent with every request (a request's own headers win; `User-Agent: aiopool/<version>` and
    `Accept: */*` unless replaced). `auth=(user, password)` sends HTTP Basic credentials with
    every request, to the request's origin only (a request's `auth=`, or `user:password@` in
    its URL, takes precedence). `cookies` seeds `client.cookies`, the jar every response's
    Set-Cookie goes into (a `CookieJar` given is used as it is, with its own policy).
    Redirects are followed (`follow_redirects`), at most `max_redirects` (10) in a row; both
    can be changed per request. Raises `ValueError` for a `base_url` with a query or fragment,
    `InvalidURL` for an invalid one.

    Limits against hostile servers (`RemoteProtocolError`, the socket closed): a response head
    of at most `max_response_header_bytes` (100 KiB; on HTTP/2 the header list, advertised in
    SETTINGS) with at most `max_response_headers` fields (256).

    Bodies: decoded by their Content-Encoding (gzip, deflate; br and zstd with the extras),
    which is asked for with `Accept-Encoding` unless a request sets its own. `client.get()`
    buffers at most `max_response_size` decoded bytes (100 MiB; None: no cap; also per
    request), else `ResponseTooLarge`; streamed bodies are not capped. Corrupt, truncated or
    bomb-like encoded bodies raise `DecodingError`: past 16 MiB of output, a body may decode to
    at most `max_decompression_ratio` (200) times the bytes received (None: no such bound).

    Tracing (Go's `httptrace`): `trace=fn` gets a `TraceEvent` for every step of every
    request and connection (`get_conn`, `connect_start`/`connect_done`, `tls_handshake_*`,
    `got_conn`, `wrote_headers`, `wrote_request`, `got_first_response_byte`, `put_idle_conn`,
    `conn_closed`; see `TraceEvent`); a request's own `trace=` gets that request's events. The
    same events go to the "aiopool" logger at DEBUG. Nobody listening costs nothing.

    `Expect: 100-continue` (RFC 9110 section 10.1.1): a body of at least
    `expect_continue_threshold` bytes (1 MiB, curl's; None: never automatically), or any body
    whose request sets the header, waits after the head for `100 Continue`, at most
    `expect_continue_timeout` seconds (1.0, Go's), then goes anyway. A final response that
    comes first (417, 401, 413...) is returned as the response, the body never sent, and its
    socket is not reused (an HTTP/2 stream is reset). Negative values raise `ValueError`.

    Proxies: `proxy="http://user:pass@host:3128"` (also `https://`, `socks5://`, `socks5h://`)
    sends every request through it: plain http forwarded, https tunnelled with CONNECT.
    Without `proxy=`, `trust_env=True` reads `http_proxy`, `https_proxy`, `all_proxy` and
    `no_proxy` from the environment once, here (loopback targets always go direct). A proxy
    per URL (Go's `Transport.Proxy`): `proxy=fn`, called with each request's `URL`, returns a
    proxy URL or None (direct); or `proxy={"https://": url, "all://*.internal": None, ...}`,
    the most specific pattern winning (see docs/network.md). Raises `InvalidURL` for a bad
    proxy URL or pattern and `ImportError` for SOCKS without `aiopool[socks]`.

    Network (docs/network.md): `uds="/run/app.sock"` sends every request to that unix socket
    (the URL still gives Host and TLS name; no proxy then). `local_address="10.0.0.5"` binds
    the client's sockets to that IP (only addresses of its family are dialed).
    `socket_options=[(level, option, value), ...]` are set on every socket before it connects,
    after aiopool's own: TCP_NODELAY, and TCP keep-alive probes after 15 s idle, every 15 s, 9
    of them (Go's defaults; `(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)` turns them off).
    Names resolve through `resolver` (default: the system's `getaddrinfo`; any object with
    `async resolve(host, port) -> [ip, ...]`; `aiopool.CachingResolver` adds a DNS cache), and
    a name's addresses are raced as RFC 8305 (Happy Eyeballs) says: families interleaved, a new
    attempt every `happy_eyeballs_delay` (0.25 s) or as soon as one fails. `keepalive=False`
    is Go's `DisableKeepAlives`: one request per connection (HTTP/1.1 sends
    `Connection: close`; an HTTP/2 socket carries one stream). These configure the default
    dialer and transport: with `dialer=`/`transport=` they are refused (`TypeError`).

    TLS: `cert=` is a client certificate (mutual TLS): a PEM file with certificate and key, or
    `(cert_file, key_file)` or `(cert_file, key_file, password)`; refused at construction
    (`ValueError`, `FileNotFoundError`) when it cannot be loaded. With `trust_env=True`,
    `SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system CA store for `verify=True`, and
    `SSLKEYLOGFILE` logs TLS secrets for Wireshark.
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
        max_response_size: int | None = DEFAULT_MAX_RESPONSE_SIZE,
        max_decompression_ratio: float | None = MAX_RATIO,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        verify: VerifyTypes = True,
        headers: HeaderTypes | None = None,
        base_url: str | URL | None = None,
        auth: AuthTypes | None = None,
        cookies: CookieTypes | None = None,
        follow_redirects: bool = _FOLLOW_REDIRECTS,
        max_redirects: int = _MAX_REDIRECTS,
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
        transport: Transport | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.timeout = Timeout.coerce(timeout)
        self.max_response_size = _size_limit(max_response_size)
        if max_decompression_ratio is not None and not max_decompression_ratio >= 1:
            raise ValueError(
                f"max_decompression_ratio must be >= 1 or None, not {max_decompression_ratio}"
            )
        self.max_decompression_ratio = max_decompression_ratio
        pool_options: dict[str, Any] = {
            "max_connections": max_connections,
            "max_connections_per_host": max_connections_per_host,
            "max_idle_per_host": max_idle_per_host,
            "max_idle": max_idle,
            "idle_timeout": idle_timeout,
            "http1": http1,
            "http2": http2,
            "http2_ping_interval": http2_ping_interval,
            "http2_ping_timeout": http2_ping_timeout,
            "http1_parser": http1_parser,
            "http2_engine": http2_engine,
            "max_response_header_bytes": max_response_header_bytes,
            "max_response_headers": max_response_headers,
            "verify": verify,
            "proxy": proxy,
            "trust_env": trust_env,
            "expect_continue_threshold": expect_continue_threshold,
            "expect_continue_timeout": expect_continue_timeout,
            "dialer": dialer,
            "uds": uds,
            "local_address": local_address,
            "socket_options": socket_options,
            "resolver": resolver,
            "happy_eyeballs_delay": happy_eyeballs_delay,
            "cert": cert,
            "keepalive": keepalive,
        }
        if transport is None:
            transport = PoolTransport(timeout=self.timeout, trace=trace, **pool_options)
        else:
            if not isinstance(transport, Transport):
                raise TypeError(
                    f"transport must be an aiopool.Transport, not {type(transport).__name__}"
                )
            given = sorted(k for k, v in pool_options.items() if v != _POOL_DEFAULTS[k])
            if given:
                raise TypeError(
                    f"{', '.join(given)} configure the default PoolTransport: with "
                    "transport=, set them on that transport instead"
                )
        self._transport = transport
        # Every request goes through this: the middleware chain, then the transport. (With no
        # middleware it is the transport's own method: nothing in between.)
        self._handle = chain(list(middleware), transport.handle_request)
        proxied = isinstance(transport, PoolTransport) and transport.proxied
        self._requests = RequestBuilder(
            headers=headers, base_url=base_url, auth=auth, proxied=proxied
        )
        self._cookies = Cookies(cookies)
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self._closed = False

    def __repr__(self) -> str:
        transport = self._transport
        if isinstance(transport, PoolTransport):
            return f"<aiopool.Client {transport._pool!r}>"
        return f"<aiopool.Client {transport!r}>"

    # Lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._closed:
            raise ClientClosed("a closed client cannot be reopened; create a new one")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection and refuse new requests (`ClientClosed`).

        Nothing is waited for: requests in flight (sending, awaiting the head, or streaming a
        body) and requests waiting for a connection fail at once with `ClientClosed`; idle
        sockets are closed, dials in flight cancelled, HTTP/2 reader tasks ended. TLS sockets get
        0.25 s to exchange close_notify. When this returns, no socket or task of the client is
        left. (To let requests finish, await them before closing.) Idempotent.
        """
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __del__(self) -> None:
        # A client dropped with sockets open is a leak: say so, and close them.
        if getattr(self, "_closed", True):
            return
        transport = getattr(self, "_transport", None)
        if not isinstance(transport, PoolTransport) or not transport.has_connections:
            return
        self._closed = True
        warnings.warn(
            f"unclosed {self!r}: use `async with aiopool.Client()` or `await client.aclose()`",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        with contextlib.suppress(RuntimeError):  # Defensive: the event loop is already closed
            transport.close_nowait()

    @property
    def base_url(self) -> URL | None:
        """The prefix of relative request URLs (with a trailing "/"), or None."""
        return self._requests.base_url

    @property
    def cookies(self) -> Cookies:
        """The client's cookie jar: sent per request URL, filled from every Set-Cookie."""
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: CookieTypes) -> None:
        self._cookies = Cookies(cookies)

    @property
    def transport(self) -> Transport:
        """The transport every request goes through (after the middleware)."""
        return self._transport

    async def close_idle_connections(self) -> None:
        """Close every idle connection (Go's `Transport.CloseIdleConnections`).

        Idle HTTP/1.1 sockets and HTTP/2 sockets with no stream open are closed (TLS ones get
        0.25 s for close_notify); connections in use and dials in flight are left alone, and the
        client stays usable: the next request dials afresh. Useful after a DNS change, a
        network change, or before a long quiet period. With a transport other than a
        `PoolTransport`, its own `close_idle_connections()` is called if it has one. Never
        raises for a closed client (there is nothing idle).
        """
        transport = self._transport
        close = getattr(transport, "close_idle_connections", None)
        if close is not None:
            await close()

    def stats(self) -> PoolStats:
        """A snapshot of the pool, overall and per origin; all zeros when the client was given
        a transport other than a `PoolTransport` (which keeps no such books)."""
        transport = self._transport
        if isinstance(transport, PoolTransport):
            return transport.stats()
        return PoolStats(requests=0, connections_opened=0, connections_closed=0, reused=0)

    # Requests ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        params: QueryParams | None = None,
        headers: HeaderTypes | None = None,
        content: RequestContent | str | None = None,
        json: Any = _UNSET,
        timeout: TimeoutTypes = _UNSET,
        auth: AuthTypes | None = _UNSET,
        follow_redirects: bool = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
    ) -> Response:
        """Send a request; return the response with its body read and the connection released.

        Redirects are followed unless `follow_redirects=False` (see `Client`); the response's
        `history` lists the redirects that led to it. `auth=(user, password)` overrides the
        client's credentials for this request (`auth=None`: send none).

        Raises `InvalidURL`, `LocalProtocolError` (bad method or header: nothing was sent),
        `ClientClosed`, the `TransportError` family (timeouts, network and protocol errors),
        and the `RedirectError` family (`TooManyRedirects`, `InvalidRedirect`,
        `RedirectBodyNotReplayable`); `TypeError`/`ValueError` for malformed `auth`.
        `ResponseTooLarge` for a body over `max_response_size` (the client's unless given
        here; None: no cap) and `DecodingError` for one its Content-Encoding cannot decode.
        """
        if self._closed:
            raise ClientClosed("the client has been closed")
        request = self._requests.build(method, url, params, headers, content, json, auth)
        return await self._exchange(
            request,
            self._timeout(timeout),
            follow_redirects,
            max_redirects,
            stream=False,
            trace=trace,
            max_response_size=max_response_size,
        )

    def stream(
        self,
        method: str,
        url: str | URL,
        *,
        params: QueryParams | None = None,
        headers: HeaderTypes | None = None,
        content: RequestContent | str | None = None,
        json: Any = _UNSET,
        timeout: TimeoutTypes = _UNSET,
        auth: AuthTypes | None = _UNSET,
        follow_redirects: bool = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
    ) -> StreamContext:
        """`async with client.stream(...) as response:` reads the body as it arrives.

        Leaving the block releases the connection: an unread body is drained (at most 256 KiB
        within 50 ms) so the socket can be reused, or the socket is closed. Redirects are
        followed as by `request()`: each redirect response is read and released before the
        final one is handed out. Raises what `request()` raises.
        """
        if self._closed:
            raise ClientClosed("the client has been closed")
        request = self._requests.build(method, url, params, headers, content, json, auth)
        frame = sys._getframe(1)
        opened_at = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return StreamContext(
            self,
            request,
            self._timeout(timeout),
            opened_at,
            follow_redirects,
            max_redirects,
            trace,
            max_response_size,
        )

    async def get(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("GET", url, **kwargs)

    async def head(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("OPTIONS", url, **kwargs)

    async def delete(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("DELETE", url, **kwargs)

    async def post(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: str | URL, **kwargs: Unpack[RequestOptions]) -> Response:
        return await self.request("PATCH", url, **kwargs)

    # Internals ---------------------------------------------------------------------------------

    def _timeout(self, timeout: TimeoutTypes) -> Timeout:
        return self.timeout if timeout is _UNSET else Timeout.coerce(timeout)

    async def _exchange(
        self,
        request: Request,
        timeout: Timeout,
        follow_redirects: bool,
        max_redirects: int,
        *,
        stream: bool,
        opened_at: str | None = None,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
    ) -> Response:
        """`_send` per hop, with cookies and redirects around it (see `_redirects`).

        With `stream`, the final response is returned unread (the caller releases it);
        otherwise its body is read and its connection released. Raises what `_send` raises,
        the `RedirectError` family, and `LocalProtocolError` for a cookie that cannot be sent.
        """
        limit = (
            self.max_response_size
            if max_response_size is _UNSET
            else _size_limit(max_response_size)
        )
        cookies = self._cookies
        jar_cookie = add_jar_cookie(request, cookies, cross_origin_hop=False)
        response = await self._send(request, timeout, opened_at, trace, limit)
        store_cookies(response, cookies)
        if response.status_code in REDIRECT_STATUSES and (
            self.follow_redirects if follow_redirects is _UNSET else follow_redirects
        ):
            # Built only here: every request comes through this method, a redirect seldom, and
            # a partial per request was measurable (as was the coroutine a wrapper in
            # `_redirects` cost: hence the first hop here).
            send = functools.partial(
                self._send,
                timeout=timeout,
                opened_at=opened_at,
                trace=trace,
                max_response_size=limit,
            )
            response = await follow(
                send,
                response,
                cookies,
                self.max_redirects if max_redirects is _UNSET else max_redirects,
                jar_cookie,
            )
        if not stream:
            try:
                await response.aread()  # on failure it closes the socket
            except TransportError as exc:
                exc.request = response.request
                raise
        return response

    async def _send(
        self,
        request: Request,
        timeout: Timeout,
        opened_at: str | None,
        trace: TraceHook | None,
        max_response_size: int | None,
    ) -> Response:
        """One hop: through the middleware and the transport; the response's body unread.

        Raises what the transport and the middleware raise (the `TransportError` family)."""
        request.timeout = timeout
        request._trace_hook = trace
        response = await self._handle(request)
        # The client's reading limits and the leak warning's "opened at" belong to the
        # response whoever made it (the pool, a mock, a middleware answering by itself).
        response._opened_at = opened_at
        response._max_size = max_response_size
        response._max_ratio = self.max_decompression_ratio
        return response


class StreamContext:
    """What `client.stream()` returns: `async with` it to get a streamed `Response`."""

    __slots__ = (
        "_client",
        "_follow_redirects",
        "_max_redirects",
        "_max_response_size",
        "_opened_at",
        "_request",
        "_response",
        "_timeout",
        "_trace",
    )

    def __init__(
        self,
        client: Client,
        request: Request,
        timeout: Timeout,
        opened_at: str,
        follow_redirects: bool = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
    ) -> None:
        self._client = client
        self._request = request
        self._timeout = timeout
        self._opened_at = opened_at
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._trace = trace
        self._max_response_size = max_response_size
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        self._response = await self._client._exchange(
            self._request,
            self._timeout,
            self._follow_redirects,
            self._max_redirects,
            stream=True,
            opened_at=self._opened_at,
            trace=self._trace,
            max_response_size=self._max_response_size,
        )
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if exc_type is None:
            await response.aclose()  # drain within bounds, or close
        else:
            response._abort()  # an error or a cancellation: close, never wait to drain


def _size_limit(value: int | None) -> int | None:
    """Check a `max_response_size`: None or an int >= 0 (else `ValueError`/`TypeError`)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_response_size must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"max_response_size must be >= 0, not {value}")
    return value
