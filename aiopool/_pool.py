"""The async pool manager: leases connections to coroutines, dials, closes, expires idle sockets.

All decisions are made by `PoolState` (synchronous, no I/O); this layer waits, dials and closes.
Its rules:
- a request that finds an idle socket gets it without awaiting anything (the hot path);
- otherwise it waits on a future in its host's FIFO queue, with the pool timeout as a timer on
  that future (no extra task, no cancel scope);
- dials run as tasks owned by the pool, not by the request that caused them, so a cancelled
  request never kills a half-made connection that the next waiter could use (Go's behaviour);
  each is bounded by the connect timeout of the request it was started for;
- while an origin's sockets may be HTTP/2 (protocol unknown with h2 offered, or h2 with every
  socket full), one dial runs; a timer of `SLOW_HANDSHAKE` seconds per such dial lets further
  waiters dial in parallel once it has run that long (see `_pool_state` for what the extra
  sockets become);
- a request cancelled after a connection was handed to it gives the connection straight back;
- closing sockets is synchronous (see `_backend`), so no cleanup step ever needs shielding.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio

from ._backend import NetworkStream, SocketDialer, drop_inherited
from ._config import DEFAULT_HEAD_LIMITS, HeadLimits, Timeout
from ._connection import ConnState
from ._exceptions import AiopoolError, ClientClosed, ConnectError, PoolTimeout, seconds
from ._h1_codec import CodecFactory
from ._h1_connection import HTTP11Connection
from ._h1_h11 import H11Codec
from ._h2engine import H2Engine, select_engine
from ._http2 import HTTP2Connection
from ._pool_state import PoolState, Waiter
from ._proxy import forwarding
from ._resolver import is_ip_address
from ._stats import ConnInfo, PoolStats
from ._trace import TraceHook, Tracer, tracer_for
from ._tunnel import open_through_proxy

if TYPE_CHECKING:
    from ._connection import Connection
    from ._pool_state import HostPool
    from ._urls import Origin

__all__ = ("ConnectionPool", "Dialer")


class Dialer(Protocol):
    """Opens a connected `NetworkStream` (see `_backend.open_stream` for the contract).

    The default is a `_backend.SocketDialer` holding the client's network options (`uds=`,
    `local_address=`, `socket_options=`, `resolver=`): one dial path, whatever the options.
    """

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> NetworkStream: ...


# On shutdown, how long TLS sockets may take to exchange close_notify before being aborted.
_CLOSE_GRACE = 0.25

# In a fork()ed child, what its pools inherited from the parent: kept for the process's lifetime
# and never finalized (see `ConnectionPool._forget_parent`).
_INHERITED: list[object] = []

# How long a dial that runs alone because its socket may be HTTP/2 (the origin's protocol still
# unknown, or every h2 socket full) runs before the requests queued behind it dial in parallel.
# Chromium holds a job to a server it knows speaks HTTP/2 for 300 ms (`kHTTP2ThrottleMs`,
# crbug.com/718576) while another job's connection may bring a session; RFC 8305 (Happy
# Eyeballs) waits 250 ms before a second connection attempt. A TCP + TLS 1.3 handshake takes two
# round trips, so 300 ms lets one socket serve everyone from servers up to ~150 ms away before
# an extra socket is spent. (Go does not wait: every request dials, and the surplus h2 sockets
# are closed, "both kicking off TCP dials (since protocol was unknown)".)
SLOW_HANDSHAKE = 0.3


class ConnectionPool:
    """Connections to every origin of one client. Implements `ConnectionOwner`."""

    def __init__(
        self,
        *,
        max_connections: int | None,
        max_connections_per_host: int | None,
        max_idle_per_host: int,
        max_idle: int,
        idle_timeout: float,
        ssl_context: Callable[[], ssl.SSLContext],
        http1: bool = True,
        http2: bool = False,
        http2_ping_interval: float | None = None,
        http2_ping_timeout: float = 15.0,
        http1_codec: CodecFactory = H11Codec,
        http2_engine: H2Engine | None = None,
        trace: TraceHook | None = None,
        dialer: Dialer | None = None,
        head_limits: HeadLimits = DEFAULT_HEAD_LIMITS,
        proxy_ssl_context: Callable[[], ssl.SSLContext] | None = None,
        keepalive: bool = True,
    ) -> None:
        # For https:// proxies: the same verification as `ssl_context`, ALPN http/1.1 only.
        self._proxy_ssl_context = proxy_ssl_context or ssl_context
        self._head_limits = head_limits
        self._h2_engine = http2_engine or select_engine("auto")
        # The network seam: how sockets are made. Tests put a scripted byte stream here for
        # byte-exact protocol scenarios; everything above it is the real code.
        self._dialer: Dialer = dialer if dialer is not None else SocketDialer()
        self._http1 = http1
        self._http1_codec = http1_codec
        self._ping = (http2_ping_interval, http2_ping_timeout)
        self._http2 = http2
        self._state = PoolState(
            max_connections=max_connections,
            max_connections_per_host=max_connections_per_host,
            max_idle_per_host=max_idle_per_host,
            max_idle=max_idle,
            idle_timeout=idle_timeout,
            may_multiplex=self._may_multiplex,
            single_use=not keepalive,
        )
        self._ssl_context = ssl_context  # built on first use: plain-HTTP clients never pay for it
        self._trace = trace  # the client's hook
        # Waiters whose pool timeout passed while a dial in flight covered them: checked again
        # whenever a dial of their host ends (see `_expire_waiter`).
        self._overdue: dict[HostPool, list[tuple[Waiter, float]]] = {}
        # Sockets closed but perhaps still closing (TLS): `aclose()` waits for them too.
        self._closing: set[NetworkStream] = set()
        self._conn_ids = itertools.count(1)
        self._dials: set[asyncio.Task[None]] = set()
        self._readers: set[asyncio.Task[None]] = set()  # one per HTTP/2 socket
        self._sweeper: asyncio.TimerHandle | None = None
        self._h2_timers: dict[Connection, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()  # a fork()ed child starts afresh (see `_forget_parent`)

    def __repr__(self) -> str:
        s = self._state
        busy = sum(h.busy for h in s.hosts.values())
        waiting = sum(h.n_waiting for h in s.hosts.values())
        connecting = sum(h.connecting for h in s.hosts.values())
        return (
            f"<ConnectionPool [Requests: {busy} active, {waiting} queued | "
            f"Connections: {busy} active, {len(s.idle_lru)} idle, {connecting} connecting]>"
        )

    def _may_multiplex(self, origin: Origin) -> bool:
        if not self._http2:
            return False
        if forwarding(origin) is not None:
            return False  # requests forwarded to an HTTP proxy: HTTP/1.1 to the proxy
        return origin.scheme == "https" or not self._http1  # h2c only by prior knowledge

    @property
    def closed(self) -> bool:
        return self._state.closed

    def stats(self) -> PoolStats:
        self._check_fork()
        return self._state.snapshot()

    def note_response(self, origin: Origin, info: ConnInfo) -> None:
        """A request got its response head on the connection `info` describes."""
        self._state.note_response(origin, info.reused)

    def note_retry(self, origin: Origin, reason: str) -> None:
        """A request is being sent again; `reason` as in `PoolStats.retries`."""
        self._state.note_retry(origin, reason)

    # fork() ------------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._forget_parent()

    def _forget_parent(self) -> None:
        """This process is a fork()ed child of the one the pool was used in: start empty.

        A client made before a fork (gunicorn `--preload`, uWSGI, multiprocessing's "fork")
        holds the parent's sockets; a child using them would interleave its requests with the
        parent's on one connection, each reading the other's responses. So the child gets an
        empty pool, and dials its own sockets, as redis-py's `ConnectionPool` and pymongo do
        (SQLAlchemy documents the same, `engine.dispose(close=False)`). Refusing with an error
        was the other choice; it would only make every such application write this reset.

        The child must never act on an inherited socket: it closes its copies of their file
        descriptors, which sends nothing (`_backend.drop_inherited`), and nothing else. Their
        transports, the parent's dial and reader tasks, timers and event loop are kept in
        `_INHERITED` and never finalized: asyncio's finalizers warn and close a descriptor
        number the child may have reused by then; uvloop's call into the parent's libuv loop,
        whose epoll instance the child shares with the parent (the tests see both without
        `_INHERITED`). The pool's loop binding goes too: a child runs its own event loop.

        Detected by a pid check where the pool is entered (`acquire`, `stats`, shutdown), not
        by `os.register_at_fork`: workers forked from C (uWSGI, without
        `py-call-osafterfork`) never run those hooks. The check costs one `getpid()`, about
        0.2 us, per request.
        """
        old = self._state
        for conn in old.conns:
            # (Connections do not expose their stream; every kind keeps it as `_stream`.)
            stream = getattr(conn, "_stream", None)
            if stream is not None:
                drop_inherited(stream)
        _INHERITED.append(
            (old, self._dials, self._readers, self._sweeper, self._h2_timers, self._loop)
        )
        self._state = PoolState(
            max_connections=old.max_connections,
            max_connections_per_host=old.max_per_host,
            max_idle_per_host=old.max_idle_per_host,
            max_idle=old.max_idle,
            idle_timeout=old.idle_timeout,
            may_multiplex=self._may_multiplex,
            single_use=old.single_use,
        )
        self._state.closed = old.closed
        self._dials = set()
        self._readers = set()
        self._sweeper = None
        self._h2_timers = {}
        self._loop = None
        self._pid = os.getpid()

    # Leasing -----------------------------------------------------------------------------------

    async def acquire(
        self,
        origin: Origin,
        timeout: Timeout,
        *,
        fresh: bool = False,
        count: bool = True,
        tracer: Tracer | None = None,
    ) -> tuple[Connection, ConnInfo]:
        """Lease a connection to `origin`; `tracer` gets `get_conn`, `got_conn` and the events
        of a dial this request's wait starts.

        Raises `PoolTimeout` after `timeout.pool` seconds of waiting, the dial's `ConnectError` /
        `ConnectTimeout` when the dial made for this request failed, `ClientClosed` once closed.
        On cancellation nothing is leaked: the waiter leaves the queue, and a connection handed
        over in the meantime goes back to the pool. In a fork()ed child, the pool first forgets
        what it inherited (`_forget_parent`).
        """
        if self._pid != os.getpid():  # (inline: the hot path)
            self._forget_parent()
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        elif asyncio.get_running_loop() is not loop:
            # Sockets, futures and timers belong to the loop they were made on; from another
            # one asyncio fails obscurely ("attached to a different loop", "loop is closed").
            # Common with a client kept across tests that each run their own loop.
            raise RuntimeError(
                "this aiopool.Client was first used on another event loop: a client (its "
                "sockets and waiters) belongs to one loop; create one client per loop"
            )
        state = self._state
        now = loop.time()
        if tracer is not None:
            tracer("get_conn", origin, None, host_port=f"{origin.host}:{origin.port}")
        got = state.checkout(
            origin, None, now, connect_timeout=timeout.connect, fresh=fresh, count=count
        )
        if not isinstance(got, Waiter):
            self._apply("stale_idle")  # idle sockets found expired or unusable on the way
            if got.multiplexed:
                # As Go's HTTP/2 `GotConnInfo`: reused unless this is the socket's first stream
                # (`requests` counts the one just reserved); was idle if no other stream is
                # open on it now.
                reused = got.requests > 1
                if reused and got.open_streams == 1:
                    info = ConnInfo(got.id, True, True, now - got.idle_since, got.http_version)
                else:
                    info = ConnInfo(got.id, reused, False, 0.0, got.http_version)
            else:
                info = ConnInfo(got.id, True, True, now - got.idle_since, got.http_version)
            if tracer is not None:
                _trace_got_conn(tracer, got, info)
            return got, info
        got.tracer = tracer  # (before `_apply` starts the dial this wait may call for)
        got.tls_timeout = timeout.tls_handshake
        self._apply("stale_idle")
        conn = await self._wait(got, timeout.pool)
        info = ConnInfo(conn.id, got.reused, False, 0.0, conn.http_version)
        if tracer is not None:
            _trace_got_conn(tracer, conn, info)
        return conn, info

    async def _wait(self, waiter: Waiter, pool_timeout: float | None) -> Connection:
        fut = waiter.fut
        handle = (
            self._loop.call_later(pool_timeout, self._expire_waiter, waiter, pool_timeout)  # type: ignore[union-attr]
            if pool_timeout is not None
            else None
        )
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # Handed a connection (or an h2 stream slot) just as we were cancelled: give it
                # straight back, unused.
                conn = fut.result()
                if conn.multiplexed:
                    conn.unreserve()
                self.release(conn)
            else:
                self._state.abandon(waiter)
                self._apply("error")
            raise
        finally:
            if handle is not None:
                handle.cancel()

    def _expire_waiter(self, waiter: Waiter, pool_timeout: float) -> None:
        if waiter.live and not waiter.fut.done():
            if self._state.awaits_a_dial(waiter):
                # The request is no longer waiting for the pool but for a dial that will serve
                # it: that dial's connect timeout decides (`ConnectTimeout`), as if it had
                # dialed itself (httpcore's rule), and with `connect=None` the dial may take
                # as long as it takes (httpx's own transport too). Otherwise equal pool and
                # connect timeouts (httpx's default Timeout(5)) would report a hanging
                # handshake as a `PoolTimeout`. A dial can end without serving the waiter
                # it covered (an h2 socket with no stream to spare), so the waiter is checked
                # again when a dial of its host ends: never left waiting uncovered.
                self._overdue.setdefault(waiter.host, []).append((waiter, pool_timeout))
                return
            self._time_out(waiter, pool_timeout)

    def _time_out(self, waiter: Waiter, pool_timeout: float) -> None:
        self._state.abandon(waiter)
        waiter.fut.set_exception(
            PoolTimeout(
                f"no connection to {waiter.host.key} became available within the pool "
                f"timeout ({seconds(pool_timeout)})"
            )
        )

    def _recheck_overdue(self, host: HostPool) -> None:
        """A dial of `host` ended: time out overdue waiters no dial in flight covers now.
        (At most as many as dials were in flight: each check walks as many waiters.)"""
        overdue = self._overdue.pop(host, None)
        if overdue is None:
            return
        still = []
        for waiter, pool_timeout in overdue:
            if not waiter.live or waiter.fut.done():
                continue
            if self._state.awaits_a_dial(waiter):
                still.append((waiter, pool_timeout))
            else:
                self._time_out(waiter, pool_timeout)
        if still:
            self._overdue[host] = still

    # ConnectionOwner ---------------------------------------------------------------------------

    def release(self, conn: Connection) -> None:
        """A request finished cleanly with `conn` (synchronous; safe in any cancelled task)."""
        state = self._state
        state.checkin(conn, self._loop.time() if self._loop else 0.0)
        # Closed now: older idle sockets over a cap, or this one (unfit, or over the cap).
        self._apply("idle_limit", conn)
        self._watch_idle(conn)

    def capacity_changed(self, conn: Connection) -> None:
        """An HTTP/2 peer changed its stream limit or sent GOAWAY (synchronous)."""
        state = self._state
        state.capacity_changed(conn, self._loop.time() if self._loop else 0.0)
        self._apply("goaway")  # a draining HTTP/2 socket with no streams left

    def discard(self, conn: Connection, reason: str = "error") -> None:
        """`conn` closed or broke, or must close (synchronous; idempotent). `reason` is for
        the `conn_closed` trace event."""
        state = self._state
        was_open = conn.state is not ConnState.CLOSED
        state.discard(conn)
        self._drop_h2_timer(conn)
        if was_open and conn not in state.to_close:  # it closed itself: `_apply` won't see it
            self._trace_closed((conn,), reason)
            if conn.closed:
                self._note_closing(conn)
        self._apply(reason)

    # Effects -----------------------------------------------------------------------------------

    def _apply(self, reason: str, released: Connection | None = None) -> None:
        """Act on what the last state change asked for: close these, dial for those.

        `reason` says why sockets were closed, for the `conn_closed` trace event; `released`,
        if among them, may have been closed for being unfit instead ("not_reusable")."""
        state = self._state
        if not (state.to_close or state.to_dial):
            return
        if state.to_close:
            to_close, state.to_close = state.to_close, []
            if released is not None and released in to_close:
                to_close.remove(released)
                unfit = not released.is_reusable()  # (asked before it is closed)
                self._close(released)
                self._drop_h2_timer(released)
                why = reason
                if unfit:  # (an HTTP/2 socket is unfit only once it drains after a GOAWAY)
                    why = "goaway" if released.multiplexed else "not_reusable"
                self._trace_closed((released,), why)
            for closing in to_close:
                self._close(closing)
                self._drop_h2_timer(closing)
            self._trace_closed(to_close, reason)
        if state.to_dial:
            to_dial, state.to_dial = state.to_dial, []
            assert self._loop is not None
            for host, waiter in to_dial:
                task = self._loop.create_task(self._dial(host, waiter))
                self._dials.add(task)
                task.add_done_callback(self._dials.discard)

    def _close(self, conn: Connection) -> None:
        conn.close()
        self._note_closing(conn)

    def _note_closing(self, conn: Connection) -> None:
        """`conn` was closed, but a TLS socket takes a while to finish (close_notify): keep its
        socket until then, so `aclose()` can wait for it (or abort it) and no socket outlives
        the client. Only the socket is kept, not the connection and its protocol state; pruned
        as the set grows, so a long-lived client keeps about as many as are still closing."""
        closing = self._closing
        if len(closing) >= 64:
            for done in [s for s in closing if s.closed]:
                closing.discard(done)
        stream = conn.network_stream
        if not stream.closed:
            closing.add(stream)

    async def _dial(self, host: HostPool, waiter: Waiter | None) -> None:
        """Dial for `waiter` (its connect timeout and tracer; the socket goes to whoever the
        books say), timing it while it runs alone (see `SLOW_HANDSHAKE`)."""
        assert self._loop is not None
        slow = None
        if host.may_multiplex and host.alpn != "http/1.1" and not host.dial_is_slow:
            slow = self._loop.call_later(SLOW_HANDSHAKE, self._dial_slow, host)
        if waiter is not None:
            timeout = waiter.connect_timeout
            tracer = waiter.tracer if waiter.tracer is not None else tracer_for(self._trace, None)
        else:
            timeout, tracer = None, tracer_for(self._trace, None)
        try:
            await self._open(host, waiter, timeout, tracer)
        finally:
            if slow is not None:
                slow.cancel()
            self._recheck_overdue(host)

    def _dial_slow(self, host: HostPool) -> None:
        self._state.dial_slow(host)
        self._apply("error")  # (only dials: nothing is closed here)

    async def _open(
        self,
        host: HostPool,
        waiter: Waiter | None,
        timeout: float | None,
        tracer: Tracer | None,
    ) -> None:
        origin = host.key
        state = self._state
        tls = origin.scheme == "https"
        # The socket's number, taken once TCP is connected (so a refused dial takes none).
        conn_id: int | None = None
        # Through a proxy, the socket goes to the proxy: its address is what is dialed (Go's
        # ConnectStart reports the proxy's address too); over a unix socket, its path.
        dialed = origin.proxy or origin
        dialer = self._dialer
        uds = dialer.options.uds if isinstance(dialer, SocketDialer) else None
        network, addr = ("tcp", f"{dialed.host}:{dialed.port}") if uds is None else ("unix", uds)
        # The real dialer, direct, resolves the name itself and reports it (dns_start, dns_done)
        # before connecting, as Go's trace orders them: connect_start follows dns_done then.
        own_dial = origin.proxy is None and isinstance(dialer, SocketDialer)
        resolves = own_dial and uds is None and not is_ip_address(origin.host)
        connect_started = False
        on_connected: Callable[[], None] | None = None
        if tracer is not None:
            if not resolves:
                tracer("connect_start", origin, None, network=network, addr=addr)
                connect_started = True

            def on_connected() -> None:
                nonlocal conn_id
                conn_id = next(self._conn_ids)
                tracer("connect_done", origin, conn_id, network=network, addr=addr, error=None)
                if tls:
                    tracer("tls_handshake_start", origin, conn_id, server_name=origin.host)

        stream: NetworkStream
        tls_timeout = waiter.tls_timeout if waiter is not None and tls else None
        try:
            if own_dial:
                # The real dialer: traced, it reports DNS, and TCP before TLS (a test's
                # scripted dialer need not: its connect_done comes when it returns); with a
                # TLS handshake timeout, it times the handshake apart from the connect.
                assert isinstance(dialer, SocketDialer)
                on_dns_start: Callable[[str], None] | None = None
                on_dns_done: Callable[[Sequence[str], BaseException | None], None] | None = None
                if tracer is not None:

                    def on_dns_start(name: str) -> None:
                        tracer("dns_start", origin, None, host=name)

                    def on_dns_done(addrs: Sequence[str], error: BaseException | None) -> None:
                        nonlocal connect_started
                        tracer("dns_done", origin, None, host=origin.host, addrs=addrs, error=error)
                        if error is None:
                            tracer("connect_start", origin, None, network=network, addr=addr)
                            connect_started = True

                stream = await dialer(
                    origin.host,
                    origin.port,
                    ssl_context=self._ssl_context() if tls else None,
                    server_hostname=origin.host,
                    timeout=timeout,
                    on_connected=on_connected,
                    on_dns_start=on_dns_start,
                    on_dns_done=on_dns_done,
                    tls_handshake_timeout=tls_timeout,
                )
            elif origin.proxy is None:
                stream = await self._dialer(
                    origin.host,
                    origin.port,
                    ssl_context=self._ssl_context() if tls else None,
                    server_hostname=origin.host,
                    timeout=timeout,
                )
            else:
                stream = await open_through_proxy(
                    self._dialer,
                    origin,
                    ssl_context=self._ssl_context,
                    proxy_ssl_context=self._proxy_ssl_context,
                    timeout=timeout,
                )
        except BaseException as exc:
            error = _dial_error(exc, f"could not connect to {origin}")
            state.dial_failed(host, error, waiter)
            self._apply("error")
            if tracer is not None:
                if conn_id is None:  # TCP itself failed (or DNS: dns_done said so)
                    if connect_started:
                        tracer(
                            "connect_done", origin, None, network=network, addr=addr, error=error
                        )
                elif tls:
                    tracer(
                        "tls_handshake_done",
                        origin,
                        conn_id,
                        version=None,
                        cipher=None,
                        alpn=None,
                        error=error,
                    )
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        ssl_object = stream.extra("ssl_object") if tls else None
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if conn_id is None:  # a dialer that does not report TCP separately (a proxy tunnel)
            conn_id = next(self._conn_ids)
            if tracer is not None:
                tracer("connect_done", origin, conn_id, network=network, addr=addr, error=None)
        if tracer is not None and tls:
            tracer(
                "tls_handshake_done",
                origin,
                conn_id,
                version=ssl_object.version() if ssl_object else None,
                cipher=ssl_object.cipher()[0] if ssl_object else None,
                alpn=alpn,
                error=None,
            )
        conn: Connection
        if alpn == "h2" or (not tls and self._may_multiplex(origin)):
            try:
                h2conn = HTTP2Connection(
                    stream,
                    origin,
                    self,
                    conn_id=conn_id,
                    ping_interval=self._ping[0],
                    ping_timeout=self._ping[1],
                    engine=self._h2_engine,
                    limits=self._head_limits,
                )
                reader = await h2conn.start(timeout)
            # No SETTINGS from the server, or the socket died (or, a bug, the connection could
            # not be made: the waiter gets the error rather than a dial that never ends).
            except BaseException as exc:
                stream.abort()
                error = _dial_error(exc, f"HTTP/2 preface with {origin} failed")
                state.dial_failed(host, error, waiter)
                self._apply("error")
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            conn = h2conn
        elif not self._http1:
            stream.abort()
            error = ConnectError(f"{origin} did not negotiate HTTP/2 (ALPN: {alpn!r})")
            state.dial_failed(host, error, waiter)
            self._apply("error")
            return
        else:
            h1conn = HTTP11Connection(
                stream,
                origin,
                self,
                conn_id=conn_id,
                limits=self._head_limits,
                codec=self._http1_codec,
            )
            # The server closed an idle socket, or sent something unsolicited (such as a 408):
            # either way it must leave the idle stack at once and never be handed out.
            h1conn.on_idle_event = functools.partial(self.discard, h1conn, "peer_closed_idle")
            conn = h1conn
        assert self._loop is not None
        state.dial_succeeded(host, conn, self._loop.time())
        if state.closed:
            reason = "client_closed"  # closed during the dial
        elif conn.state is ConnState.CLOSED:
            # An extra h2 socket nobody needs (see `_pool_state`), or an unfit HTTP/1.1 one.
            reason = "surplus" if conn.multiplexed else "not_reusable"
        else:
            reason = "idle_limit"  # gone idle, pushing an older idle socket over a cap
        self._apply(reason)
        self._watch_idle(conn)

    # Idle expiry -------------------------------------------------------------------------------

    def _watch_idle(self, conn: Connection) -> None:
        """`conn` may have just gone idle: make sure a timer will expire it."""
        if conn.state is ConnState.IDLE:
            if self._sweeper is None:
                self._schedule_sweep(conn.idle_since + self._state.idle_timeout)
        elif conn.multiplexed and conn.open_streams == 0:
            self._watch_h2_idle(conn)

    def _schedule_sweep(self, when: float) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_at(when, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        assert self._loop is not None
        next_deadline = self._state.expire_idle(self._loop.time())
        self._apply("idle_timeout")
        if next_deadline is not None:
            self._schedule_sweep(next_deadline)

    def _watch_h2_idle(self, conn: Connection) -> None:
        # One timer per HTTP/2 socket, re-armed only when it fires: streams coming and going
        # cost nothing here. None for a socket already closed (its last stream may end after
        # the GOAWAY that retired it): see `_drop_h2_timer`.
        if conn not in self._h2_timers and not conn.closed and conn.state is not ConnState.CLOSED:
            assert self._loop is not None
            when = conn.idle_since + self._state.idle_timeout
            self._h2_timers[conn] = self._loop.call_at(when, self._check_h2_idle, conn)

    def _drop_h2_timer(self, conn: Connection) -> None:
        # A closed socket's idle timer would keep it, and all its HTTP/2 state, alive until
        # idle_timeout: against a server that retires connections after N streams (nginx's
        # keepalive_requests), a long-lived client held every retired socket for 90 s (the
        # soak measured ~230 objects, ~27 KiB, per socket).
        handle = self._h2_timers.pop(conn, None)
        if handle is not None:
            handle.cancel()

    def _check_h2_idle(self, conn: Connection) -> None:
        del self._h2_timers[conn]
        if conn.state is not ConnState.ACTIVE or conn.open_streams:
            return
        assert self._loop is not None
        if self._loop.time() - conn.idle_since >= self._state.idle_timeout:
            self.discard(conn, "idle_timeout")  # the pool closes it
        else:
            self._watch_h2_idle(conn)

    # Shutdown ----------------------------------------------------------------------------------

    @property
    def has_connections(self) -> bool:
        self._check_fork()  # (a child's client, garbage-collected, must not close the parent's)
        return bool(self._state.conns) or bool(self._dials)

    def _shut(self) -> tuple[list[Connection], list[asyncio.Task[None]]]:
        """Stop timers, close the books and every socket, cancel dials and h2 readers.

        Synchronous; returns the closed connections and cancelled tasks, to await if wanted.
        In a fork()ed child only what the child itself opened is closed (`_forget_parent`).
        """
        self._check_fork()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for handle in self._h2_timers.values():
            handle.cancel()
        self._h2_timers.clear()
        self._overdue.clear()
        conns = self._state.close()
        for conn in conns:
            conn.shut_down()
        tasks = [*self._dials, *self._readers]
        for task in tasks:
            task.cancel()
        return conns, tasks

    async def close_idle_connections(self) -> None:
        """Close every idle socket; leave those in use, and dials, alone (see
        `PoolState.close_idle`). TLS sockets get `_CLOSE_GRACE` to exchange close_notify, then
        are aborted. The pool stays open. Does nothing once closed."""
        self._check_fork()
        state = self._state
        if state.closed:
            return
        state.close_idle()
        closing = list(state.to_close)
        self._apply("closed_idle")
        if closing:
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*(c.wait_closed(_CLOSE_GRACE) for c in closing))

    def close_nowait(self) -> None:
        """Abort every socket and dial at once; for a client being garbage-collected."""
        self._shut()

    async def aclose(self) -> None:
        """Close every connection, fail waiters with `ClientClosed`, cancel dials in flight.

        TLS sockets get a short grace (`_CLOSE_GRACE`) to exchange close_notify, then are
        aborted: when this returns, no socket of the client is left open.
        """
        conns, dials = self._shut()
        self._trace_closed(conns, "client_closed")
        closing = [s for s in self._closing if not s.closed]
        self._closing.clear()
        with anyio.CancelScope(shield=True):
            if dials:
                await asyncio.gather(*dials, return_exceptions=True)
            # (Sockets closed before, a surplus h2 one say, may still be closing: TLS.)
            if conns or closing:
                waits = [c.wait_closed(_CLOSE_GRACE) for c in conns]
                waits += [s.wait_closed(_CLOSE_GRACE) for s in closing]
                await asyncio.gather(*waits)

    # Tracing -----------------------------------------------------------------------------------

    def _trace_closed(self, conns: Iterable[Connection], reason: str) -> None:
        tracer = tracer_for(self._trace, None)
        if tracer is not None:
            for conn in conns:
                tracer("conn_closed", conn.origin, conn.id, reason=reason)


def _trace_got_conn(tracer: Tracer, conn: Connection, info: ConnInfo) -> None:
    tracer(
        "got_conn",
        conn.origin,
        conn.id,
        reused=info.reused,
        was_idle=info.was_idle,
        idle_time=info.idle_time,
        http_version=info.http_version,
    )


def _dial_error(exc: BaseException, what: str) -> BaseException:
    """What the requests waiting on a failed dial see: our errors as they are, a cancelled dial
    (the client closing) as `ClientClosed`, anything else as `ConnectError`."""
    if isinstance(exc, asyncio.CancelledError):
        return ClientClosed("the client was closed while connecting")
    if isinstance(exc, AiopoolError):
        return exc
    error = ConnectError(f"{what}: {exc!r}")
    error.__cause__ = exc
    return error
