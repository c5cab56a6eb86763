"""The CPU one small GET costs in aiopool's own code, with the network taken out.

    python benchmarks/hot_path.py                 # both HTTP/1.1 parsers
    python benchmarks/hot_path.py --parser httptools --requests 20000

The pool's dialer is replaced by a socket stand-in that answers every request at once with
the bytes nginx sends for `/small.txt` (status line, eight fields, a 13-byte body), so a run
measures the client, the pool and the HTTP/1.1 connection and nothing else: no server sharing
the CPU, no event-loop wake-ups. Prints microseconds per request, the best of `--repeat` runs.

Why: against a real server with 10 workers, CPU time per request is bimodal (whether the
event loop batches several sockets per wake-up varies from process to process, by up to 40%),
so a change of a microsecond or two is lost in the spread. Here the same code gives the same
figure within a few percent, and two trees can be compared by running each with its own
PYTHONPATH, in alternation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiopool

URL = "http://127.0.0.1:8080/small.txt"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\n"
    b"Last-Modified: Sat, 21 Nov 2026 07:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "abc-d"\r\nAccept-Ranges: bytes\r\n\r\nHello, world\n'
)


class InstantStream:
    """A `NetworkStream` whose peer answers each request head at once with `RESPONSE`."""

    closed = False

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    async def read(self, timeout: float | None) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def write_nowait(self, data: bytes) -> None:
        if data.endswith(b"\r\n\r\n"):  # a whole GET: head only
            self._pending.append(RESPONSE)

    async def drain(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    async def wait_closed(self, timeout: float) -> None:
        pass

    def is_idle_clean(self) -> bool:
        return not self._pending

    def set_idle_callback(self, callback: Any) -> None:
        pass

    def extra(self, name: str) -> Any:
        return None


async def dial(host: str, port: int, **_: Any) -> InstantStream:
    return InstantStream()


async def measure(parser: str, requests: int, repeat: int) -> float:
    """Microseconds per `await client.get()`, the best of `repeat` runs of `requests`."""
    async with aiopool.Client(
        http2=False,
        http1_parser=parser,  # type: ignore[arg-type]
        dialer=dial,  # type: ignore[arg-type]
    ) as client:
        for _ in range(2000):  # warm-up: the socket is open, the interpreter's caches filled
            response = await client.get(URL)
        assert response.content == b"Hello, world\n", response.content
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(requests):
                await client.get(URL)
            best = min(best, (time.perf_counter() - start) / requests * 1e6)
        return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parser", choices=["httptools", "h11", "both"], default="both")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    parsers = ["httptools", "h11"] if args.parser == "both" else [args.parser]
    for name in parsers:
        us = asyncio.run(measure(name, args.requests, args.repeat))
        print(f"{name:10s} {us:7.2f} us per request (aiopool {aiopool.__version__})")


if __name__ == "__main__":
    main()
