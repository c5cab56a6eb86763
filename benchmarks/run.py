"""Benchmark: aiopool vs aiohttp, httpx and pyreqwest against a local nginx, scenario by scenario.

    python benchmarks/run.py [--quick] [--scenarios a,b] [--rounds 3] [--seconds 2] [--uvloop]

Each (client, scenario, round) is a fresh subprocess (``run.py --worker JOB``, see
``workers.py``) that prints one JSON line; within a round the clients take turns and the first
one rotates, so drift on the machine hits them all alike. Medians, client CPU, aiopool's ratios
and the goals are printed and written to ``benchmarks/results/latest.json``. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import print_goals, print_scenario, resolve_cross_goals, summarize
from scenarios import CLIENT_SPECS, SCENARIO_BY_ID, SCENARIOS, Scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "latest.json"

# Settings: the full run (`make bench`, about 6 minutes on 2 cores) and --quick (about 1).
DEFAULTS = {"rounds": 3, "seconds": 1.5, "warmup": 0.4, "min_batches": 2, "max_batches": 10}
QUICK = {"rounds": 1, "seconds": 0.4, "warmup": 0.2, "min_batches": 1, "max_batches": 1}
WORKER_TIMEOUT = 300.0
SETTINGS = (
    *("quick", "rounds", "seconds", "warmup", "requests"),
    *("min_batches", "max_batches", "mem_sockets", "uvloop"),
)


@dataclass(frozen=True)
class Server:
    http: str
    https: str | None
    ca: str | None
    description: str
    h2c: str | None = None  # HTTP/2 by prior knowledge over plain text


@contextlib.contextmanager
def local_server() -> Iterator[Server]:
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
        yield Server(base[0], None, None, "examples/_local_server.py (Python asyncio)", None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_server(kind: str) -> Iterator[Server]:
    """nginx from the test rig (HTTP, TLS with h2, h2c), else the examples' Python server."""
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
            with Nginx(binary=binary) as nginx, tempfile.TemporaryDirectory() as tmp:
                ca = Path(tmp) / "ca.pem"
                nginx.ca.cert_pem.write_to_path(str(ca))
                # By address, not "localhost": no resolver in the way, no ::1 attempt first.
                https = f"https://127.0.0.1:{nginx.https_port}"
                desc = f"{version.stderr.strip() or 'nginx'} ({binary}), 1 worker process"
                yield Server(nginx.http_url, https, str(ca), desc, nginx.h2c_url)
            return
        if kind == "nginx":
            raise SystemExit(f"--server nginx: {why}")
        print(f"NOTE: {why}; falling back to the examples' Python server: much slower than")
        print("      nginx (the ratios are squeezed towards 1), and no TLS scenarios.\n")
    with local_server() as server:
        yield server


def run_one(client: str, scenario: Scenario, server: Server, args: argparse.Namespace) -> Any:
    spec = CLIENT_SPECS[client]
    job = {
        "client": client,
        "scenario": scenario.id,
        "http": server.http,
        "https": server.https,
        "h2c": server.h2c,
        "ca": server.ca,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "requests": args.requests,
        "min_batches": args.min_batches,
        "max_batches": args.max_batches,
        "mem_sockets": args.mem_sockets,
        "uvloop": args.uvloop,
    }
    env = dict(os.environ)
    env.pop("AIOHTTP_NO_EXTENSIONS", None)
    env.update(spec.env)
    cmd = [sys.executable, str(HERE / "run.py"), "--worker", json.dumps(job)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return {"client": client, "error": f"worker timed out after {WORKER_TIMEOUT:g} s"}
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        result = {"client": client, "error": f"worker exited {proc.returncode}: {tail}"}
    return result


def describe(result: dict[str, Any], scenario: Scenario) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    values = result["values"]
    if scenario.mode == "memory":
        return ", ".join(f"{k} {v:,}" for k, v in values.items())
    key, unit = scenario.metric.key, scenario.metric.unit
    text = f"{values[key]:,.1f} {unit}" if unit == "MB/s" else f"{values[key]:,.0f} {unit}"
    extra = [result.get("http_version") or "?"]
    cpu = scenario.cpu_metric
    if cpu.key in values:
        extra.append(f"{values[cpu.key]:,.1f} {cpu.unit}")
    if result.get("connections_opened"):
        extra.append(f"{result['connections_opened']} conns")
    if "batch_rps" in result:
        extra.append(f"{len(result['batch_rps'])} batches")
    text += f"  ({', '.join(extra)})"
    if result.get("errors"):
        text += f"  {result['errors']} errors, first: {result['first_error']}"
    return text


def selected(args: argparse.Namespace, server: Server) -> list[tuple[Scenario, list[str]]]:
    wanted = [s for s in SCENARIOS if not args.scenarios or s.id in args.scenarios]
    clients = set(args.clients or CLIENT_SPECS)
    plan = []
    for scenario in wanted:
        if scenario.tls and server.https is None:
            print(f"SKIP {scenario.id}: the server has no TLS listener")
            continue
        if scenario.h2c and server.h2c is None:
            print(f"SKIP {scenario.id}: the server has no h2c (prior knowledge) listener")
            continue
        plan.append((scenario, [c for c in scenario.clients if c in clients]))
    return plan


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu": cpu,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def loop_name(use_uvloop: bool) -> str:
    if not use_uvloop:
        return "asyncio"
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit("--uvloop: uvloop is not installed (pip install uvloop)") from None


def run_parent(args: argparse.Namespace) -> int:
    loop = loop_name(args.uvloop)
    failed = False
    started = time.perf_counter()
    summaries: dict[str, Any] = {}
    notes: dict[str, None] = {}
    with contextlib.ExitStack() as stack:
        if args.url:
            server = Server(
                args.url.rstrip("/"),
                args.https_url and args.https_url.rstrip("/"),
                args.ca,
                f"external {args.url}",
                args.h2c_url and args.h2c_url.rstrip("/"),
            )
        else:
            server = stack.enter_context(start_server(args.server))
        urls = "  ".join(u for u in (server.http, server.https, server.h2c) if u)
        print(f"Server: {server.description}\n        {urls}")
        mach = machine()
        print(f"Machine: {mach['cores']} CPUs ({mach['cpu']}), {mach['python']}; loop: {loop}")
        plan = selected(args, server)
        for scenario, clients in plan:
            print(f"\n== {scenario.id}: {scenario.description}", flush=True)
            for client, why in scenario.slow.items():
                if client in clients:
                    what = "skipped under --quick" if args.quick else "measured in round 1 only"
                    print(f"  NOTE {client} {what}: {why}")
            if args.quick:
                clients = [c for c in clients if c not in scenario.slow]
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            rounds = min(args.rounds, scenario.max_rounds or args.rounds)
            for rnd in range(rounds):
                shift = rnd % max(1, len(clients))
                for client in clients[shift:] + clients[:shift]:  # rotate who goes first
                    if client in scenario.slow and (args.quick or rnd > 0):
                        continue
                    t0 = time.perf_counter()
                    result = run_one(client, scenario, server, args)
                    result["wall_s"] = round(time.perf_counter() - t0, 2)
                    runs[client].append(result)
                    notes.update(dict.fromkeys(f"{client}: {n}" for n in result.get("notes", [])))
                    failed = failed or "error" in result or bool(result.get("errors"))
                    line = f"{describe(result, scenario)}  [{result['wall_s']:.1f} s]"
                    print(f"  round {rnd + 1}/{rounds}  {client:<14} {line}", flush=True)
            summaries[scenario.id] = summarize(scenario, runs)
    resolve_cross_goals(summaries)

    print("\n" + "=" * 100)
    for sid, summary in summaries.items():
        scenario = SCENARIO_BY_ID[sid]
        rounds = min(args.rounds, scenario.max_rounds or args.rounds)
        what = "tracemalloc" if scenario.mode == "memory" else f"{args.seconds:g} s"
        header = f"{rounds} round{'s' * (rounds > 1)} x {what}, {loop}"
        print_scenario(sid, summary, scenario, header)
    print_goals(summaries)
    for note in notes:
        print(f"\nNOTE: {note}")
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": mach,
        "loop": loop,
        "server": {
            "description": server.description,
            "http": server.http,
            "https": server.https,
            "h2c": server.h2c,
        },
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "clients": {
            name: {"library": s.library, "description": s.description, "env": s.env}
            for name, s in CLIENT_SPECS.items()
        },
        "notes": list(notes),
        "goals": [row for s in summaries.values() for row in s["goals"]],
        "scenarios": summaries,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    shown = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    print(f"\nWrote {shown} ({report['wall_seconds']:.0f} s)")
    if failed:
        print("Some runs failed or saw errors; see above.", file=sys.stderr)
    return 1 if failed else 0


def csv(text: str, known: Any, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in items if x not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return items


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        from workers import main as worker_main

        return worker_main(sys.argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--scenarios",
        type=lambda t: csv(t, SCENARIO_BY_ID, "scenario"),
        help="comma-separated subset: " + ",".join(SCENARIO_BY_ID),
    )
    parser.add_argument(
        "--clients",
        type=lambda t: csv(t, CLIENT_SPECS, "client"),
        help="only these client variants: " + ",".join(CLIENT_SPECS),
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short runs")
    parser.add_argument(
        "--rounds", type=int, help=f"runs per client and scenario ({DEFAULTS['rounds']})"
    )
    parser.add_argument(
        "--seconds", type=float, help=f"measured seconds per run ({DEFAULTS['seconds']})"
    )
    parser.add_argument(
        "--warmup", type=float, help=f"warm-up seconds per run ({DEFAULTS['warmup']})"
    )
    parser.add_argument("--requests", type=int, default=0, help="cap a run at N requests (0: none)")
    parser.add_argument(
        "--min-batches", type=int, help="gather-10k: measured batches, at least (2)"
    )
    parser.add_argument(
        "--max-batches", type=int, help="gather-10k: measured batches, at most (10)"
    )
    parser.add_argument("--mem-sockets", type=int, default=100, help="memory: idle sockets (100)")
    parser.add_argument("--uvloop", action="store_true", help="run the workers under uvloop")
    parser.add_argument(
        "--server",
        choices=("auto", "nginx", "local"),
        default="auto",
        help="auto: nginx if installed, else the examples' Python server (plain HTTP only)",
    )
    parser.add_argument("--url", help="an already running plain-HTTP server (base URL)")
    parser.add_argument("--https-url", help="with --url: its TLS base URL (needs --ca)")
    parser.add_argument("--ca", help="with --https-url: the CA bundle that signed its certificate")
    parser.add_argument("--h2c-url", help="with --url: its h2c (HTTP/2 prior knowledge) base URL")
    parser.add_argument("--json", default=str(RESULTS), help="where to write the results")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.seconds <= 0 or args.warmup < 0 or args.min_batches < 1:
        parser.error("--rounds, --seconds and --min-batches must be positive")
    if args.max_batches < args.min_batches:
        parser.error("--max-batches must be at least --min-batches")
    if args.https_url and not args.ca:
        parser.error("--https-url needs --ca")
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
