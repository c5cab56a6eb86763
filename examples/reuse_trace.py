"""Is my connection reused? What Go's httptrace shows, and what the common mistakes cost.

Starts a local HTTPS server (throwaway trustme CA, no internet needed) and, measured live:

1. Like Go's ``httptrace`` "Got Conn" hook: for each of a few requests on one client, a
   trace hook of its own (``client.get(url, trace=hook)``) shows whether its connection was
   reused and every step it went through, with times: only the first request dials a socket
   and does a TLS handshake (``resp.conn_info`` tells the same after the fact).
2. Mistake: a new client per request. ``--requests`` sequential requests cost that many
   sockets and TLS handshakes, against one of each for a shared client; the times are shown.
3. Mistake: a streamed body never read nor closed. The socket cannot go back to the pool
   while the response is open, so the next request opens a new socket; when the forgotten
   response is garbage-collected aiopool emits a ``ResourceWarning`` naming the line that
   opened it, and closes the socket. Leaving ``async with client.stream(...)`` instead
   releases the socket, and the next request reuses it.

    python examples/reuse_trace.py [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import warnings
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _local_server import SMALL_BODY, LocalServer

import aiopool


def yes(flag: bool) -> str:
    return "true" if flag else "false"  # as Go prints it


def describe(event: aiopool.TraceEvent) -> str:
    """An event's name and, for the ones that say something here, its key field."""
    if event.name == "tls_handshake_done":
        return f"tls_handshake_done ({event.info.get('version')}, alpn {event.info.get('alpn')})"
    if event.name == "got_conn":
        return f"got_conn (reused {yes(event.info['reused'])})"
    return event.name


async def trace_reuse(server: LocalServer, ca: str, problems: list[str]) -> None:
    print("== 1. conn was reused? (one client, three requests)")
    async with aiopool.Client(verify=ca) as client:
        for i in range(1, 4):
            # A hook for this request alone, as Go's httptrace.WithClientTrace(ctx, trace).
            events: list[aiopool.TraceEvent] = []
            resp = await client.get(f"{server.url}/small.txt", trace=events.append)
            got = next(e for e in events if e.name == "got_conn").info
            print(
                f"request {i}: conn was reused: {yes(got['reused'])}, "
                f"was idle: {yes(got['was_idle'])}, idle time: {got['idle_time'] * 1000:.2f} ms, "
                f"connection id {resp.conn_info.id}"
            )
            for event in events:
                print(f"  {(event.time - events[0].time) * 1000:+7.2f} ms  {describe(event)}")
            dialed = any(e.name == "connect_start" for e in events)
            if got["reused"] != resp.conn_info.reused:
                problems.append(f"part 1: request {i}: got_conn and conn_info disagree")
            if resp.conn_info.reused != (i > 1) or dialed != (i == 1):
                problems.append(f"part 1: request {i} reused={got['reused']}, dialed={dialed}")
    print()


async def per_request_clients(server: LocalServer, ca: str, n: int, problems: list[str]) -> None:
    print(f"== 2. a new client per request vs one shared client ({n} sequential requests)")
    url = f"{server.url}/small.txt"
    server.reset_counters()
    start = time.perf_counter()
    for _ in range(n):
        async with aiopool.Client(verify=ca) as client:  # the mistake
            await client.get(url)
    per_request = (time.perf_counter() - start, server.connections, server.handshakes)

    server.reset_counters()
    start = time.perf_counter()
    async with aiopool.Client(verify=ca) as client:
        for _ in range(n):
            await client.get(url)
        reused = client.stats().reused
    shared = (time.perf_counter() - start, server.connections, server.handshakes)

    for label, (seconds, sockets, handshakes) in (
        ("new client per request", per_request),
        ("one shared client", shared),
    ):
        print(
            f"{label:<24} sockets: {sockets:>4}  TLS handshakes: {handshakes:>4}  "
            f"time: {seconds * 1000:8.1f} ms  ({seconds / n * 1000:.2f} ms per request)"
        )
    print(f"shared client: {reused} of {n} requests on a reused connection")
    print(f"cost of the mistake: {per_request[0] / shared[0]:.1f}x the time\n")
    if per_request[1:] != (n, n) or shared[1:] != (1, 1) or reused != n - 1:
        problems.append(f"part 2: per-request {per_request[1:]}, shared {shared[1:]}")


async def forgotten_body(server: LocalServer, ca: str, problems: list[str]) -> None:
    print("== 3. a streamed body never read nor closed vs one left in `async with`")
    url = f"{server.url}/small.txt"
    closes: list[str] = []

    def on_close(event: aiopool.TraceEvent) -> None:
        if event.name == "conn_closed":
            closes.append(f"conn_closed (connection {event.conn_id}, {event.info['reason']})")

    async with aiopool.Client(verify=ca, trace=on_close) as client:
        # The mistake: entering the stream by hand (as a helper that returns the response
        # might), never reading the body nor leaving the block.
        forgotten = await client.stream("GET", url).__aenter__()
        resp = await client.get(url)
        stats = client.stats()
        print(
            f"forgotten: next request reused: {yes(resp.conn_info.reused)}; "
            f"sockets opened: {stats.connections_opened}, active: {stats.active}"
        )
        if resp.conn_info.reused or stats.connections_opened != 2:
            problems.append("part 3: the forgotten response's socket was reused")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            del forgotten
            gc.collect()  # a response may sit in a reference cycle; collect it now
        for warning in caught:
            print(f"  {warning.category.__name__}: {warning.message}")
        for close in closes:
            print(f"  trace: {close}")
        closed = client.stats().connections_closed
        print(f"after garbage collection: connections closed: {closed}")
        if not any(issubclass(w.category, ResourceWarning) for w in caught) or closed != 1:
            problems.append("part 3: no ResourceWarning, or the leaked socket was not closed")

    async with aiopool.Client(verify=ca) as client:
        async with client.stream("GET", url) as resp:  # the fix: leave the block
            pass  # (even unread: a small remainder is drained so the socket can be reused)
        again = await client.get(url)
        stats = client.stats()
        print(
            f"closed by the block: next request reused: {yes(again.conn_info.reused)}; "
            f"sockets opened: {stats.connections_opened}"
        )
        if not again.conn_info.reused or stats.connections_opened != 1:
            problems.append("part 3: the released socket was not reused")
        if again.content != SMALL_BODY:
            problems.append("part 3: wrong body")
    print()


async def main(n: int) -> int:
    problems: list[str] = []
    async with LocalServer(tls=True) as server:
        assert server.ca_path is not None
        await trace_reuse(server, server.ca_path, problems)
        await per_request_clients(server, server.ca_path, n, problems)
        await forgotten_body(server, server.ca_path, problems)
    print(
        "Create one Client and share it; read streamed bodies inside `async with\n"
        "client.stream(...)`. Either mistake makes every request pay a TCP connect and a TLS\n"
        "handshake that a pooled socket would have saved."
    )
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50, help="requests per way (50)")
    args = parser.parse_args()
    if args.requests < 2:
        parser.error("--requests must be at least 2")
    sys.exit(asyncio.run(main(args.requests)))
