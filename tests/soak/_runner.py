"""The soak's phases, in order, and the verdict over all of them.

Phases (one `aiopool.Client` each): nginx over HTTP/1.1 with each parser; nginx over HTTP/2
(TLS by ALPN, h2c, and h2c with a GOAWAY every 25 requests) with each engine; the fault server
with each parser; nginx HTTP/1.1 + HTTP/2 under repeated reloads; everything mixed, with a
reload. A warm-up runs a small slice of every phase first, so that every code path has been
imported and every buffer size reached before memory is compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiopool
from tests.rig.fault_server import FaultServer
from tests.rig.nginx import Nginx

from ._checks import MIB, PhaseResult, open_fds, wait_until
from ._driver import PhasePlan, run_phase
from ._kinds import Mix, SoakContext, fault_kinds, nginx_kinds

__all__ = ["SoakConfig", "SoakReport", "run_soak"]

# Memory may grow after the warm-up by at most this much (the larger of the two): enough for
# allocator noise (pymalloc keeps arenas; TLS sockets hold 256 KiB read buffers while open),
# far below what a leak of one object per request would cost over 300,000 requests.
RSS_TOLERANCE_BYTES = 10 * MIB
RSS_TOLERANCE_RATIO = 0.10


@dataclass(frozen=True)
class SoakConfig:
    requests: int = 300_000  # over all phases, warm-up included
    seconds: float | None = None  # an overall time budget, shared out like the requests
    concurrency: int = 64
    cancel_rate: float = 0.02
    warmup_share: float = 0.05
    seed: int = 0


@dataclass
class SoakReport:
    phases: list[PhaseResult] = field(default_factory=list)
    warmup_rss: int = 0
    peak_rss: int = 0  # the highest after any phase past the warm-up
    fds_start: int = 0
    fds_end: int = 0
    problems: list[str] = field(default_factory=list)  # checks over the whole run

    @property
    def passed(self) -> bool:
        return not self.problems and all(p.passed for p in self.phases)

    def lines(self, *, phases: bool = True) -> list[str]:
        """The report; `phases=False` leaves out the per-phase lines (printed as they ended)."""
        measured = [p for p in self.phases if not p.name.startswith("warm-up")]
        total = sum(p.requests for p in self.phases)
        seconds = sum(p.seconds for p in self.phases)
        faults: Counter[str] = Counter()
        expected: Counter[str] = Counter()
        unexpected: Counter[str] = Counter()
        for phase in self.phases:
            faults.update(phase.faults)
            expected.update(phase.expected)
            unexpected.update(phase.unexpected)
        out = [phase.summary() for phase in self.phases] + [""] if phases else []
        out.append(
            f"requests done: {total:,} in {seconds:.1f} s, {total / seconds if seconds else 0:,.0f}"
            f" req/s ({sum(p.requests for p in measured):,} after the warm-up)"
        )
        out.append(f"ok: {sum(p.ok for p in self.phases):,}")
        out.append(f"cancelled by the soak: {sum(p.cancelled for p in self.phases):,}")
        out.append("faults injected: " + _counts(faults))
        out.append("expected failures: " + _counts(expected))
        out.append("unexpected failures: " + _counts(unexpected))
        for phase in self.phases:
            out.extend(f"  [{phase.name}] {sample}" for sample in phase.samples)
            out.extend(f"  [{phase.name}] during a reload: {note}" for note in phase.tolerated)
        out.append(f"fds: {self.fds_start} before, {self.fds_end} after")
        out.append(
            "rss: "
            + ", ".join(f"{p.name} {p.rss_after / MIB:.1f}" for p in self.phases)
            + f" MiB; after warm-up {self.warmup_rss / MIB:.1f} MiB, peak after it"
            f" {self.peak_rss / MIB:.1f} MiB ({(self.peak_rss - self.warmup_rss) / MIB:+.1f};"
            f" tolerance +{_rss_tolerance(self.warmup_rss) / MIB:.1f} MiB)"
        )
        for phase in self.phases:
            out.extend(f"FAILED [{phase.name}] {problem}" for problem in phase.problems)
        out.extend(f"FAILED {problem}" for problem in self.problems)
        out.append("soak PASSED" if self.passed else "soak FAILED")
        return out


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counter.most_common()) or "none"


def _rss_tolerance(warmup: int) -> int:
    return max(RSS_TOLERANCE_BYTES, int(warmup * RSS_TOLERANCE_RATIO))


@dataclass(frozen=True)
class _PhaseDef:
    name: str
    share: float
    client: dict[str, Any]
    mix: Mix
    reloads: int = 0
    goaway_origin: str | None = None


def _phases(nginx: Nginx, fault_url: str, verify: ssl.SSLContext | str) -> list[_PhaseDef]:
    limits = {"max_connections_per_host": 16, "max_idle_per_host": 16}
    h1 = nginx_kinds(nginx.http_url, "h1", close=True)
    h2 = [
        *nginx_kinds(nginx.https_url, "h2-tls"),
        *nginx_kinds(nginx.h2c_url, "h2c"),
        *nginx_kinds(nginx.h2c_limited_url, "h2c-goaway", big=0.1),
    ]
    # (Connection: close keeps new sockets being dialed while old workers wind down.)
    reload_mix = [
        *nginx_kinds(nginx.http_url, "h1", big=3, close=True),
        *nginx_kinds(nginx.https_url, "h2"),
    ]
    h2_only = {**limits, "http1": False, "verify": verify}
    return [
        _PhaseDef("nginx-h1-h11", 0.12, {**limits, "http1_parser": "h11"}, Mix(h1)),
        _PhaseDef("nginx-h1-httptools", 0.15, {**limits, "http1_parser": "httptools"}, Mix(h1)),
        _PhaseDef(
            "nginx-h2-h2",
            0.10,
            {**h2_only, "http2_engine": "h2"},
            Mix(h2),
            goaway_origin=nginx.h2c_limited_url,
        ),
        _PhaseDef(
            "nginx-h2-native",
            0.12,
            {**h2_only, "http2_engine": "native"},
            Mix(h2),
            goaway_origin=nginx.h2c_limited_url,
        ),
        _PhaseDef(
            "faults-h11", 0.10, {**limits, "http1_parser": "h11"}, Mix(fault_kinds(fault_url))
        ),
        _PhaseDef(
            "faults-httptools",
            0.10,
            {**limits, "http1_parser": "httptools"},
            Mix(fault_kinds(fault_url)),
        ),
        _PhaseDef("nginx-reload", 0.12, {**limits, "verify": verify}, Mix(reload_mix), reloads=3),
        _PhaseDef(
            "mixed",
            0.14,
            {**limits, "verify": verify},
            Mix([*reload_mix, *fault_kinds(fault_url)]),
            reloads=1,
        ),
    ]


async def run_soak(
    config: SoakConfig, nginx: Nginx, fault_server: FaultServer, verify: ssl.SSLContext | str
) -> SoakReport:
    """Run the warm-up and every phase against running servers; `verify` trusts nginx's CA.

    Failed checks are in the report (`passed`, `lines()`), not raised.
    """
    report = SoakReport()
    ctx = SoakContext(nginx, fault_server.url)
    defs = _phases(nginx, fault_server.url, verify)
    total_share = sum(d.share for d in defs)
    warm_requests = config.requests * config.warmup_share
    main_requests = config.requests - warm_requests

    def plan(d: _PhaseDef, prefix: str, budget: float, fraction: float, seed: int) -> PhasePlan:
        share = d.share / total_share
        return PhasePlan(
            name=f"{prefix}{d.name}",
            requests=max(1, round(budget * share)),
            seconds=None if config.seconds is None else config.seconds * fraction * share,
            client_options=d.client,
            mix=d.mix,
            reloads=d.reloads,
            concurrency=config.concurrency,
            cancel_rate=config.cancel_rate,
            goaway_origin=d.goaway_origin,
            seed=seed,
        )

    plans = [
        plan(d, "warm-up/", warm_requests, config.warmup_share, config.seed + i)
        for i, d in enumerate(defs)
    ]
    plans += [
        plan(d, "", main_requests, 1 - config.warmup_share, config.seed + 100 + i)
        for i, d in enumerate(defs)
    ]
    loop_errors: list[str] = []
    with _recording_errors(loop_errors):
        await _prime_the_loop(nginx, verify)
        report.fds_start = await _first_fds(fault_server)
        for phase_plan in plans:
            result = await run_phase(phase_plan, ctx, nginx, fault_server)
            report.phases.append(result)
            if phase_plan.name.startswith("warm-up/"):
                report.warmup_rss = result.rss_after
            print(result.summary(), file=sys.stderr, flush=True)
        report.fds_end = report.phases[-1].fds_after
        report.peak_rss = max(p.rss_after for p in report.phases[len(defs) :])
    report.problems.extend(loop_errors)
    if report.fds_end != report.fds_start:
        report.problems.append(
            f"descriptors: {report.fds_start} at the start, {report.fds_end} at the end"
        )
    growth = report.peak_rss - report.warmup_rss
    if growth > _rss_tolerance(report.warmup_rss):
        report.problems.append(
            f"memory grew by {growth / MIB:.1f} MiB after the warm-up (tolerance "
            f"{_rss_tolerance(report.warmup_rss) / MIB:.1f} MiB)"
        )
    return report


async def _prime_the_loop(nginx: Nginx, verify: ssl.SSLContext | str) -> None:
    """Let the event loop create what it creates lazily and then keeps (uvloop opens a
    descriptor for its thread pool on the first connection) before the first descriptor
    count: a request over each protocol, on a client closed at once."""
    async with aiopool.Client(verify=verify) as client:
        await client.get(f"{nginx.http_url}/small.txt")
        await client.get(f"{nginx.https_url}/small.txt")


async def _first_fds(fault_server: FaultServer) -> int:
    await wait_until(lambda: fault_server.open_connections() == 0, 10.0)
    return open_fds()


@contextlib.contextmanager
def _recording_errors(errors: list[str]) -> Iterator[None]:
    """Errors nobody can catch (an exception in a callback, a task that died unobserved, a
    warning raised in a finaliser) are failures of the run: record them instead of letting
    them scroll by."""
    loop = asyncio.get_running_loop()
    previous_handler = loop.get_exception_handler()
    previous_hook = sys.unraisablehook

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        errors.append(f"event loop error: {context.get('message')}: {context.get('exception')!r}")

    def on_unraisable(info: sys.UnraisableHookArgs) -> None:
        errors.append(f"unraisable: {info.exc_type.__name__}: {info.exc_value} in {info.object!r}")

    loop.set_exception_handler(on_loop_error)
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        loop.set_exception_handler(previous_handler)
        sys.unraisablehook = previous_hook
