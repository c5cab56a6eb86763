"""One benchmark run in a fresh process: ``python benchmarks/run.py --worker '<json job>'``.

``run.py`` starts one of these per (client, scenario, round) and reads the single JSON line it
prints. The job names the client variant and the scenario (see ``scenarios.py``) and carries
the server URLs, the CA file and the timing knobs. Every client is built here with the same
limits, its TLS context is built once per process, and every request reads the full body. The
client's CPU time (the whole process, every thread) is measured over the measured interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import ssl
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from scenarios import CLIENT_SPECS, SCENARIO_BY_ID, ClientSpec, Scenario

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120.0  # per request, pool wait included: never fires in a healthy run
MAX_ERRORS = 100  # a run gives up after this many failed requests
T = TypeVar("T")


@dataclass
class Bench:
    """An open client, reduced to what the scenarios need."""

    fetch: Callable[[], Awaitable[int]]  # one GET of the job's URL, full body; body length
    probe: Callable[[], Awaitable[str]]  # one GET; the negotiated version, e.g. "HTTP/2"
    idle_sockets: Callable[[], int | None]  # keep-alive sockets in the pool now
    opened: Callable[[], int | None]  # sockets opened so far, when the client tells
    waiting: Callable[[], int | None]  # requests queued for a connection, when it tells
    # One streamed GET that awaits the given pause between the headers and reading the body:
    # N of them paused at once hold N sockets, whatever the client's dispatch order.
    hold: Callable[[Callable[[], Awaitable[None]]], Awaitable[int]]


@dataclass(frozen=True)
class Options:
    url: str
    limit: int  # total = per host = idle sockets kept
    http2: bool
    ssl_context: ssl.SSLContext | None
    # The CA certificate ``ssl_context`` trusts (PEM), for a client that takes no SSLContext.
    ca_pem: bytes | None = None
    # HTTP/2 by prior knowledge over plain text (h2c): only HTTP/2 is spoken, no Upgrade.
    prior_knowledge: bool = False


OpenClient = Callable[[ClientSpec, Options], contextlib.AbstractAsyncContextManager[Bench]]


def _unknown() -> int | None:
    return None


@contextlib.asynccontextmanager
async def open_aiopool(spec: ClientSpec, opts: Options) -> AsyncIterator[Bench]:
    import aiopool

    url = opts.url
    async with aiopool.Client(
        max_connections=opts.limit,
        max_connections_per_host=opts.limit,
        max_idle_per_host=opts.limit,
        max_idle=opts.limit,
        http1=not opts.prior_knowledge,
        http2=opts.http2,
        http1_parser=spec.http1_parser or "auto",  # type: ignore[arg-type]
        http2_engine=spec.http2_engine,  # type: ignore[arg-type]
        verify=opts.ssl_context if opts.ssl_context is not None else True,
        timeout=TIMEOUT,
    ) as client:

        async def fetch() -> int:
            resp = await client.get(url)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            return len(resp.content)

        async def probe() -> str:
            return (await client.get(url)).http_version

        async def hold(pause: Callable[[], Awaitable[None]]) -> int:
            async with client.stream("GET", url) as resp:
                await pause()
                return len(await resp.aread())

        yield Bench(
            fetch,
            probe,
            idle_sockets=lambda: client.stats().idle,
            opened=lambda: client.stats().connections_opened,
            waiting=lambda: client.stats().waiting,
            hold=hold,
        )


@contextlib.asynccontextmanager
async def open_aiohttp(spec: ClientSpec, opts: Options) -> AsyncIterator[Bench]:
    import aiohttp

    url = opts.url
    connector = aiohttp.TCPConnector(
        limit=opts.limit,
        limit_per_host=opts.limit,
        ssl=opts.ssl_context if opts.ssl_context is not None else True,
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def fetch() -> int:
            async with session.get(url) as resp:
                body: bytes = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                return len(body)

        async def probe() -> str:
            async with session.get(url) as resp:
                await resp.read()
                v = resp.version
                return f"HTTP/{v.major}.{v.minor}" if v is not None else "?"

        async def hold(pause: Callable[[], Awaitable[None]]) -> int:
            async with session.get(url) as resp:
                await pause()
                return len(await resp.read())

        def idle() -> int:  # private, but the only way to count aiohttp's pooled sockets
            return sum(len(conns) for conns in connector._conns.values())

        yield Bench(fetch, probe, idle, _unknown, _unknown, hold)


@contextlib.asynccontextmanager
async def open_httpx(spec: ClientSpec, opts: Options) -> AsyncIterator[Bench]:
    import httpx

    url = opts.url
    limits = httpx.Limits(max_connections=opts.limit, max_keepalive_connections=opts.limit)
    async with httpx.AsyncClient(
        http1=not opts.prior_knowledge,  # httpx's way to h2c by prior knowledge
        http2=opts.http2,
        verify=opts.ssl_context if opts.ssl_context is not None else True,
        limits=limits,
        timeout=TIMEOUT,
    ) as client:

        async def fetch() -> int:
            resp = await client.get(url)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            return len(resp.content)

        async def probe() -> str:
            return str((await client.get(url)).http_version)

        async def hold(pause: Callable[[], Awaitable[None]]) -> int:
            async with client.stream("GET", url) as resp:
                await pause()
                return len(await resp.aread())

        transport: Any = client._transport

        def idle() -> int:  # private: httpcore's pool behind the client's transport
            return len([c for c in transport._pool.connections if c.is_idle()])

        yield Bench(fetch, probe, idle, _unknown, _unknown, hold)


@contextlib.asynccontextmanager
async def open_pyreqwest(spec: ClientSpec, opts: Options) -> AsyncIterator[Bench]:
    from pyreqwest.client import ClientBuilder

    url = opts.url
    # reqwest's pool has no cap on sockets per host; `max_connections` caps requests in flight
    # (a semaphore in front of the pool), which for HTTP/1.1 is the same cap on busy sockets.
    builder = (
        ClientBuilder()
        .max_connections(opts.limit)
        .pool_max_idle_per_host(opts.limit)
        .timeout(dt.timedelta(seconds=TIMEOUT))
    )
    if opts.ca_pem is not None:
        # rustls, verifying as usual; the CA is added to the roots (its own TLS stack: it
        # cannot take the process's ssl.SSLContext).
        builder = builder.add_root_certificate_pem(opts.ca_pem)
    if opts.prior_knowledge:
        builder = builder.http2_prior_knowledge()
    elif opts.http2:
        builder = builder.http2(True)  # offered by ALPN beside http/1.1
    else:
        builder = builder.http1_only()
    async with builder.build() as client:

        async def fetch() -> int:
            resp = await client.get(url).build().send()
            body = await resp.bytes()
            if resp.status != 200:
                raise RuntimeError(f"status {resp.status}")
            return len(body)

        async def probe() -> str:
            resp = await client.get(url).build().send()
            await resp.bytes()
            # hyper's names: "HTTP/1.1", "HTTP/2.0"
            return "HTTP/2" if resp.version == "HTTP/2.0" else resp.version

        async def hold(pause: Callable[[], Awaitable[None]]) -> int:
            async with client.get(url).build_streamed() as resp:
                await pause()
                return len(await resp.bytes())

        yield Bench(fetch, probe, _unknown, _unknown, _unknown, hold)


OPENERS: dict[str, OpenClient] = {
    "aiopool": open_aiopool,
    "aiohttp": open_aiohttp,
    "httpx": open_httpx,
    "pyreqwest": open_pyreqwest,
}


def open_client(spec: ClientSpec, opts: Options) -> contextlib.AbstractAsyncContextManager[Bench]:
    return OPENERS[spec.library](spec, opts)


def client_http2(spec: ClientSpec, scenario: Scenario) -> bool:
    return scenario.h2 if spec.http2 is None else spec.http2


def ssl_context(ca: str | None) -> ssl.SSLContext | None:
    """The one TLS context of this process: trusts the benchmark CA, verifies as usual."""
    return ssl.create_default_context(cafile=ca) if ca else None


def ca_pem(ca: str | None) -> bytes | None:
    """The benchmark CA's certificate, for a client with its own TLS stack (pyreqwest)."""
    return Path(ca).read_bytes() if ca else None


def implementation(spec: ClientSpec, http2: bool) -> str:
    """Which parser or HTTP/2 engine runs (for aiohttp checked in this process).

    With HTTP/2 offered, the engine: the probe checks that h2 was negotiated.
    """
    if spec.library == "aiopool":
        return spec.http2_engine if http2 else spec.http1_parser or "auto"
    if spec.library == "pyreqwest":
        return "hyper, rustls"
    if spec.library == "aiohttp":
        from aiohttp import http_parser

        fast = http_parser.HttpResponseParser is not http_parser.HttpResponseParserPy
        return "C extensions" if fast else "pure Python"
    return "h2" if http2 else "h11"


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "checkout" if dist == "aiopool" else "?"


# --------------------------------------------------------------------------- load patterns


@dataclass
class Tally:
    ok: int = 0
    errors: int = 0
    nbytes: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"


def cpu_values(cpu_s: float, elapsed: float, tally: Tally) -> dict[str, float]:
    """Client CPU per 1,000 requests and per MB of body, and in cores while measured.

    ``cpu_s`` is process CPU time (user + system, every thread: a client running its own I/O
    thread, as pyreqwest's tokio runtime does, is charged for it) over the measured interval.
    """
    values = {"cpu_cores": round(cpu_s / elapsed, 3) if elapsed > 0 else 0.0}
    if tally.ok:
        values["cpu_ms_per_1k"] = round(cpu_s * 1e6 / tally.ok, 2)
    if tally.nbytes:
        values["cpu_ms_per_mb"] = round(cpu_s * 1e9 / tally.nbytes, 3)
    return values


async def hammer(
    fetch: Callable[[], Awaitable[int]],
    concurrency: int,
    seconds: float,
    *,
    max_requests: int = 0,
    min_each: int = 0,
    record: bool = True,
    expect: int = -1,
) -> Tally:
    """``concurrency`` workers loop on ``fetch`` until the deadline (and ``min_each`` each).

    A body whose length is not ``expect`` (when given) counts as an error.
    """
    deadline = time.perf_counter() + seconds
    tally = Tally()
    started = 0

    async def worker() -> None:
        nonlocal started
        done = 0
        while done < min_each or time.perf_counter() < deadline:
            if max_requests and started >= max_requests:
                break
            started += 1
            done += 1
            t0 = time.perf_counter()
            try:
                got = await fetch()
                if got != expect and expect >= 0:
                    raise RuntimeError(f"body of {got} bytes, expected {expect}")
                tally.nbytes += got
            except Exception as exc:
                tally.error(exc)
                if tally.errors >= MAX_ERRORS:
                    raise
                continue
            tally.ok += 1
            if record:
                tally.latencies.append(time.perf_counter() - t0)

    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return tally


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


async def run_workers(bench: Bench, scenario: Scenario, job: dict[str, Any]) -> dict[str, Any]:
    conc = scenario.concurrency
    expect = await bench.fetch()
    # Warm-up, excluded: every worker completes at least one request, so every socket the
    # client will use is open (and TLS-handshaken) before the clock starts.
    await hammer(bench.fetch, conc, job["warmup"], min_each=1, record=False, expect=expect)
    start = time.perf_counter()
    cpu_start = time.process_time()
    tally = await hammer(
        bench.fetch, conc, job["seconds"], max_requests=job["requests"], expect=expect
    )
    cpu_s = time.process_time() - cpu_start
    elapsed = time.perf_counter() - start
    lat = sorted(tally.latencies)
    return {
        "values": {
            "rps": round(tally.ok / elapsed, 1),
            "mbps": round(tally.nbytes / elapsed / 1e6, 2),
            "p50_ms": round(percentile(lat, 0.50) * 1e3, 3),
            "p99_ms": round(percentile(lat, 0.99) * 1e3, 3),
            **cpu_values(cpu_s, elapsed, tally),
        },
        "requests": tally.ok,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "elapsed": round(elapsed, 4),
    }


async def gather_batch(
    fetch: Callable[[], Awaitable[int]], n: int, tally: Tally, expect: int
) -> float:
    """Start ``n`` requests at once, wait for all; return the wall time."""
    t0 = time.perf_counter()
    results = await asyncio.gather(*(fetch() for _ in range(n)), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    for r in results:
        if isinstance(r, BaseException):
            tally.error(r)
        elif r != expect:
            tally.error(RuntimeError(f"body of {r} bytes, expected {expect}"))
        else:
            tally.ok += 1
    return elapsed


async def run_gather(bench: Bench, scenario: Scenario, job: dict[str, Any]) -> dict[str, Any]:
    n = scenario.tasks
    slow = job["client"] in scenario.slow
    # Warm-up batch, excluded: opens the pool's sockets and grows the queues to full size.
    # A slow client gets a short one (twice the pool size: every socket opened) and one batch.
    expect = await bench.fetch()
    await gather_batch(bench.fetch, 2 * scenario.concurrency if slow else n, Tally(), expect)
    min_batches, max_batches = (1, 1) if slow else (job["min_batches"], job["max_batches"])
    tally = Tally()
    times: list[float] = []
    start = time.perf_counter()
    cpu_start = time.process_time()
    while len(times) < min_batches or (
        time.perf_counter() - start < job["seconds"] and len(times) < max_batches
    ):
        times.append(await gather_batch(bench.fetch, n, tally, expect))
        if tally.errors >= MAX_ERRORS:
            break
    cpu_s = time.process_time() - cpu_start
    batch_rps = [round(n / t, 1) for t in times]
    return {
        "values": {
            "rps": round(statistics.median(batch_rps), 1),
            **cpu_values(cpu_s, time.perf_counter() - start, tally),
        },
        "batch_rps": batch_rps,
        "requests": tally.ok,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "elapsed": round(sum(times), 4),
    }


# --------------------------------------------------------------------------- entry point


async def worker_main(job: dict[str, Any]) -> dict[str, Any]:
    spec = CLIENT_SPECS[job["client"]]
    scenario = SCENARIO_BY_ID[job["scenario"]]
    ctx = ssl_context(job.get("ca"))
    http2 = client_http2(spec, scenario)
    result: dict[str, Any] = {
        "client": spec.name,
        "library": spec.library,
        "version": version_of(spec.library),
        "implementation": implementation(spec, http2),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "notes": [],
    }
    if spec.library == "httpx" and importlib.util.find_spec("sniffio") is None:
        # httpcore 1.0 tries `import sniffio` on every request; a failed import costs ~30%.
        result["notes"].append("sniffio is not installed: httpx pays a failed import a request")
    if scenario.mode == "memory":
        from memory import run_memory

        result.update(await run_memory(spec, scenario, job, ctx, open_client))
        return result
    prior_knowledge = scenario.h2c and http2
    if scenario.tls:
        base = job["https"]
    elif prior_knowledge:
        base = job["h2c"]
    else:
        base = job["http"]
    opts = Options(
        base + scenario.path,
        scenario.concurrency,
        http2,
        ctx,
        ca_pem(job.get("ca")),
        prior_knowledge,
    )
    async with open_client(spec, opts) as bench:
        result["http_version"] = await bench.probe()
        if scenario.mode == "gather":
            result.update(await run_gather(bench, scenario, job))
        else:
            result.update(await run_workers(bench, scenario, job))
        result["connections_opened"] = bench.opened()
    want = "HTTP/2" if spec.name in scenario.expect_h2 else "HTTP/1.1"
    if result["http_version"] != want:
        result["error"] = f"negotiated {result['http_version']}, expected {want}"
    return result


def run_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    if not use_uvloop:
        return asyncio.run(coro)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str]) -> int:
    sys.path.append(str(ROOT))  # lets a plain checkout import aiopool
    job: dict[str, Any] = json.loads(argv[1])
    try:
        result = run_loop(worker_main(job), job.get("uvloop", False))
    except BaseException as exc:  # report anything (ImportError included) to the parent
        print(json.dumps({"client": job["client"], "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0
