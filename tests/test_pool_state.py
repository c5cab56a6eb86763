"""PoolState without sockets: the bookkeeping rules, step by step, with fake connections."""

from __future__ import annotations

import asyncio
import itertools

import pytest

import aiopool
from aiopool._connection import ConnState, ResponseHead
from aiopool._models import BodyStream, Request
from aiopool._pool_state import MAX_EMPTY_HOSTS, PoolState, Waiter
from aiopool._urls import Origin
from tests.mock_backend import MockStream

A = Origin("http", "a.test", 80)
B = Origin("http", "b.test", 80)
_ids = itertools.count(1)


class FakeConn:
    """Just enough of `Connection` for the books."""

    http_version = "HTTP/1.1"
    multiplexed = False
    implementation = "fake"

    def __init__(self, origin: Origin) -> None:
        self.id = next(_ids)
        self.origin = origin
        self.state = ConnState.ACTIVE
        self.closed = False
        self.socket = MockStream([])
        self.requests = 0
        self.idle_since = 0.0
        self.reusable = True
        self.watching = False

    def is_reusable(self) -> bool:
        return self.reusable and not self.closed

    def stale_failure(self, was_idle: bool) -> bool:
        raise NotImplementedError  # the books never send

    def close(self) -> None:
        self.closed = True
        self.socket.close()

    def shut_down(self) -> None:
        self.close()

    def arm_idle_watch(self) -> None:
        self.watching = True

    def disarm_idle_watch(self) -> None:
        self.watching = False

    async def wait_closed(self, timeout: float) -> None:
        raise NotImplementedError  # the books never wait

    @property
    def network_stream(self) -> MockStream:
        return self.socket

    def capacity(self) -> int:
        return 0

    def reserve(self) -> None:
        raise NotImplementedError  # HTTP/1.1-like: leased whole

    def unreserve(self) -> None:
        raise NotImplementedError

    @property
    def open_streams(self) -> int:
        return 0

    async def send(
        self, request: Request, timeout: aiopool.Timeout
    ) -> tuple[ResponseHead, BodyStream]:
        raise NotImplementedError  # the books never send


def make_state(
    *,
    max_connections: int | None = 100,
    max_connections_per_host: int | None = 2,
    max_idle_per_host: int = 2,
    max_idle: int = 10,
    idle_timeout: float = 90.0,
) -> PoolState:
    return PoolState(
        max_connections=max_connections,
        max_connections_per_host=max_connections_per_host,
        max_idle_per_host=max_idle_per_host,
        max_idle=max_idle,
        idle_timeout=idle_timeout,
    )


def dial(state: PoolState, origin: Origin, now: float = 0.0) -> FakeConn:
    """Complete the oldest pending dial for `origin`."""
    host, _ = state.to_dial.pop(0)
    assert host.key == origin
    conn = FakeConn(origin)
    state.dial_succeeded(host, conn, now)
    return conn


async def test_first_request_queues_and_dials_once() -> None:
    state = make_state()
    got = state.checkout(A, None, 0.0)
    assert isinstance(got, Waiter)
    assert len(state.to_dial) == 1
    conn = dial(state, A)
    assert got.fut.result() is conn
    assert conn.state is ConnState.ACTIVE
    snap = state.snapshot().hosts[str(A)]
    assert (snap.active, snap.idle, snap.connecting, snap.waiting) == (1, 0, 0, 0)


async def test_released_connection_is_reused_most_recent_first() -> None:
    state = make_state()
    w1 = state.checkout(A, None, 0.0)
    w2 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    c1, c2 = dial(state, A), dial(state, A)
    state.checkin(c1, 1.0)
    state.checkin(c2, 2.0)
    assert c1.state is ConnState.IDLE and c1.watching
    assert state.checkout(A, None, 3.0) is c2  # MRU
    assert not c2.watching
    assert state.checkout(A, None, 3.0) is c1
    # A lease is not a response: `reused` counts responses (noted by the client), not leases.
    assert state.reused == 0
    state.note_response(A, reused=True)
    state.note_response(A, reused=False)
    assert state.reused == 1 and state.snapshot().hosts[str(A)].reused == 1


async def test_per_host_cap_queues_and_late_binds_to_longest_waiter() -> None:
    state = make_state(max_connections_per_host=1)
    first = state.checkout(A, None, 0.0)
    second = state.checkout(A, None, 0.0)
    third = state.checkout(A, None, 0.0)
    assert isinstance(first, Waiter) and isinstance(second, Waiter) and isinstance(third, Waiter)
    assert len(state.to_dial) == 1  # the cap allows one socket
    conn = dial(state, A)
    assert first.fut.result() is conn
    state.checkin(conn, 1.0)
    assert second.fut.result() is conn  # handed over directly, never idle
    assert not third.fut.done()
    assert state.hosts[A].busy == 1 and not state.hosts[A].idle


async def test_late_binding_serves_waiter_whose_dial_is_still_running() -> None:
    state = make_state(max_connections_per_host=2)
    w1 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter)
    c1 = dial(state, A)
    w2 = state.checkout(A, None, 0.0)  # starts a second dial
    assert isinstance(w2, Waiter) and len(state.to_dial) == 1
    state.checkin(c1, 1.0)
    assert w2.fut.result() is c1  # the freed socket wins over the dial
    c2 = dial(state, A, now=2.0)  # the dial lands with nobody waiting: it goes idle
    assert c2.state is ConnState.IDLE
    assert state.hosts[A].total == 2


async def test_cancelled_waiter_is_skipped_and_does_not_leak() -> None:
    state = make_state(max_connections_per_host=1)
    w1 = state.checkout(A, None, 0.0)
    w2 = state.checkout(A, None, 0.0)
    w3 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter) and isinstance(w3, Waiter)
    conn = dial(state, A)
    w2.fut.cancel()  # its task was cancelled before the pool heard of it
    state.checkin(conn, 1.0)
    assert w3.fut.result() is conn
    state.abandon(w2)  # the cancelled task reports late: a no-op
    assert state.hosts[A].n_waiting == 0


async def test_expired_and_server_closed_idle_sockets_are_never_handed_out() -> None:
    state = make_state(idle_timeout=10.0)
    waiters = [state.checkout(A, None, 0.0) for _ in range(2)]
    c1, c2 = dial(state, A), dial(state, A)
    assert all(isinstance(w, Waiter) for w in waiters)
    state.checkin(c1, 0.0)
    state.checkin(c2, 5.0)
    c2.reusable = False  # the server closed it while idle, unnoticed until now
    got = state.checkout(A, None, 12.0)  # c2 broken, c1 expired (idle 12 s > 10 s)
    assert isinstance(got, Waiter)
    assert set(state.to_close) == {c1, c2}
    assert state.hosts[A].total == 1  # only the new dial


async def test_expire_idle_sweeps_oldest_first() -> None:
    state = make_state(idle_timeout=10.0, max_connections_per_host=3, max_idle_per_host=3)
    waiters = [state.checkout(A, None, 0.0) for _ in range(3)]
    conns = [dial(state, A) for _ in waiters]
    for t, conn in enumerate(conns):
        state.checkin(conn, float(t))
    assert state.expire_idle(10.5) == 11.0
    assert state.to_close == [conns[0]]
    assert state.expire_idle(100.0) is None
    assert len(state.to_close) == 3


async def test_idle_caps_per_host_and_global_close_the_oldest() -> None:
    state = make_state(max_connections_per_host=5, max_idle_per_host=2, max_idle=3)
    waiters = [state.checkout(A, None, 0.0) for _ in range(3)]
    a = [dial(state, A) for _ in waiters]
    waiters = [state.checkout(B, None, 0.0) for _ in range(2)]
    b = [dial(state, B) for _ in waiters]
    for t, conn in enumerate(a + b):
        state.checkin(conn, float(t))
    # A keeps its two newest; then the global cap of 3 drops A's oldest remaining.
    assert a[0] in state.to_close and a[1] in state.to_close
    assert len(state.idle_lru) == 3
    assert list(state.hosts[A].idle) == [a[2]]


async def test_global_cap_blocks_then_serves_other_host_fifo() -> None:
    state = make_state(max_connections=1, max_connections_per_host=5)
    wa = state.checkout(A, None, 0.0)
    assert isinstance(wa, Waiter)
    ca = dial(state, A)
    wb = state.checkout(B, None, 0.0)
    assert isinstance(wb, Waiter)
    assert state.to_dial == []  # blocked by the global cap
    assert state.snapshot().hosts[str(B)].waiting == 1
    state.checkin(ca, 1.0)  # A's socket goes idle: a global slot frees
    cb = dial(state, B)
    assert wb.fut.result() is cb


async def test_dial_failure_goes_to_longest_waiter_and_dialing_resumes() -> None:
    state = make_state(max_connections_per_host=1)
    w1 = state.checkout(A, None, 0.0)
    w2 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    host, _ = state.to_dial.pop()
    state.dial_failed(host, aiopool.ConnectError("refused"))
    with pytest.raises(aiopool.ConnectError):
        w1.fut.result()
    assert len(state.to_dial) == 1  # a new dial for w2
    conn = dial(state, A)
    assert w2.fut.result() is conn
    assert state.busy_total == 1


async def test_discard_of_busy_connection_frees_slot_for_waiter() -> None:
    state = make_state(max_connections_per_host=1)
    w1 = state.checkout(A, None, 0.0)
    w2 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    conn = dial(state, A)
    state.discard(conn)
    state.discard(conn)  # idempotent
    assert len(state.to_dial) == 1
    assert state.hosts[A].busy == 0 and state.busy_total == 1
    assert state.closed_count == 1


async def test_fresh_checkout_skips_idle_and_makes_room() -> None:
    state = make_state(max_connections_per_host=1)
    w = state.checkout(A, None, 0.0)
    assert isinstance(w, Waiter)
    conn = dial(state, A)
    state.checkin(conn, 1.0)
    got = state.checkout(A, None, 2.0, fresh=True)
    assert isinstance(got, Waiter)
    assert state.to_close == [conn] and len(state.to_dial) == 1


async def test_close_fails_waiters_and_returns_every_connection() -> None:
    state = make_state(max_connections_per_host=1)
    w1 = state.checkout(A, None, 0.0)
    w2 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter)
    conn = dial(state, A)
    assert state.close() == [conn]
    with pytest.raises(aiopool.ClientClosed):
        w2.fut.result()
    with pytest.raises(aiopool.ClientClosed):
        state.checkout(A, None, 0.0)


async def test_abandon_storm_keeps_queue_bounded() -> None:
    state = make_state(max_connections_per_host=1)
    waiters = [state.checkout(A, None, 0.0) for _ in range(10_000)]
    for w in waiters[1:]:
        assert isinstance(w, Waiter)
        state.abandon(w)
    assert state.hosts[A].n_waiting == 1
    assert len(state.hosts[A].waiters) <= 2 * 1 + 64 + 1


async def test_release_cost_does_not_grow_with_queue_length() -> None:
    """Invariant 2: 10,000 waiters must not make each release slower (O(1) per step).

    Counted in operations, not time: each checkin pops exactly one entry off the queue's head,
    so handing one connection along 10,000 waiters does 10,000 pops, not 10,000**2 / 2 scans.
    """
    state = make_state(max_connections_per_host=1)
    waiters = [state.checkout(A, None, 0.0) for _ in range(10_000)]
    conn = dial(state, A)
    queue = state.hosts[A].waiters
    for i in range(1, 10_000):
        before = len(queue)
        state.checkin(conn, float(i))
        assert len(queue) == before - 1
        w = waiters[i]
        assert isinstance(w, Waiter) and w.fut.done()
    assert state.hosts[A].n_waiting == 0


def test_waiter_futures_are_created_lazily_per_loop() -> None:
    state = make_state()

    async def main() -> bool:
        got = state.checkout(A, None, 0.0)
        assert isinstance(got, Waiter)
        return got.fut.get_loop() is asyncio.get_running_loop()

    assert asyncio.run(main())


# HTTP/2: multiplexed connections -------------------------------------------------------------

S = Origin("https", "h2.test", 443)


class FakeH2Conn(FakeConn):
    """A multiplexed connection: `limit` streams at once."""

    http_version = "HTTP/2"
    multiplexed = True

    def __init__(self, origin: Origin, limit: int) -> None:
        super().__init__(origin)
        self.limit = limit
        self.reserved = 0
        self.draining = False

    def is_reusable(self) -> bool:
        return not self.closed and not self.draining

    def capacity(self) -> int:
        return 0 if (self.closed or self.draining) else self.limit - self.reserved

    def reserve(self) -> None:
        self.reserved += 1
        self.requests += 1

    def unreserve(self) -> None:
        self.reserved -= 1
        self.requests -= 1

    @property
    def open_streams(self) -> int:
        return self.reserved

    def finish_stream(self) -> None:
        self.reserved -= 1


def state_of(conn: FakeConn) -> ConnState:
    return conn.state  # (a call, so mypy does not keep an earlier narrowing)


def h2_state(**kw: int | None) -> PoolState:
    return PoolState(
        max_connections=kw.get("max_connections", 100),
        max_connections_per_host=kw.get("max_connections_per_host", 10),
        max_idle_per_host=10,
        max_idle=10,
        idle_timeout=90.0,
        may_multiplex=lambda origin: origin.scheme == "https",
    )


def h2_dial(state: PoolState, limit: int) -> FakeH2Conn:
    host, _ = state.to_dial.pop(0)
    conn = FakeH2Conn(host.key, limit)
    state.dial_succeeded(host, conn, 0.0)
    return conn


async def test_one_dial_while_the_protocol_is_unknown_then_streams_are_shared() -> None:
    state = h2_state()
    waiters = [state.checkout(S, None, 0.0) for _ in range(50)]
    assert len(state.to_dial) == 1  # not 10: the first socket may carry them all
    conn = h2_dial(state, limit=100)
    assert all(isinstance(w, Waiter) and w.fut.result() is conn for w in waiters)
    assert conn.reserved == 50 and state.to_dial == []
    assert state.snapshot().hosts[str(S)].streams == 50


async def test_http1_answer_releases_the_held_back_dials() -> None:
    state = h2_state()
    waiters = [state.checkout(S, None, 0.0) for _ in range(4)]
    assert len(state.to_dial) == 1
    conn = dial(state, S)  # the server chose HTTP/1.1: a plain, leased connection
    first = waiters[0]
    assert isinstance(first, Waiter) and first.fut.result() is conn
    assert len(state.to_dial) == 3  # now one dial per remaining waiter


async def test_full_socket_opens_a_second_one_only_then() -> None:
    state = h2_state()
    waiters = [state.checkout(S, None, 0.0) for _ in range(3)]
    first = h2_dial(state, limit=2)
    assert first.reserved == 2
    assert len(state.to_dial) == 1  # the third waiter needs another socket
    second = h2_dial(state, limit=2)
    third = waiters[2]
    assert isinstance(third, Waiter) and third.fut.result() is second


async def test_released_stream_slot_goes_to_the_longest_waiter() -> None:
    state = h2_state(max_connections_per_host=1)
    waiters = [state.checkout(S, None, 0.0) for _ in range(3)]
    conn = h2_dial(state, limit=2)
    late = waiters[2]
    assert isinstance(late, Waiter) and not late.fut.done()
    assert state.to_dial == []  # the per-host cap allows no second socket
    conn.finish_stream()
    state.checkin(conn, 1.0)
    assert late.fut.result() is conn and conn.reserved == 2


async def test_raised_stream_limit_serves_waiters_at_once() -> None:
    state = h2_state(max_connections_per_host=1)
    waiters = [state.checkout(S, None, 0.0) for _ in range(5)]
    conn = h2_dial(state, limit=1)
    conn.limit = 10  # the peer's SETTINGS raised MAX_CONCURRENT_STREAMS
    state.capacity_changed(conn, 1.0)
    assert all(isinstance(w, Waiter) and w.fut.done() for w in waiters)
    assert conn.reserved == 5


async def test_draining_socket_takes_no_streams_and_leaves_when_empty() -> None:
    state = h2_state()
    waiters = [state.checkout(S, None, 0.0) for _ in range(2)]
    conn = h2_dial(state, limit=10)
    assert all(isinstance(w, Waiter) for w in waiters)
    conn.draining = True  # GOAWAY
    state.capacity_changed(conn, 1.0)
    later = state.checkout(S, None, 1.0)
    assert isinstance(later, Waiter) and len(state.to_dial) == 1  # a new socket for it
    conn.finish_stream()
    state.checkin(conn, 2.0)
    assert conn.state is ConnState.ACTIVE  # one stream still running on it
    conn.finish_stream()
    state.checkin(conn, 3.0)
    assert state_of(conn) is ConnState.CLOSED and conn in state.to_close


async def test_cancelled_h2_waiter_returns_its_slot() -> None:
    state = h2_state(max_connections_per_host=1)
    waiters = [state.checkout(S, None, 0.0) for _ in range(2)]
    conn = h2_dial(state, limit=1)
    second = waiters[1]
    assert isinstance(second, Waiter) and not second.fut.done()
    state.abandon(second)
    conn.finish_stream()
    state.checkin(conn, 1.0)
    assert conn.reserved == 0
    assert state.snapshot().hosts[str(S)].idle == 1


async def test_books_of_empty_origins_are_bounded() -> None:
    # A crawler: one request to each of many origins, each socket expiring afterwards. The
    # pool keeps the books of the MAX_EMPTY_HOSTS most recent empty origins, no more.
    state = make_state(idle_timeout=1.0)
    origins = [Origin("http", f"host-{i}.example", 80) for i in range(MAX_EMPTY_HOSTS + 500)]
    for now, origin in enumerate(origins):
        waiter = state.checkout(origin, None, float(now))
        assert isinstance(waiter, Waiter)
        state.checkin(dial(state, origin, float(now)), float(now))
        state.expire_idle(float(now) + 2.0)  # this origin's socket, and any older one, expire
    assert len(state.hosts) == MAX_EMPTY_HOSTS
    assert origins[0] not in state.hosts  # the oldest empty books went first
    recent = state.snapshot().hosts[str(origins[-1])]
    assert (recent.opened, recent.requests, recent.idle) == (1, 1, 0)
    # A dropped origin starts afresh; the lifetime totals are the pool's own.
    waiter = state.checkout(origins[0], None, 10_000.0)
    assert isinstance(waiter, Waiter)
    assert state.snapshot().hosts[str(origins[0])].requests == 1
    assert state.requests == len(origins) + 1


async def test_an_origin_in_use_is_never_dropped_from_the_books() -> None:
    state = make_state(idle_timeout=1.0)
    busy = state.checkout(A, None, 0.0)
    assert isinstance(busy, Waiter)
    conn = dial(state, A)  # A's socket stays leased throughout
    for i in range(MAX_EMPTY_HOSTS + 10):
        origin = Origin("http", f"host-{i}.example", 80)
        state.checkout(origin, None, float(i))
        state.checkin(dial(state, origin, float(i)), float(i))
        state.expire_idle(float(i) + 2.0)
    assert A in state.hosts
    state.checkin(conn, 5000.0)  # still booked: the socket goes idle as usual
    assert state.snapshot().hosts[str(A)].idle == 1


# Which waiter a dial is for; slow dials to origins that may speak HTTP/2 ----------------------


async def test_each_dial_is_started_for_its_own_waiter_and_keeps_its_connect_timeout() -> None:
    state = make_state(max_connections_per_host=2)
    w1 = state.checkout(A, None, 0.0, connect_timeout=1.0)
    w2 = state.checkout(A, None, 0.0, connect_timeout=None)
    w3 = state.checkout(A, None, 0.0, connect_timeout=5.0)  # over the cap: no dial yet
    assert [w for _, w in state.to_dial] == [w1, w2]
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter) and isinstance(w3, Waiter)
    assert (w1.connect_timeout, w2.connect_timeout) == (1.0, None)
    state.to_dial.clear()
    host = state.hosts[A]
    state.dial_failed(host, aiopool.ConnectTimeout("w1's own timeout"), w1)
    with pytest.raises(aiopool.ConnectTimeout):
        w1.fut.result()
    assert state.to_dial == [(host, w3)]  # the slot freed goes to a dial for w3, not w2 again


async def test_a_failed_dial_whose_request_was_served_meanwhile_fails_nobody() -> None:
    state = make_state(max_connections_per_host=3)
    w1 = state.checkout(A, None, 0.0)
    c1 = dial(state, A)  # w1 served
    w2 = state.checkout(A, None, 0.0)
    w3 = state.checkout(A, None, 0.0)
    assert isinstance(w1, Waiter) and isinstance(w2, Waiter) and isinstance(w3, Waiter)
    (host, for_w2), (_, for_w3) = state.to_dial
    state.to_dial.clear()
    state.checkin(c1, 1.0)  # late binding: w2 takes the released socket
    assert w2.fut.result() is c1
    state.dial_failed(host, aiopool.ConnectError("refused"), for_w2)
    assert not w3.fut.done()  # w3's own dial is still running: no error for it
    assert state.to_dial == [] and host.connecting == 1
    state.dial_failed(host, aiopool.ConnectError("refused"), for_w3)
    with pytest.raises(aiopool.ConnectError):
        w3.fut.result()
    assert state.busy_total == 1 and host.n_waiting == 0


async def test_a_slow_first_dial_lets_the_queued_waiters_dial_and_surplus_h2_closes() -> None:
    state = h2_state(max_connections_per_host=4)
    waiters = [state.checkout(S, None, 0.0) for _ in range(6)]
    assert len(state.to_dial) == 1  # protocol unknown: one dial
    host = state.hosts[S]
    state.dial_slow(host)  # the async layer's timer: that dial is slow
    assert len(state.to_dial) == 4  # three more, up to the per-host cap
    first = h2_dial(state, limit=100)
    assert all(isinstance(w, Waiter) and w.fut.result() is first for w in waiters)
    extras = [h2_dial(state, limit=100) for _ in range(3)]
    assert state.to_close == extras  # surplus: the first socket has room
    assert all(state_of(c) is ConnState.CLOSED for c in extras)
    assert list(host.h2) == [first] and host.connecting == 0 and not host.dial_is_slow
    assert state.busy_total == 1 and state.closed_count == 3


async def test_an_extra_h2_socket_landing_when_the_first_is_full_is_kept() -> None:
    state = h2_state(max_connections_per_host=4)
    waiters = [state.checkout(S, None, 0.0) for _ in range(3)]
    state.dial_slow(state.hosts[S])
    assert len(state.to_dial) == 3
    first = h2_dial(state, limit=2)
    second = h2_dial(state, limit=2)  # serves the third waiter: kept
    third = h2_dial(state, limit=2)  # nobody left and `second` has room: closed
    assert [w.fut.result() for w in waiters if isinstance(w, Waiter)] == [first, first, second]
    assert state.to_close == [third] and list(state.hosts[S].h2) == [first, second]


async def test_a_slow_dial_to_a_full_h2_origin_lets_waiters_dial() -> None:
    state = h2_state(max_connections_per_host=4)
    state.checkout(S, None, 0.0)
    h2_dial(state, limit=1)
    for _ in range(3):
        state.checkout(S, None, 0.0)
    assert len(state.to_dial) == 1  # the socket is full: one more, one at a time
    state.dial_slow(state.hosts[S])
    assert len(state.to_dial) == 3  # slow: one per waiter


async def test_dial_slow_changes_nothing_once_the_origin_speaks_http1() -> None:
    state = h2_state()
    for _ in range(3):
        state.checkout(S, None, 0.0)
    dial(state, S)  # HTTP/1.1 answer: the held-back dials start at once
    assert len(state.to_dial) == 2
    state.dial_slow(state.hosts[S])
    assert len(state.to_dial) == 2 and not state.hosts[S].dial_is_slow


async def test_undialed_queue_stays_bounded_when_late_binding_serves_everyone() -> None:
    state = make_state(max_connections_per_host=1)
    w0 = state.checkout(A, None, 0.0)
    conn = dial(state, A)
    assert isinstance(w0, Waiter)
    for _ in range(1000):  # each waits, never dialed for (the cap), then takes the socket
        waiter = state.checkout(A, None, 0.0)
        assert isinstance(waiter, Waiter)
        state.checkin(conn, 0.0)
        assert waiter.fut.result() is conn
    assert len(state.hosts[A].undialed) <= 64
