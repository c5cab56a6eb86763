"""The memory scenario, measured with tracemalloc inside one worker process.

- **bytes per waiting task**: a pool of 4 sockets to a listener that accepts TCP connections
  (the kernel completes the handshake) but never answers, so 4 requests stay in flight for
  good. With those 4 running, 9,996 more tasks are started; once they are all queued for a
  connection (aiopool: ``client.stats().waiting``; the others: after the loop has settled),
  the growth of traced memory is divided by 9,996. ``task_bytes_net`` subtracts the cost of a
  bare task blocked on an ``asyncio.Event`` (measured the same way), leaving what the client
  adds per queued request.
- **bytes per idle socket**: after one warm-up request, N streamed requests that each wait,
  between the headers and the body, until all N have their headers hold N keep-alive sockets
  to nginx (plain HTTP, then TLS with HTTP/1.1); once the bodies are read and the sockets are
  all idle in the pool, the growth of traced memory is divided by the new idle sockets.

tracemalloc sees what Python's allocators hand out (objects, buffers, ``PyMem_Malloc``), not
memory that C libraries take from ``malloc`` themselves: OpenSSL's per-connection state, the
event loop's own structures under uvloop. Compare clients on the same loop only.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from scenarios import ClientSpec, Scenario
from workers import Bench, OpenClient, Options

SETTLE_TIMEOUT = 5.0


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def settle(done: Callable[[], bool | None]) -> None:
    """Let the loop run until ``done()`` is true (None: it cannot tell) and memory is steady."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT
    for _ in range(5):
        await asyncio.sleep(0)
    last = -1
    while time.perf_counter() < deadline:
        now = tracemalloc.get_traced_memory()[0]
        if done() is not False and abs(now - last) <= last // 1000:
            return
        last = now
        await asyncio.sleep(0.05)


async def bare_task_bytes(n: int) -> float:
    event = asyncio.Event()
    before = traced()
    tasks = [asyncio.ensure_future(event.wait()) for _ in range(n)]
    await settle(lambda: None)
    grown = traced() - before
    event.set()
    await asyncio.gather(*tasks)
    return grown / n


def _equal(get: Callable[[], int | None], want: int) -> Callable[[], bool | None]:
    def done() -> bool | None:
        got = get()
        return None if got is None else got >= want

    return done


async def waiting_task_bytes(
    spec: ClientSpec, scenario: Scenario, open_client: OpenClient, result: dict[str, Any]
) -> float:
    """Bytes per task queued behind ``scenario.concurrency`` sockets that never answer."""
    conns = scenario.concurrency
    n, why = scenario.tasks_for.get(spec.name, (scenario.tasks, ""))
    if why:
        result["notes"].append(f"memory: {n:,} queued tasks instead of {scenario.tasks:,} ({why})")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(conns * 4)  # never accepted: connects complete, requests get no answer
        url = f"http://127.0.0.1:{hole.getsockname()[1]}/echo?id=1"
        opts = Options(url, conns, False, None)
        async with open_client(spec, opts) as bench:
            first = [asyncio.ensure_future(bench.fetch()) for _ in range(conns)]
            await settle(_equal(bench.opened, conns))
            await asyncio.sleep(0.05)  # let the requests go out
            before = traced()
            rest = [asyncio.ensure_future(bench.fetch()) for _ in range(n - conns)]
            await settle(_equal(bench.waiting, n - conns))
            grown = traced() - before
            result["waiting_reported"] = bench.waiting()
            result["tasks_queued"] = len(rest)
            t0 = time.perf_counter()
            for task in first + rest:
                task.cancel()
            outcomes = await asyncio.gather(*first, *rest, return_exceptions=True)
            result["cancel_all_s"] = round(time.perf_counter() - t0, 4)
            odd = [o for o in outcomes if not isinstance(o, asyncio.CancelledError)]
            if odd:
                result["notes"].append(f"{len(odd)} queued requests ended other than cancelled")
    return grown / len(rest)


async def idle_socket_bytes(
    spec: ClientSpec, url: str, count: int, ctx: ssl.SSLContext | None, open_client: OpenClient
) -> tuple[float, int]:
    """(bytes per idle keep-alive socket, sockets measured)."""
    async with open_client(spec, Options(url, count, False, ctx)) as bench:
        await bench.fetch()  # warm-up: lazy imports, caches, the first socket
        idle_before = bench.idle_sockets() or 0
        before = traced()
        await gather_held(bench, count)
        await asyncio.sleep(0.05)
        grown = traced() - before
        opened = (bench.idle_sockets() or 0) - idle_before
    if opened <= 0:
        raise RuntimeError(f"{count} requests at once left no new idle socket in the pool")
    return grown / opened, opened


async def gather_held(bench: Bench, count: int) -> None:
    """``count`` requests, each holding its socket until all ``count`` have their headers."""
    arrived = 0
    everyone = asyncio.Event()

    async def pause() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()
        await everyone.wait()

    results = await asyncio.gather(*(bench.hold(pause) for _ in range(count)))
    del results


async def run_memory(
    spec: ClientSpec,
    scenario: Scenario,
    job: dict[str, Any],
    ctx: ssl.SSLContext | None,
    open_client: OpenClient,
) -> dict[str, Any]:
    result: dict[str, Any] = {"notes": [], "errors": 0}
    tracemalloc.start()
    try:
        bare = await bare_task_bytes(scenario.tasks)
        task = await waiting_task_bytes(spec, scenario, open_client, result)
        values: dict[str, float] = {
            "task_bytes": round(task),
            "bare_task_bytes": round(bare),
            "task_bytes_net": round(task - bare),
        }
        sockets = job["mem_sockets"]
        per_socket, opened = await idle_socket_bytes(
            spec, job["http"] + "/small.txt", sockets, None, open_client
        )
        values["idle_socket_bytes"] = round(per_socket)
        result["idle_sockets"] = opened
        if job.get("https") and ctx is not None:
            per_tls, opened_tls = await idle_socket_bytes(
                spec, job["https"] + "/small.txt", sockets, ctx, open_client
            )
            values["idle_tls_socket_bytes"] = round(per_tls)
            result["idle_tls_sockets"] = opened_tls
    finally:
        tracemalloc.stop()
    for got, key in ((result["idle_sockets"], "idle"), (result.get("idle_tls_sockets"), "TLS")):
        if got is not None and got < sockets - 1:
            result["notes"].append(f"only {got} of {sockets - 1} new {key} sockets stayed idle")
    result["values"] = values
    return result
