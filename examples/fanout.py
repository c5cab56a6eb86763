"""Fan out 1,000 requests with asyncio.gather over one Client, 20 sockets at most.

Starts a local plain-HTTP server (no internet needed). All requests are started at once;
the pool caps open connections at ``max_connections_per_host`` and the rest wait for a
free connection, so 1,000 requests travel over at most 20 sockets. Prints the pool's stats
(``client.stats()``, as JSON by ``PoolStats.to_json()``): every request either opened a
socket or reused one.

    python examples/fanout.py [--requests 1000] [--per-host 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _local_server import SMALL_BODY, LocalServer

import aiopool


async def main(n: int, per_host: int) -> int:
    async with (
        LocalServer() as server,
        aiopool.Client(max_connections_per_host=per_host, max_idle_per_host=per_host) as client,
    ):
        url = f"{server.url}/small.txt"
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(url, params={"i": i}) for i in range(n)))
        elapsed = time.perf_counter() - start
        stats = client.stats()

    ok = sum(r.status_code == 200 and r.content == SMALL_BODY for r in responses)
    print(f"requests sent       {n:>8}")
    print(f"responses OK        {ok:>8}")
    print(f"sockets (server)    {server.connections:>8}")
    print(f"sockets (client)    {stats.connections_opened:>8}   (limit {per_host} per host)")
    print(f"reused connections  {stats.reused:>8}")
    print(f"time                {elapsed:>8.3f} s  ({n / elapsed:,.0f} req/s)")
    print(f"pool stats: {stats.to_json()}")
    if ok != n or server.connections > per_host or stats.connections_opened + stats.reused != n:
        print(
            "PROBLEM: failed responses, too many sockets or a request not counted", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--per-host", type=int, default=20)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.requests, args.per_host)))
