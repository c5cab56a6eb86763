"""Why a connection pool matters: a new client per request vs one shared client.

Starts a local HTTPS server (throwaway trustme CA, no internet needed), sends the same
requests two ways and compares sockets opened, TLS handshakes and time taken.

    python examples/demo.py [--requests 200] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _local_server import SMALL_BODY, LocalServer

import aiopool


@dataclass
class Run:
    label: str
    requests: int = 0
    server_tcp: int = 0  # TCP connections the server accepted
    server_tls: int = 0  # TLS handshakes the server completed
    opened: int = 0  # client.stats().connections_opened (summed over clients)
    reused: int = 0  # client.stats().reused (summed over clients)
    seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def check(status: int, body: bytes, problems: list[str]) -> None:
    if status != 200 or body != SMALL_BODY:
        problems.append(f"bad response: {status} {body[:60]!r}")


async def drive(n: int, concurrency: int, one: Callable[[], Awaitable[None]]) -> float:
    """Run ``one()`` n times on ``concurrency`` workers; return the wall time taken."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(min(n, concurrency)):
            tg.create_task(worker())
    return time.perf_counter() - start


async def new_client_per_request(
    server: LocalServer, ca: str, n: int, concurrency: int, problems: list[str]
) -> Run:
    run = Run("new client per request", requests=n)

    async def one() -> None:
        async with aiopool.Client(verify=ca) as client:
            resp = await client.get(f"{server.url}/small.txt")
            check(resp.status_code, resp.content, problems)
            stats = client.stats()
            run.opened += stats.connections_opened
            run.reused += stats.reused

    server.reset_counters()
    run.seconds = await drive(n, concurrency, one)
    run.server_tcp, run.server_tls = server.connections, server.handshakes
    return run


async def one_shared_client(
    server: LocalServer, ca: str, n: int, concurrency: int, problems: list[str]
) -> tuple[Run, aiopool.ConnInfo | None]:
    run = Run("one shared client", requests=n)
    sample: list[aiopool.ConnInfo] = []
    server.reset_counters()
    async with aiopool.Client(
        verify=ca,
        max_connections=max(100, concurrency),
        max_connections_per_host=concurrency,
        max_idle_per_host=concurrency,
    ) as client:

        async def one() -> None:
            resp = await client.get(f"{server.url}/small.txt")
            check(resp.status_code, resp.content, problems)
            if resp.conn_info.reused and not sample:
                sample.append(resp.conn_info)

        run.seconds = await drive(n, concurrency, one)
        stats = client.stats()
        run.opened, run.reused = stats.connections_opened, stats.reused
        if stats.requests != n:
            problems.append(f"shared client: stats.requests={stats.requests}, expected {n}")
    run.server_tcp, run.server_tls = server.connections, server.handshakes
    return run, (sample[0] if sample else None)


def print_table(a: Run, b: Run) -> None:
    rows = [
        ("requests", str(a.requests), str(b.requests)),
        ("TCP connections (server count)", str(a.server_tcp), str(b.server_tcp)),
        ("TLS handshakes (server count)", str(a.server_tls), str(b.server_tls)),
        ("connections opened (client stats)", str(a.opened), str(b.opened)),
        ("requests on a reused connection", str(a.reused), str(b.reused)),
        ("total time", f"{a.seconds:.3f} s", f"{b.seconds:.3f} s"),
        ("requests per second", f"{a.rps:,.0f}", f"{b.rps:,.0f}"),
    ]
    w0, w1, w2 = 34, max(len(a.label), 12), max(len(b.label), 12)
    print(f"{'':<{w0}}  {a.label:>{w1}}  {b.label:>{w2}}")
    print(f"{'':-<{w0}}  {'':->{w1}}  {'':->{w2}}")
    for name, x, y in rows:
        print(f"{name:<{w0}}  {x:>{w1}}  {y:>{w2}}")
    speedup = a.seconds / b.seconds if b.seconds else float("inf")
    print(f"{'speed-up of the shared client':<{w0}}  {'':>{w1}}  {f'{speedup:.1f}x':>{w2}}")


def verify_runs(a: Run, b: Run, concurrency: int, problems: list[str]) -> None:
    n = a.requests
    if a.server_tcp != n or a.opened != n:
        problems.append(f"per-request clients: {a.server_tcp} sockets / {a.opened} opened, not {n}")
    if b.server_tcp > concurrency:
        problems.append(f"shared client opened {b.server_tcp} sockets > concurrency {concurrency}")
    if b.opened != b.server_tcp:
        problems.append(f"shared client: stats say {b.opened} opened, server saw {b.server_tcp}")
    if b.opened + b.reused != n:
        problems.append(f"shared client: opened {b.opened} + reused {b.reused} != {n} requests")


async def main(n: int, concurrency: int) -> int:
    problems: list[str] = []
    async with LocalServer(tls=True) as server:
        assert server.ca_path is not None
        print(f"Local HTTPS server at {server.url} (throwaway trustme CA)")
        print(f"Sending {n} GET requests, {concurrency} at a time, two ways...\n")
        try:
            a = await new_client_per_request(server, server.ca_path, n, concurrency, problems)
            b, info = await one_shared_client(server, server.ca_path, n, concurrency, problems)
        except aiopool.AiopoolError as exc:
            print(f"FAILED: request raised {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    print_table(a, b)
    print(
        "\nEvery `async with aiopool.Client()` owns its own pool, so a client made for a single\n"
        "request has to open a fresh TCP connection and complete a full TLS handshake before it\n"
        "can send anything, then throws that work away when it closes. One long-lived client\n"
        "keeps finished connections idle in its pool and hands them to the next request, so the\n"
        "handshakes are paid once per connection rather than once per request: at most\n"
        f"{concurrency} sockets carry all {n} requests. Create one Client at startup and share\n"
        "it for the life of the program.\n"
    )
    if info is None:
        problems.append("no response from the shared client reported conn_info.reused=True")
    else:
        print(f"A response from the shared client: resp.conn_info = {info!r}")
    verify_runs(a, b, concurrency, problems)
    if b.seconds > a.seconds:
        print("warning: the shared client was not faster this time (busy machine?)")
    for problem in dict.fromkeys(problems):
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="requests per run (200)")
    parser.add_argument("--concurrency", type=int, default=10, help="requests in flight (10)")
    args = parser.parse_args()
    if not 1 <= args.concurrency < args.requests:
        parser.error("need 1 <= --concurrency < --requests, or no connection can be reused")
    sys.exit(asyncio.run(main(args.requests, args.concurrency)))
