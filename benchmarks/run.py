"""Throughput benchmark: aiopool vs aiohttp vs httpx against a local nginx.

    python benchmarks/run.py [--rounds 3] [--seconds 3] [--clients aiopool,aiohttp,httpx]

Each (client, scenario) run is a fresh subprocess (``--worker CLIENT``) that prints one JSON
line; clients alternate within each round so drift on the machine hits them all alike.
Medians and aiopool's ratios are printed and written to ``benchmarks/results/latest.json``.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "latest.json"
CLIENTS = ("aiopool", "aiohttp", "httpx")
PATH = "/small.txt"


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int

    @property
    def description(self) -> str:
        workers = f"{self.concurrency} concurrent worker{'s' if self.concurrency > 1 else ''}"
        return f"HTTP/1.1 small GET ({PATH}), {workers}"


SCENARIOS = (Scenario("h1-small-c10", 10), Scenario("h1-small-c1", 1))

# --------------------------------------------------------------------------- worker side

Fetch = Callable[[], Awaitable[int]]  # one GET, full body read; returns the body length


@contextlib.asynccontextmanager
async def aiopool_fetch(url: str, concurrency: int) -> AsyncIterator[Fetch]:
    import aiopool

    async with aiopool.Client(
        max_connections=concurrency,
        max_connections_per_host=concurrency,
        max_idle_per_host=concurrency,
        http2=False,
        timeout=30.0,
    ) as client:

        async def fetch() -> int:
            resp = await client.get(url)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            return len(resp.content)

        yield fetch


@contextlib.asynccontextmanager
async def aiohttp_fetch(url: str, concurrency: int) -> AsyncIterator[Fetch]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fetch() -> int:
            async with session.get(url) as resp:
                body: bytes = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                return len(body)

        yield fetch


@contextlib.asynccontextmanager
async def httpx_fetch(url: str, concurrency: int) -> AsyncIterator[Fetch]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def fetch() -> int:
            resp = await client.get(url)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            return len(resp.content)

        yield fetch


FACTORIES: dict[str, Callable[[str, int], contextlib.AbstractAsyncContextManager[Fetch]]] = {
    "aiopool": aiopool_fetch,
    "aiohttp": aiohttp_fetch,
    "httpx": httpx_fetch,
}


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "checkout" if dist == "aiopool" else "?"


async def hammer(
    fetch: Fetch, concurrency: int, seconds: float, max_requests: int, latencies: list[float] | None
) -> tuple[int, int, str | None]:
    """Run ``concurrency`` workers until the deadline (or request budget); (ok, errors, first)."""
    deadline = time.perf_counter() + seconds
    started = ok = errors = 0
    first_error: str | None = None

    async def worker() -> None:
        nonlocal started, ok, errors, first_error
        while time.perf_counter() < deadline and not (max_requests and started >= max_requests):
            started += 1
            t0 = time.perf_counter()
            try:
                await fetch()
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                if errors >= 100:
                    raise
                continue
            ok += 1
            if latencies is not None:
                latencies.append(time.perf_counter() - t0)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return ok, errors, first_error


async def worker_main(
    client: str, url: str, concurrency: int, seconds: float, requests: int
) -> dict[str, Any]:
    latencies: list[float] = []
    async with FACTORIES[client](url, concurrency) as fetch:
        await hammer(
            fetch, concurrency, min(0.5, seconds / 4), 0, None
        )  # warm-up: open connections
        start = time.perf_counter()
        ok, errors, first_error = await hammer(fetch, concurrency, seconds, requests, latencies)
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3 if latencies else 0.0
        )

    notes = []
    if client == "httpx" and importlib.util.find_spec("sniffio") is None:
        # httpcore 1.0 tries `import sniffio` on every request; a failed import costs ~30%.
        notes.append("sniffio is not installed: httpx pays for a failed import per request")
    return {
        "client": client,
        "version": version_of(client),
        "notes": notes,
        "concurrency": concurrency,
        "requests": ok,
        "errors": errors,
        "first_error": first_error,
        "elapsed": round(elapsed, 4),
        "rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(pct(0.50), 3),
        "p99_ms": round(pct(0.99), 3),
    }


def run_worker(args: argparse.Namespace) -> int:
    sys.path.append(str(ROOT))  # lets a plain checkout import aiopool
    try:
        result = asyncio.run(
            worker_main(args.worker, args.url, args.concurrency, args.seconds, args.requests)
        )
    except BaseException as exc:  # report anything (incl. ImportError) as JSON to the parent
        print(json.dumps({"client": args.worker, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent side


@contextlib.contextmanager
def local_server() -> Iterator[tuple[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "_local_server.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split()
        if not base:
            raise RuntimeError("examples/_local_server.py did not start")
        yield base[0], "examples/_local_server.py (Python asyncio)"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_server(kind: str) -> Iterator[tuple[str, str]]:
    """Yield (base_url, description) of the server to benchmark against."""
    if kind in ("auto", "nginx"):
        sys.path.insert(0, str(ROOT))  # for the test rig, `tests.rig`
        try:
            from tests.rig.nginx import Nginx, find_nginx
        except ImportError as exc:
            binary, why = None, f"tests/rig/nginx.py is not importable ({exc})"
        else:
            binary, why = find_nginx(), "nginx is not installed"
        if binary is not None:
            version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
            with Nginx(binary=binary) as nginx:
                yield nginx.http_url, f"{version.stderr.strip() or 'nginx'} ({binary})"
            return
        if kind == "nginx":
            raise SystemExit(f"--server nginx: {why}")
        print(f"NOTE: {why};\n      falling back to the examples' Python server, which is much")
        print("      slower than nginx, so the numbers are bounded by the server.\n")
    with local_server() as server:
        yield server


def run_one(client: str, url: str, scenario: Scenario, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        client,
        "--url",
        url,
        "--concurrency",
        str(scenario.concurrency),
        "--seconds",
        str(args.seconds),
        "--requests",
        str(args.requests),
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.seconds + 120, check=False
        )
    except subprocess.TimeoutExpired:
        return {"client": client, "error": "worker timed out"}
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        result = {"client": client, "error": f"worker exited {proc.returncode}: {tail}"}
    return result


def fmt_rps(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def summarize(scenario: Scenario, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    clients: dict[str, Any] = {}
    for client, results in runs.items():
        good = [r for r in results if "error" not in r]
        rps = [r["rps"] for r in good]
        clients[client] = {
            "version": good[0]["version"] if good else None,
            "median_rps": statistics.median(rps) if rps else None,
            "min_rps": min(rps) if rps else None,
            "max_rps": max(rps) if rps else None,
            "median_p50_ms": statistics.median(r["p50_ms"] for r in good) if good else None,
            "median_p99_ms": statistics.median(r["p99_ms"] for r in good) if good else None,
            "errors": sum(r.get("errors", 0) for r in good) + len(results) - len(good),
            "runs": results,
        }
    ratios: dict[str, float | None] = {}
    ours = clients.get("aiopool", {}).get("median_rps")
    for peer in (c for c in clients if c != "aiopool"):
        theirs = clients[peer]["median_rps"]
        ratios[f"aiopool/{peer}"] = round(ours / theirs, 3) if ours and theirs else None
    return {
        "description": scenario.description,
        "concurrency": scenario.concurrency,
        "clients": clients,
        "ratios": ratios,
    }


def print_summary(summary: dict[str, Any], header: str) -> None:
    print(f"\n{summary['description']}  [{header}]")
    print(
        f"  {'client':<9} {'version':<10} {'median req/s':>12} {'min - max req/s':>19} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for client, c in summary["clients"].items():
        span = f"{fmt_rps(c['min_rps'])} - {fmt_rps(c['max_rps'])}"
        p50 = "n/a" if c["median_p50_ms"] is None else f"{c['median_p50_ms']:.2f}"
        p99 = "n/a" if c["median_p99_ms"] is None else f"{c['median_p99_ms']:.2f}"
        print(
            f"  {client:<9} {c['version'] or '-':<10} {fmt_rps(c['median_rps']):>12} {span:>19} "
            f"{p50:>7} {p99:>7} {c['errors']:>6}"
        )
    ratios = "   ".join(
        f"{k} = {'n/a' if v is None else f'{v:.2f}x'}" for k, v in summary["ratios"].items()
    )
    if ratios:
        print(f"  {ratios}   (median req/s; > 1 means aiopool is faster)")


def run_parent(args: argparse.Namespace) -> int:
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = sorted(set(clients) - set(FACTORIES))
    if unknown:
        raise SystemExit(f"unknown client(s): {', '.join(unknown)}")
    header = f"{args.rounds} rounds x {args.seconds:g} s" + (
        f" (max {args.requests} requests)" if args.requests else ""
    )
    failed = False
    with contextlib.ExitStack() as stack:
        if args.url:
            base, server_desc = args.url.rstrip("/"), f"external ({args.url})"
        else:
            base, server_desc = stack.enter_context(start_server(args.server))
        url = base + PATH
        print(
            f"Server: {server_desc}\nURL:    {url}\n"
            f"CPUs:   {os.cpu_count()}, Python {platform.python_version()}"
        )
        summaries: dict[str, Any] = {}
        notes: dict[str, None] = {}
        for scenario in SCENARIOS:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            print(f"\n== {scenario.name}: {scenario.description}")
            for rnd in range(args.rounds):
                shift = rnd % len(clients)
                for client in clients[shift:] + clients[:shift]:  # rotate who goes first
                    result = run_one(client, url, scenario, args)
                    runs[client].append(result)
                    what = result.get("error") or f"{fmt_rps(result['rps'])} req/s"
                    if result.get("errors"):
                        what += f"  ({result['errors']} errors, first: {result['first_error']})"
                    notes.update(dict.fromkeys(f"{client}: {n}" for n in result.get("notes", [])))
                    failed = failed or "error" in result or bool(result.get("errors"))
                    print(f"  round {rnd + 1}/{args.rounds}  {client:<8} {what}", flush=True)
            summaries[scenario.name] = summarize(scenario, runs)

    print("\n" + "=" * 78)
    for summary in summaries.values():
        print_summary(summary, header)
    for note in notes:
        print(f"\nNOTE: {note}")
    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "server": server_desc,
        "url": url,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "requests_cap": args.requests,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "notes": list(notes),
        "scenarios": summaries,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {RESULTS.relative_to(ROOT)}")
    if failed:
        print("Some runs failed or saw errors; see above.", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="runs per client per scenario (3)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (3)")
    parser.add_argument(
        "--requests", type=int, default=0, help="stop a run after N requests (0: no cap)"
    )
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated subset")
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "local"),
        default="auto",
        help="auto: nginx if installed, else the examples' Python server",
    )
    parser.add_argument("--url", help="benchmark an already running server (base URL)")
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=10, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds and --seconds must be positive")
    return run_worker(args) if args.worker else run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
