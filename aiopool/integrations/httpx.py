"""httpx's API over aiopool's pool: `httpx.AsyncClient(transport=AiopoolTransport())`.

A transport is httpx's seam below everything user-facing: httpx itself follows redirects, keeps
cookies, applies auth and decodes Content-Encoding, then hands each single request to its
transport. So this transport sends through aiopool's raw layer (the pool, the stale-socket retry,
HTTP/2) and nothing above it: the body it returns is the undecoded bytes off the wire, or httpx
would decode them twice. httpcore's transport keeps the same boundary.

Rules kept here:
- errors surface as httpx's own exception classes (what httpx users catch), with aiopool's
  original as `__cause__`, mapped once at this edge as httpx maps httpcore's (most specific
  class wins);
- httpx's per-request timeout (`request.extensions["timeout"]`) replaces the aiopool client's
  default for that request, as it does for httpx's own transport;
- closing the httpx response releases the connection the way aiopool always does: an unread
  HTTP/1.1 body is drained within bounds (256 KiB, 50 ms) and the socket pooled, else closed;
  an HTTP/2 stream is reset.

Needs httpx (`pip install aiopool[httpx]`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx

from .._client import Client
from .._config import Timeout
from .._exceptions import (
    AiopoolError,
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    DecodingError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TimeoutException,
    TransportError,
    WriteError,
    WriteTimeout,
)
from .._headers import Headers
from .._models import Request, RequestContent, Response
from .._urls import URL

__all__ = ("AiopoolTransport",)

# aiopool class -> httpx class. An exception maps to the entry of its most specific class in
# this table (its MRO order), so a subclass aiopool adds later still lands on its parent's
# httpx counterpart rather than escaping unmapped.
_EXCEPTIONS: dict[type[AiopoolError], type[httpx.HTTPError]] = {
    ConnectTimeout: httpx.ConnectTimeout,
    ReadTimeout: httpx.ReadTimeout,
    WriteTimeout: httpx.WriteTimeout,
    PoolTimeout: httpx.PoolTimeout,
    TimeoutException: httpx.TimeoutException,
    ConnectError: httpx.ConnectError,
    ReadError: httpx.ReadError,
    WriteError: httpx.WriteError,
    NetworkError: httpx.NetworkError,
    ProxyError: httpx.ProxyError,
    # Not raised on this path (the body is handed over undecoded), but mapped in kind.
    DecodingError: httpx.DecodingError,
    LocalProtocolError: httpx.LocalProtocolError,
    RemoteProtocolError: httpx.RemoteProtocolError,
    ProtocolError: httpx.ProtocolError,
    # httpcore raises UnsupportedProtocol for a URL it cannot send (no or unknown scheme).
    InvalidURL: httpx.UnsupportedProtocol,
    TransportError: httpx.TransportError,
    AiopoolError: httpx.TransportError,
}


def _map_exception(exc: AiopoolError, request: httpx.Request) -> Exception:
    """The httpx exception for `exc` (the caller raises it `from exc`)."""
    if isinstance(exc, ClientClosed):
        # httpx's own answer to a request on a closed client is a RuntimeError ("Cannot send a
        # request, as the client has been closed"), not a transport error; keep it.
        return RuntimeError(f"cannot send the request: {exc}")
    for cls in type(exc).__mro__:
        target = _EXCEPTIONS.get(cls)
        if target is not None:
            if issubclass(target, httpx.RequestError):
                return target(str(exc), request=request)
            return target(str(exc))  # Defensive: every entry is a RequestError today
    raise AssertionError(f"unmapped aiopool exception {exc!r}")  # Defensive: AiopoolError maps


def _timeout(request: httpx.Request, default: Timeout) -> Timeout:
    """httpx's timeout for this request (`httpx.Timeout.as_dict()`), else the client's."""
    spec = request.extensions.get("timeout")
    if not spec:
        return default
    return _as_timeout(
        spec.get("connect", default.connect),
        spec.get("read", default.read),
        spec.get("write", default.write),
        spec.get("pool", default.pool),
    )


@functools.lru_cache(maxsize=64)
def _as_timeout(
    connect: float | None, read: float | None, write: float | None, pool: float | None
) -> Timeout:
    # An httpx client sends the same few timeouts on every request, and `Timeout` is frozen:
    # building one each time was about a fifth of this transport's own cost per request (profiled).
    return Timeout(connect=connect, read=read, write=write, pool=pool)


def _url(url: httpx.URL) -> URL:
    """aiopool's URL for httpx's, from the parts that go on the wire.

    Built from the scheme, the IDNA-encoded host, the port and the percent-encoded target, so
    userinfo (httpx turns it into an Authorization header itself) and the fragment never travel.
    """
    host = url.raw_host.decode("ascii")
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = f":{url.port}" if url.port is not None else ""
    return URL(f"{url.raw_scheme.decode('ascii')}://{host}{port}{url.raw_path.decode('ascii')}")


def _content(request: httpx.Request) -> RequestContent | None:
    """The body: bytes when httpx holds it whole (replayable on a stale socket), else the
    stream itself, sent as it is produced."""
    try:
        return request.content or None
    except httpx.RequestNotRead:
        stream = request.stream
        if not isinstance(stream, AsyncIterable):
            raise TypeError(
                "AiopoolTransport is asynchronous: the request body must be bytes or an async "
                f"iterable, not {type(stream).__name__}"
            ) from None
        return stream


class _ResponseStream(httpx.AsyncByteStream):
    """The undecoded body of one aiopool response, as httpx reads it."""

    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except AiopoolError as exc:
            # aiopool has already closed the broken connection and released its lease.
            raise _map_exception(exc, self._request) from exc

    async def aclose(self) -> None:
        """Release the connection: drain within bounds and pool it, or close it (idempotent)."""
        await self._response.aclose()


class AiopoolTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends every request through an `aiopool.Client`'s pool.

        async with httpx.AsyncClient(transport=AiopoolTransport(http2=True)) as client:
            resp = await client.get("https://example.org/")

    Pass an existing `aiopool.Client` as `client` to share its pool (the transport does not own
    it: `aclose()` leaves it open), or aiopool `Client` keyword arguments to have the transport
    make one, which `aclose()` (and leaving `httpx.AsyncClient`'s `async with`) closes. Pool
    limits, `http2`, `verify`, `proxy` and `trace` are therefore aiopool's, set on that client;
    httpx's own transport options (`verify=`, `http2=`, `limits=`, `proxy=` on
    `httpx.AsyncClient`) do not reach it (httpx's `proxy=` would route around it through a
    transport of its own). httpcore's `trace` request extension is not called: aiopool's
    `trace=` hook (on the client) sees every step of every request instead.

    Raises `TypeError` when given both a client and keyword arguments.
    """

    def __init__(self, client: Client | None = None, **client_options: Any) -> None:
        if client is not None and client_options:
            raise TypeError(
                "pass either an aiopool.Client or Client keyword arguments, not both "
                f"(got {sorted(client_options)})"
            )
        self._owns_client = client is None
        self._client = client if client is not None else Client(**client_options)

    @property
    def client(self) -> Client:
        """The aiopool client carrying the requests (for `client.stats()`, say)."""
        return self._client

    def __repr__(self) -> str:
        owned = "owned" if self._owns_client else "shared"
        return f"<AiopoolTransport {owned} {self._client!r}>"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; return the response with its body still to be streamed.

        Raises httpx's exceptions (`httpx.ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
        `PoolTimeout`, `ConnectError`, `ReadError`, `WriteError`, `RemoteProtocolError`,
        `LocalProtocolError`, `ProxyError`, `UnsupportedProtocol`...) with aiopool's as
        `__cause__`, and
        `RuntimeError` when the aiopool client was closed.
        """
        client = self._client
        try:
            ours = Request(
                request.method,
                _url(request.url),
                Headers._from_raw(list(request.headers.raw)),
                _content(request),
                timeout=_timeout(request, client.timeout),
            )
            # The client's transport: one exchange through the pool with aiopool's safe-replay
            # rules, and nothing user-facing above it (httpx does redirects, cookies, auth,
            # decoding).
            response = await client.transport.handle_request(ours)
        except AiopoolError as exc:
            raise _map_exception(exc, request) from exc
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers.raw,
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": response.http_version.encode("ascii"),
                "reason_phrase": response.reason.encode("latin-1", errors="replace"),
            },
        )

    async def aclose(self) -> None:
        """Close the aiopool client if this transport made it; a shared one stays open."""
        if self._owns_client:
            await self._client.aclose()
