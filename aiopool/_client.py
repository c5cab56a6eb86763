"""The public `Client`: builds requests, leases connections, retries stale sockets once.

`await client.get(url)` returns with the body read and the connection already back in the pool:
the leak-proof default. Streaming is only through `async with client.stream(...)`, whose exit
releases the connection on every path.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import sys
import warnings
from collections.abc import AsyncIterable
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack

from ._config import DEFAULT_HEAD_LIMITS, HeadLimits, Timeout, TimeoutTypes
from ._exceptions import (
    ClientClosed,
    InvalidURL,
    LocalProtocolError,
    TimeoutException,
    TransportError,
)
from ._h2engine import H2EngineName, select_engine
from ._headers import Headers, HeaderTypes, validate_header
from ._http11 import HTTP11Connection
from ._models import Request, RequestContent, Response
from ._pool import ConnectionPool
from ._stats import PoolStats, TraceHook
from ._tls import LazySSLContext, VerifyTypes
from ._urls import URL, QueryParams

__all__ = ("Client",)

_USER_AGENT = b"aiopool/0.1.0"
_DEFAULT_TIMEOUT = Timeout(30.0, connect=10.0)
# RFC 9110 section 8.6: a user agent SHOULD send Content-Length when the method defines a
# meaning for content even if there is none (some servers answer 411 otherwise).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNSET: Any = object()


class RequestOptions(TypedDict, total=False):
    """The keywords `get()`, `post()` and the other verb methods take (as `request()`)."""

    params: QueryParams | None
    headers: HeaderTypes | None
    content: RequestContent | str | None
    json: Any
    timeout: TimeoutTypes


# Go's http2 transport retries unprocessed requests up to 6 times with backoff; a GOAWAY or
# REFUSED_STREAM rarely strikes twice in a row, so 3 bounds a storm without giving up early.
_MAX_UNPROCESSED_RETRIES = 3


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

    Limits against hostile servers (`RemoteProtocolError`, the socket closed): a response head
    of at most `max_response_header_bytes` (100 KiB; on HTTP/2 the header list, advertised in
    SETTINGS) with at most `max_response_headers` fields (256).
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
        timeout: TimeoutTypes = _DEFAULT_TIMEOUT,
        verify: VerifyTypes = True,
        headers: HeaderTypes | None = None,
        trace: TraceHook | None = None,
    ) -> None:
        if not (http1 or http2):
            raise ValueError("at least one of http1 and http2 must be enabled")
        self.timeout = Timeout.coerce(timeout)
        self.http1 = http1
        self.http2 = http2
        # ALPN (RFC 7301) offers what we speak, h2 first: the server picks.
        alpn = (["h2"] if http2 else []) + (["http/1.1"] if http1 else [])
        # (An object, not a bound method: the pool must not hold a reference back to the
        # client, or a client dropped unclosed would wait for the cycle collector.)
        self._get_ssl_context = LazySSLContext(verify, alpn=alpn)
        self._pool = ConnectionPool(
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            max_idle_per_host=max_idle_per_host,
            max_idle=max_idle,
            idle_timeout=idle_timeout,
            ssl_context=self._get_ssl_context,
            http1=http1,
            http2=http2,
            http2_ping_interval=http2_ping_interval,
            http2_ping_timeout=http2_ping_timeout,
            http1_class=_http1_class(http1_parser),
            http2_engine=select_engine(http2_engine) if http2 else None,
            trace=trace,
            head_limits=HeadLimits(max_response_header_bytes, max_response_headers),
        )
        self._default_headers = _default_headers(Headers(headers) if headers else None)
        self._closed = False

    def __repr__(self) -> str:
        return f"<aiopool.Client {self._pool!r}>"

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

        Requests still in flight fail (their sockets are closed under them); requests waiting for
        a connection fail with `ClientClosed`. Idempotent.
        """
        if not self._closed:
            self._closed = True
            await self._pool.aclose()

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __del__(self) -> None:
        # A client dropped with sockets open is a leak: say so, and close them.
        if getattr(self, "_closed", True):
            return
        pool = getattr(self, "_pool", None)
        if pool is None or not pool.has_connections:
            return
        self._closed = True
        warnings.warn(
            f"unclosed {self!r}: use `async with aiopool.Client()` or `await client.aclose()`",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        with contextlib.suppress(RuntimeError):  # Defensive: the event loop is already closed
            pool.close_nowait()

    def stats(self) -> PoolStats:
        """A snapshot of the pool, overall and per origin."""
        return self._pool.stats()

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
    ) -> Response:
        """Send a request; return the response with its body read and the connection released.

        Raises `InvalidURL`, `LocalProtocolError` (bad method or header: nothing was sent),
        `ClientClosed`, and the `TransportError` family (timeouts, network and protocol errors).
        """
        request = self._build_request(method, url, params, headers, content, json)
        return await self._send(request, self._timeout(timeout), stream=False)

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
    ) -> StreamContext:
        """`async with client.stream(...) as response:` reads the body as it arrives.

        Leaving the block releases the connection: an unread body is drained (at most 256 KiB
        within 50 ms) so the socket can be reused, or the socket is closed.
        """
        request = self._build_request(method, url, params, headers, content, json)
        frame = sys._getframe(1)
        opened_at = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        return StreamContext(self, request, self._timeout(timeout), opened_at)

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

    def _build_request(
        self,
        method: str,
        url: str | URL,
        params: QueryParams | None,
        headers: HeaderTypes | None,
        content: RequestContent | str | None,
        json: Any,
    ) -> Request:
        if self._closed:
            raise ClientClosed("the client has been closed")
        if isinstance(url, str):
            url = URL(url)
        elif not isinstance(url, URL):
            raise InvalidURL(f"URL must be a str or aiopool.URL, not {type(url).__name__}")
        if params:
            url = url.copy_merge_params(params)
        if json is not _UNSET:
            if content is not None:
                raise TypeError("pass either content= or json=, not both")
            content = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
            extra = [(b"content-type", b"application/json")]
        else:
            extra = []
        if isinstance(content, str):
            content = content.encode("utf-8")
            extra.append((b"content-type", b"text/plain; charset=utf-8"))
        method = method.upper()
        raw: list[tuple[bytes, bytes]] = [(b"host", url.host_header)]
        defaults = self._default_headers
        if headers:
            user = Headers(headers).raw
            names = set()
            for name, value in user:
                validate_header(name, value)
                names.add(name.lower())
            raw.extend(h for h in defaults if h[0] not in names)
            raw.extend(h for h in extra if h[0] not in names)
            if b"host" in names:
                raw.pop(0)
            raw.extend(user)
        else:
            names = set()
            raw.extend(defaults)
            raw.extend(extra)
        if content is None:
            if method in _BODY_METHODS and b"content-length" not in names:
                raw.append((b"content-length", b"0"))
        elif isinstance(content, bytes | bytearray | memoryview):
            content = bytes(content)
            if b"content-length" not in names and b"transfer-encoding" not in names:
                raw.append((b"content-length", str(len(content)).encode()))
        elif isinstance(content, AsyncIterable):
            if b"content-length" not in names and b"transfer-encoding" not in names:
                raw.append((b"transfer-encoding", b"chunked"))
        else:
            raise TypeError(
                f"content must be bytes, str or an async iterable of bytes, "
                f"not {type(content).__name__}"
            )
        # Defaults were validated at construction, user headers above, the rest we built.
        return Request(method, url, Headers._from_raw(raw), content, headers_validated=True)

    async def _send(
        self, request: Request, timeout: Timeout, *, stream: bool, opened_at: str | None = None
    ) -> Response:
        pool = self._pool
        origin = request.url.origin
        retried = False
        unprocessed_retries = 0
        while True:
            try:
                conn, info = await pool.acquire(
                    origin, timeout, fresh=retried, count=not (retried or unprocessed_retries)
                )
            except TransportError as exc:
                exc.request = request
                raise
            try:
                head, body = await conn.send(request, timeout)
            except TransportError as exc:
                # HTTP/2 told us the server never acted on it (GOAWAY, REFUSED_STREAM, a lowered
                # stream limit): send it again elsewhere, a few times at most.
                if (
                    exc.unprocessed
                    and unprocessed_retries < _MAX_UNPROCESSED_RETRIES
                    and request.replayable
                ):
                    unprocessed_retries += 1
                    continue
                # DESIGN invariant 6 (Go's rule): a replayable request that failed on a reused
                # socket before any response byte is retried once, on a fresh socket. The socket
                # was closed and discarded by `send` already.
                if (
                    not retried
                    and info.reused
                    and (conn.closed or not conn.multiplexed)  # h2: the socket died, not a stream
                    and not conn.got_response_bytes
                    and request.replayable
                    and not isinstance(exc, TimeoutException | LocalProtocolError)
                ):
                    retried = True
                    continue
                exc.request = request
                raise
            break
        response = Response(
            head.status_code,
            reason=head.reason,
            headers=head.headers,
            http_version=head.http_version,
            request=request,
            conn_info=info,
            stream=body,
            opened_at=opened_at,
        )
        if not stream:
            try:
                await response.aread()
            except TransportError as exc:
                exc.request = request
                raise
        return response


HTTP1Parser = Literal["auto", "h11", "httptools"]
# What "auto" means; tests switch it to run the suite on each parser.
DEFAULT_HTTP1_PARSER: HTTP1Parser = "auto"


def _http1_class(parser: HTTP1Parser) -> type[HTTP11Connection]:
    if parser == "auto":
        parser = DEFAULT_HTTP1_PARSER
    if parser == "h11":
        return HTTP11Connection
    if parser not in ("auto", "httptools"):
        raise ValueError(f"http1_parser must be 'auto', 'h11' or 'httptools', not {parser!r}")
    try:
        from ._http11_httptools import HttptoolsConnection
    except ImportError:
        if parser == "httptools":
            raise ImportError(
                "http1_parser='httptools' needs httptools: pip install aiopool[speedups]"
            ) from None
        return HTTP11Connection
    return HttptoolsConnection


class StreamContext:
    """What `client.stream()` returns: `async with` it to get a streamed `Response`."""

    __slots__ = ("_client", "_opened_at", "_request", "_response", "_timeout")

    def __init__(self, client: Client, request: Request, timeout: Timeout, opened_at: str) -> None:
        self._client = client
        self._request = request
        self._timeout = timeout
        self._opened_at = opened_at
        self._response: Response | None = None

    async def __aenter__(self) -> Response:
        self._response = await self._client._send(
            self._request, self._timeout, stream=True, opened_at=self._opened_at
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


def _default_headers(extra: Headers | None) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [(b"user-agent", _USER_AGENT), (b"accept", b"*/*")]
    if extra is not None:
        for name, value in extra.raw:
            validate_header(name, value)
        names = {n.lower() for n, _ in extra.raw}
        headers = [h for h in headers if h[0] not in names] + [(n.lower(), v) for n, v in extra.raw]
    return headers
