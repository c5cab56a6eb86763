"""Assertions about the pool shared by the behaviour tests."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import aiopool
from aiopool._connection import Connection
from aiopool._pool import ConnectionPool


def assert_settled(client: aiopool.Client) -> aiopool.PoolStats:
    """No request holds, waits for, or dials a connection: nothing leaked."""
    stats = client.stats()
    for origin, host in stats.hosts.items():
        assert (host.active, host.connecting, host.waiting, host.streams) == (0, 0, 0, 0), (
            origin,
            host,
        )
    return stats


def pool_of(client: aiopool.Client) -> ConnectionPool:
    """The connection pool behind `client`'s default transport (for white-box assertions)."""
    transport = client.transport
    assert isinstance(transport, aiopool.PoolTransport)
    return transport._pool


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (on the test's loop) until `predicate()` holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def cancellation_storm(
    one: Callable[[int], Coroutine[Any, Any, None]],
    *,
    tasks: int,
    cancels: int,
    max_pause: float,
    rng: random.Random,
) -> list[BaseException]:
    """Run `one(i)` for i in range(tasks) at once, cancelling `cancels` random tasks at random
    moments; return the exceptions the tasks ended with (completed ones return None)."""
    running = [asyncio.create_task(one(i)) for i in range(tasks)]
    for _ in range(cancels):
        await asyncio.sleep(rng.random() * max_pause)
        rng.choice(running).cancel()
    results = await asyncio.gather(*running, return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


def connections_of(client: aiopool.Client) -> list[Connection]:
    """The open connections in `client`'s pool (read only, for white-box assertions)."""
    return list(pool_of(client)._state.conns)


def ctrl_c_enabled() -> None:
    """`preexec_fn` for a child that a test interrupts with SIGINT (Ctrl-C): a shell starts
    background commands with SIGINT ignored (POSIX, when job control is off, as for a CI job
    launched with `&`), a child inherits that, and Python then installs no KeyboardInterrupt
    handler; the test would wait for a signal nobody hears."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
