"""The network seam: dialing TCP/TLS and a byte stream over an asyncio Protocol.

Why a Protocol and not anyio streams: measured on loopback nginx, h11 over anyio's streams tops out
near 10.3k req/s where the same h11 loop over an asyncio Protocol does 16.7k. The Protocol also
gives two properties the pool relies on:

- the transport keeps reading while a socket sits idle, so a server closing it (FIN, RST, or an
  unsolicited "408 Request Timeout") is seen at once, through `on_idle_event`, without polling
  every pooled socket on every request (httpcore's cost);
- closing is synchronous (`transport.close()` / `abort()`), so a cancelled task can always release
  its socket without awaiting anything: no shielding needed, nothing to leak.

anyio keeps the structure (cancel scopes, timeouts around dials, task groups at shutdown).

`NetworkStream` is the interface the HTTP connections use; `MockStream` in the test suite and a
future trio backend plug in behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    TLSHandshakeTimeout,
    WriteError,
    WriteTimeout,
    seconds,
)
from ._resolver import Resolver, SystemResolver, is_ip_address

__all__ = (
    "HAPPY_EYEBALLS_DELAY",
    "READ_STALLED",
    "WRITE_STALLED",
    "AsyncioStream",
    "NetworkOptions",
    "NetworkStream",
    "SocketDialer",
    "SocketOption",
    "drop_inherited",
    "expire",
    "open_stream",
)

# What a read or write timeout says (with its seconds); the connection that was waiting adds the
# phase ("while reading the response body") and the client the method and origin: see
# `TimeoutException`. Both timeouts bound each wait, not the whole exchange, and say so.
READ_STALLED = "no bytes arrived for {} (the read timeout)"
WRITE_STALLED = "the peer accepted no bytes for {} (the write timeout)"

# Stop reading from the kernel when this much is buffered and unread (backpressure). asyncio's
# StreamReader pauses at 128 KiB (2 * its 64 KiB limit); we allow 256 KiB so a fast download is
# not paused and resumed on every loop iteration, while a slow consumer still bounds memory.
_READ_HIGH_WATER = 256 * 1024


# How long a TLS socket may take to finish its close_notify exchange after we close it.
_TLS_SHUTDOWN_TIMEOUT = 2.0


class NetworkStream(Protocol):
    """A connected byte stream. Reads and writes raise aiopool's exceptions only."""

    async def read(self, timeout: float | None) -> bytes:
        """Return the next bytes available, or b"" at a clean EOF. Raises ReadError/ReadTimeout."""
        ...

    def write_nowait(self, data: bytes) -> None:
        """Queue `data` for sending without waiting. Raises WriteError if the socket is gone."""
        ...

    async def drain(self, timeout: float | None) -> None:
        """Wait until the kernel accepts what was queued. Raises WriteError/WriteTimeout."""
        ...

    def close(self) -> None:
        """Close now (TLS close_notify is sent in the background). Idempotent, never raises."""
        ...

    def abort(self) -> None:
        """Close at once, discarding anything unsent. Idempotent, never raises."""
        ...

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to `timeout` for a `close()` to complete (TLS close_notify), then abort."""
        ...

    @property
    def closed(self) -> bool:
        """True once the socket is really gone (a `close()` may still be finishing: TLS)."""
        ...

    def is_idle_clean(self) -> bool:
        """True if nothing arrived and nothing closed while we were not reading."""
        ...

    def set_idle_callback(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` (once) when data, EOF or a close arrives while nobody reads."""
        ...

    def extra(self, name: str) -> Any: ...

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> NetworkStream:
        """TLS over this stream (inside a proxy tunnel); use the returned stream from now on.

        Raises `ConnectError` (handshake or certificate failure) or `ConnectTimeout`.
        """
        ...


class _StreamProtocol(asyncio.Protocol):
    """Buffers incoming bytes and wakes at most one reader; tracks writability."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_drain_waiters",
        "_eof",
        "_exc",
        "_idle_callback",
        "_loop",
        "_lost_waiter",
        "_paused_reading",
        "_paused_writing",
        "_read_waiter",
        "closed",
        "transport",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        # Several HTTP/2 streams may wait for the same socket to drain.
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._paused_reading = False
        self._paused_writing = False
        self._idle_callback: Callable[[], None] | None = None
        self._lost_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.transport: asyncio.Transport | None = None

    # asyncio callbacks -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TLS transport is not an asyncio.Transport subclass,
        # though it has the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > _READ_HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return False  # let the transport close itself: we never half-close HTTP/1.1 reads

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._eof = True
        self._exc = exc
        self._wake_reader()
        self._wake_writers()
        waiter = self._lost_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self._idle_callback is not None:
            callback, self._idle_callback = self._idle_callback, None
            callback()


class AsyncioStream:
    """`NetworkStream` over an asyncio transport and `_StreamProtocol`."""

    __slots__ = ("_loop", "_proto", "_socket_transport", "_transport")

    def __init__(self, transport: asyncio.Transport, proto: _StreamProtocol) -> None:
        self._transport = transport
        self._socket_transport = _socket_transport(transport)
        self._proto = proto
        self._loop = proto._loop

    async def read(self, timeout: float | None) -> bytes:
        proto = self._proto
        if not proto._buffer:
            if proto._eof:
                return self._eof_result()
            waiter = self._loop.create_future()
            proto._read_waiter = waiter
            handle = (
                self._loop.call_at(
                    self._loop.time() + timeout, expire, waiter, ReadTimeout, READ_STALLED, timeout
                )
                if timeout is not None
                else None
            )
            try:
                await waiter
            finally:
                proto._read_waiter = None
                if handle is not None:
                    handle.cancel()
            if not proto._buffer:
                return self._eof_result()
        buffer = proto._buffer
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        proto._buffered = 0
        if proto._paused_reading:
            proto._paused_reading = False
            if not proto.closed:
                self._transport.resume_reading()
        return data

    def _eof_result(self) -> bytes:
        exc = self._proto._exc
        if exc is not None:
            raise ReadError(f"connection lost: {exc}") from exc
        return b""

    def write_nowait(self, data: bytes) -> None:
        if (
            self._proto.closed
            or self._transport.is_closing()
            or self._socket_transport.is_closing()
        ):
            exc = self._proto._exc
            raise WriteError(f"connection closed: {exc}" if exc else "connection closed")
        self._transport.write(data)

    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel (HTTP/2 bounds its answers on it).

        Under asyncio's TLS layer both buffers count: the TLS layer's, and the socket
        transport's below it, which holds what was already encrypted."""
        size = self._transport.get_write_buffer_size()
        below = self._socket_transport
        if below is not self._transport and isinstance(below, asyncio.WriteTransport):
            size += below.get_write_buffer_size()
        return size

    async def drain(self, timeout: float | None) -> None:
        proto = self._proto
        if not proto._paused_writing or proto.closed:
            return  # a close shows up at the next write or read, with its reason
        waiter = self._loop.create_future()
        proto._drain_waiters.append(waiter)
        handle = (
            self._loop.call_at(
                self._loop.time() + timeout, expire, waiter, WriteTimeout, WRITE_STALLED, timeout
            )
            if timeout is not None
            else None
        )
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
        if proto.closed:
            raise WriteError(f"connection lost while writing: {proto._exc}")

    def close(self) -> None:
        self._proto._idle_callback = None
        if not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._proto._idle_callback = None
        self._transport.abort()

    @property
    def closed(self) -> bool:
        return self._proto.closed

    async def wait_closed(self, timeout: float) -> None:
        proto = self._proto
        if proto.closed:
            return
        waiter = proto._lost_waiter = self._loop.create_future()
        handle = self._loop.call_later(timeout, _expire_quietly, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            if not proto.closed:
                self._transport.abort()  # the peer never answered our close_notify

    def is_idle_clean(self) -> bool:
        proto = self._proto
        return not proto._buffer and not proto._eof and not proto.closed

    def set_idle_callback(self, callback: Callable[[], None] | None) -> None:
        self._proto._idle_callback = callback

    def extra(self, name: str) -> Any:
        return self._transport.get_extra_info(name)

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> AsyncioStream:
        proto = self._proto
        # The protocol object stays; the loop slides a TLS layer between it and the socket
        # (or the proxy's TLS layer: TLS inside TLS works on asyncio since 3.11, and uvloop).
        target = f"{server_hostname} (through the proxy)"
        try:
            async with asyncio.timeout(timeout):
                transport = await self._loop.start_tls(
                    self._transport,
                    proto,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=(timeout or 60.0) + 1.0,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"TLS handshake with {target} not done within the connect timeout "
                f"({seconds(timeout)})"
            ) from None
        except ssl.SSLError as exc:  # (certificate failures too: their verify code is named)
            raise ConnectError(_describe_tls_error(exc, target)) from exc
        except OSError as exc:
            raise ConnectError(_describe_tls_close(exc, target)) from exc
        except RuntimeError as exc:  # the transport cannot do TLS
            raise ConnectError(f"TLS handshake with {target} failed: {_text(exc)}") from exc
        if transport is None:  # Defensive: the socket closed under the handshake
            raise ConnectError(f"connection to {target} closed during the TLS handshake")
        proto.transport = transport
        return AsyncioStream(transport, proto)


def _socket_transport(transport: asyncio.Transport) -> asyncio.BaseTransport:
    """The transport under asyncio's TLS layer (`transport` itself if there is none).

    When the socket fails (the peer reset it), the socket transport is closing at once, but
    the TLS transport above says so only a loop iteration or two later, once the loss has
    been passed up; every write meanwhile went down to the dead socket, and asyncio logs
    "socket.send() raised exception." from the sixth on. Asking the socket transport stops
    them at the first. (uvloop's TLS transport keeps its layers private: nothing to ask.)
    """
    ssl_protocol = getattr(transport, "_ssl_protocol", None)
    below = getattr(ssl_protocol, "_transport", None)
    return below if isinstance(below, asyncio.BaseTransport) else transport


def _expire_quietly(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def expire(
    waiter: asyncio.Future[None], exc_type: type[Exception], message: str, timeout: float
) -> None:
    """Timer callback: fail `waiter` with `exc_type(message.format(seconds(timeout)))` unless it
    already finished. (The text is made only when the timer fires: never on the hot path.)"""
    if not waiter.done():
        waiter.set_exception(exc_type(message.format(seconds(timeout))))


# TCP keep-alive on every socket (SO_KEEPALIVE), as Go's `net.Dialer` has done since Go 1.12
# (golang/go#23459, CL 107196: 15 s "chosen to cause broken connections to be closed after 2~3
# minutes"), with the values of its `KeepAliveConfig` defaults (Go 1.23): the first probe
# after 15 s of silence, then one every 15 s, and the connection declared dead after 9 unanswered
# probes (Linux's own `tcp_keepalive_probes`), so a peer that vanished without a FIN or RST
# (power loss, a NAT or firewall that dropped its state) is noticed after about 2.5 minutes
# instead of Linux's default 2 hours 11 minutes (7200 s idle, 9 probes 75 s apart). The probes
# also keep the socket's entry alive in middleboxes with short idle timeouts (AWS NAT gateways
# drop flows idle for 350 s, Azure's load balancer after 4 minutes by default) while it sits in
# the pool (`idle_timeout`, 90 s) or waits on a slow response. Probes cost a 40-byte segment per
# 15 s on an idle socket only. `socket_options` are applied after these, so
# `(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)` turns them off.
TCP_KEEPALIVE_IDLE = 15
TCP_KEEPALIVE_INTERVAL = 15
TCP_KEEPALIVE_COUNT = 9


def _keepalive_options() -> tuple[tuple[int, int, int], ...]:
    """The keep-alive options this platform has (macOS names the idle time TCP_KEEPALIVE)."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = getattr(socket, "TCP_KEEPIDLE", None) or getattr(socket, "TCP_KEEPALIVE", None)
    for name, value in (
        (idle, TCP_KEEPALIVE_IDLE),
        (getattr(socket, "TCP_KEEPINTVL", None), TCP_KEEPALIVE_INTERVAL),
        (getattr(socket, "TCP_KEEPCNT", None), TCP_KEEPALIVE_COUNT),
    ):
        if name is not None:
            options.append((socket.IPPROTO_TCP, name, value))
    return tuple(options)


_KEEPALIVE = _keepalive_options()

# RFC 8305 section 5 ("Connection Attempt Delay"): 250 ms between connection attempts, the
# RFC's recommended default, also asyncio's and Chrome's (Go waits 300 ms, `fallbackDelay`).
# Long enough that a healthy first address (most connections finish within a few round trips
# of well under 100 ms) answers before a second SYN is spent; short enough that a broken path
# costs a user a quarter of a second, not a TCP connect timeout of minutes. An attempt that
# fails sooner (a refusal, an unreachable network) starts the next one at once.
HAPPY_EYEBALLS_DELAY = 0.25

SocketOption = tuple[int, int, int | bytes]


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    """How sockets are made (one set per client; see `Client` for each option)."""

    uds: str | None = None
    local_address: str | None = None
    socket_options: tuple[SocketOption, ...] = ()
    resolver: Resolver | None = None
    happy_eyeballs_delay: float = HAPPY_EYEBALLS_DELAY


_DEFAULT_OPTIONS = NetworkOptions()
_SYSTEM_RESOLVER = SystemResolver()


class SocketDialer:
    """The default dialer (`aiopool.Dialer`), configured by the client's network options.

    Its call is `open_stream` with those options; it also takes the tracing callbacks
    (`on_connected`, `on_dns_start`, `on_dns_done`) the pool passes to a dialer it knows.
    """

    __slots__ = ("options",)

    def __init__(self, options: NetworkOptions = _DEFAULT_OPTIONS) -> None:
        self.options = options

    def __repr__(self) -> str:
        return f"<SocketDialer {self.options}>"

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
        on_connected: Callable[[], None] | None = None,
        on_dns_start: Callable[[str], None] | None = None,
        on_dns_done: Callable[[Sequence[str], BaseException | None], None] | None = None,
        tls_handshake_timeout: float | None = None,
    ) -> AsyncioStream:
        return await open_stream(
            host,
            port,
            ssl_context=ssl_context,
            server_hostname=server_hostname,
            timeout=timeout,
            on_connected=on_connected,
            on_dns_start=on_dns_start,
            on_dns_done=on_dns_done,
            network=self.options,
            tls_handshake_timeout=tls_handshake_timeout,
        )


async def open_stream(
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str | None,
    timeout: float | None,
    on_connected: Callable[[], None] | None = None,
    on_dns_start: Callable[[str], None] | None = None,
    on_dns_done: Callable[[Sequence[str], BaseException | None], None] | None = None,
    network: NetworkOptions = _DEFAULT_OPTIONS,
    tls_handshake_timeout: float | None = None,
) -> AsyncioStream:
    """Dial TCP (and TLS when `ssl_context` is given), or the unix socket `network.uds`.

    A host name is resolved by `network.resolver` (`on_dns_start` / `on_dns_done` report it),
    then its addresses are raced (`_race`, RFC 8305). Every TCP socket gets TCP_NODELAY, TCP
    keep-alive (`_KEEPALIVE`), then `network.socket_options`, and is bound to
    `network.local_address` when one is given.

    `on_connected` (tracing) is called once the socket is connected, before any TLS handshake:
    the dial then takes two steps (connect, then `start_tls`) so a trace can tell a refused
    connection from a failed handshake, and time each. Without it asyncio does TLS as it wraps
    the socket.

    `tls_handshake_timeout` (Go's `TLSHandshakeTimeout`) times the TLS handshake on its own (the
    dial then takes two steps too): `timeout` bounds resolution and connect, this the handshake.

    Raises `ConnectTimeout` past `timeout` (resolution, connect and handshake together, unless
    the handshake has its own limit: `TLSHandshakeTimeout` past that) and `ConnectError` for
    refusals, DNS failures, unusable options and TLS failures (certificate problems are named in
    the message). Cancellation closes every half-made socket.
    """
    loop = asyncio.get_running_loop()
    proto = _StreamProtocol(loop)
    split = ssl_context is not None and (
        on_connected is not None or tls_handshake_timeout is not None
    )
    tls_context = None if split else ssl_context
    connected: asyncio.BaseTransport | None = None  # a two-step dial's plain transport
    sock: socket.socket | None = None
    try:
        async with asyncio.timeout(timeout) as scope:
            if network.uds is not None:
                sock = await _connect_unix(loop, network)
            else:
                sock = await _connect_tcp(loop, host, port, network, on_dns_start, on_dns_done)
            transport, _ = await loop.create_connection(
                lambda: proto,
                sock=sock,
                ssl=tls_context,
                server_hostname=server_hostname if tls_context is not None else None,
                # The overall deadline above bounds the handshake; asyncio's own default is 60 s.
                ssl_handshake_timeout=None if tls_context is None else (timeout or 60.0) + 1.0,
                # After our close_notify, wait this long for the server's before aborting
                # (asyncio's default, 30 s, keeps dead sockets around far too long).
                ssl_shutdown_timeout=None if tls_context is None else _TLS_SHUTDOWN_TIMEOUT,
            )
            sock = None  # the transport's now (and closed by it on failure)
            if split or on_connected is not None:
                connected = transport
            if on_connected is not None:
                on_connected()
            if split:
                assert ssl_context is not None
                if tls_handshake_timeout is not None:
                    scope.reschedule(loop.time() + tls_handshake_timeout)
                upgraded = await loop.start_tls(
                    transport,
                    proto,
                    ssl_context,
                    server_hostname=server_hostname,
                    ssl_handshake_timeout=(tls_handshake_timeout or timeout or 60.0) + 1.0,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
                )
                if upgraded is None:  # Defensive: the socket closed under the handshake
                    raise ConnectionResetError("connection closed during the TLS handshake")
                # (The protocol object stays; asyncio slid a TLS layer under it.)
                transport = proto.transport = upgraded
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if connected is not None:
            cast(asyncio.Transport, connected).abort()  # (idempotent)
        target = f"{host}:{port}" if network.uds is None else f"the unix socket {network.uds}"
        if isinstance(exc, TimeoutError):
            # Which step hung. A one-step TLS dial (no tracing) cannot tell: asyncio reports
            # neither step apart.
            if ssl_context is None:
                step = "connect to"
            elif connected is not None:
                if tls_handshake_timeout is not None:
                    raise TLSHandshakeTimeout(
                        f"TLS handshake with {target} not done within the TLS handshake "
                        f"timeout ({seconds(tls_handshake_timeout)})"
                    ) from None
                step = "TLS handshake with"
            else:
                step = "connect and TLS handshake with" if not split else "connect to"
            if network.uds is None:
                step = step.replace("connect", "TCP connect")
            raise ConnectTimeout(
                f"{step} {target} not done within the connect timeout ({seconds(timeout)})"
            ) from None
        if isinstance(exc, ConnectError):
            raise
        if isinstance(exc, ssl.SSLError):
            raise ConnectError(_describe_tls_error(exc, target)) from exc
        if isinstance(exc, OSError):
            if ssl_context is not None and _closed_under_handshake(exc):
                raise ConnectError(_describe_tls_close(exc, target)) from exc
            raise ConnectError(_describe_os_error(exc, host, port)) from exc
        raise
    return AsyncioStream(transport, proto)


async def _connect_unix(loop: asyncio.AbstractEventLoop, network: NetworkOptions) -> socket.socket:
    """A socket connected to `network.uds`. Raises `ConnectError` naming the path."""
    path = network.uds
    assert path is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        for level, option, value in network.socket_options:
            sock.setsockopt(level, option, value)
        await loop.sock_connect(sock, path)
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise ConnectError(
                f"could not connect to the unix socket {path}: {_text(exc)}"
            ) from exc
        raise
    return sock


async def _connect_tcp(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    network: NetworkOptions,
    on_dns_start: Callable[[str], None] | None,
    on_dns_done: Callable[[Sequence[str], BaseException | None], None] | None,
) -> socket.socket:
    """Resolve `host` (unless it is an address) and race its addresses. Raises `ConnectError`."""
    if is_ip_address(host):
        addresses: Sequence[str] = (host,)  # no lookup, no DNS events (as Go)
    else:
        resolver = network.resolver or _SYSTEM_RESOLVER
        if on_dns_start is not None:
            on_dns_start(host)
        try:
            addresses = await resolver.resolve(host, port)
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, "the resolver gave no address")
        except BaseException as exc:
            error = exc
            if isinstance(exc, OSError):
                error = ConnectError(f"could not resolve {host!r}: {_text(exc)}")
                error.__cause__ = exc
            if on_dns_done is not None:
                on_dns_done((), error)
            if error is not exc:
                raise error from exc
            raise
        if on_dns_done is not None:
            on_dns_done(tuple(addresses), None)
    targets = _targets(host, port, addresses, network.local_address)
    return await _race(loop, host, port, targets, network)


# (family, sockaddr, "address:port" for messages)
_Target = tuple[int, Any, str]


def _targets(
    host: str, port: int, addresses: Sequence[str], local_address: str | None
) -> list[_Target]:
    """The addresses to try, in order: RFC 8305 section 4's interleaving of the resolver's
    order (which the system resolver sorts by RFC 6724: IPv6 first where it works), one
    address of the first family, one of the other, and so on ("First Address Family Count"
    of 1, the RFC's default). With a local address, only its family can be reached (Go filters
    the same way). Raises `ConnectError` when nothing is left, or an address is not one."""
    local_family = None
    if local_address is not None:
        local_family = _family(local_address, "local_address")
    first: list[_Target] = []
    second: list[_Target] = []
    for address in addresses:
        family = _family(address, f"the resolver's answer for {host!r}")
        if local_family is not None and family != local_family:
            continue
        text = f"[{address}]:{port}" if family == socket.AF_INET6 else f"{address}:{port}"
        if family == socket.AF_INET6:
            name, _, zone = address.partition("%")
            scope = 0
            if zone:
                scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
            sockaddr: Any = (name, port, 0, scope)
        else:
            sockaddr = (address, port)
        target = (family, sockaddr, text)
        if not first or first[0][0] == family:
            first.append(target)
        else:
            second.append(target)
    if not first:
        raise ConnectError(
            f"could not connect to {host}:{port}: none of its addresses {list(addresses)} is "
            f"of the local address's family ({local_address})"
        )
    ordered: list[_Target] = []
    for index in range(max(len(first), len(second))):
        ordered += first[index : index + 1] + second[index : index + 1]
    return ordered


def _family(address: str, what: str) -> int:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        raise ConnectError(f"{what}: {address!r} is not an IP address") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


async def _attempt(
    loop: asyncio.AbstractEventLoop, target: _Target, network: NetworkOptions
) -> socket.socket:
    """One connection attempt: a configured, bound socket connected to `target`."""
    family, sockaddr, _ = target
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # Set before connecting: asyncio sets TCP_NODELAY on its own sockets the same way.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for level, option, flag in _KEEPALIVE:
            sock.setsockopt(level, option, flag)
        for level, option, value in network.socket_options:
            sock.setsockopt(level, option, value)
        if network.local_address is not None:
            sock.bind((network.local_address.partition("%")[0], 0))
        await _sock_connect(loop, sock, sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def _sock_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any) -> None:
    """Connect the non-blocking `sock` to the numeric `address` (asyncio's `sock_connect`).

    Not `loop.sock_connect` itself: uvloop's passes even a numeric address through libuv's
    getaddrinfo, which starts libuv's thread pool, and a process with threads must not fork
    (the fork tests count them). Raises `OSError` (`ConnectionRefusedError`...) with the
    socket's error.
    """
    try:
        sock.connect(address)
        return
    except (BlockingIOError, InterruptedError):
        pass  # EINPROGRESS: wait until the socket is writable, then ask how it went
    fd = sock.fileno()
    done = loop.create_future()
    loop.add_writer(fd, _expire_quietly, done)
    try:
        await done
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        # (OSError picks the subclass from the errno: ConnectionRefusedError for ECONNREFUSED.)
        raise OSError(error, os.strerror(error))


async def _race(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    targets: list[_Target],
    network: NetworkOptions,
) -> socket.socket:
    """Happy Eyeballs (RFC 8305 section 5): start an attempt on the first address; start the
    next when the previous one failed or `happy_eyeballs_delay` passed without an answer,
    keeping the earlier ones running; the first to connect wins and the others are closed.

    Why our own race and not `create_connection(happy_eyeballs_delay=..., interleave=1)`:
    asyncio's does the same but resolves the name itself, so the resolver seam (and a DNS
    cache, and dns_* events) could not exist. Raises `ConnectError` naming every address
    that failed and why; on cancellation, no socket is left open.
    """
    if len(targets) == 1:  # (the usual case: no task, no timer)
        try:
            return await _attempt(loop, targets[0], network)
        except OSError as exc:
            raise ConnectError(_describe_os_error(exc, host, port)) from exc
    errors: list[tuple[str, BaseException]] = []
    running: dict[asyncio.Task[socket.socket], str] = {}
    try:
        for index, target in enumerate(targets):
            task = loop.create_task(_attempt(loop, target, network))
            running[task] = target[2]
            last = index == len(targets) - 1
            while running:
                done, _ = await asyncio.wait(
                    set(running),
                    timeout=None if last else network.happy_eyeballs_delay,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                winner = None
                for finished in done:
                    text = running.pop(finished)
                    failure = finished.exception()
                    if failure is not None:
                        errors.append((text, failure))
                    elif winner is None:
                        winner = finished.result()
                    else:
                        finished.result().close()  # two connected at once: keep one
                if winner is not None:
                    return winner
                if not last:
                    break  # the delay passed, or an attempt failed: start the next one now
        failures = "; ".join(f"{text}: {_text(exc)}" for text, exc in errors)
        raise ConnectError(
            f"could not connect to {host}:{port} at any of its {len(targets)} addresses "
            f"({failures})"
        ) from (errors[-1][1] if errors else None)
    finally:
        for task in running:  # the losers (or every attempt, on cancellation)
            task.cancel()
            task.add_done_callback(_close_connected)


def _close_connected(task: asyncio.Task[socket.socket]) -> None:
    # An attempt that connected after losing the race (or as the dial was cancelled).
    if not task.cancelled() and task.exception() is None:
        task.result().close()


def drop_inherited(stream: NetworkStream) -> None:
    """In a fork()ed child: close this process's copy of `stream`'s file descriptor, and only that.

    The socket itself stays the parent's. `close(2)` on a descriptor the parent still holds
    sends nothing (TCP sends its FIN when the last descriptor of the socket closes, and that is
    the parent's), while `shutdown(2)`, a TLS close_notify or any read would act on the
    connection the parent is using: none of them happens here. The transport and protocol
    objects are not touched either; the caller keeps them from ever being finalized (see
    `ConnectionPool._forget_parent`). A stream without a socket (a test double) is left alone.
    """
    sock = stream.extra("socket")
    if sock is None:
        return
    try:
        fd = sock.fileno()
        # The descriptor number must still be this connection: a child that daemonized closed
        # every inherited descriptor, and the number may name a file it opened since. A TCP
        # connection's two addresses (cached by the transport when it was made) identify it.
        ours = (
            fd >= 0
            and sock.getsockname() == stream.extra("sockname")
            and sock.getpeername() == stream.extra("peername")
        )
    except OSError:  # no longer a connected socket: not ours to close
        return
    if ours:
        with contextlib.suppress(OSError):  # Defensive: it was checked a moment ago
            os.close(fd)


def _describe_os_error(exc: OSError, host: str, port: int) -> str:
    if isinstance(exc, socket.gaierror):
        return f"could not resolve {host!r}: {_text(exc)}"
    if exc.errno == errno.ECONNREFUSED or isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{port}"
    return f"could not connect to {host}:{port}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    """What an exception says, never nothing: asyncio raises `ConnectionResetError()` bare."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# OpenSSL reasons that mean "no TLS version in common": the server stops below TLS 1.2.
_VERSION_REASONS = frozenset(
    {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
)
_VERSION_HINT = " (aiopool speaks TLS 1.2 and later only, RFC 8996; the server seems not to)"


def _describe_tls_error(exc: ssl.SSLError, target: str) -> str:
    """An `ssl.SSLError` as a message that says what failed: the verify code and message for a
    certificate (as `openssl verify` prints them), else OpenSSL's library and reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or _text(exc)
        return (
            f"TLS certificate verification failed for {target}: {detail} "
            f"(verify code {exc.verify_code})"
        )
    reason = exc.reason or _text(exc)
    library = f"{exc.library}: " if exc.library else ""
    hint = _VERSION_HINT if exc.reason in _VERSION_REASONS else ""
    return f"TLS handshake with {target} failed: {library}{reason}{hint}"


def _closed_under_handshake(exc: OSError) -> bool:
    """Whether `exc`, from a dial with TLS, is the server closing the connection: asyncio's
    TLS layer raises a bare `ConnectionResetError()` when the peer closes mid-handshake, and a
    reset or broken pipe comes only once TCP is up (a refused SYN is ECONNREFUSED)."""
    return isinstance(exc, ConnectionError) and not isinstance(exc, ConnectionRefusedError)


def _describe_tls_close(exc: OSError, target: str) -> str:
    if exc.errno is None and not str(exc):  # a close without a TLS alert
        what = "the server closed the connection without completing it"
    else:
        what = _text(exc)
    return (
        f"TLS handshake with {target} failed: {what}; the server may speak only versions "
        "older than TLS 1.2 (aiopool's minimum, RFC 8996), or no TLS on this port"
    )
