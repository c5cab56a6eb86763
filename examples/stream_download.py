"""Stream a large download: a progress bar, a checksum, and the socket back in the pool.

Starts a local HTTPS server (throwaway trustme CA, no internet needed) that serves a
generated body of ``--size`` MiB with its SHA-256 in a header. The body is read chunk by
chunk inside ``async with client.stream(...)``, never held in memory whole, with a progress
bar on stderr. Then it shows what the block's exit does with the socket:

* read to the end: leaving the block puts the socket back in the pool (stats: active 0,
  idle 1) and the next request reuses it (``conn_info.reused``);
* left early with most of the body unread: the pool drains at most 256 KiB (Go's bound),
  so the socket is closed instead, and the next request has to open a new one.

    python examples/stream_download.py [--size 64]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from pathlib import Path
from typing import TextIO

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _local_server import LocalServer

import aiopool

MIB = 1024 * 1024


class ProgressBar:
    """``[#####.....]  50%  32.0/64.0 MiB  512.3 MiB/s`` on one line, redrawn per percent."""

    def __init__(self, total: int, out: TextIO = sys.stderr, width: int = 30) -> None:
        self.total = total
        self.out = out
        self.width = width
        self.done = 0
        self.start = time.perf_counter()
        self._shown = -1

    def update(self, n: int) -> None:
        self.done += n
        percent = 100 * self.done // self.total if self.total else 100
        if percent != self._shown:  # at most 101 redraws, however small the chunks
            self._shown = percent
            filled = self.width * percent // 100
            elapsed = time.perf_counter() - self.start
            rate = self.done / MIB / elapsed if elapsed else 0.0
            self.out.write(
                f"\r[{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}%  "
                f"{self.done / MIB:.1f}/{self.total / MIB:.1f} MiB  {rate:.1f} MiB/s"
            )
            self.out.flush()

    def finish(self) -> None:
        self.out.write("\n")
        self.out.flush()


async def download(client: aiopool.Client, url: str, problems: list[str]) -> None:
    digest = hashlib.sha256()
    start = time.perf_counter()
    async with client.stream("GET", url) as resp:
        resp.raise_for_status()
        total = int(resp.headers["content-length"])
        expected = resp.headers["x-content-sha256"]
        during = client.stats()
        bar = ProgressBar(total)
        async for chunk in resp.aiter_bytes():
            digest.update(chunk)
            bar.update(len(chunk))
        bar.finish()
        first_conn = resp.conn_info.id
    seconds = time.perf_counter() - start
    after = client.stats()
    ok = digest.hexdigest() == expected and bar.done == total
    print(f"downloaded: {bar.done} bytes in {seconds:.3f} s ({bar.done / MIB / seconds:.1f} MiB/s)")
    print(f"sha256: {digest.hexdigest()} ({'matches' if ok else 'DOES NOT MATCH'} the server's)")
    print(f"inside the block: active={during.active} idle={during.idle}")
    print(f"after the block: active={after.active} idle={after.idle}")
    if not ok:
        problems.append("checksum or length mismatch")
    if (during.active, during.idle, after.active, after.idle) != (1, 0, 0, 1):
        problems.append("the socket did not go back to the pool after the stream block")
    again = await client.head(url)
    same = again.conn_info.id == first_conn
    print(
        f"next request: reused={again.conn_info.reused} "
        f"({'the same' if same else 'a different'} connection, id {again.conn_info.id})"
    )
    if not (again.conn_info.reused and same):
        problems.append("the next request did not reuse the download's socket")


async def stop_early(client: aiopool.Client, url: str, problems: list[str]) -> None:
    before = client.stats()
    async with client.stream("GET", url) as resp:
        async for _chunk in resp.aiter_bytes():
            break  # seen enough: leave with most of the body unread
    after = client.stats()
    closed = after.connections_closed - before.connections_closed
    print(f"left early: connections closed {closed}, idle={after.idle}")
    nxt = await client.head(url)
    print(f"next request: reused={nxt.conn_info.reused} (connection id {nxt.conn_info.id})")
    if closed != 1 or nxt.conn_info.reused:
        problems.append("a socket with a large unread body was pooled instead of closed")


async def main(size_mib: float) -> int:
    problems: list[str] = []
    size = int(size_mib * MIB)
    async with LocalServer(tls=True) as server:
        assert server.ca_path is not None
        url = f"{server.url}/download/{size}"
        print(f"GET {url}")
        async with aiopool.Client(verify=server.ca_path) as client:
            await download(client, url, problems)
            print()
            await stop_early(client, url, problems)
            print(f"server: {server.connections} TCP connections, {server.requests} requests")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=float, default=64, help="MiB to download (64)")
    args = parser.parse_args()
    if not 1 <= args.size <= 1024:
        parser.error("--size must be between 1 and 1024 MiB (the early-stop part needs 1)")
    sys.exit(asyncio.run(main(args.size)))
