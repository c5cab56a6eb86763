"""`aiopool bench`: a small h2load. N GET requests from C concurrent tasks over one client.

The client is the library as users run it: one `Client` with `max_connections_per_host=C`, so
the report's socket counts (from `client.stats()`) show the pool at work, HTTP/1.1 sockets
reused request after request, or C requests multiplexed as streams on one HTTP/2 socket.

Latency is per request, from the call to the body read in full; percentiles are nearest-rank:
always one of the measured samples, never an interpolation between two. Progress goes to stderr:
a bar redrawn in place on a terminal, otherwise (a log, a pipe) a plain line every few seconds so
the output stays readable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ._client import Client
from ._exceptions import AiopoolError
from ._urls import URL

__all__ = ("BenchResult", "bench", "percentile")

_BAR_WIDTH = 30
_TTY_REDRAW = 0.1  # seconds between redraws of the bar
_PLAIN_EVERY = 2.0  # seconds between progress lines when stderr is not a terminal


@dataclass
class BenchResult:
    """What a run measured; `report()` and `as_dict()` render it."""

    url: str
    requests: int
    concurrency: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)
    protocols: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0
    sockets_opened: int = 0
    sockets_reused: int = 0

    @property
    def done(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        latencies = self.latencies
        latency: dict[str, float] | None = None
        if latencies:
            ordered = sorted(latencies)
            latency = {
                "min": ordered[0] * 1000,
                "mean": sum(ordered) / len(ordered) * 1000,
                "p50": percentile(ordered, 50) * 1000,
                "p90": percentile(ordered, 90) * 1000,
                "p99": percentile(ordered, 99) * 1000,
                "max": ordered[-1] * 1000,
            }
        # None rather than NaN for a run too short to time: NaN is not JSON.
        rate = self.done / self.elapsed if self.elapsed > 0 else None
        return {
            "url": self.url,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "elapsed_s": self.elapsed,
            "requests_per_s": rate,
            "succeeded": len(latencies),
            "failed": sum(self.errors.values()),
            "latency_ms": latency,
            "status_codes": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors.most_common()),
            "body_bytes": self.body_bytes,
            "sockets_opened": self.sockets_opened,
            "sockets_reused": self.sockets_reused,
            "protocols": dict(self.protocols.most_common()),
        }

    def report(self) -> str:
        d = self.as_dict()
        lines = [
            f"{self.url}: {self.requests:,} requests, {self.concurrency} concurrent",
            f"finished in {self.elapsed:.2f} s, {d['requests_per_s'] or math.nan:,.1f} req/s, "
            f"{_size(self.body_bytes / (self.elapsed or math.nan))}/s",
            f"requests: {self.done:,} done, {d['succeeded']:,} succeeded, {d['failed']:,} failed",
        ]
        if d["latency_ms"] is not None:
            figures = "  ".join(f"{k} {v:.2f}" for k, v in d["latency_ms"].items())
            lines.append(f"latency (ms): {figures}")
        statuses = ", ".join(f"{k}: {v:,}" for k, v in d["status_codes"].items()) or "none"
        lines.append(f"status codes: {statuses}")
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k}: {v:,}" for k, v in d["errors"].items()))
            lines += [f"  first {k}: {message}" for k, message in self.first_errors.items()]
        else:
            lines.append("errors: none")
        lines.append(f"bytes: {self.body_bytes:,} body bytes received ({_size(self.body_bytes)})")
        lines.append(f"sockets: {self.sockets_opened:,} opened, {self.sockets_reused:,} reused")
        protocols = ", ".join(f"{k}: {v:,}" for k, v in d["protocols"].items()) or "none"
        lines.append(f"protocol: {protocols}")
        return "\n".join(lines) + "\n"


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q`th percentile of the sorted, non-empty `ordered`: the smallest
    sample with at least q% of the samples at or below it."""
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def _size(n: float) -> str:
    if math.isnan(n):
        return "-"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


async def bench(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """Run `aiopool bench`; 0 when every request got an HTTP response, else 1; 130 when
    interrupted (Ctrl-C), after reporting what was measured."""
    url = URL(args.url)  # a bad URL is one error, not N of them
    concurrency = min(args.concurrency, args.requests)
    result = BenchResult(str(url), args.requests, concurrency)
    headers: list[tuple[str, str]] = list(args.headers)
    options = dict(options, max_connections=concurrency, max_connections_per_host=concurrency)
    options.setdefault("max_idle_per_host", concurrency)
    options.setdefault("max_idle", concurrency)
    async with Client(**options) as client:
        loop = asyncio.get_running_loop()
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while issued < args.requests:
                issued += 1
                start = loop.time()
                size = 0
                try:
                    # A redirect is counted as the status it is, as h2load does: following
                    # it would measure other URLs than the one asked for. The body is counted
                    # as received, not decoded: bytes on the wire, and no decoding cost in
                    # the figures (h2load does not decode either).
                    async with client.stream(
                        "GET", url, headers=headers, follow_redirects=False
                    ) as response:
                        async for chunk in response.aiter_raw():
                            size += len(chunk)
                except AiopoolError as exc:
                    name = type(exc).__name__
                    result.errors[name] += 1
                    result.first_errors.setdefault(name, str(exc))
                    continue
                result.latencies.append(loop.time() - start)
                result.statuses[response.status_code] += 1
                result.protocols[response.http_version] += 1
                result.body_bytes += size

        began = loop.time()
        progress = asyncio.create_task(_progress(result, began))
        interrupted = False
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        except asyncio.CancelledError:
            # Ctrl-C: asyncio.run cancels this task, and the gather has cancelled the workers
            # (the pool released their connections). What was measured is still worth a
            # report, as for an interrupted h2load; the cancellation is acknowledged, not lost.
            task = asyncio.current_task()
            if task is None or task.uncancel() > 0:
                raise  # Defensive: cancelled for another reason as well
            interrupted = True
        finally:
            result.elapsed = loop.time() - began
            progress.cancel()
            # wait(), not `await progress`: its CancelledError must not be mistaken for ours.
            await asyncio.wait([progress])
        stats = client.stats()
        result.sockets_opened = stats.connections_opened
        result.sockets_reused = stats.reused
    _draw(result, result.elapsed, final=True)
    sys.stdout.write(
        json.dumps(result.as_dict(), indent=2) + "\n" if args.json else result.report()
    )
    if interrupted:
        print(
            f"aiopool: interrupted after {result.done:,} of {result.requests:,} requests",
            file=sys.stderr,
        )
        return 130
    if result.errors:
        name, message = next(iter(result.first_errors.items()))
        failed = sum(result.errors.values())
        print(
            f"aiopool: error: {failed:,} of {result.requests:,} requests failed "
            f"(first {name}: {message})",
            file=sys.stderr,
        )
        return 1
    return 0


async def _progress(result: BenchResult, began: float) -> None:
    loop = asyncio.get_running_loop()
    every = _TTY_REDRAW if sys.stderr.isatty() else _PLAIN_EVERY
    while True:
        await asyncio.sleep(every)
        _draw(result, loop.time() - began, final=False)


def _draw(result: BenchResult, elapsed: float, *, final: bool) -> None:
    """One progress update on stderr: a bar redrawn in place on a tty, else a plain line."""
    err = sys.stderr
    done, total = result.done, result.requests
    rate = done / elapsed if elapsed > 0 else 0.0
    failed = sum(result.errors.values())
    if err.isatty():
        filled = _BAR_WIDTH * done // total
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        # \r returns to the line's start and \x1b[K clears what a longer line left behind.
        err.write(
            f"\r[{bar}] {done:,}/{total:,} {100 * done // total:3d}% "
            f"{rate:,.0f} req/s, {failed:,} errors\x1b[K"
        )
        if final:
            err.write("\n")
    elif not final:  # the report follows at once; a last plain line would only repeat it
        err.write(f"progress: {done:,}/{total:,} requests, {rate:,.0f} req/s, {failed:,} errors\n")
    err.flush()
