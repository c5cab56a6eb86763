"""Pool bookkeeping: plain synchronous code, no I/O, no awaits.

Every state change happens in one of the methods below, start to finish, with no await in between,
so a cancellation can never observe (or leave) a half-made change. What a change requires doing to
the outside world is *returned* through two lists, `to_close` (connections to close) and `to_dial`
(one more connection for a host, and the waiter it is started for), which the async layer
(`_pool.py`) acts on afterwards. This is
httpcore's `_assign_requests_to_connections()` shape, without its cost: every step is O(1)
(amortised), using per-host idle stacks and waiter queues rather than rescans of all connections.

Counting, per host:

    busy        sockets leased to requests (or reserved for a waiter)
    connecting  dials in flight
    idle        clean HTTP/1.1 sockets waiting for reuse (most recently used on top)

`max_connections_per_host` bounds busy + connecting + idle, i.e. every socket to the host, as Go's
`MaxConnsPerHost` does. `max_connections` bounds busy + connecting over all hosts (idle sockets
are bounded separately, by `max_idle_per_host` and `max_idle`).

A host's key is its `Origin`, which includes the proxy (and its credentials) the sockets go
through, so per-host limits mean "per target origin, per route". Go differs for plain HTTP
through an HTTP proxy: it pools those sockets per proxy, each one carrying requests for any
origin. We keep one meaning for the limits and the stats, at the cost of more sockets to the
proxy when a client talks plain HTTP to many origins through it.

A request that cannot be served from the idle stack becomes a `Waiter` in its host's FIFO queue.
Dials are started to cover waiters (never more dials than waiters); a dial does not belong to the
request that caused it: whichever connection turns up first (a fresh dial, or a socket released by
another request) goes to the longest waiter. That is Go's late binding; it is also what makes the
queue fair. A dial is nonetheless *started for* one waiter, the longest one no earlier dial was
started for: its connect timeout bounds the dial, and its tracer hears the dial's events (Go ties
a dial to the request whose wait queued it in the same way). One request's `Timeout.connect`
never decides a dial started for another.

Dials to an origin that may speak HTTP/2 (https with h2 offered, before the first ALPN answer;
or known h2 with every socket full): only one dial runs at a time, because if the server picks
h2 that one socket serves every waiter up to its stream limit (httpcore does the same). But a
stalled handshake must not serialise every request to the origin behind it, so once the pending
dial has run longer than a short delay (the async layer owns that timer and calls `dial_slow`),
waiters not covered by a dial get their own dials, within the caps, as for HTTP/1.1, until no
dial is in flight. What the extra sockets become once the protocol is known:
- HTTP/1.1: ordinary sockets, leased to the next waiter or pooled idle;
- h2: one that lands while another h2 socket to the origin still has a free stream is surplus
  and closed at once (Go's `addConnIfNeeded`: "two goroutines ... both kicking off TCP dials,
  since protocol was unknown"); one that lands while the others are full serves the waiters
  beyond them and stays, as a second socket would have been opened for them anyway.
Either way its connecting slot becomes the socket (or is freed): no lease or slot leaks.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._connection import ConnState
from ._exceptions import ClientClosed
from ._stats import HostStats, PoolStats

if TYPE_CHECKING:
    from ._connection import Connection
    from ._trace import Tracer
    from ._urls import Origin

__all__ = ("HostPool", "PoolState", "Waiter")


class Waiter:
    """A request waiting for a connection. `fut` resolves to the connection, or an error."""

    __slots__ = ("connect_timeout", "fut", "host", "live", "reused", "tls_timeout", "tracer")

    def __init__(
        self,
        host: HostPool,
        fut: asyncio.Future[Connection],
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.fut = fut
        self.live = True  # still wants a connection: not served, cancelled nor timed out
        self.reused = False  # whether the connection it was handed had carried a request
        # A dial started for this waiter is bounded by its connect timeout, and its events go
        # to its `Tracer` (set by the pool), whoever ends up with the socket.
        self.connect_timeout = connect_timeout
        self.tracer: Tracer | None = None
        # ...and its TLS handshake by this one when set (`Timeout.tls_handshake`, by the pool).
        self.tls_timeout: float | None = None


# The books of origins with nothing open, connecting or waiting are kept (for `stats()` and the
# protocol learned), but only this many, least recently used dropped first: a crawler over
# millions of origins must not grow the pool without bound. A dropped origin starts afresh.
MAX_EMPTY_HOSTS = 1024


class HostPool:
    """The books for one origin."""

    __slots__ = (
        "alpn",
        "blocked",
        "busy",
        "connecting",
        "dial_is_slow",
        "h2",
        "idle",
        "key",
        "may_multiplex",
        "n_waiting",
        "opened",
        "requests",
        "retries",
        "reused",
        "undialed",
        "waiters",
    )

    def __init__(self, key: Origin, may_multiplex: bool = False) -> None:
        self.key = key
        # Could this origin speak HTTP/2 (https with h2 offered, or h2c by prior knowledge)?
        # Until the first socket says (`alpn`), only one dial runs, as httpcore does: if the
        # answer is h2, that one socket serves every waiter (and with h2, a second socket is
        # dialed only once the first is full, one at a time). Unless that dial is slow
        # (`dial_is_slow`, see the module docstring): then waiters get dials of their own.
        self.may_multiplex = may_multiplex
        self.alpn: str | None = None  # "h2" or "http/1.1" once learned
        self.dial_is_slow = False
        self.h2: dict[Connection, None] = {}  # open HTTP/2 sockets (each counts as busy)
        self.idle: OrderedDict[Connection, None] = OrderedDict()  # MRU at the end
        self.waiters: deque[Waiter] = deque()  # may hold dead entries; n_waiting counts live
        # Waiters no dial was started for yet, FIFO (may hold dead and served entries): the
        # next dial is started for the first live one.
        self.undialed: deque[Waiter] = deque()
        self.n_waiting = 0
        self.busy = 0
        self.connecting = 0
        self.blocked = False  # queued in PoolState.blocked, waiting for a global slot
        self.opened = 0
        self.reused = 0
        self.requests = 0
        self.retries = 0

    @property
    def total(self) -> int:
        return self.busy + self.connecting + len(self.idle) + len(self.h2)

    def __repr__(self) -> str:
        return (
            f"<HostPool {self.key} [busy {self.busy}, idle {len(self.idle)}, "
            f"connecting {self.connecting}, waiting {self.n_waiting}]>"
        )


class PoolState:
    """All hosts' books, the global cap, the idle LRU, and the effect lists."""

    def __init__(
        self,
        *,
        max_connections: int | None,
        max_connections_per_host: int | None,
        max_idle_per_host: int,
        max_idle: int,
        idle_timeout: float,
        may_multiplex: Callable[[Origin], bool] | None = None,
        single_use: bool = False,
    ) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("max_connections_per_host", max_connections_per_host),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, not {value}")
        if max_idle_per_host < 0 or max_idle < 0:
            raise ValueError("idle limits must be >= 0")
        self.max_connections = max_connections
        self.max_per_host = max_connections_per_host
        self.max_idle_per_host = max_idle_per_host
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._may_multiplex = may_multiplex
        # HTTP keep-alive off (`Client(keepalive=False)`, Go's `DisableKeepAlives`): one request
        # per socket. HTTP/1.1 sockets close by `Connection: close` (the transport sends it);
        # an HTTP/2 socket takes no stream after its first and closes when it ends (Go's
        # `ClientConn.singleUse`).
        self.single_use = single_use
        self.hosts: dict[Origin, HostPool] = {}
        self.empty_hosts: OrderedDict[Origin, HostPool] = OrderedDict()  # LRU, oldest first
        self.conns: set[Connection] = set()  # every open connection, for shutdown
        self.idle_lru: OrderedDict[Connection, HostPool] = OrderedDict()  # oldest first
        self.blocked: deque[HostPool] = deque()  # hosts waiting for a global slot, FIFO
        self.busy_total = 0  # busy + connecting, all hosts: what max_connections bounds
        self.closed = False
        # Effects for the async layer.
        self.to_close: list[Connection] = []
        # One entry per dial to start: the host, and the waiter it is started for.
        self.to_dial: list[tuple[HostPool, Waiter | None]] = []
        # Lifetime counters (what each means: `PoolStats`).
        self.requests = 0
        self.opened = 0
        self.closed_count = 0
        self.reused = 0
        self.retries: dict[str, int] = {}

    # Leasing -----------------------------------------------------------------------------------

    def checkout(
        self,
        key: Origin,
        fut: asyncio.Future[Connection] | None,
        now: float,
        *,
        connect_timeout: float | None = None,
        fresh: bool = False,
        count: bool = True,
    ) -> Connection | Waiter:
        """Lease an idle connection for `key`, or queue a waiter (starting dials as allowed).

        With `fresh`, idle sockets are not handed out (they are suspect after a stale-socket
        failure); one is closed if it stands in the way of the per-host cap.
        `fut` is the future a waiter will resolve (created lazily when None).
        """
        if self.closed:
            raise ClientClosed("the client has been closed")
        host = self.hosts.get(key)
        if host is None:
            multiplex = self._may_multiplex is not None and self._may_multiplex(key)
            host = self.hosts[key] = HostPool(key, multiplex)
        elif self.empty_hosts:
            self.empty_hosts.pop(key, None)
        if count:
            host.requests += 1
            self.requests += 1
        for conn in host.h2:  # one or two sockets per origin: a scan is O(1) in practice
            if self._room(conn) > 0:
                conn.reserve()
                return conn
        idle = host.idle
        if fresh:
            if idle and self.max_per_host is not None and host.total >= self.max_per_host:
                self._close_idle(host, idle.popitem(last=False)[0])
        else:
            while idle:
                conn = idle.popitem()[0]  # most recently used first
                del self.idle_lru[conn]
                if now - conn.idle_since >= self.idle_timeout or not conn.is_reusable():
                    self._close_popped_idle(host, conn)
                    continue
                conn.disarm_idle_watch()
                conn.state = ConnState.ACTIVE
                host.busy += 1
                self.busy_total += 1
                return conn
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
        waiter = Waiter(host, fut, connect_timeout)
        host.waiters.append(waiter)
        host.undialed.append(waiter)
        host.n_waiting += 1
        self._pump(host)
        return waiter

    def checkin(self, conn: Connection, now: float) -> None:
        """A busy connection finished a request cleanly: hand it to the longest waiter, or idle."""
        if conn.state is not ConnState.ACTIVE:
            return
        host = self.hosts[conn.origin]
        if conn.multiplexed:
            self.stream_released(host, conn, now)
            return
        if self.closed:
            self._drop_busy(host, conn)
            return
        waiter = self._next_waiter(host)
        if waiter is not None:
            waiter.reused = True
            waiter.fut.set_result(conn)  # late binding: stays busy, changes hands
            return
        host.busy -= 1
        self.busy_total -= 1
        self._make_idle(host, conn, now)
        self._pump_blocked()

    def discard(self, conn: Connection) -> None:
        """`conn` is closed or broken: take it off the books (idempotent)."""
        state = conn.state
        if state is ConnState.CLOSED:
            return
        host = self.hosts[conn.origin]
        if conn.multiplexed:
            del host.h2[conn]
            self.busy_total -= 1
            self._forget(conn)
            self.to_close.append(conn)
            self._pump(host)
            self._pump_blocked()
            self._note_if_empty(host)
            return
        if state is ConnState.IDLE:
            del host.idle[conn]
            del self.idle_lru[conn]
            self._close_popped_idle(host, conn)
        else:
            self._drop_busy(host, conn)
            return
        self._pump(host)

    def abandon(self, waiter: Waiter) -> None:
        """The waiting request was cancelled or timed out (idempotent)."""
        if not waiter.live:
            return
        waiter.live = False
        host = waiter.host
        host.n_waiting -= 1
        # Dead entries stay in the deque (O(1) removal) and are skipped when popped; compact
        # when they dominate so a storm of cancellations cannot grow it without bound.
        if len(host.waiters) > 2 * host.n_waiting + 64:
            host.waiters = deque(w for w in host.waiters if w.live)
        self._trim_undialed(host)
        self._note_if_empty(host)

    def note_response(self, key: Origin, reused: bool) -> None:
        """A request got its response head (on its last attempt): count it as reused or not.

        Counted here, once per request, rather than per lease: a request retried after a stale
        socket leases twice but gets one response (`PoolStats.reused`)."""
        if reused:
            self.reused += 1
            host = self.hosts.get(key)
            if host is not None:
                host.reused += 1

    def note_retry(self, key: Origin, reason: str) -> None:
        """A request is being sent again (`reason`: see `PoolStats.retries`)."""
        self.retries[reason] = self.retries.get(reason, 0) + 1
        host = self.hosts.get(key)
        if host is not None:
            host.retries += 1

    # HTTP/2 ------------------------------------------------------------------------------------

    def _room(self, conn: Connection) -> int:
        """How many more streams the HTTP/2 socket `conn` may be given."""
        if self.single_use and conn.requests:
            return 0
        return conn.capacity()

    def stream_released(self, host: HostPool, conn: Connection, now: float) -> None:
        """A stream of an HTTP/2 socket ended: its slot goes to the longest waiter."""
        if self.single_use or not conn.is_reusable():  # draining after GOAWAY, or closed
            if conn.open_streams == 0:
                self.discard(conn)
            return
        self._serve_from(host, conn)
        if conn.open_streams == 0:
            conn.idle_since = now

    def capacity_changed(self, conn: Connection, now: float) -> None:
        """The peer changed SETTINGS_MAX_CONCURRENT_STREAMS, or sent GOAWAY."""
        if conn.state is not ConnState.ACTIVE:
            return
        host = self.hosts[conn.origin]
        self.stream_released(host, conn, now)
        self._pump(host)  # a lowered limit or a GOAWAY may call for another socket

    def _serve_from(self, host: HostPool, conn: Connection) -> None:
        while self._room(conn) > 0:
            waiter = self._next_waiter(host)
            if waiter is None:
                return
            conn.reserve()
            if conn.requests > 1:  # (counting the stream just reserved)
                waiter.reused = True
            waiter.fut.set_result(conn)

    # Dialing -----------------------------------------------------------------------------------

    def dial_slow(self, host: HostPool) -> None:
        """A dial to `host`, run alone because its socket may be HTTP/2, has taken longer than
        the handshake delay: until no dial is in flight, waiters not covered by a dial get
        dials of their own, within the caps."""
        if host.alpn != "http/1.1" and host.connecting and not self.closed:
            host.dial_is_slow = True
            self._pump(host)

    def dial_succeeded(self, host: HostPool, conn: Connection, now: float) -> None:
        """A dial made `conn`: it goes to the longest waiter (h2: to as many as it takes), or
        idle; an h2 socket nobody needs while another has room is closed (`to_close`)."""
        host.connecting -= 1
        if not host.connecting:
            host.dial_is_slow = False  # the next dial gets its own delay before others join
        host.opened += 1
        self.opened += 1
        self.conns.add(conn)
        conn.state = ConnState.ACTIVE
        if conn.multiplexed:
            host.alpn = "h2"
            host.h2[conn] = None  # the connecting slot becomes this socket (busy_total same)
            if self.closed:
                self.discard(conn)
                return
            conn.idle_since = now
            self._serve_from(host, conn)
            if conn.open_streams == 0 and any(self._room(c) > 0 for c in host.h2 if c is not conn):
                # Surplus: dialed in parallel behind a slow dial, and another h2 socket can
                # take what comes (a few sockets per origin: the scan is O(1) in practice).
                self.discard(conn)
                return
            self._pump(host)
            return
        if host.may_multiplex:
            host.alpn = "http/1.1"
        host.busy += 1  # the connecting slot becomes a busy one (busy_total unchanged)
        if self.closed:
            self._drop_busy(host, conn)
            return
        waiter = self._next_waiter(host)
        if waiter is not None:
            waiter.fut.set_result(conn)
            self._pump(host)  # waiters held back while the protocol was unknown
            return
        host.busy -= 1
        self.busy_total -= 1
        self._make_idle(host, conn, now)
        self._pump_blocked()

    def dial_failed(
        self, host: HostPool, exc: BaseException, dialed_for: Waiter | None = None
    ) -> None:
        """A dial failed: its error goes to the request it was started for, `dialed_for`, if
        that still waits (without one, to the longest waiter); dials resume for the rest.

        Go's rule (`dialConnFor` delivers a dial's error to its own request only): a failure
        is bounded by that request's connect timeout, so it is that request's answer. Another
        request covered by the dial is covered again by the dial `_pump` starts now."""
        host.connecting -= 1
        self.busy_total -= 1
        if not host.connecting:
            host.dial_is_slow = False  # the next dial gets its own delay before others join
        if dialed_for is None:
            waiter = self._next_waiter(host)
        elif dialed_for.live and not dialed_for.fut.done():
            self.abandon(dialed_for)  # (it leaves the queue: O(1), skipped when popped)
            waiter = dialed_for
        else:
            waiter = None  # served meanwhile, or gone: nobody asked for this error
        if waiter is not None:
            waiter.fut.set_exception(exc)
        self._pump(host)
        self._pump_blocked()
        self._note_if_empty(host)

    # Idle expiry and shutdown ------------------------------------------------------------------

    def expire_idle(self, now: float) -> float | None:
        """Close idle sockets past `idle_timeout`; return when the next one expires (or None)."""
        lru = self.idle_lru
        while lru:
            conn = next(iter(lru))
            deadline = conn.idle_since + self.idle_timeout
            if deadline > now:
                return deadline
            host = lru.popitem(last=False)[1]
            del host.idle[conn]
            self._close_popped_idle(host, conn)
        return None

    def close_idle(self) -> None:
        """Close every idle socket (Go's `Transport.CloseIdleConnections`): the HTTP/1.1 idle
        stacks, and HTTP/2 sockets with no stream open or promised (`to_close`). Sockets in
        use, and dials in flight, are left alone. O(idle sockets + HTTP/2 sockets)."""
        lru = self.idle_lru
        while lru:
            conn, host = lru.popitem(last=False)
            del host.idle[conn]
            self._close_popped_idle(host, conn)
        for host in list(self.hosts.values()):
            if host.h2:
                for conn in [c for c in host.h2 if c.open_streams == 0]:
                    self.discard(conn)

    def close(self) -> list[Connection]:
        """Refuse new requests, fail waiters; return every open connection (for closing)."""
        self.closed = True
        exc = ClientClosed("the client was closed while this request waited for a connection")
        for host in self.hosts.values():
            while (waiter := self._next_waiter(host)) is not None:
                waiter.fut.set_exception(exc)
            for conn in host.idle:
                conn.disarm_idle_watch()
                conn.state = ConnState.CLOSED
            host.idle.clear()
            host.h2.clear()
        self.idle_lru.clear()
        conns = list(self.conns)
        self.closed_count += len(self.conns)
        for conn in conns:
            conn.state = ConnState.CLOSED
            self.hosts[conn.origin].busy = 0
        self.conns.clear()
        self.busy_total = sum(h.connecting for h in self.hosts.values())
        return conns

    # Introspection -----------------------------------------------------------------------------

    def snapshot(self) -> PoolStats:
        return PoolStats(
            requests=self.requests,
            connections_opened=self.opened,
            connections_closed=self.closed_count,
            reused=self.reused,
            hosts=self._hosts_by_name(),
            retries=dict(self.retries),
        )

    def _hosts_by_name(self) -> dict[str, HostStats]:
        hosts: dict[str, HostStats] = {}
        for key, h in self.hosts.items():
            name = str(key)
            if name in hosts:
                # Same origin and proxy, other proxy credentials (which str() never shows):
                # number the later ones rather than merge or hide them.
                n = 2
                while f"{name} #{n}" in hosts:
                    n += 1
                name = f"{name} #{n}"
            hosts[name] = self._host_stats(h)
        return hosts

    @staticmethod
    def _host_stats(h: HostPool) -> HostStats:
        streams = [c.open_streams for c in h.h2]
        busy_h2 = sum(1 for n in streams if n)
        return HostStats(
            active=h.busy + busy_h2,
            idle=len(h.idle) + len(streams) - busy_h2,
            connecting=h.connecting,
            waiting=h.n_waiting,
            opened=h.opened,
            reused=h.reused,
            requests=h.requests,
            streams=sum(streams),
            retries=h.retries,
        )

    # Internals ---------------------------------------------------------------------------------

    def awaits_a_dial(self, waiter: Waiter) -> bool:
        """Whether a dial in flight will serve `waiter`: each dial that succeeds goes to the
        longest live waiter, so the first `connecting` of them are covered. (A failed dial's
        error goes to its own request, which may stand behind `waiter`; the async layer checks
        an overdue waiter again whenever a dial ends.) Walks at most `connecting` live
        entries, plus dead ones the queue's compaction keeps bounded."""
        host = waiter.host
        ahead = host.connecting
        for queued in host.waiters:
            if ahead <= 0:
                return False
            if queued is waiter:
                return True
            if queued.live:
                ahead -= 1
        return False

    def _next_waiter(self, host: HostPool) -> Waiter | None:
        waiters = host.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.live:
                continue
            waiter.live = False
            host.n_waiting -= 1
            undialed = host.undialed
            if undialed and undialed[0] is waiter:  # served before a dial was started for it
                undialed.popleft()
            else:
                self._trim_undialed(host)
            if not waiter.fut.done():  # done = its task was cancelled and has not yet said so
                return waiter
        return None

    @staticmethod
    def _trim_undialed(host: HostPool) -> None:
        # Served and abandoned waiters leave `undialed` when a dial is started (or when served
        # at its head); compact it, as the queue, when they dominate.
        if len(host.undialed) > 2 * host.n_waiting + 64:
            host.undialed = deque(w for w in host.undialed if w.live)

    def _dial_for(self, host: HostPool) -> Waiter | None:
        """The waiter a dial starting now is for: the longest one no dial was started for
        (else, all being covered already, the longest one)."""
        undialed = host.undialed
        while undialed:
            waiter = undialed.popleft()
            if waiter.live:
                return waiter
        return next((w for w in host.waiters if w.live), None)

    def _make_idle(self, host: HostPool, conn: Connection, now: float) -> None:
        if not conn.is_reusable():
            self._forget(conn)
            self.to_close.append(conn)
            self._pump(host)
            return
        conn.state = ConnState.IDLE
        conn.idle_since = now
        conn.arm_idle_watch()
        host.idle[conn] = None
        self.idle_lru[conn] = host
        while len(host.idle) > self.max_idle_per_host:
            oldest = host.idle.popitem(last=False)[0]
            del self.idle_lru[oldest]
            self._close_popped_idle(host, oldest)
        while len(self.idle_lru) > self.max_idle:
            oldest, owner = self.idle_lru.popitem(last=False)
            del owner.idle[oldest]
            self._close_popped_idle(owner, oldest)

    def _drop_busy(self, host: HostPool, conn: Connection) -> None:
        host.busy -= 1
        self.busy_total -= 1
        self._forget(conn)
        self._pump(host)
        self._pump_blocked()
        self._note_if_empty(host)

    def _close_idle(self, host: HostPool, conn: Connection) -> None:
        del self.idle_lru[conn]
        self._close_popped_idle(host, conn)

    def _close_popped_idle(self, host: HostPool, conn: Connection) -> None:
        conn.disarm_idle_watch()
        self._forget(conn)
        self.to_close.append(conn)
        self._note_if_empty(host)

    def _note_if_empty(self, host: HostPool) -> None:
        """`host` may have just emptied: keep its books among the recent empty ones (LRU)."""
        if host.total or host.n_waiting or host.blocked:
            return
        empty = self.empty_hosts
        empty[host.key] = host
        empty.move_to_end(host.key)
        if len(empty) > MAX_EMPTY_HOSTS:
            key, oldest = empty.popitem(last=False)
            # (Busy again since it was noted, it stays: it is noted again when it empties.)
            in_use = oldest.total or oldest.n_waiting or oldest.blocked
            if not in_use and self.hosts.get(key) is oldest:
                del self.hosts[key]

    def _forget(self, conn: Connection) -> None:
        conn.state = ConnState.CLOSED
        self.conns.discard(conn)
        self.closed_count += 1

    def _pump(self, host: HostPool) -> None:
        """Start dials for waiters not yet covered by one, within both caps."""
        need = host.n_waiting - host.connecting
        if need <= 0:
            return
        if host.may_multiplex and host.alpn != "http/1.1":
            # HTTP/2 (or not yet known): none while a socket has room, and one dial at a time,
            # unless the one in flight is slow (see the module docstring).
            if any(self._room(c) > 0 for c in host.h2):
                return
            if not host.dial_is_slow:
                if host.connecting:
                    return
                need = 1
        per_host = self.max_per_host
        cap = self.max_connections
        while need > 0:
            if per_host is not None and host.total >= per_host:
                return
            if cap is not None and self.busy_total >= cap:
                if not host.blocked:
                    host.blocked = True
                    self.blocked.append(host)
                return
            host.connecting += 1
            self.busy_total += 1
            self.to_dial.append((host, self._dial_for(host)))
            need -= 1

    def _pump_blocked(self) -> None:
        cap = self.max_connections
        blocked = self.blocked
        while blocked and (cap is None or self.busy_total < cap):
            host = blocked.popleft()
            host.blocked = False
            self._pump(host)
