"""Dialing through a proxy: the socket to the proxy, the CONNECT or SOCKS5 handshake, then TLS.

- Plain `http://` targets through an HTTP proxy: the socket to the proxy is the connection;
  requests go to it in absolute-form (see `_proxy.forward_form`).
- `https://` targets through an HTTP proxy: `CONNECT host:port` (RFC 9110 section 9.3.6), with
  `Proxy-Authorization` when the proxy URL has credentials; any 2xx opens the tunnel, anything
  else is a `ProxyError` carrying the status. Then TLS to the origin inside the tunnel, with the
  origin's name checked and ALPN offered as on a direct connection (so h2 works through it).
- SOCKS5 (RFC 1928, with RFC 1929 username/password): `socks5://` resolves the target's name
  here and sends the address; `socks5h://` sends the name for the proxy to resolve. Messages are
  built and parsed by socksio; the framing (how many bytes each reply has) is done here.
- An `https://` proxy gets TLS first (its own name checked, ALPN http/1.1 only: we speak HTTP/1.1
  to proxies); an https origin through it is then TLS inside TLS.

One deadline, the connect timeout, covers the whole dial: proxy socket, handshake and TLS, as
Go's `DialContext` does. On every failure and on cancellation the socket is aborted before the
error propagates. No server speaks first in what we tunnel (TLS, HTTP/1.1, h2c), so bytes
arriving after a handshake reply are a proxy protocol error, not data.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

import h11

from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    ProxyError,
    ReadError,
    WriteError,
    seconds,
)

if TYPE_CHECKING:
    from ._backend import NetworkStream
    from ._pool import Dialer
    from ._proxy import Proxy
    from ._urls import Origin

__all__ = ("open_through_proxy",)

# A CONNECT answer is a status line and a few headers. h11's default bound on a head is 16 KiB;
# 64 KiB is generous for any proxy (a 407 may carry several challenges) and still bounds a
# hostile one.
_MAX_CONNECT_HEAD = 64 * 1024


async def open_through_proxy(
    dialer: Dialer,
    origin: Origin,
    *,
    ssl_context: Callable[[], ssl.SSLContext],
    proxy_ssl_context: Callable[[], ssl.SSLContext],
    timeout: float | None,
) -> NetworkStream:
    """A stream to `origin` through `origin.proxy`, ready for HTTP (TLS done for https).

    Raises `ConnectError` / `ConnectTimeout` (the proxy is unreachable, the origin's TLS
    failed, or the whole dial took longer than `timeout`), `ProxyError` (the proxy refused or
    answered nonsense). Cancellation aborts the socket.
    """
    proxy = origin.proxy
    assert proxy is not None
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    proxy_tls = proxy.scheme == "https"
    try:
        stream = await dialer(
            proxy.host,
            proxy.port,
            ssl_context=proxy_ssl_context() if proxy_tls else None,
            server_hostname=proxy.host,
            timeout=timeout,
        )
    except ConnectTimeout:
        raise ConnectTimeout(
            f"connecting to the proxy {proxy} not done within the connect timeout "
            f"({seconds(timeout)})"
        ) from None
    except ConnectError as exc:
        raise ConnectError(f"could not connect to the proxy {proxy}: {exc}") from exc
    try:
        if proxy_tls:
            _check_proxy_alpn(stream, proxy)
        async with asyncio.timeout_at(deadline):
            if proxy.is_socks:
                await _socks5_connect(stream, proxy, origin, loop)
            elif origin.scheme == "https":
                await _http_connect(stream, proxy, origin)
            if origin.scheme == "https":
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                stream = await stream.start_tls(ssl_context(), origin.host, remaining)
    except (ReadError, WriteError) as exc:  # reset by the proxy mid-handshake
        stream.abort()
        raise ProxyError(f"the proxy {proxy} broke off its handshake: {exc}") from exc
    except TimeoutError:
        stream.abort()
        raise ConnectTimeout(
            f"proxy handshake and TLS with {origin} not done within the connect timeout "
            f"({seconds(timeout)})"
        ) from None
    except BaseException:
        stream.abort()
        raise
    return stream


def _check_proxy_alpn(stream: NetworkStream, proxy: Proxy) -> None:
    ssl_object = stream.extra("ssl_object")
    alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
    if alpn not in (None, "http/1.1"):
        raise ProxyError(f"the proxy {proxy} chose {alpn!r} by ALPN; we speak HTTP/1.1 to proxies")


class _Reader:
    """Exact-size reads over a stream, for the handshakes' fixed-size replies."""

    __slots__ = ("_buffer", "_proxy", "_stream")

    def __init__(self, stream: NetworkStream, proxy: Proxy) -> None:
        self._stream = stream
        self._proxy = proxy
        self._buffer = b""

    async def some(self) -> bytes:
        """The next bytes; an EOF before the handshake finished is a `ProxyError`."""
        data = await self._stream.read(None)  # bounded by the dial's deadline
        if not data:
            raise ProxyError(f"the proxy {self._proxy} closed the connection during its handshake")
        return data

    async def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += await self.some()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def check_drained(self) -> None:
        if self._buffer:
            raise ProxyError(f"the proxy {self._proxy} sent unexpected bytes after its reply")


# HTTP CONNECT ------------------------------------------------------------------------------------


async def _http_connect(stream: NetworkStream, proxy: Proxy, origin: Origin) -> None:
    # RFC 9110 section 9.3.6: the request-target is the authority-form "host:port", and the
    # Host header carries the same (RFC 9112 section 3.2.3).
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    authority = f"{host}:{origin.port}".encode("ascii")
    headers = [(b"Host", authority)]
    if proxy.authorization is not None:
        headers.append((b"Proxy-Authorization", proxy.authorization))
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_CONNECT_HEAD)
    what = f"the proxy {proxy} (CONNECT {authority.decode()})"
    try:
        data = conn.send(h11.Request(method=b"CONNECT", target=authority, headers=headers))
    except h11.LocalProtocolError as exc:  # Defensive: validated names and our own header values
        raise ProxyError(f"cannot send CONNECT to {what}: {exc}") from exc
    assert data is not None
    stream.write_nowait(data)
    await stream.drain(None)
    reader = _Reader(stream, proxy)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise ProxyError(f"invalid answer from {what}: {exc}") from exc
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.some())
            continue
        if isinstance(event, h11.InformationalResponse):
            continue  # a 1xx before the real answer: skip it, as for any request
        if isinstance(event, h11.Response):
            break
        raise ProxyError(f"unexpected answer from {what}: {event!r}")  # Defensive
    status = event.status_code
    if not 200 <= status < 300:
        reason = event.reason.decode("latin-1", "replace")
        hint = ""
        if status == 407:
            # RFC 9110 section 11.7.1: a 407 carries the schemes the proxy accepts; naming them
            # tells a user whose proxy wants something other than Basic why credentials fail.
            challenges = [v for n, v in event.headers if n == b"proxy-authenticate"]
            asked = b", ".join(challenges).decode("latin-1", "replace")[:200]
            hint = f" (proxy authentication required: {asked or 'no challenge given'})"
        raise ProxyError(f"{what} answered {status} {reason}{hint}", status_code=status)
    # Any 2xx: the connection is now a tunnel; h11 hands back what followed the head.
    trailing, _closed = conn.trailing_data
    if trailing:
        raise ProxyError(f"{what} sent unexpected bytes after its 2xx answer")


# SOCKS5 ------------------------------------------------------------------------------------------


async def _socks5_connect(
    stream: NetworkStream, proxy: Proxy, origin: Origin, loop: asyncio.AbstractEventLoop
) -> None:
    from socksio import socks5  # presence checked when the Proxy was built
    from socksio.exceptions import SOCKSError

    what = f"the SOCKS5 proxy {proxy}"
    target: str | bytes = origin.host
    if proxy.scheme == "socks5":
        target = await _resolve(loop, origin.host, origin.port)
    conn = socks5.SOCKS5Connection()
    reader = _Reader(stream, proxy)
    try:
        # Offer exactly the method we can complete: username/password (RFC 1929) when the URL
        # has credentials, else none. A proxy insisting on another method is refused below.
        method = (
            socks5.SOCKS5AuthMethod.USERNAME_PASSWORD
            if proxy.username is not None
            else socks5.SOCKS5AuthMethod.NO_AUTH_REQUIRED
        )
        conn.send(socks5.SOCKS5AuthMethodsRequest([method]))
        stream.write_nowait(conn.data_to_send())
        greeting = await reader.exactly(2)
        if greeting[0] != 5:  # socksio does not check the version byte of this reply
            raise ProxyError(f"{what} did not answer as a SOCKS5 server (version {greeting[0]})")
        reply = conn.receive_data(greeting)
        if not isinstance(reply, socks5.SOCKS5AuthReply) or reply.method != method:
            chosen = getattr(reply, "method", None)
            raise ProxyError(
                f"{what} does not accept our authentication "
                f"({'username/password' if proxy.username is not None else 'none'}; "
                f"it asked for {chosen.name if chosen is not None else 'nothing usable'})"
            )
        if proxy.username is not None:
            conn.send(
                socks5.SOCKS5UsernamePasswordRequest(
                    proxy.username.encode(), (proxy.password or "").encode()
                )
            )
            stream.write_nowait(conn.data_to_send())
            auth = conn.receive_data(await reader.exactly(2))
            if not isinstance(auth, socks5.SOCKS5UsernamePasswordReply) or not auth.success:
                raise ProxyError(f"{what} rejected the username/password")
        conn.send(
            socks5.SOCKS5CommandRequest.from_address(
                socks5.SOCKS5Command.CONNECT, (target, origin.port)
            )
        )
        stream.write_nowait(conn.data_to_send())
        # The reply: VER REP RSV ATYP, then the bound address (4, 16, or 1+n bytes), then PORT.
        head = await reader.exactly(4)
        atype = head[3:4]
        if atype == socks5.SOCKS5AType.IPV4_ADDRESS:
            rest = await reader.exactly(4 + 2)
        elif atype == socks5.SOCKS5AType.IPV6_ADDRESS:
            rest = await reader.exactly(16 + 2)
        elif atype == socks5.SOCKS5AType.DOMAIN_NAME:
            size = await reader.exactly(1)
            rest = size + await reader.exactly(size[0] + 2)
        else:
            raise ProxyError(f"invalid reply from {what}: address type {atype!r}")
        command = conn.receive_data(head + rest)
    except SOCKSError as exc:
        raise ProxyError(f"invalid reply from {what}: {exc}") from exc
    if not isinstance(command, socks5.SOCKS5Reply):  # Defensive: the state machine's order
        raise ProxyError(f"unexpected reply from {what}: {command!r}")
    if command.reply_code != socks5.SOCKS5ReplyCode.SUCCEEDED:
        reason = command.reply_code.name.lower().replace("_", " ")
        raise ProxyError(f"{what} could not connect to {origin.host}:{origin.port}: {reason}")
    reader.check_drained()


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> str:
    """The first address of `host` (socks5://: names are resolved here, not by the proxy)."""
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"could not resolve {host!r}: {exc}") from exc
    if not infos:  # Defensive: getaddrinfo raises rather than return nothing
        raise ConnectError(f"could not resolve {host!r}")
    return str(infos[0][4][0])
