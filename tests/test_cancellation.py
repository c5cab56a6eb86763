"""Cancellation and timeouts at every await point leave the pool consistent (invariant 7).

Each phase of a request is made to block for real (a server that stalls, a socket that never
drains, a handshake that never completes), the task is cancelled or times out there, and then the
pool must show no lease, waiter or dial held for it, the socket involved must be closed rather
than pooled, and the next request must work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest

import aiopool
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import BlackholeServer, FaultServer

pytestmark = pytest.mark.both_parsers


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def _endless_body() -> AsyncIterator[bytes]:
    chunk = b"u" * 1024 * 1024
    while True:
        yield chunk


async def _cancel_when(task: asyncio.Task[object], condition: object) -> None:
    await eventually(condition)  # type: ignore[arg-type]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancel_while_waiting_for_a_lease(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=1) as client:
        holder = asyncio.create_task(client.get(f"{server.url}/delay?s=0.2&id=holder"))
        waiter = asyncio.create_task(client.get(f"{server.url}/echo?id=waiter"))
        await _cancel_when(waiter, lambda: client.stats().waiting == 1)
        assert client.stats().waiting == 0
        assert (await holder).json()["id"] == "holder"
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.idle == 1
        assert (await client.get(f"{server.url}/echo?id=next")).conn_info.reused


async def test_cancel_just_after_being_handed_a_connection(server: FaultServer) -> None:
    """The released socket goes to the waiter, which is cancelled before it resumes:
    the socket must come straight back to the pool, not vanish with the task."""
    async with aiopool.Client(max_connections_per_host=1) as client:
        async with client.stream("GET", f"{server.url}/bytes/10") as resp:
            waiter = asyncio.create_task(client.get(f"{server.url}/echo"))
            await eventually(lambda: client.stats().waiting == 1)
            await resp.aread()  # releases at end of body: handed to `waiter` synchronously
            assert client.stats().waiting == 0
            waiter.cancel()  # before it ever ran again
        with pytest.raises(asyncio.CancelledError):
            await waiter
        stats = assert_settled(client)
        assert stats.idle == 1 and stats.connections_closed == 0


async def test_cancel_while_connecting(blackhole: BlackholeServer) -> None:
    # The blackhole accepts TCP but never answers the TLS handshake.
    url = f"https://127.0.0.1:{blackhole.port}/"
    async with aiopool.Client(timeout=aiopool.Timeout(5, connect=0.3)) as client:
        task = asyncio.create_task(client.get(url))
        await _cancel_when(task, lambda: client.stats().connecting == 1)
        assert client.stats().waiting == 0
        # The dial belongs to the pool (Go's rule: a later request could use it); it ends at its
        # own connect timeout, leaving nothing behind.
        await eventually(lambda: client.stats().connecting == 0)
        assert_settled(client)


async def test_close_cancels_dials_in_flight(blackhole: BlackholeServer) -> None:
    url = f"https://127.0.0.1:{blackhole.port}/"
    client = aiopool.Client(timeout=aiopool.Timeout(5, connect=30))
    task = asyncio.create_task(client.get(url))
    await eventually(lambda: client.stats().connecting == 1)
    await client.aclose()
    with pytest.raises(aiopool.ClientClosed):
        await task
    assert client.stats().connecting == 0


async def test_cancel_while_writing_the_body(blackhole: BlackholeServer) -> None:
    # The blackhole never reads, so the kernel buffers fill and our write waits to drain.
    url = f"http://127.0.0.1:{blackhole.port}/upload"
    async with aiopool.Client() as client:
        task = asyncio.create_task(client.post(url, content=_endless_body()))
        await asyncio.sleep(0.2)
        assert client.stats().active == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_cancel_while_reading_headers(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        task = asyncio.create_task(client.get(f"{server.url}/stall-headers"))
        await _cancel_when(task, lambda: client.stats().active == 1)
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1
        await eventually(lambda: server.open_connections() == 0)


async def test_cancel_while_reading_the_body(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        task = asyncio.create_task(client.get(f"{server.url}/stall?sent=10"))
        await _cancel_when(task, lambda: client.stats().active == 1)
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_cancel_while_iterating_a_streamed_body(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        seen = asyncio.Event()

        async def consume() -> None:
            async with client.stream("GET", f"{server.url}/stall?sent=10") as resp:
                async for _ in resp.aiter_bytes():
                    seen.set()

        task = asyncio.create_task(consume())
        await seen.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1
        assert (await client.get(f"{server.url}/echo")).status_code == 200


async def test_anyio_cancel_scope_timeouts_are_clean(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=1) as client:
        with anyio.move_on_after(0.05) as scope:
            await client.get(f"{server.url}/stall-headers")
        assert scope.cancelled_caught
        with anyio.move_on_after(0.05):
            async with client.stream("GET", f"{server.url}/stall?sent=10") as resp:
                await resp.aread()
        assert_settled(client)
        assert (await client.get(f"{server.url}/echo")).status_code == 200


async def test_task_group_cancellation_of_many_requests(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=5) as client:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(client.get, f"{server.url}/delay?s=0.5&id={i}")
            await eventually(lambda: client.stats().waiting == 45)
            tg.cancel_scope.cancel()
        assert client.stats().waiting == 0
        # Sockets closed under cancelled requests freed slots while later waiters were still
        # queued, so replacement dials may be under way; they land in the idle pool.
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert stats.idle <= 5


# Timeouts -------------------------------------------------------------------------------------


async def test_connect_timeout(blackhole: BlackholeServer) -> None:
    url = f"https://127.0.0.1:{blackhole.port}/"
    async with aiopool.Client(timeout=aiopool.Timeout(5, connect=0.1)) as client:
        with pytest.raises(aiopool.ConnectTimeout):
            await client.get(url)
        assert assert_settled(client).connections_opened == 0


async def test_read_timeout_on_headers_and_body(server: FaultServer) -> None:
    async with aiopool.Client(timeout=aiopool.Timeout(5, read=0.1)) as client:
        with pytest.raises(aiopool.ReadTimeout) as info:
            await client.get(f"{server.url}/stall-headers")
        assert info.value.request is not None
        with pytest.raises(aiopool.ReadTimeout):
            await client.get(f"{server.url}/stall?sent=10")
        stats = assert_settled(client)
        assert stats.connections_closed == 2 and stats.idle == 0


async def test_read_timeout_is_per_read_not_per_response(server: FaultServer) -> None:
    # Five pieces 0.05 s apart: 0.25 s in all, each gap well under the 0.5 s read timeout.
    async with aiopool.Client(timeout=aiopool.Timeout(5, read=0.5)) as client:
        resp = await client.get(f"{server.url}/slow?chunks=5&delay=0.05&size=10")
        assert len(resp.content) == 50
        assert assert_settled(client).idle == 1


async def test_write_timeout(blackhole: BlackholeServer) -> None:
    url = f"http://127.0.0.1:{blackhole.port}/upload"
    async with aiopool.Client(timeout=aiopool.Timeout(5, write=0.2)) as client:
        with pytest.raises(aiopool.WriteTimeout):
            await client.post(url, content=_endless_body())
        stats = assert_settled(client)
        assert stats.connections_closed == 1


async def test_pool_timeout(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=1) as client:
        holder = asyncio.create_task(client.get(f"{server.url}/delay?s=0.3"))
        await eventually(lambda: client.stats().active == 1)
        with pytest.raises(aiopool.PoolTimeout):
            await client.get(f"{server.url}/echo", timeout=aiopool.Timeout(5, pool=0.05))
        assert client.stats().waiting == 0
        await holder
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.idle == 1


async def test_per_request_timeout_overrides_client_default(server: FaultServer) -> None:
    async with aiopool.Client(timeout=0.05) as client:
        resp = await client.get(f"{server.url}/delay?s=0.2", timeout=5.0)
        assert resp.status_code == 200
        with pytest.raises(aiopool.ReadTimeout):
            await client.get(f"{server.url}/delay?s=0.2")


async def test_cancel_while_draining_an_unread_body(server: FaultServer) -> None:
    # The body trickles (10 bytes every 20 ms), so leaving the block starts a drain that is
    # still waiting when the task is cancelled: the socket must be closed, not pooled.
    entered = asyncio.Event()

    async def consume() -> None:
        async with client.stream("GET", f"{server.url}/slow?chunks=20&delay=0.02&size=10"):
            entered.set()

    async with aiopool.Client() as client:
        task = asyncio.create_task(consume())
        await entered.wait()
        await asyncio.sleep(0.01)  # inside the 50 ms drain window
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_a_request_whose_dial_hangs_gets_connect_timeout_not_pool_timeout(
    blackhole: BlackholeServer,
) -> None:
    # Equal pool and connect timeouts (httpx's default Timeout(5) has them): once a dial that
    # will serve the request is in flight, the connect timeout decides, not the pool timer.
    url = f"https://127.0.0.1:{blackhole.port}/"
    async with aiopool.Client(timeout=aiopool.Timeout(5, connect=0.3, pool=0.3)) as client:
        with pytest.raises(aiopool.ConnectTimeout):
            await client.get(url)
        assert_settled(client)


async def test_pool_timeout_still_bounds_a_wait_no_dial_covers(fault_server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=1) as client:
        busy = asyncio.create_task(client.get(f"{fault_server.url}/stall-headers"))
        await eventually(lambda: client.stats().active == 1)
        with pytest.raises(aiopool.PoolTimeout):
            await client.get(f"{fault_server.url}/echo", timeout=aiopool.Timeout(5, pool=0.2))
        busy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await busy
        assert_settled(client)
