"""What the benchmark measures: the client variants, the scenarios and aiopool's goals.

Shared by the parent (``run.py``) and the per-run subprocesses (``workers.py``); it imports
nothing but the standard library, so the parent never loads a client library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Library = Literal["aiopool", "aiohttp", "httpx", "pyreqwest"]
Mode = Literal["workers", "gather", "memory"]


@dataclass(frozen=True)
class ClientSpec:
    """One client configuration, run in its own subprocess.

    ``http2`` is what the client speaks: h2 by ALPN over TLS, by prior knowledge in the h2c
    scenario; ``None`` means "whatever the scenario asks" (aiopool offers h2 exactly in the h2
    scenarios). ``env`` is added to the subprocess's environment.
    """

    name: str
    library: Library
    http1_parser: str | None = None  # aiopool only
    http2: bool | None = False
    http2_engine: str = "auto"  # aiopool only
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""


CLIENT_SPECS: dict[str, ClientSpec] = {
    spec.name: spec
    for spec in (
        ClientSpec(
            "aiopool", "aiopool", http1_parser="httptools", http2=None,
            description="aiopool, HTTP/1.1 parsed by httptools (llhttp)",
        ),
        ClientSpec(
            "aiopool-h11", "aiopool", http1_parser="h11", http2=None,
            description="aiopool, HTTP/1.1 parsed by h11 (pure Python)",
        ),
        ClientSpec(
            "aiopool-native", "aiopool", http1_parser="httptools", http2=None,
            http2_engine="native", description="aiopool, HTTP/2 on its own engine",
        ),
        ClientSpec(
            "aiopool-h2", "aiopool", http1_parser="httptools", http2=None,
            http2_engine="h2", description="aiopool, HTTP/2 on h2 (pure Python)",
        ),
        # aiopool's HTTP/1.1 inside the h2 scenarios: the anchor of "HTTP/2 at HTTP/1.1 speed".
        ClientSpec(
            "aiopool-h1", "aiopool", http1_parser="httptools", http2=False,
            description="aiopool, HTTP/1.1 only (httptools), in the h2 scenarios",
        ),
        ClientSpec("aiohttp", "aiohttp", description="aiohttp with its C extensions"),
        ClientSpec(
            "aiohttp-py", "aiohttp", env={"AIOHTTP_NO_EXTENSIONS": "1"},
            description="aiohttp with AIOHTTP_NO_EXTENSIONS=1 (pure-Python HTTP parser)",
        ),
        ClientSpec("httpx", "httpx", description="httpx, HTTP/1.1 only"),
        ClientSpec("httpx-h2", "httpx", http2=True, description="httpx with http2=True"),
        # The fastest Python-facing client measured here: reqwest over hyper and rustls, driven
        # by a tokio runtime on its own thread (its CPU counts: process CPU covers all threads).
        ClientSpec(
            "pyreqwest", "pyreqwest", http2=False,
            description="pyreqwest (Rust: reqwest, hyper, rustls), HTTP/1.1 only",
        ),
        ClientSpec(
            "pyreqwest-h2", "pyreqwest", http2=True,
            description="pyreqwest with http2(True); http2_prior_knowledge() in the h2c scenario",
        ),
    )
}  # fmt: skip

# The variants whose ratios to every other client are reported.
OURS = ("aiopool", "aiopool-h11", "aiopool-native")
# The peers every aiopool variant (in OURS or not) is also compared with: the fastest measured.
FASTEST = ("pyreqwest", "pyreqwest-h2")


@dataclass(frozen=True)
class Metric:
    key: str  # in a worker result's "values"
    unit: str
    higher_is_better: bool = True


RPS = Metric("rps", "req/s")
MBPS = Metric("mbps", "MB/s")
# Client CPU (process CPU time, every thread: user + system) over the measured interval only.
CPU_PER_1K = Metric("cpu_ms_per_1k", "CPU ms/1k req", higher_is_better=False)
CPU_PER_MB = Metric("cpu_ms_per_mb", "CPU ms/MB", higher_is_better=False)


@dataclass(frozen=True)
class Goal:
    """``ours``'s median over ``anchor``'s: at least ``ratio`` (at most, if lower is better).

    ``metric`` is the scenario's own unless given. ``anchor_scenario`` takes the anchor's median
    from another scenario of the same run (the goal reads n/a when that one did not run).
    """

    ours: str
    anchor: str
    ratio: float
    metric: Metric | None = None
    anchor_scenario: str | None = None

    @property
    def pair(self) -> str:
        anchor = f"{self.anchor}@{self.anchor_scenario}" if self.anchor_scenario else self.anchor
        metric = f" ({self.metric.key})" if self.metric is not None else ""
        return f"{self.ours}/{anchor}{metric}"


MEMORY_METRICS = (
    Metric("task_bytes", "B/waiting task", higher_is_better=False),
    Metric("task_bytes_net", "B/task net", higher_is_better=False),
    Metric("idle_socket_bytes", "B/idle socket", higher_is_better=False),
    Metric("idle_tls_socket_bytes", "B/idle TLS socket", higher_is_better=False),
)


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    mode: Mode
    clients: tuple[str, ...]
    path: str = "/small.txt"
    tls: bool = False
    h2: bool = False  # offer HTTP/2 where the client can
    # Plain-text HTTP/2 by prior knowledge (h2c) for the clients speaking h2, on the server's
    # h2c listener; the HTTP/1.1 clients use its plain HTTP/1.1 listener (same files).
    h2c: bool = False
    concurrency: int = 1  # concurrent workers ("workers"), pool size ("gather"/"memory")
    tasks: int = 0  # tasks per batch ("gather") or waiting tasks ("memory")
    metric: Metric = RPS
    goals: tuple[Goal, ...] = ()
    # The negotiated protocol each client must end up with; a run that differs is an error.
    expect_h2: tuple[str, ...] = ()
    # Clients too slow for the scenario's budget: measured in the first round only, with one
    # batch after a short warm-up, and skipped under --quick. Said so in the output.
    slow: dict[str, str] = field(default_factory=dict)
    # Per-client override of ``tasks``, with the reason.
    tasks_for: dict[str, tuple[int, str]] = field(default_factory=dict)
    # At most this many rounds (0: --rounds); tracemalloc counts repeat to the byte.
    max_rounds: int = 0

    @property
    def cpu_metric(self) -> Metric:
        """Client CPU per unit of the scenario's work: per 1,000 requests, or per MB."""
        return CPU_PER_MB if self.metric is MBPS else CPU_PER_1K


# httpcore's pool walks its whole request queue whenever a request arrives, finishes or is
# cancelled, so n queued requests cost O(n^2): 10,000 queued take minutes.
HTTPX_QUADRATIC = "httpx's pool is O(n^2) in queued requests"

H1_CLIENTS = ("aiopool", "aiopool-h11", "aiohttp", "aiohttp-py", "httpx", "pyreqwest")
# Every HTTP/2 engine of aiopool by name (not "auto", whose meaning changes between versions),
# and aiopool's HTTP/1.1 in the same scenario as the anchor of the HTTP/2 goals.
AIOPOOL_H2 = ("aiopool-native", "aiopool-h2")
H2_CLIENTS = (*AIOPOOL_H2, "aiopool-h1", "aiohttp", "httpx-h2", "pyreqwest-h2")
H2_EXPECTED = (*AIOPOOL_H2, "httpx-h2", "pyreqwest-h2")
# The HTTP/2 goals: small requests over HTTP/2 at least as fast as aiopool's
# own HTTP/1.1 and 1.5x aiohttp's (which has no HTTP/2).
H2_SMALL_GOALS = (
    Goal("aiopool-native", "aiopool-h1", 1.0),
    Goal("aiopool-native", "aiohttp", 1.5),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "h1-small-c10",
        "HTTP/1.1 GET /small.txt, 10 concurrent workers, pool of 10",
        "workers",
        H1_CLIENTS,
        concurrency=10,
        goals=(Goal("aiopool-h11", "aiohttp-py", 1.0), Goal("aiopool", "aiohttp", 2.0)),
    ),
    Scenario(
        "h1-small-c1",
        "HTTP/1.1 GET /small.txt, 1 worker (per-request overhead)",
        "workers",
        H1_CLIENTS,
        concurrency=1,
        goals=(Goal("aiopool", "aiohttp", 1.0),),
    ),
    Scenario(
        "gather-10k",
        "10,000 GET /small.txt tasks gathered at once, pool of 100, HTTP/1.1",
        "gather",
        H1_CLIENTS,
        concurrency=100,
        tasks=10_000,
        goals=(Goal("aiopool", "aiohttp", 2.0),),
        slow={"httpx": HTTPX_QUADRATIC + ": about a minute per 10,000-task batch"},
    ),
    Scenario(
        "tls-h2-c100",
        "TLS GET /small.txt, 100 concurrent workers, h2 where supported (aiohttp, aiopool-h1: h1)",
        "workers",
        H2_CLIENTS,
        tls=True,
        h2=True,
        concurrency=100,
        goals=(
            *H2_SMALL_GOALS,
            Goal("aiopool-native", "httpx-h2", 3.0),
            # Client CPU per 1,000 small requests over HTTP/2 no higher than over HTTP/1.1,
            # the latter measured among all HTTP/1.1 clients in tls-h1-c100.
            Goal("aiopool-native", "aiopool", 1.0, CPU_PER_1K, anchor_scenario="tls-h1-c100"),
        ),
        expect_h2=H2_EXPECTED,
    ),
    Scenario(
        "h2c-small-c100",
        "h2c (HTTP/2 by prior knowledge, plain text) GET /small.txt, 100 concurrent workers "
        "(aiohttp, aiopool-h1: HTTP/1.1)",
        "workers",
        H2_CLIENTS,
        h2=True,
        h2c=True,
        concurrency=100,
        goals=H2_SMALL_GOALS,
        expect_h2=H2_EXPECTED,
    ),
    Scenario(
        "tls-h1-c100",
        "TLS GET /small.txt, 100 concurrent workers, HTTP/1.1 for all",
        "workers",
        H1_CLIENTS,
        tls=True,
        concurrency=100,
        goals=(Goal("aiopool", "aiohttp", 1.0),),
    ),
    Scenario(
        "dl-10m-h1",
        "TLS GET /10m.bin (10 MiB) back to back, 1 worker, HTTP/1.1",
        "workers",
        H1_CLIENTS,
        path="/10m.bin",
        tls=True,
        concurrency=1,
        metric=MBPS,
        goals=(Goal("aiopool", "aiohttp", 0.9),),
    ),
    Scenario(
        "dl-10m-h2",
        "TLS GET /10m.bin (10 MiB) back to back, 1 worker, HTTP/2 (aiopool-h1: HTTP/1.1)",
        "workers",
        (*AIOPOOL_H2, "aiopool-h1", "httpx-h2", "pyreqwest-h2"),
        path="/10m.bin",
        tls=True,
        h2=True,
        concurrency=1,
        metric=MBPS,
        goals=(Goal("aiopool-native", "aiopool-h1", 0.9),),
        expect_h2=H2_EXPECTED,
    ),
    Scenario(
        "memory",
        "tracemalloc: bytes per task waiting for one of 4 sockets (10,000 queued), "
        "bytes per idle keep-alive socket",
        "memory",
        # Not pyreqwest: its buffers and sockets live in Rust's allocator, which tracemalloc
        # does not see, so it would measure ~0 bytes.
        ("aiopool", "aiopool-h11", "aiohttp", "aiohttp-py", "httpx"),
        concurrency=4,
        tasks=10_000,
        metric=MEMORY_METRICS[0],
        tasks_for={"httpx": (500, HTTPX_QUADRATIC + ": 10,000 would take minutes")},
        max_rounds=1,
    ),
)

SCENARIO_BY_ID = {s.id: s for s in SCENARIOS}


def metrics_of(scenario: Scenario) -> tuple[Metric, ...]:
    return MEMORY_METRICS if scenario.mode == "memory" else (scenario.metric,)
