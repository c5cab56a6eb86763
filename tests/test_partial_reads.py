"""A body left after a partial read is drained and its socket reused (docs/design.md invariant 4).

The natural way to stop reading, `async for chunk in resp.aiter_bytes(): break`, abandons an async
generator suspended at its `yield`. CPython finalises it (asyncio's async-generator hook schedules
its `aclose()`) on the next loop turn: while the `stream()` block's exit is still draining the rest
of the body. Its `GeneratorExit` is not a failure of the body, and the generator must not touch the
connection at all: the response's own `aclose()` decides whether to drain or close. These tests use
bodies that arrive in pieces with pauses between them (as hypercorn, node and Apache send 64 KiB
pieces), so the drain must wait for the network, the case that used to fail every time.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer

pytestmark = pytest.mark.both_parsers

# 4 pieces of 16 KiB, 2 ms apart: the rest of the body is not buffered when the block is left,
# and all of it arrives well inside the drain bound (256 KiB within 50 ms).
PIECES = "/slow?chunks=4&size=16384&delay=0.002"


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


def _iterator(resp: aiopool.Response, kind: str) -> AsyncIterator[bytes]:
    return resp.aiter_raw() if kind == "raw" else resp.aiter_bytes()


async def _assert_reused(client: aiopool.Client, server: FaultServer, conn_id: str) -> None:
    stats = assert_settled(client)
    assert stats.idle == 1 and stats.connections_closed == 0
    again = await client.get(f"{server.url}/echo")
    assert again.conn_info.reused and again.headers["x-conn-id"] == conn_id
    assert server.connections_accepted == 1


@pytest.mark.parametrize("kind", ["bytes", "raw"])
async def test_break_out_of_iteration_drains_and_reuses(server: FaultServer, kind: str) -> None:
    closed: list[aiopool.TraceEvent] = []

    def trace(event: aiopool.TraceEvent) -> None:
        if event.name == "conn_closed":
            closed.append(event)

    async with aiopool.Client(trace=trace) as client:
        for _ in range(5):  # (each round must drain: the first socket serves them all)
            async with client.stream("GET", server.url + PIECES) as resp:
                conn_id = resp.headers["x-conn-id"]
                async for chunk in _iterator(resp, kind):
                    assert chunk
                    break
            assert closed == []
        await _assert_reused(client, server, conn_id)


@pytest.mark.parametrize("kind", ["bytes", "raw"])
async def test_iterator_closed_explicitly_then_block_left(server: FaultServer, kind: str) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", server.url + PIECES) as resp:
            conn_id = resp.headers["x-conn-id"]
            iterator = _iterator(resp, kind)
            assert await anext(iterator)
            await iterator.aclose()  # type: ignore[attr-defined]
        await _assert_reused(client, server, conn_id)


@pytest.mark.parametrize(
    "finish",
    [
        pytest.param(lambda it: it.aclose(), id="aclose-after-block"),
        pytest.param(None, id="garbage-collected-after-block"),
    ],
)
async def test_iterator_outliving_the_block_never_touches_the_pooled_socket(
    server: FaultServer, finish: Callable[[AsyncIterator[bytes]], object] | None
) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", server.url + PIECES) as resp:
            conn_id = resp.headers["x-conn-id"]
            iterator = resp.aiter_bytes()
            assert await anext(iterator)
        # The block drained the body and pooled the socket; the iterator is still suspended.
        assert assert_settled(client).idle == 1
        if finish is not None:
            await finish(iterator)  # type: ignore[misc]
        else:
            del iterator
            gc.collect()
        # Whatever the late finaliser does, the pooled socket is intact and serves the next
        # request (one with a body in pieces, so a stray abort would be seen mid-response).
        async with client.stream("GET", server.url + PIECES) as again:
            assert again.headers["x-conn-id"] == conn_id
            assert len(await again.aread()) == 4 * 16384
        await _assert_reused(client, server, conn_id)


async def test_iterating_again_after_a_break_is_refused(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", server.url + PIECES) as resp:
            async for _ in resp.aiter_bytes():
                break
            with pytest.raises(aiopool.StreamConsumed):
                await anext(resp.aiter_bytes())
        assert assert_settled(client).idle == 1
