"""Assertions about the pool shared by the behaviour tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiopool


def assert_settled(client: aiopool.Client) -> aiopool.PoolStats:
    """No request holds, waits for, or dials a connection: nothing leaked."""
    stats = client.stats()
    for origin, host in stats.hosts.items():
        assert (host.active, host.connecting, host.waiting, host.streams) == (0, 0, 0, 0), (
            origin,
            host,
        )
    return stats


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the test's loop) until `predicate()` holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
