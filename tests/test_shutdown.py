"""`aclose()`: what happens to everything a client holds when it is closed.

The choice (documented on `Client.aclose`): requests in flight and requests waiting for a
connection fail at once with `ClientClosed`; idle sockets are closed; dials in flight are
cancelled; HTTP/2 reader tasks end. When `aclose()` returns, no socket of the client is open and
no task of the client's is left running. A closed client refuses new requests with `ClientClosed`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

import aiopool
from tests.helpers import eventually
from tests.rig import BlackholeServer, FaultServer
from tests.rig.h2_server import H2ScriptServer


def other_tasks() -> set[asyncio.Task[object]]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def outcome(awaitable: Awaitable[object]) -> BaseException | None:
    try:
        await awaitable
    except BaseException as exc:  # collected for the test to inspect
        return exc
    return None


async def test_aclose_fails_everything_in_flight_with_client_closed(
    fresh_fault_server: FaultServer, blackhole: BlackholeServer
) -> None:
    server = fresh_fault_server
    tasks_before = other_tasks()
    client = aiopool.Client(max_connections_per_host=3, timeout=aiopool.Timeout(30))
    await client.get(f"{server.url}/echo")  # one idle socket, reused by the first task below

    async def stream_body() -> None:
        async with client.stream("GET", f"{server.url}/stall?sent=10") as resp:
            async for _ in resp.aiter_bytes():
                pass

    reading_head = asyncio.create_task(client.get(f"{server.url}/stall-headers"))
    reading_body = asyncio.create_task(stream_body())
    fresh_socket = asyncio.create_task(client.get(f"{server.url}/stall-headers?n=2"))
    waiting = asyncio.create_task(client.get(f"{server.url}/echo"))
    dialing = asyncio.create_task(client.get(f"https://127.0.0.1:{blackhole.port}/"))
    # Three sockets busy, one request queued behind them, one waiting for its dial.
    await eventually(
        lambda: (
            (client.stats().active, client.stats().waiting, client.stats().connecting) == (3, 2, 1)
        )
    )

    await client.aclose()

    outcomes = [
        await outcome(task) for task in (reading_head, reading_body, fresh_socket, waiting, dialing)
    ]
    for exc in outcomes:
        assert isinstance(exc, aiopool.ClientClosed), repr(exc)
    assert all("in flight" in str(exc) for exc in outcomes[:3])
    assert all("waited for a connection" in str(exc) for exc in outcomes[3:])
    stats = client.stats()
    assert (stats.active, stats.idle, stats.connecting, stats.waiting) == (0, 0, 0, 0)
    assert stats.connections_closed == stats.connections_opened
    assert other_tasks() == tasks_before  # no dial, timer or reader task left behind
    assert await server.wait_for_async(lambda: server.open_connections() == 0)
    with pytest.raises(aiopool.ClientClosed):
        await client.get(f"{server.url}/echo")


async def test_aclose_fails_open_h2_streams_with_client_closed(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    tasks_before = other_tasks()
    client = aiopool.Client(http1=False)
    await client.get(f"{server.url}/echo?id=warm")
    stalled = [asyncio.create_task(client.get(f"{server.url}/stall-headers")) for _ in range(20)]
    await eventually(lambda: client.stats().hosts[server.url].streams == 20)
    await client.aclose()
    for task in stalled:
        exc = await outcome(task)
        assert isinstance(exc, aiopool.ClientClosed), repr(exc)
    stats = client.stats()
    assert stats.connections_closed == stats.connections_opened == 1
    assert other_tasks() == tasks_before  # the socket's reader task ended too
