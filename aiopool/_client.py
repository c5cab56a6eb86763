"""The public `Client`: builds requests, follows redirects, leases connections, retries safely.

`await client.get(url)` returns with the body read and the connection already back in the pool:
the leak-proof default. Streaming is only through `async with client.stream(...)`, whose exit
releases the connection on every path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import sys
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack

from ._auth import AuthTypes
from ._backend import HAPPY_EYEBALLS_DELAY, SocketOption
from ._bodies import BodyContent
from ._config import (
    DEFAULT_HEAD_LIMITS,
    DEFAULT_MAX_RESPONSE_SIZE,
    Timeout,
    TimeoutTypes,
)
from ._cookies import Cookies, CookieTypes
from ._deadline import Deadline, DeadlineBody
from ._decoders import MAX_RATIO
from ._exceptions import ClientClosed, TransportError
from ._expect import DEFAULT_EXPECT_CONTINUE_THRESHOLD, DEFAULT_EXPECT_CONTINUE_TIMEOUT
from ._h2engine import H2EngineName
from ._headers import Headers, HeaderTypes
from ._models import Request, Response
from ._multipart import DataTypes, FilesTypes
from ._pool import Dialer
from ._pool_transport import DEFAULT_TIMEOUT, HTTP1Parser, PoolTransport
from ._proxy import ProxyTypes
from ._redirects import (
    REDIRECT_STATUSES,
    FollowRedirects,
    add_jar_cookie,
    follow,
    store_cookies,
)
from ._request_builder import UNSET, RequestBuilder
from ._resolver import Resolver
from ._retry import BudgetAccount, Retry, RetryBudget, retry_after
from ._stats import PoolStats, TraceHook
from ._tls import CertTypes, VerifyTypes
from ._trace import tracer_for
from ._transport import Middleware, Transport, chain
from ._urls import URL, QueryParams

__all__ = ("Client", "StreamContext")

_UNSET: Any = UNSET  # (one sentinel: `json` and `auth` go on to the builder as given)

# A request's `retry=`: a policy, or None / False for none (the client's when not given).
RetryTypes = Retry | Literal[False] | None


class RequestOptions(TypedDict, total=False):
    """The keywords `get()`, `post()` and the other verb methods take (as `request()`)."""

    params: QueryParams | None
    headers: HeaderTypes | None
    content: BodyContent | None
    json: Any
    data: DataTypes | None
    files: FilesTypes | None
    timeout: TimeoutTypes
    auth: AuthTypes | None
    follow_redirects: FollowRedirects
    max_redirects: int
    max_response_size: int | None
    trace: TraceHook | None
    retry: RetryTypes


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
    "trace": None,  # (the client-wide hook; a request's own `trace=` goes with the request)
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
    `http2_engine`: "native" (aiopool's own client engine; with `aiopool[speedups]` its HPACK
    is jh2's compiled codec), "h2" (the reference), or "auto" (the default: native). ("jh2",
    an engine before, raises `ValueError`: native overtook it everywhere.)

    Requests: `base_url` is prefixed to relative request URLs (`base_url="https://api/v1"`,
    then `get("users")` or `get("/users")` asks for `https://api/v1/users`); `headers` are
    sent with every request (a request's own headers win; `User-Agent: aiopool/<version>` and
    `Accept: */*` unless replaced). `auth=(user, password)` sends HTTP Basic credentials with
    every request, to the request's origin only (a request's `auth=`, or `user:password@` in
    its URL, takes precedence). `cookies` seeds `client.cookies`, the jar every response's
    Set-Cookie goes into (a `CookieJar` given is used as it is, with its own policy).
    Redirects are followed (`follow_redirects`), at most `max_redirects` (10) in a row; both
    can be changed per request. `follow_redirects` may also be a function (Go's
    `CheckRedirect`), `fn(request, history)`, asked before each hop: True follows, False stops
    (the redirect is the answer), an exception propagates (see `_redirects`). Raises
    `ValueError` for a `base_url` with a query or fragment, `InvalidURL` for an invalid one,
    `TypeError` for a `follow_redirects` that is neither a bool nor callable.

    Retries: `retry=aiopool.Retry(...)` sends a request again after a failure to connect, a
    failure before the response (the idempotent methods by default), or a listed status
    (429, 502, 503, 504), with full-jitter backoff, `Retry-After` obeyed, and a per-client
    retry budget; off by default, also set per request (`retry=None` disables). See `Retry`.
    `Timeout(total=...)` is one deadline for the whole call (`TotalTimeout`), retries and
    redirects included.

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
        follow_redirects: FollowRedirects = _FOLLOW_REDIRECTS,
        max_redirects: int = _MAX_REDIRECTS,
        trace: TraceHook | None = None,
        retry: Retry | None = None,
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
            "trace": trace,
            "uds": uds,
            "local_address": local_address,
            "socket_options": socket_options,
            "resolver": resolver,
            "happy_eyeballs_delay": happy_eyeballs_delay,
            "cert": cert,
            "keepalive": keepalive,
        }
        if transport is None:
            transport = PoolTransport(timeout=self.timeout, **pool_options)
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
        self.follow_redirects = _check_follow(follow_redirects)
        self.max_redirects = max_redirects
        self.retry = _check_retry(retry)
        self._trace = trace
        # The retry budget's accounts (one per `RetryBudget` in use: the client's, and any a
        # request's own policy brings), and the retries the policy made, by reason.
        self._budgets: dict[RetryBudget, BudgetAccount] = {}
        self._policy_retries: dict[str, int] = {}
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
            stats = transport.stats()
        else:
            stats = PoolStats(requests=0, connections_opened=0, connections_closed=0, reused=0)
        if self._policy_retries:
            # The retry policy's sends, next to the pool's own ("policy_status_503", ...).
            stats.retries.update(self._policy_retries)
        return stats

    # Requests ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        params: QueryParams | None = None,
        headers: HeaderTypes | None = None,
        content: BodyContent | None = None,
        json: Any = _UNSET,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: TimeoutTypes = _UNSET,
        auth: AuthTypes | None = _UNSET,
        follow_redirects: FollowRedirects = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
        retry: RetryTypes = _UNSET,
    ) -> Response:
        """Send a request; return the response with its body read and the connection released.

        Redirects are followed unless `follow_redirects=False` (see `Client`); the response's
        `history` lists the redirects that led to it. `auth=(user, password)` overrides the
        client's credentials for this request (`auth=None`: send none).

        The body, one of: `content=` (bytes; str, sent as UTF-8; a sync binary file, read in a
        worker thread; an async file; an async iterable of bytes), `json=`, `data=` (a mapping
        or pairs: an application/x-www-form-urlencoded form) or `files=` (with `data=` fields
        alongside: streamed multipart/form-data; see docs/bodies-and-streaming.md). Bytes,
        seekable files and forms of those are sent with Content-Length and sent again whole
        for a 307/308 redirect or a safe retry; an async iterable, async file or pipe goes
        chunked, once.

        `retry=` replaces the client's retry policy for this request (`None`/`False`: none).

        Raises `InvalidURL`, `LocalProtocolError` (bad method or header: nothing was sent),
        `TypeError` for a body of the wrong type (or more than one kind of body),
        `ClientClosed`, the `TransportError` family (timeouts, among them `TotalTimeout` past
        `Timeout.total`, network and protocol errors; with `.attempts` when the retry policy
        sent it more than once), what a redirect policy raises, and the `RedirectError`
        family (`TooManyRedirects`, `InvalidRedirect`, `RedirectBodyNotReplayable`);
        `TypeError`/`ValueError` for malformed `auth`.
        `ResponseTooLarge` for a body over `max_response_size` (the client's unless given
        here; None: no cap) and `DecodingError` for one its Content-Encoding cannot decode.
        """
        if self._closed:
            raise ClientClosed("the client has been closed")
        request = self._requests.build(
            method, url, params, headers, content, json, auth, data=data, files=files
        )
        timeout_ = self._timeout(timeout)
        deadline = _deadline_for(timeout_, request)
        # (The coroutine runs only when awaited: inside the deadline's scope when there is one.)
        exchange = self._exchange(
            request,
            timeout_,
            follow_redirects,
            max_redirects,
            stream=False,
            trace=trace,
            max_response_size=max_response_size,
            retry=retry,
            deadline=deadline,
        )
        if deadline is None:
            return await exchange
        async with deadline.within():
            return await exchange

    def stream(
        self,
        method: str,
        url: str | URL,
        *,
        params: QueryParams | None = None,
        headers: HeaderTypes | None = None,
        content: BodyContent | None = None,
        json: Any = _UNSET,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
        timeout: TimeoutTypes = _UNSET,
        auth: AuthTypes | None = _UNSET,
        follow_redirects: FollowRedirects = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
        retry: RetryTypes = _UNSET,
    ) -> StreamContext:
        """`async with client.stream(...) as response:` reads the body as it arrives.

        Leaving the block releases the connection: an unread body is drained (at most 256 KiB
        within 50 ms) so the socket can be reused, or the socket is closed. Redirects are
        followed as by `request()`: each redirect response is read and released before the
        final one is handed out. Retries as by `request()`, before the block is entered.
        `Timeout.total` bounds the call until the block is left: a body read past it raises
        `TotalTimeout`. Raises what `request()` raises.
        """
        if self._closed:
            raise ClientClosed("the client has been closed")
        request = self._requests.build(
            method, url, params, headers, content, json, auth, data=data, files=files
        )
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
            retry,
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
        follow_redirects: FollowRedirects,
        max_redirects: int,
        *,
        stream: bool,
        opened_at: str | None = None,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
        retry: RetryTypes = _UNSET,
        deadline: Deadline | None = None,
    ) -> Response:
        """`_send` per hop, with cookies and redirects around it (see `_redirects`).

        With `stream`, the final response is returned unread (the caller releases it; under a
        `deadline` its body reads are cut off when it passes); otherwise its body is read and
        its connection released. Raises what `_send` raises, the `RedirectError` family, and
        `LocalProtocolError` for a cookie that cannot be sent.
        """
        limit = (
            self.max_response_size
            if max_response_size is _UNSET
            else _size_limit(max_response_size)
        )
        policy = self.retry if retry is _UNSET else _check_retry(retry)
        cookies = self._cookies
        jar_cookie = add_jar_cookie(request, cookies, cross_origin_hop=False)
        response = await self._send(request, timeout, opened_at, trace, limit, policy, deadline)
        store_cookies(response, cookies)
        if response.status_code in REDIRECT_STATUSES:
            follows = (
                self.follow_redirects
                if follow_redirects is _UNSET
                else _check_follow(follow_redirects)
            )
            if follows:
                # Built only here: every request comes through this method, a redirect seldom,
                # and a partial per request was measurable (as was the coroutine a wrapper in
                # `_redirects` cost: hence the first hop here).
                send = functools.partial(
                    self._send,
                    timeout=timeout,
                    opened_at=opened_at,
                    trace=trace,
                    max_response_size=limit,
                    retry=policy,
                    deadline=deadline,
                )
                response = await follow(
                    send,
                    response,
                    cookies,
                    self.max_redirects if max_redirects is _UNSET else max_redirects,
                    jar_cookie,
                    policy=None if follows is True else follows,
                )
        if deadline is not None:
            deadline.doing = "reading the response body"
            body = response._stream
            if stream and body is not None:
                response._stream = DeadlineBody(body, deadline)
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
        retry: Retry | None = None,
        deadline: Deadline | None = None,
    ) -> Response:
        """One hop: through the middleware and the transport (again for each retry `retry`
        allows); the response's body unread.

        Raises what the transport and the middleware raise (the `TransportError` family, with
        `.attempts` set when the policy sent the request more than once; and `.request`
        set: a mock's handler, a middleware or a user's transport may raise one without it)."""
        request.timeout = timeout
        request._trace_hook = trace
        started = time.perf_counter()
        try:
            if retry is None:
                if deadline is not None:
                    deadline.request = request
                    deadline.doing = "waiting for a connection or the response head"
                response = await self._handle(request)
            else:
                response = await self._send_retrying(request, retry, deadline)
        except TransportError as exc:
            if exc.request is None:
                exc.request = request
            raise
        if response._request is None:  # made by a user's transport, without `request=`
            response.request = request
        # requests' `elapsed`: sending until the head is parsed (lease and dial included, and
        # the attempts of a retry policy), so it is known while a streamed body is still
        # arriving; httpx's runs to the body's end.
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        # The client's reading limits and the leak warning's "opened at" belong to the
        # response whoever made it (the pool, a mock, a middleware answering by itself).
        response._opened_at = opened_at
        response._max_size = max_response_size
        response._max_ratio = self.max_decompression_ratio
        return response

    async def _send_retrying(
        self, request: Request, policy: Retry, deadline: Deadline | None
    ) -> Response:
        """`_handle(request)`, then again as `policy` allows (see `_retry` for the rules).

        Each retry sends a copy of the request as it was built (so middleware that changed the
        first attempt's headers starts over), after the previous response was released and the
        backoff slept: a cancellation in that sleep leaves nothing leased. Raises the last
        attempt's error, with `.attempts`; returns the last response otherwise.
        """
        budget = policy.budget
        account = None
        if budget is not None:
            account = self._budgets.get(budget)
            if account is None:
                account = self._budgets[budget] = BudgetAccount(budget)
            account.deposit()
        # (Headers can be changed in place: a copy of the fields as built, for every retry.)
        raw, timeout, hook = list(request.headers.raw), request.timeout, request._trace_hook
        attempt = 1
        while True:
            if deadline is not None:
                deadline.request = request
                deadline.doing = "waiting for a connection or the response head" + (
                    f" (attempt {attempt})" if attempt > 1 else ""
                )
            failure: TransportError | None = None
            response: Response | None = None
            try:
                response = await self._handle(request)
            except TransportError as exc:
                failure = exc
                reason = policy.error_reason(exc, request)
                delay = policy.backoff_for(attempt)
            else:
                reason = policy.status_reason(response)
                asked = retry_after(response) if reason is not None else None
                if asked is None:
                    delay = policy.backoff_for(attempt)
                elif asked <= policy.retry_after_max:
                    delay = asked
                else:
                    reason = None  # the server asks for longer than we would wait
            if (
                reason is None
                or attempt >= policy.attempts
                or (deadline is not None and delay >= deadline.remaining())
                or (account is not None and not account.withdraw())
            ):
                if failure is not None:
                    failure.attempts = attempt
                    if attempt > 1:
                        failure.add_note(f"(the last of {attempt} attempts)")
                    raise failure
                assert response is not None
                return response
            if response is not None:
                with contextlib.suppress(TransportError):  # (a failed drain closes the socket)
                    await response.aclose()
            attempt += 1
            self._policy_retries[f"policy_{reason}"] = (
                self._policy_retries.get(f"policy_{reason}", 0) + 1
            )
            tracer = tracer_for(self._trace, hook)
            if tracer is not None:
                tracer(
                    "retry",
                    request.url.origin,
                    None,
                    reason=reason,
                    attempt=attempt,
                    delay=delay,
                    error=failure,
                )
            if delay > 0:
                if deadline is not None:
                    deadline.doing = f"waiting {delay:.3g} s before attempt {attempt}"
                await asyncio.sleep(delay)
            request = Request(
                request.method,
                request.url,
                Headers._from_raw(list(raw)),
                request.content,
                headers_validated=True,
            )
            request.timeout = timeout
            request._trace_hook = hook


class StreamContext:
    """What `client.stream()` returns: `async with` it to get a streamed `Response`."""

    __slots__ = (
        "_client",
        "_follow_redirects",
        "_max_redirects",
        "_max_response_size",
        "_opened",
        "_opened_at",
        "_request",
        "_response",
        "_retry",
        "_timeout",
        "_trace",
    )

    def __init__(
        self,
        client: Client,
        request: Request,
        timeout: Timeout,
        opened_at: str,
        follow_redirects: FollowRedirects = _UNSET,
        max_redirects: int = _UNSET,
        trace: TraceHook | None = None,
        max_response_size: int | None = _UNSET,
        retry: RetryTypes = _UNSET,
    ) -> None:
        self._client = client
        self._request = request
        self._timeout = timeout
        self._opened_at = opened_at
        self._follow_redirects = follow_redirects
        self._max_redirects = max_redirects
        self._trace = trace
        self._max_response_size = max_response_size
        self._retry = retry
        self._response: Response | None = None
        self._opened = False

    async def open(self) -> Response:
        """Send the request and return the streamed response, for handing its body to a web
        framework (no `async with` block: the response outlives this call).

        The connection is released when the body has been iterated to its end, when reading
        it fails, when the iterator (`aiter_bytes()`, `aiter_text()`, `aiter_lines()`,
        `aiter_raw()`) is closed or finalised before the end (the framework's client went
        away: the connection is closed), or by `await response.aclose()`: pass that as the
        framework's background task so a body never iterated is released too. Starlette::

            upstream = await client.stream("GET", url).open()
            return StreamingResponse(
                upstream.aiter_bytes(),
                status_code=upstream.status_code,
                background=BackgroundTask(upstream.aclose),
            )

        Raises what `Client.request()` raises (nothing is then left open). Once only, and not
        together with `async with` on the same context (`RuntimeError`).
        """
        if self._opened:
            raise RuntimeError("this stream() context was already opened")
        response = await self.__aenter__()
        self._response = None  # (this context no longer releases it: the response does)
        response._detached = True
        return response

    async def __aenter__(self) -> Response:
        """Send the request; the response, its body to read inside the block. Raises what
        `Client.request` raises (`TotalTimeout` past `Timeout.total`, which from here on also
        bounds every body read of the block), and `RuntimeError` for a context entered twice."""
        if self._opened:
            raise RuntimeError("this stream() context was already opened")
        self._opened = True
        deadline = _deadline_for(self._timeout, self._request)
        if deadline is None:
            self._response = await self._exchange(None)
        else:
            async with deadline.within():
                self._response = await self._exchange(deadline)
        return self._response

    async def _exchange(self, deadline: Deadline | None) -> Response:
        return await self._client._exchange(
            self._request,
            self._timeout,
            self._follow_redirects,
            self._max_redirects,
            stream=True,
            opened_at=self._opened_at,
            trace=self._trace,
            max_response_size=self._max_response_size,
            retry=self._retry,
            deadline=deadline,
        )

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


def _check_follow(value: FollowRedirects) -> FollowRedirects:
    """A `follow_redirects`: a bool, or a policy callable (else `TypeError`)."""
    if isinstance(value, bool) or callable(value):
        return value
    raise TypeError(
        f"follow_redirects must be a bool or a callable(request, history), "
        f"not {type(value).__name__}"
    )


def _check_retry(value: RetryTypes) -> Retry | None:
    """A `retry`: a `Retry`, or None / False for none (else `TypeError`)."""
    if value is None or value is False:
        return None
    if isinstance(value, Retry):
        return value
    raise TypeError(f"retry must be an aiopool.Retry, None or False, not {value!r}")


def _deadline_for(timeout: Timeout, request: Request) -> Deadline | None:
    """The call's deadline (`Timeout.total`), or None without one (the usual case)."""
    if timeout.total is None:
        return None
    deadline = Deadline(timeout.total)
    deadline.request = request
    return deadline
