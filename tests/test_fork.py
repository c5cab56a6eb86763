"""A client used on both sides of `os.fork()` (gunicorn --preload, uWSGI, multiprocessing).

The child must start with an empty pool: a socket it inherited is the parent's, and a request
on it would interleave with the parent's on one connection. These tests fork for real, against
real servers: a fresh interpreter (a subprocess, one thread) makes a request so a socket is
pooled, forks, and the child uses the same client; the child's outcome reaches the parent
through a pipe, and the parent then uses its socket again.

Why a subprocess: the servers of the rig run in threads of the pytest process, and forking a
process that has threads may deadlock the child (Python 3.12 warns of it, and pytest makes
warnings errors). The subprocess runs with `-W error` too, so a warning in it (a
ResourceWarning from an inherited object, the fork warning) fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rig.fault_server import FaultServer
from tests.rig.nginx import Nginx

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Runs as `python -W error -c SCRIPT <base url> <CA file or ""> <loop> <child action> <http2>`.
# Prints one JSON line: {"before": ..., "child": ..., "after": ..., "parent_stats": ...}.
SCRIPT = r"""
import asyncio, gc, json, os, sys, traceback
import aiopool

base, cafile, loop_kind, action, http2 = sys.argv[1:6]

def new_loop():
    if loop_kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()

# Made before the fork, as an application preloaded by its server makes it.
client = aiopool.Client(verify=cafile or True, http2=http2 == "1")

async def get(name):
    resp = await client.get(f"{base}/echo?id={name}")
    info = resp.conn_info
    return {
        "name": name, "status": resp.status_code, "text": resp.text,
        "server_conn": resp.headers.get("x-conn-id"), "conn": info.id, "reused": info.reused,
        "http_version": resp.http_version,
    }

parent_loop = new_loop()
before = parent_loop.run_until_complete(get("parent-1"))
assert client.stats().idle == 1 or http2 == "1"
# A process that forks should have no other thread (the child may deadlock; Python 3.12 warns,
# counting the threads the OS sees): hence numeric addresses, which no resolver thread looks up.
if os.path.exists("/proc/self/status"):
    with open("/proc/self/status") as status:
        threads = next(line for line in status if line.startswith("Threads:"))
    assert threads.split() == ["Threads:", "1"], threads

# The pooled socket's descriptor, and which socket it is (reached through internals, for this
# check only): the child must drop its copy.
pooled = next(iter(client.transport._pool._state.conns))._stream.extra("socket").fileno()
pooled_inode = os.fstat(pooled).st_ino

def inherited_copy_open():
    try:
        return os.fstat(pooled).st_ino == pooled_inode
    except OSError:
        return False

read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # the child: never returns into the code below, never runs finalizers of the parent
    status = 1
    try:
        os.close(read_end)
        unraisable = []
        sys.unraisablehook = lambda u: unraisable.append(repr(u.exc_value))
        # The child has no use for its parent's loop (asyncio cannot run it here): only the
        # client still refers to it, and to the transports registered with it.
        parent_loop = None

        async def child():
            out = {}
            if action == "requests":
                out["responses"] = [await get("child-1"), await get("child-2")]
                out["stats"] = [client.stats().connections_opened, client.stats().requests]
            await client.aclose()  # closes what the child opened, never the parent's socket
            out["inherited_copy_open"] = inherited_copy_open()
            return out

        # A child runs its own event loop (asyncio.run, a worker's loop...).
        loop = new_loop()
        try:
            result = loop.run_until_complete(child())
        finally:
            loop.close()
        gc.collect()  # whatever the child dropped is finalized now, warnings as errors
        result["unraisable"] = unraisable
        os.write(write_end, json.dumps(result).encode())
        status = 0
    except BaseException:
        os.write(write_end, json.dumps({"error": traceback.format_exc()}).encode())
    finally:
        os._exit(status)

os.close(write_end)
chunks = []
while chunk := os.read(read_end, 65536):
    chunks.append(chunk)
os.close(read_end)
_, wait_status = os.waitpid(pid, 0)
child = json.loads(b"".join(chunks) or b"{}")
child["exit_code"] = os.waitstatus_to_exitcode(wait_status)

after = parent_loop.run_until_complete(get("parent-2"))
stats = client.stats()
parent_loop.run_until_complete(client.aclose())
parent_loop.close()
print(json.dumps({
    "before": before, "child": child, "after": after,
    "parent_stats": [stats.connections_opened, stats.requests],
}))
"""


def _run(base: str, cafile: str, loop: str, action: str, http2: bool = False) -> dict[str, Any]:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *sys.path])}
    # (The rig's certificates are valid for 127.0.0.1 too.)
    base = base.replace("://localhost:", "://127.0.0.1:")
    args = [base, cafile, loop, action, "1" if http2 else "0"]
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=45,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning, no "Exception ignored", no traceback
    result: dict[str, Any] = json.loads(proc.stdout)
    child = result["child"]
    assert child.pop("exit_code") == 0, child.get("error")
    assert child.pop("unraisable") == []
    # The child closed its copy of the parent's descriptor (so the parent's close, when it comes,
    # is the last one and sends the FIN).
    assert child.pop("inherited_copy_open") is False
    return result


def _echoed(response: dict[str, Any]) -> str:
    text: str = response["text"]
    return str(json.loads(text)["id"]) if text.startswith("{") else text


LOOPS = ["asyncio", "uvloop"]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_forked_child_dials_its_own_sockets_and_leaves_the_parents_alone(
    fault_server: FaultServer,
    tls_fault_server: FaultServer,
    ca_path: str,
    loop: str,
    tls: bool,
) -> None:
    server = tls_fault_server if tls else fault_server
    server.reset()
    result = _run(server.url, ca_path if tls else "", loop, "requests")
    before, after, child = result["before"], result["after"], result["child"]
    parents_socket = before["server_conn"]
    # The child: a new socket (the server saw it), reused for its second request, and the
    # responses it got are the ones it asked for.
    first, second = child["responses"]
    assert first["server_conn"] != parents_socket
    assert second["server_conn"] == first["server_conn"]
    assert (first["reused"], second["reused"]) == (False, True)
    assert [_echoed(first), _echoed(second)] == ["child-1", "child-2"]
    assert child["stats"] == [1, 2]  # the child's pool: its own socket, its own requests
    # The parent: its socket was not disturbed (no request, no FIN, no close_notify from the
    # child, whose aclose() closed only its own socket): reused, not replaced.
    assert after["server_conn"] == parents_socket
    assert after["reused"] is True
    assert after["conn"] == before["conn"]
    assert _echoed(after) == "parent-2"
    assert result["parent_stats"] == [1, 2]
    assert server.connections_accepted == 2


@pytest.mark.parametrize("loop", LOOPS)
def test_a_forked_child_closing_the_client_leaves_the_parents_socket_open(
    tls_fault_server: FaultServer, ca_path: str, loop: str
) -> None:
    # The child never makes a request: `aclose()` is the first thing it does with the client.
    # Closing the inherited TLS socket would send close_notify into the parent's connection.
    tls_fault_server.reset()
    result = _run(tls_fault_server.url, ca_path, loop, "close_only")
    assert result["after"]["server_conn"] == result["before"]["server_conn"]
    assert result["after"]["reused"] is True
    assert tls_fault_server.connections_accepted == 1


@pytest.mark.nginx
@pytest.mark.parametrize("loop", LOOPS)
def test_a_forked_child_opens_its_own_http2_connection(
    nginx: Nginx, ca_path: str, loop: str
) -> None:
    result = _run(nginx.https_url, ca_path, loop, "requests", http2=True)
    before, after, child = result["before"], result["after"], result["child"]
    assert before["http_version"] == "HTTP/2"
    first, second = child["responses"]
    assert (first["reused"], second["reused"]) == (False, True)
    assert first["http_version"] == second["http_version"] == "HTTP/2"
    assert [_echoed(first), _echoed(second)] == ["child-1", "child-2"]
    assert child["stats"] == [1, 2]
    # The parent's HTTP/2 connection carries its next stream: the child sent nothing on it
    # (no GOAWAY, no close_notify).
    assert (after["conn"], after["reused"]) == (before["conn"], True)
    assert _echoed(after) == "parent-2"
    assert result["parent_stats"] == [1, 2]
