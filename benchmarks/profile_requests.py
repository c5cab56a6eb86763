"""Where the time goes per request: cProfile one aiopool workload, grouped by layer.

    python benchmarks/profile_requests.py                      # HTTP/1.1 small GET, both parsers
    python benchmarks/profile_requests.py --scenario h2-small  # TLS + HTTP/2, 100 workers
    python benchmarks/profile_requests.py --scenario h2-10m    # 10 MB downloads, TLS + HTTP/2

Times are under cProfile (roughly 2-3x slower than unprofiled); what matters is the split.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiopool
from tests.rig.nginx import Nginx

Workload = Callable[[aiopool.Client, str], Awaitable[int]]


async def small_gets(client: aiopool.Client, url: str, workers: int, seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await client.get(url)
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def downloads(client: aiopool.Client, url: str, count: int) -> int:
    for _ in range(count):
        await client.get(url)
    return count


def group(stats: pstats.Stats, requests: int) -> list[tuple[str, float, float]]:
    """(layer, microseconds per request, share) for every layer, largest first."""
    totals: collections.Counter[str] = collections.Counter()
    for (file, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "/aiopool/" in file:
            layer = "aiopool/" + file.split("/aiopool/")[1]
        elif "site-packages/h11" in file:
            layer = "h11"
        elif any(f"site-packages/{lib}" in file for lib in ("h2", "hpack", "hyperframe")):
            layer = "h2 + hpack + hyperframe"
        elif "asyncio" in file or "selectors" in file:
            layer = "asyncio event loop"
        elif any(word in func for word in ("send", "recv", "poll", "_ssl")):
            layer = "syscalls and TLS (send/recv/epoll/SSL)"
        else:
            layer = "other builtins (bytes, re, dict...)"
        totals[layer] += tottime
    whole = sum(totals.values()) or 1.0
    return [(name, t / requests * 1e6, t / whole) for name, t in totals.most_common()]


def profile(name: str, run: Callable[[], int]) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    requests = run()
    profiler.disable()
    rows = group(pstats.Stats(profiler), requests)
    total = sum(us for _, us, _ in rows)
    print(f"\n== {name}: {requests} requests, {total:.0f} us per request under cProfile")
    for layer, us, share in rows:
        print(f"  {layer:45s} {us:8.1f} us  {share:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", choices=["h1-small", "h2-small", "h2-10m"], default="h1-small"
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    nginx = Nginx()
    nginx.start()
    ca_path = os.path.join(tempfile.mkdtemp(prefix="aiopool-profile-"), "ca.pem")
    nginx.ca.cert_pem.write_to_path(ca_path)
    try:
        if args.scenario == "h1-small":
            for parser_name in ("httptools", "h11"):

                async def h1(parser_name: str = parser_name) -> int:
                    async with aiopool.Client(http1_parser=parser_name) as client:  # type: ignore[arg-type]
                        url = f"{nginx.http_url}/small.txt"
                        return await small_gets(client, url, 10, args.seconds)

                profile(f"HTTP/1.1 small GET, 10 workers, {parser_name}", lambda: asyncio.run(h1()))
        elif args.scenario == "h2-small":

            async def h2_small() -> int:
                async with aiopool.Client(verify=ca_path) as client:
                    url = f"{nginx.https_url}/small.txt"
                    return await small_gets(client, url, 100, args.seconds)

            profile("TLS + HTTP/2 small GET, 100 workers", lambda: asyncio.run(h2_small()))
        else:

            async def h2_10m() -> int:
                async with aiopool.Client(verify=ca_path) as client:
                    return await downloads(client, f"{nginx.https_url}/10m.bin", 10)

            profile("TLS + HTTP/2 10 MB download", lambda: asyncio.run(h2_10m()))
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
