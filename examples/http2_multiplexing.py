"""HTTP/2 multiplexing: many concurrent requests over ONE socket, and the server's stream limit.

Starts hypercorn in-process as a local HTTP/2 server (h2 over TLS, throwaway trustme CA, no
internet needed) and shows three things:

1. ``--requests`` requests in flight at once travel as that many streams over one TCP+TLS
   connection. The server holds every request until all have arrived, so they really are
   concurrent; it reports how many streams each of its connections carried.
2. At the server's SETTINGS_MAX_CONCURRENT_STREAMS (``--limit``) a socket is full: twice that
   many requests make aiopool open a second socket (as Go's transport does), each carrying
   ``--limit`` streams, never more.
3. With ``max_connections_per_host=1`` no second socket may open: requests beyond the limit
   wait in the pool's FIFO queue for a stream slot and all succeed; the socket never carries
   more than the limit.

    python examples/http2_multiplexing.py [--requests 50] [--limit 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _h2_server import H2Server

import aiopool


@contextlib.asynccontextmanager
async def peak_streams(client: aiopool.Client) -> AsyncIterator[Callable[[], int]]:
    """Sample ``client.stats().streams`` on every loop turn; yield a getter for the peak."""
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, client.stats().streams)
            await asyncio.sleep(0)

    task = asyncio.create_task(sample())
    try:
        yield lambda: peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def client_for(server: H2Server, max_connections_per_host: int = 10) -> aiopool.Client:
    assert server.ca_path is not None  # H2Server is always TLS
    return aiopool.Client(verify=server.ca_path, max_connections_per_host=max_connections_per_host)


async def together(client: aiopool.Client, url: str, group: str, n: int) -> list[aiopool.Response]:
    """n requests the server answers only once all n are in flight."""
    target = f"{url}/together?group={group}&n={n}"
    return await asyncio.gather(*(client.get(target) for _ in range(n)))


def report(title: str, client: aiopool.Client, server: H2Server, peak: int) -> None:
    stats = client.stats()
    per_conn = sorted(server.app.streams_by_connection.values(), reverse=True)
    print(f"== {title}")
    print(f"requests: {stats.requests}")
    print(f"http versions (server): {', '.join(sorted(server.app.http_versions))}")
    print(f"sockets opened (client stats): {stats.connections_opened}")
    print(f"connections (server count): {len(per_conn)}")
    print(f"peak streams per connection (server): {per_conn}")
    print(f"peak open streams (client stats): {peak}")
    print()


async def one_socket(n: int, problems: list[str]) -> None:
    async with (
        H2Server(max_concurrent_streams=max(n, 100)) as server,
        client_for(server) as client,
    ):
        async with peak_streams(client) as peak:
            responses = await together(client, server.url, "one", n)
        if not all(r.http_version == "HTTP/2" and r.json()["filled"] for r in responses):
            problems.append(
                "part 1: not every response came over HTTP/2 with all requests in flight"
            )
        report(f"{n} concurrent requests", client, server, peak())
        if client.stats().connections_opened != 1:
            problems.append(f"part 1: {client.stats().connections_opened} sockets, expected 1")


async def at_the_limit(limit: int, problems: list[str]) -> None:
    async with (
        H2Server(max_concurrent_streams=limit) as server,
        client_for(server) as client,
    ):
        # No warm-up needed: aiopool hands a new h2 socket out only once the server's SETTINGS
        # (with its limit) have arrived, so even this first burst stays within the limit.
        # (hypercorn, via h2, answers excess streams with a connection error, not the
        # REFUSED_STREAM of RFC 9113 section 5.1.2, so sending them would fail every stream.)
        async with peak_streams(client) as peak:
            responses = await together(client, server.url, "two", 2 * limit)
        if not all(r.json()["filled"] for r in responses):
            problems.append("part 2: the server never saw all requests in flight at once")
        report(
            f"{2 * limit} concurrent requests, server limit {limit} streams", client, server, peak()
        )
        if client.stats().connections_opened != 2:
            problems.append(f"part 2: {client.stats().connections_opened} sockets, expected 2")
        if max(server.app.streams_by_connection.values()) > limit:
            problems.append("part 2: a socket carried more streams than the server allows")


async def queued_for_a_slot(limit: int, problems: list[str]) -> None:
    n = 3 * limit
    async with (
        H2Server(max_concurrent_streams=limit) as server,
        client_for(server, max_connections_per_host=1) as client,
    ):
        # Batches of `limit` requests the server answers only when the whole batch is in
        # flight: the pool's FIFO queue hands the slots to the next batch as streams end.
        urls = [f"{server.url}/together?group=q{i // limit}&n={limit}" for i in range(n)]
        async with peak_streams(client) as peak:
            responses = await asyncio.gather(*(client.get(url) for url in urls))
        if not all(r.status_code == 200 and r.json()["filled"] for r in responses):
            problems.append("part 3: a request failed or a batch was not in flight at once")
        title = f"{n} requests, server limit {limit} streams, max_connections_per_host=1"
        report(title, client, server, peak())
        if client.stats().connections_opened != 1 or peak() > limit:
            problems.append("part 3: expected 1 socket carrying at most the limit")


async def main(n: int, limit: int) -> int:
    problems: list[str] = []
    await one_socket(n, problems)
    await at_the_limit(limit, problems)
    await queued_for_a_slot(limit, problems)
    print(
        "One HTTP/2 socket carries many requests at once, so a client needs no pool of sockets\n"
        "per host to get concurrency: one TLS handshake serves every request. The server caps\n"
        "the streams per socket (SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 section 6.5.2);\n"
        "past it aiopool opens another socket if max_connections_per_host allows, and\n"
        "otherwise queues the request until a stream ends."
    )
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=50, help="concurrent requests (50)")
    parser.add_argument("--limit", type=int, default=10, help="server's stream limit (10)")
    args = parser.parse_args()
    if args.requests < 2 or args.limit < 1:
        parser.error("need --requests >= 2 and --limit >= 1")
    sys.exit(asyncio.run(main(args.requests, args.limit)))
