"""Every example runs, and says what it should: figures checked, not just the exit code.

Each example is run as a user would run it (a subprocess, small arguments, warnings as errors),
against the local servers it embeds; the Starlette app is also served in-process by hypercorn
and called over real HTTP. Unit tests cover `PoolStats.as_dict()`/`to_json()` and the
Prometheus rendering.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aiopool
from tests.helpers import ctrl_c_enabled
from tests.rig.fault_server import FaultServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples import each other as top-level modules

import prometheus_stats  # noqa: E402
import web_app  # noqa: E402
from _asgi_server import AsgiServer  # noqa: E402
from _local_server import LocalServer, download_chunks, download_sha256  # noqa: E402

# Generous: the examples take well under a second each, but the machine may be busy.
RUN_TIMEOUT = 60


def run_example(name: str, *args: str) -> tuple[str, str]:
    """Run examples/<name>.py with warnings as errors; return (stdout, stderr) if it exits 0."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for bad in ("Traceback", "PROBLEM", "Warning", "Exception"):
        assert bad not in proc.stderr, proc.stderr
    return proc.stdout, proc.stderr


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in:\n{text}"
    return int(match.group(1))


# The examples, run as scripts ----------------------------------------------------------------


def test_demo() -> None:
    out, _ = run_example("demo", "--requests", "40", "--concurrency", "4")
    assert number(r"TCP connections \(server count\)\s+(\d+)", out) == 40  # per-request clients
    shared = re.search(r"TCP connections \(server count\)\s+\d+\s+(\d+)", out)
    assert shared is not None and 1 <= int(shared.group(1)) <= 4
    assert "reused=True" in out


def test_fanout_shows_reuse_in_the_pool_stats() -> None:
    out, _ = run_example("fanout", "--requests", "300", "--per-host", "10")
    assert number(r"responses OK\s+(\d+)", out) == 300
    opened = number(r"sockets \(client\)\s+(\d+)", out)
    assert number(r"sockets \(server\)\s+(\d+)", out) == opened
    assert 1 <= opened <= 10
    assert number(r"reused connections\s+(\d+)", out) == 300 - opened
    stats = json.loads(out.split("pool stats: ", 1)[1].splitlines()[0])
    assert stats["requests"] == 300 and stats["active"] == 0 and stats["idle"] == opened


def test_stream_download_checks_the_body_and_pools_the_socket() -> None:
    out, err = run_example("stream_download", "--size", "3")
    assert number(r"downloaded: (\d+) bytes", out) == 3 * 1024 * 1024
    assert "(matches the server's)" in out
    assert "inside the block: active=1 idle=0" in out
    assert "after the block: active=0 idle=1" in out
    assert "next request: reused=True (the same connection, id 1)" in out
    # Left early with megabytes unread: closed, not drained, and the next request dials.
    assert "left early: connections closed 1, idle=0" in out
    assert "next request: reused=False (connection id 2)" in out
    assert "100%" in err and "3.0/3.0 MiB" in err  # the progress bar, on stderr


def test_reuse_trace_shows_false_then_true_and_what_the_mistakes_cost() -> None:
    out, _ = run_example("reuse_trace", "--requests", "6")
    part1 = out.split("== 2.")[0]
    assert "request 1: conn was reused: false" in part1
    assert "request 2: conn was reused: true" in part1
    assert "request 3: conn was reused: true" in part1
    # Each request's own trace hook: only the first dials and shakes hands.
    first, second, third = part1.split("request ")[1:4]
    for name in ("get_conn", "connect_start", "connect_done", "tls_handshake_done (TLSv1.3"):
        assert f"ms  {name}" in first
    assert "ms  got_conn (reused false)" in first
    for later in (second, third):
        assert "ms  got_conn (reused true)" in later
        assert "connect_start" not in later and "tls_handshake" not in later
        assert "ms  got_first_response_byte" in later and "ms  put_idle_conn" in later
    # A client per request: a socket and a handshake each; a shared one: one of each.
    assert re.search(r"new client per request\s+sockets:\s+6\s+TLS handshakes:\s+6", out)
    assert re.search(r"one shared client\s+sockets:\s+1\s+TLS handshakes:\s+1", out)
    assert "shared client: 5 of 6 requests on a reused connection" in out
    # The forgotten body: a new socket, a ResourceWarning naming the line, the socket closed.
    assert "forgotten: next request reused: false; sockets opened: 2, active: 1" in out
    assert re.search(r"ResourceWarning: unclosed streamed response .*reuse_trace\.py:\d+", out)
    assert "trace: conn_closed (connection 1, error)" in out
    assert "after garbage collection: connections closed: 1" in out
    assert "closed by the block: next request reused: true; sockets opened: 1" in out


def _sections(out: str) -> list[str]:
    return out.split("== ")[1:]


def test_http2_multiplexing_one_socket_many_streams() -> None:
    out, _ = run_example("http2_multiplexing", "--requests", "30", "--limit", "5")
    one, two, three = _sections(out)[:3]
    assert number(r"sockets opened \(client stats\): (\d+)", one) == 1
    assert number(r"connections \(server count\): (\d+)", one) == 1
    assert "peak streams per connection (server): [30]" in one
    assert number(r"peak open streams \(client stats\): (\d+)", one) == 30
    assert "http versions (server): 2" in one
    # Twice the server's limit: a second socket, each carrying exactly the limit.
    assert number(r"sockets opened \(client stats\): (\d+)", two) == 2
    assert "peak streams per connection (server): [5, 5]" in two
    # One socket allowed: the rest queue for a slot; never more than the limit at once.
    assert number(r"sockets opened \(client stats\): (\d+)", three) == 1
    assert "peak streams per connection (server): [5]" in three
    assert number(r"peak open streams \(client stats\): (\d+)", three) == 5
    assert number(r"requests: (\d+)", three) == 15  # no warm-up request needed


def test_prometheus_stats_example_serves_metrics() -> None:
    out, _ = run_example("prometheus_stats", "--requests", "60")
    assert "-> 200 text/plain; version=0.0.4; charset=utf-8" in out
    # prometheus_client writes sample values as floats ("60.0").
    samples = dict(
        re.findall(r'^(aiopool_\w+)\{[^}]*origin="http://127\.0\.0\.1:\d+"\} (\d+)\.0$', out, re.M)
    )
    assert int(samples["aiopool_requests_total"]) == 60
    opened = int(samples["aiopool_connections_opened_total"])
    assert 1 <= opened <= 10
    assert int(samples["aiopool_requests_reused_total"]) == 60 - opened
    assert int(samples["aiopool_connections_idle"]) == opened
    assert int(samples["aiopool_connections_active"]) == 0
    assert re.search(r'^aiopool_connections_closed_total\{client="example"\} 0\.0$', out, re.M)
    # The request-duration histogram of the integration's middleware: every request counted.
    assert re.search(
        r'^aiopool_request_duration_seconds_count\{code="200",error="",method="GET",'
        r'origin="http://127\.0\.0\.1:\d+"\} 60\.0$',
        out,
        re.M,
    )


def test_web_app_runs_standalone_under_hypercorn() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", str(EXAMPLES / "web_app.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_enabled,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)/fanout", line)
        assert match is not None, line + (proc.stderr.read() if proc.stderr else "")
        body = _get_json(f"{match.group(1)}/fanout?n=30")
        assert body["ok"] == 30 and body["stats"]["requests"] == 30
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the lifespan closes the client and server
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def _get_json(url: str) -> Any:
    # A plain blocking client: the example under test runs in another process.
    import urllib.request

    with urllib.request.urlopen(url, timeout=RUN_TIMEOUT) as resp:
        return json.load(resp)


# The Starlette app, served in-process by hypercorn -------------------------------------------


async def test_web_app_owns_one_client_through_its_lifespan() -> None:
    app = web_app.create_app()
    async with AsgiServer(app) as server, aiopool.Client() as caller:
        client = app.state.client  # created by the lifespan's startup
        assert isinstance(client, aiopool.Client) and not client.is_closed
        first = await caller.get(f"{server.url}/fanout?n=60")
        assert first.status_code == 200
        body = first.json()
        assert (body["requests"], body["ok"], body["failed"]) == (60, 60, 0)
        stats = body["stats"]
        opened = stats["connections_opened"]
        assert 1 <= opened <= 20  # the app's max_connections_per_host
        assert stats["requests"] == 60 and stats["reused"] == 60 - opened
        assert stats["active"] == 0 and stats["idle"] == opened
        # A second call runs on the same client and its warm sockets: nothing new is opened.
        second = (await caller.get(f"{server.url}/fanout?n=60")).json()["stats"]
        assert second["requests"] == 120
        assert second["connections_opened"] == opened
        assert second["reused"] == 120 - opened
        assert (await caller.get(f"{server.url}/stats")).json() == client.stats().as_dict()
        metrics = await caller.get(f"{server.url}/metrics")
        assert metrics.headers["content-type"] == prometheus_stats.CONTENT_TYPE
        assert re.search(
            r"^aiopool_requests_total\{origin=\"https://[^\"]+\"\} 120$", metrics.text, re.M
        )
        for bad in ("0", "x", str(web_app.MAX_FANOUT + 1)):
            refused = await caller.get(f"{server.url}/fanout?n={bad}")
            assert refused.status_code == 400
        assert client.stats().requests == 120  # refused requests started no work
    assert client.is_closed  # the lifespan's shutdown closed it
    assert client.stats().connections_closed == opened


async def test_web_app_reports_an_upstream_failure_as_502() -> None:
    # An upstream nobody listens on: every fan-out request fails with ConnectError.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
    app = web_app.create_app(upstream=dead)
    async with AsgiServer(app) as server, aiopool.Client() as caller:
        resp = await caller.get(f"{server.url}/fanout?n=3")
        assert resp.status_code == 502
        body = resp.json()
        assert (body["ok"], body["failed"]) == (0, 3)
        assert body["errors"] and all(e.startswith("ConnectError") for e in body["errors"])
        assert body["stats"]["active"] == 0 and body["stats"]["connecting"] == 0


# The embedded server's large-body route ----------------------------------------------------------


def test_download_chunks_depend_on_their_position() -> None:
    chunks = list(download_chunks(3 * 65536 + 5))
    assert [len(c) for c in chunks] == [65536, 65536, 65536, 5]
    assert len(set(chunks[:3])) == 3  # a reordered body would not match the checksum
    assert download_sha256(0) == hashlib.sha256(b"").hexdigest()


async def test_local_server_download_route() -> None:
    size = 200_000
    async with LocalServer() as server, aiopool.Client() as client:
        resp = await client.get(f"{server.url}/download/{size}")
        assert resp.status_code == 200 and len(resp.content) == size
        assert hashlib.sha256(resp.content).hexdigest() == resp.headers["x-content-sha256"]
        assert resp.headers["x-content-sha256"] == download_sha256(size)
        head = await client.head(f"{server.url}/download/{size}")
        assert head.headers["content-length"] == str(size) and head.content == b""
        for bad in ("x", "-1", str(2**31)):
            assert (await client.get(f"{server.url}/download/{bad}")).status_code == 404
        assert client.stats().connections_opened == 1  # every answer kept the socket usable


# PoolStats.as_dict() / to_json() ----------------------------------------------------------------

HOST_A = aiopool.HostStats(
    active=2, idle=1, connecting=1, waiting=4, opened=5, reused=7, requests=12, streams=0
)
HOST_B = aiopool.HostStats(
    active=1, idle=0, connecting=0, waiting=0, opened=1, reused=9, requests=10, streams=6
)
STATS = aiopool.PoolStats(
    requests=22,
    connections_opened=6,
    connections_closed=2,
    reused=16,
    hosts={"http://a.example:80": HOST_A, "https://b.example:443": HOST_B},
    retries={"stale_socket": 2},
)


def test_as_dict_is_plain_builtins_with_hosts_nested_and_totals() -> None:
    data = STATS.as_dict()
    assert data == {
        "requests": 22,
        "connections_opened": 6,
        "connections_closed": 2,
        "reused": 16,
        "retries": {"stale_socket": 2},
        "active": 3,
        "idle": 1,
        "connecting": 1,
        "waiting": 4,
        "streams": 6,
        "hosts": {
            "http://a.example:80": {
                "active": 2,
                "idle": 1,
                "connecting": 1,
                "waiting": 4,
                "opened": 5,
                "reused": 7,
                "requests": 12,
                "streams": 0,
                "retries": 0,
            },
            "https://b.example:443": {
                "active": 1,
                "idle": 0,
                "connecting": 0,
                "waiting": 0,
                "opened": 1,
                "reused": 9,
                "requests": 10,
                "streams": 6,
                "retries": 0,
            },
        },
    }

    def builtins_only(value: object) -> bool:
        if isinstance(value, dict):
            return all(type(k) is str and builtins_only(v) for k, v in value.items())
        return type(value) in (int, str)

    assert builtins_only(data)
    # A fresh copy: changing it does not change the frozen snapshot.
    data["hosts"]["http://a.example:80"]["idle"] = 99
    assert STATS.hosts["http://a.example:80"].idle == 1
    assert STATS.as_dict()["hosts"]["http://a.example:80"]["idle"] == 1


def test_as_dict_of_an_empty_pool() -> None:
    data = aiopool.PoolStats(0, 0, 0, 0).as_dict()
    assert data["hosts"] == {} and data["active"] == data["streams"] == 0


def test_to_json_round_trips_and_indents() -> None:
    assert json.loads(STATS.to_json()) == STATS.as_dict()
    assert "\n" not in STATS.to_json()
    pretty = STATS.to_json(indent=2)
    assert json.loads(pretty) == STATS.as_dict()
    assert pretty.startswith('{\n  "requests": 22,')


async def test_as_dict_of_a_live_client(fresh_fault_server: FaultServer) -> None:
    async with aiopool.Client() as client:
        for _ in range(3):
            await client.get(f"{fresh_fault_server.url}/echo")
        data = json.loads(client.stats().to_json())
    origin = f"http://127.0.0.1:{fresh_fault_server.port}"
    assert data["requests"] == 3 and data["connections_opened"] == 1 and data["reused"] == 2
    assert data["hosts"][origin]["idle"] == 1 and data["idle"] == 1


# The Prometheus rendering -----------------------------------------------------------------------


def test_render_has_help_and_type_before_each_family() -> None:
    text = prometheus_stats.render(STATS)
    assert text.endswith("\n") and not text.endswith("\n\n")
    family = None
    seen: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line.split()[2]
            assert family not in seen  # each family once, all its samples together
            seen.add(family)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == family
            assert kind == ("counter" if name.endswith("_total") else "gauge")
        else:
            assert family is not None and line.split("{")[0].split(" ")[0] == family
            assert re.fullmatch(r"[a-z0-9_]+(\{[^}]*\})? \d+", line), line
    assert "aiopool_connections_active" in seen and "aiopool_requests_total" in seen


def test_render_values_per_origin() -> None:
    text = prometheus_stats.render(STATS)
    lines = set(text.splitlines())
    assert 'aiopool_connections_active{origin="http://a.example:80"} 2' in lines
    assert 'aiopool_requests_waiting{origin="http://a.example:80"} 4' in lines
    assert 'aiopool_http2_streams_open{origin="https://b.example:443"} 6' in lines
    assert 'aiopool_requests_total{origin="https://b.example:443"} 10' in lines
    assert 'aiopool_connections_opened_total{origin="http://a.example:80"} 5' in lines
    assert 'aiopool_requests_reused_total{origin="https://b.example:443"} 9' in lines
    assert "aiopool_connections_closed_total 2" in lines


def test_render_escapes_label_values() -> None:
    # The format: backslash, double quote and line feed are escaped in label values.
    stats = aiopool.PoolStats(1, 1, 0, 0, {'http://we"ird\\host\n:80': HOST_A})
    text = prometheus_stats.render(stats, {"client": 'a"b\\c\nd'})
    sample = next(line for line in text.splitlines() if line.startswith("aiopool_connections_idle"))
    assert sample == (
        'aiopool_connections_idle{client="a\\"b\\\\c\\nd",origin="http://we\\"ird\\\\host\\n:80"} 1'
    )
    assert len(text.splitlines()) == 3 * 8 + 3  # no raw line feed leaked into a sample


@pytest.mark.parametrize("name", ["", "1x", "a-b", "__reserved", "origin"])
def test_render_refuses_bad_label_names(name: str) -> None:
    with pytest.raises(ValueError, match="label name"):
        prometheus_stats.render(STATS, {name: "v"})


def test_render_with_no_hosts_still_declares_every_family() -> None:
    text = prometheus_stats.render(aiopool.PoolStats(0, 0, 0, 0))
    assert text.count("# TYPE ") == 9
    assert text.splitlines()[-1] == "aiopool_connections_closed_total 0"


async def test_metrics_server_404_and_garbage() -> None:
    async with prometheus_stats.MetricsServer(lambda: STATS) as metrics, aiopool.Client() as c:
        ok = await c.get(metrics.url)
        assert ok.text == prometheus_stats.render(STATS)
        missing = await c.get(metrics.url.replace("/metrics", "/other"))
        assert missing.status_code == 404
        reader, writer = await asyncio.open_connection(metrics.host, metrics.port)
        writer.write(b"garbage\r\n\r\n")
        assert await reader.read() == b""  # dropped, and the server lives on
        writer.close()
        await writer.wait_closed()
        assert (await c.get(metrics.url)).status_code == 200


async def test_asgi_server_raises_when_the_app_cannot_start() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = AsgiServer(app)
    with pytest.raises(RuntimeError, match="did not start"):
        await server.__aenter__()
    with pytest.raises(ConnectionRefusedError):  # the port it had bound was released
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
