"""How the pool dials: which request's connect timeout bounds a dial, what the pool timer does to
a request a dial covers, and parallel dials when the first handshake to an origin stalls.

The stalled handshakes come from `StallingRelay`, a TCP relay in front of a real TLS server
(hypercorn: ALPN h2; the fault server: ALPN http/1.1) that holds each accepted socket before
relaying it, so the client's TLS handshake waits. It holds a socket until `quorum` sockets were
accepted or `stall` seconds passed: a pool that dials in parallel while the first handshake
stalls releases it at once; one that waits for the first dial sees it released only by the
stall. The tests count sockets, never time.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import trustme

import aiopool
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import BlackholeServer, FaultServer, _ThreadedServer
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx
from tests.rig.proxy import _pipe


class StallingRelay(_ThreadedServer):
    """Accepts TCP on 127.0.0.1 and relays it, raw, to `target_port`, after a stall.

    Each socket waits until `quorum` sockets were accepted (since the last `reset`) or `stall`
    seconds passed; `accepted_at_release` records how many had been accepted when the first
    socket was let through.
    """

    def __init__(self, target_port: int, *, stall: float, quorum: int | None = None) -> None:
        super().__init__()
        self._target_port = target_port
        self.stall = stall
        self.quorum = quorum
        self.accepted_at_release: int | None = None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"  # the target's certificate names localhost

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        deadline = time.monotonic() + self.stall
        quorum = self.quorum
        while time.monotonic() < deadline and (
            quorum is None or self.connections_accepted < quorum
        ):
            await asyncio.sleep(0.01)
        if self.accepted_at_release is None:
            self.accepted_at_release = self.connections_accepted
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        writer: asyncio.StreamWriter | None = None
        upstream: asyncio.StreamWriter | None = None
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), sock
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self._target_port)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, EOFError):
            pass  # a peer went away: normal for a relay
        finally:
            for side in (upstream, writer):
                if side is not None:
                    side.transport.abort()


@pytest.fixture
def h2_relay(hypercorn_server: HypercornServer) -> Iterator[StallingRelay]:
    """A stalling relay to hypercorn (ALPN h2). Set `stall` / `quorum` in the test."""
    relay = StallingRelay(hypercorn_server.port, stall=0.0)
    with relay:
        yield relay


@pytest.fixture
def h1_relay(tls_fault_server: FaultServer) -> Iterator[StallingRelay]:
    """A stalling relay to the TLS fault server (ALPN http/1.1 only)."""
    relay = StallingRelay(tls_fault_server.port, stall=0.0)
    with relay:
        yield relay


def tls_client(context: ssl.SSLContext, **kw: object) -> aiopool.Client:
    return aiopool.Client(verify=context, **kw)  # type: ignore[arg-type]


# Item: a slow first handshake must not serialise every request to a new origin -------------


async def test_stalled_h2_handshake_lets_queued_requests_dial_in_parallel(
    h2_relay: StallingRelay, client_ssl_context: ssl.SSLContext
) -> None:
    # 8 requests to a new https origin: one dial at first (its ALPN may say h2), but the
    # handshake stalls, so the other seven dial too, before the first socket is let through.
    # (The stall is long enough that this can only happen by dialing in parallel.)
    h2_relay.stall, h2_relay.quorum = 20.0, 8
    events: list[aiopool.TraceEvent] = []
    async with tls_client(
        client_ssl_context, max_connections_per_host=10, trace=events.append
    ) as client:
        responses = await asyncio.gather(
            *(client.get(f"{h2_relay.url}/echo?i={i}") for i in range(8))
        )
        assert [r.status_code for r in responses] == [200] * 8
        assert all(r.http_version == "HTTP/2" for r in responses)
        assert h2_relay.accepted_at_release == 8  # all dialed while the first one stalled
        # Once h2 is known, one socket serves everything; the extra seven are closed as they
        # land, their connecting slots freed: nothing left over.
        await eventually(lambda: client.stats().connecting == 0)
        await h2_relay.wait_for_async(lambda: h2_relay.open_connections() == 1)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (8, 7)
        closed = [e.info["reason"] for e in events if e.name == "conn_closed"]
        assert closed == ["surplus"] * 7
        (only,) = stats.hosts.values()
        assert (only.idle, only.connecting, only.waiting) == (1, 0, 0)
        # The socket kept still serves.
        again = await client.get(f"{h2_relay.url}/echo")
        assert again.status_code == 200 and again.conn_info.reused
        assert client.stats().connections_opened == 8


async def test_stalled_handshake_answered_http1_gives_ordinary_sockets(
    h1_relay: StallingRelay, client_ssl_context: ssl.SSLContext
) -> None:
    # The same with a server that answers ALPN http/1.1: the extra sockets are ordinary
    # HTTP/1.1 sockets, each serving a request, then pooled idle.
    h1_relay.stall, h1_relay.quorum = 20.0, 4
    async with tls_client(client_ssl_context, max_connections_per_host=10) as client:
        responses = await asyncio.gather(*(client.get(f"{h1_relay.url}/echo") for _ in range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        assert all(r.http_version == "HTTP/1.1" for r in responses)
        assert h1_relay.accepted_at_release == 4
        # (The first socket may have served several requests before the others landed.)
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed, stats.idle) == (4, 0, 4)


async def test_parallel_dials_stay_within_the_per_host_cap(
    h2_relay: StallingRelay, client_ssl_context: ssl.SSLContext
) -> None:
    h2_relay.stall, h2_relay.quorum = 2.0, 3
    async with tls_client(client_ssl_context, max_connections_per_host=3) as client:
        responses = await asyncio.gather(*(client.get(f"{h2_relay.url}/echo") for _ in range(12)))
        assert [r.status_code for r in responses] == [200] * 12
        assert h2_relay.connections_accepted == 3
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert stats.connections_opened - stats.connections_closed == 1


async def test_quick_handshake_still_opens_one_socket_for_100_h2_requests(
    nginx: Nginx, client_ssl_context: ssl.SSLContext
) -> None:
    async with tls_client(client_ssl_context, max_connections_per_host=10) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/echo") for _ in range(100))
        )
        assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in responses)
        stats = assert_settled(client)
        assert stats.connections_opened == 1


# Item: the pool timer and the connect timeout ----------------------------------------------


async def test_connect_none_first_request_is_not_a_pool_timeout(
    h2_relay: StallingRelay, client_ssl_context: ssl.SSLContext
) -> None:
    # The only request waits for its own dial, whose handshake outlasts the pool timeout:
    # that is not waiting for the pool, and `connect=None` lets the dial take its time.
    h2_relay.stall = 0.5
    timeout = aiopool.Timeout(30, connect=None, pool=0.05)
    async with tls_client(client_ssl_context, timeout=timeout) as client:
        response = await client.get(f"{h2_relay.url}/echo")
        assert response.status_code == 200
        assert_settled(client)


async def test_each_dial_uses_the_connect_timeout_of_its_own_request(
    blackhole: BlackholeServer, client_ssl_context: ssl.SSLContext
) -> None:
    # Two requests, two dials into a server that never answers the handshake. The first
    # request's dial gives up after its own 0.2 s; the second's (connect=None) keeps going.
    # (Before, both dials used whichever connect timeout the latest request had.)
    url = f"https://127.0.0.1:{blackhole.port}/"
    async with tls_client(client_ssl_context, http2=False) as client:
        short = asyncio.create_task(client.get(url, timeout=aiopool.Timeout(30, connect=0.2)))
        # (No await in between: both requests queue before either dial starts.)
        endless = asyncio.create_task(client.get(url, timeout=aiopool.Timeout(30, connect=None)))
        async with asyncio.timeout(10):  # (a hang guard, not a timing assertion)
            with pytest.raises(aiopool.ConnectTimeout):
                await short
        assert not endless.done()
        assert client.stats().connecting == 1  # the second request's dial, still going
        endless.cancel()
        with pytest.raises(asyncio.CancelledError):
            await endless


async def test_a_shorter_connect_timeout_of_a_later_request_does_not_fail_an_earlier_one(
    blackhole: BlackholeServer, client_ssl_context: ssl.SSLContext
) -> None:
    # The reverse order: the dial started for the later request times out first; its
    # `ConnectTimeout` is that request's, not the longest waiter's (Go's rule).
    url = f"https://127.0.0.1:{blackhole.port}/"
    async with tls_client(client_ssl_context, http2=False) as client:
        endless = asyncio.create_task(client.get(url, timeout=aiopool.Timeout(30, connect=None)))
        short = asyncio.create_task(client.get(url, timeout=aiopool.Timeout(30, connect=0.2)))
        async with asyncio.timeout(10):
            with pytest.raises(aiopool.ConnectTimeout):
                await short
        assert not endless.done()
        endless.cancel()
        with pytest.raises(asyncio.CancelledError):
            await endless


@pytest.fixture(scope="module")
def one_stream_hypercorn(tls_ca: trustme.CA) -> Iterator[HypercornServer]:
    """hypercorn (ALPN h2) allowing one stream per connection: every request needs a socket."""
    server = HypercornServer(tls_ca, max_concurrent_streams=1)
    with server:
        yield server


async def test_stalled_handshake_to_a_full_h2_origin_lets_queued_requests_dial_in_parallel(
    one_stream_hypercorn: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    # The protocol is known (h2) and the socket is full: more sockets are needed, and they too
    # must not be dialed one stalled handshake after another.
    relay = StallingRelay(one_stream_hypercorn.port, stall=0.0)
    with relay:
        async with tls_client(client_ssl_context, max_connections_per_host=10) as client:
            warm = await client.get(f"{relay.url}/echo")
            assert warm.http_version == "HTTP/2"
            relay.reset()
            relay.stall, relay.quorum, relay.accepted_at_release = 10.0, 3, None
            responses = await asyncio.gather(
                *(client.get(f"{relay.url}/slow?chunks=1&delay=0.5") for _ in range(4))
            )
            assert [r.status_code for r in responses] == [200] * 4
            assert relay.accepted_at_release == 3  # three new sockets dialed side by side
            await eventually(lambda: client.stats().connecting == 0)
            stats = assert_settled(client)
            assert stats.connections_opened == 4


async def test_a_covered_waiter_whose_dial_serves_nobody_is_not_left_waiting(
    fresh_h2_server: H2ScriptServer,
) -> None:
    # The pool timer finds the request covered by the dial in flight (connect=None), so it
    # waits for the dial. The dial lands as an h2 socket allowing no stream at all, and the
    # per-host cap forbids another: nothing will serve the request now, so it gets its
    # `PoolTimeout` then, instead of hanging.
    fresh_h2_server.script(max_concurrent_streams=0)
    relay = StallingRelay(fresh_h2_server.port, stall=0.5)
    with relay:
        timeout = aiopool.Timeout(30, connect=None, pool=0.05)
        url = f"http://127.0.0.1:{relay.port}/"
        async with aiopool.Client(
            http1=False, max_connections_per_host=1, timeout=timeout
        ) as client:
            async with asyncio.timeout(10):  # (a hang guard, not a timing assertion)
                with pytest.raises(aiopool.PoolTimeout):
                    await client.get(url)
            stats = assert_settled(client)
            assert stats.connections_opened == 1
