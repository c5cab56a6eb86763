"""One soak phase: one client, many concurrent workers, random cancellations, nginx reloads.

Each request runs as its own task so that it can be cancelled from outside at a random moment,
as an application's task group or timeout would; the worker waits for it with a bound, so a
hung request is reported instead of hanging the soak. After the load, the phase checks the
pool (settled), the descriptors (baseline + idle sockets while the client is open, baseline
once it is closed) and records the process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import random
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import aiopool
from tests.rig.fault_server import FaultServer
from tests.rig.nginx import Nginx

from ._checks import PhaseResult, open_fds, rss_bytes, settled_problems, wait_until
from ._kinds import Mix, SoakContext, Spec

__all__ = ["PhasePlan", "run_phase"]

# No request in the soak may take this long: every kind has a read timeout far below it, so a
# request still running after it is hung (a lost wake-up, a stream nobody will ever finish).
_HANG_BOUND = 30.0
# Requests in flight during a reload, or started this soon after it, may fail with a typed
# error: an old worker finishing up may close a socket under a request it already took.
# Outside that window the same error fails the run.
_RELOAD_GRACE = 1.0
# After a reload, how long the load may go on before a request must have reached the new
# worker through the pool (old keep-alive sockets are closed by the old worker within moments).
_NEW_WORKER_BOUND = 10.0
# Cancellations land within this long after a request starts: most requests on loopback take
# a few milliseconds under load, so this spreads them over dialing, writing, waiting for the
# head and reading the body.
_MAX_CANCEL_DELAY = 0.004
# How long the pool and the descriptors may take to settle once the load stops (closes are
# synchronous in aiopool, but the servers close their sides on their own schedule).
_SETTLE_TIMEOUT = 10.0


@dataclass(frozen=True)
class PhasePlan:
    """What one phase runs: requests (and an optional time budget) over one client."""

    name: str
    requests: int
    client_options: dict[str, Any]
    mix: Mix
    seconds: float | None = None
    reloads: int = 0
    concurrency: int = 64
    cancel_rate: float = 0.02
    # An h2 origin whose server sends GOAWAY after a fixed number of requests per connection:
    # the connections it retired are counted as injected faults.
    goaway_origin: str | None = None
    seed: int = 0
    settle_timeout: float = _SETTLE_TIMEOUT


@dataclass
class _Tally:
    result: PhaseResult
    reload_windows: list[tuple[float, float]] = field(default_factory=list)

    def during_reload(self, start: float, end: float) -> bool:
        return any(start <= w_end and end >= w_start for w_start, w_end in self.reload_windows)


async def run_phase(
    plan: PhasePlan, ctx: SoakContext, nginx: Nginx, fault_server: FaultServer
) -> PhaseResult:
    """Run `plan` and check the pool and the process afterwards; never raises on a failed
    check (they are listed in the result's `problems`)."""
    loop = asyncio.get_running_loop()
    result = PhaseResult(plan.name)
    tally = _Tally(result)
    ctx.worker_pids.clear()
    # The fault server shares this process: wait until it holds no socket from earlier phases.
    await wait_until(lambda: fault_server.open_connections() == 0, _SETTLE_TIMEOUT)
    gc.collect()
    result.fds_before = open_fds()
    rng = random.Random(plan.seed)
    counter = itertools.count()
    start = loop.time()
    deadline = math.inf if plan.seconds is None else start + plan.seconds
    started = 0
    reloads_done = 0
    last_reload_at = 0.0
    reload_failed = False

    def awaiting_new_worker() -> bool:
        """Whether the latest reload's worker has yet to answer a /worker request sent
        through the pool (the proof that the client moved on to it); False after a bound."""
        if not result.reloads or result.reloads[-1] in ctx.worker_pids:
            return False
        if loop.time() < last_reload_at + _NEW_WORKER_BOUND:
            return True
        problem = f"no request reached nginx's new worker {result.reloads[-1]} after its reload"
        if problem not in result.problems:
            result.problems.append(problem)
        return False

    def reload_pending() -> bool:
        # Reloads happen under load, and load follows each one until the new worker served:
        # however small the phase, the budget is overrun rather than a reload skipped.
        if reload_failed:
            return False
        return reloads_done < plan.reloads or awaiting_new_worker()

    def progress() -> float:
        by_count = started / plan.requests if plan.requests else 1.0
        by_time = 0.0 if plan.seconds is None else (loop.time() - start) / plan.seconds
        return max(by_count, by_time)

    async with aiopool.Client(**plan.client_options) as client:

        async def worker() -> None:
            nonlocal started
            while ((n := next(counter)) < plan.requests and loop.time() < deadline) or (
                reload_pending()
            ):
                started += 1
                spec = plan.mix.pick(ctx, f"{plan.name}.{n}", rng)
                await _one(client, spec, tally, rng, plan.cancel_rate)

        async def reloader() -> None:
            nonlocal reloads_done, last_reload_at, reload_failed
            try:
                for k in range(1, plan.reloads + 1):
                    while progress() < k / (plan.reloads + 1) or awaiting_new_worker():
                        await asyncio.sleep(0.005)
                    window_start = loop.time()
                    tally.reload_windows.append((window_start, math.inf))
                    try:
                        result.reloads.append(await asyncio.to_thread(nginx.reload))
                    finally:
                        last_reload_at = loop.time()
                        tally.reload_windows[-1] = (window_start, last_reload_at + _RELOAD_GRACE)
                    reloads_done += 1
            except Exception as exc:
                reload_failed = True
                result.problems.append(f"nginx reload {reloads_done + 1} failed: {exc!r}")

        reload_task = loop.create_task(reloader())
        try:
            await asyncio.gather(*(worker() for _ in range(plan.concurrency)))
        finally:
            # The workers only stop once every reload is done (or one failed).
            if not reload_task.done():
                reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload_task
        result.seconds = loop.time() - start
        result.worker_pids = len(ctx.worker_pids)
        if plan.reloads and result.worker_pids < plan.reloads + 1:
            result.problems.append(
                f"{plan.reloads} reload(s) under load, yet only {result.worker_pids} nginx "
                "worker(s) answered /worker"
            )

        if not await wait_until(lambda: not settled_problems(client.stats()), plan.settle_timeout):
            result.problems.extend(settled_problems(client.stats()))
        await _check_open_fds(client, result, fault_server, plan.settle_timeout)
        stats = client.stats()
        result.connections_opened = stats.connections_opened
        result.reused = stats.reused
        if plan.goaway_origin is not None and plan.goaway_origin in stats.hosts:
            host = stats.hosts[plan.goaway_origin]
            result.faults["h2 GOAWAY (nginx keepalive_requests)"] += host.opened - host.idle

    if not await wait_until(lambda: fault_server.open_connections() == 0, plan.settle_timeout):
        result.problems.append(
            f"the fault server still has {fault_server.open_connections()} connection(s) "
            "open after the client closed"
        )
    gc.collect()
    await wait_until(lambda: open_fds() == result.fds_before, plan.settle_timeout)
    result.fds_after = open_fds()
    if result.fds_after != result.fds_before:
        result.problems.append(
            f"descriptors: {result.fds_before} before the phase, {result.fds_after} after its "
            "client closed"
        )
    result.rss_after = rss_bytes()
    result.threads_after = threading.active_count()
    result.blocks_after = sys.getallocatedblocks()
    return result


async def _check_open_fds(
    client: aiopool.Client, result: PhaseResult, fault_server: FaultServer, settle_timeout: float
) -> None:
    """With the client open, the only new descriptors are its idle sockets (and the fault
    server's ends of those that lead to it)."""

    def expected() -> int:
        return result.fds_before + client.stats().idle + fault_server.open_connections()

    await wait_until(lambda: open_fds() == expected(), settle_timeout)
    result.fds_open = open_fds()
    result.idle_sockets = client.stats().idle
    if result.fds_open != expected():
        result.problems.append(
            f"descriptors with the client open: {result.fds_open}, expected {expected()} "
            f"(baseline {result.fds_before} + idle {result.idle_sockets} + fault-server side "
            f"{fault_server.open_connections()})"
        )


async def _one(
    client: aiopool.Client, spec: Spec, tally: _Tally, rng: random.Random, cancel_rate: float
) -> None:
    loop = asyncio.get_running_loop()
    result = tally.result
    task = loop.create_task(_perform(client, spec))
    cancelled_by_us = False
    handle = None
    if rng.random() < cancel_rate:

        def cancel() -> None:
            nonlocal cancelled_by_us
            cancelled_by_us = task.cancel()

        handle = loop.call_later(rng.uniform(0, _MAX_CANCEL_DELAY), cancel)
    begun = loop.time()
    done, _ = await asyncio.wait({task}, timeout=_HANG_BOUND)
    if handle is not None:
        handle.cancel()
    result.requests += 1
    if spec.fault is not None:
        result.faults[spec.fault] += 1
    if cancelled_by_us:
        result.faults["task cancelled"] += 1
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=_SETTLE_TIMEOUT)
        result.note_unexpected("Hang", f"{spec.kind} {spec.url}: still running after 30 s")
        return
    if task.cancelled():
        if cancelled_by_us:
            result.cancelled += 1
        else:
            result.note_unexpected("CancelledError", f"{spec.kind} {spec.url}: not cancelled by us")
        return
    exc = task.exception()
    if exc is None:
        problem = task.result()
        if problem is not None:
            result.note_unexpected("CrossedBody", f"{spec.kind} {spec.url}: {problem}")
        elif cancelled_by_us:
            result.note_unexpected(
                "CancellationSwallowed", f"{spec.kind} {spec.url}: cancelled, yet it returned"
            )
        else:
            result.ok += 1
        return
    name = type(exc).__name__
    if cancelled_by_us:
        # A cancelled request must end in CancelledError, not be turned into something else.
        result.note_unexpected(f"{name} instead of CancelledError", f"{spec.kind}: {exc!r}")
    elif isinstance(exc, spec.expected):
        result.expected[name] += 1
    elif isinstance(exc, aiopool.TransportError) and tally.during_reload(begun, loop.time()):
        result.expected[f"{name} (during a reload)"] += 1
        if len(result.tolerated) < 5:
            result.tolerated.append(f"{spec.kind} {spec.url}: {exc!r}")
    else:
        result.note_unexpected(name, f"{spec.kind} {spec.url}: {exc!r}")


async def _perform(client: aiopool.Client, spec: Spec) -> str | None:
    """Send `spec`; return None if the response is the right one, else what is wrong."""
    options: dict[str, Any] = {"content": spec.content}
    if spec.timeout is not None:
        options["timeout"] = spec.timeout
    if spec.prefix is None:
        response = await client.request(spec.method, spec.url, **options)
        return spec.check(response.status_code, response.content)
    async with client.stream(spec.method, spec.url, **options) as response:
        received = bytearray()
        async for chunk in response.aiter_bytes():
            received += chunk
            if len(received) >= spec.prefix:
                break  # leave the rest unread, as a client that found what it wanted would
        return spec.check(response.status_code, bytes(received[: spec.prefix]))
