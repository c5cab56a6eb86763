"""Invariants 8 and 9: leaks are loud; conn_info, stats() and trace hooks tell what happened."""

from __future__ import annotations

import asyncio
import gc
import itertools
import re
import sys

import pytest

import aiopool
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import FaultServer

pytestmark = pytest.mark.both_parsers


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def test_trace_hook_sees_each_step_in_order(server: FaultServer) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(trace=events.append) as client:
        await client.get(f"{server.url}/echo")
        await client.get(f"{server.url}/echo")
    names = [e.name for e in events if e.name != "conn_closed"]
    one_request = ["wrote_headers", "wrote_request", "got_first_response_byte", "put_idle_conn"]
    assert names == [
        "get_conn",
        "connect_start",
        "connect_done",
        "got_conn",
        *one_request,
        "get_conn",
        "got_conn",
        *one_request,
    ]
    first_got, second_got = (e for e in events if e.name == "got_conn")
    assert first_got.info["reused"] is False and second_got.info["reused"] is True
    assert second_got.info["was_idle"] is True
    assert events[2].info["error"] is None
    assert all(a.time <= b.time for a, b in itertools.pairwise(events))
    assert {e.origin for e in events} == {f"http://127.0.0.1:{server.port}"}


async def test_trace_hook_reports_tls_and_failed_dials(
    tls_fault_server: FaultServer, ca_path: str
) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(trace=events.append, verify=ca_path) as client:
        await client.get(f"{tls_fault_server.url}/echo")
        with pytest.raises(aiopool.ConnectError):
            await client.get("http://127.0.0.1:1/")
    tls = [e for e in events if e.name == "tls_handshake_done"]
    assert len(tls) == 1
    assert tls[0].info["version"] in {"TLSv1.2", "TLSv1.3"}
    assert tls[0].info["alpn"] == "http/1.1"
    failed = [e for e in events if e.name == "connect_done" and e.info["error"] is not None]
    assert len(failed) == 1 and isinstance(failed[0].info["error"], aiopool.ConnectError)


async def test_stats_per_host_and_repr(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=3) as client:
        await asyncio.gather(*(client.get(f"{server.url}/delay?s=0.05") for _ in range(6)))
        stats = client.stats()
        host = stats.hosts[f"http://127.0.0.1:{server.port}"]
        assert (host.requests, host.opened, host.idle, host.active) == (6, 3, 3, 0)
        assert host.reused == 3 == stats.reused
        assert stats.idle == 3 and stats.active == 0
        assert re.fullmatch(
            r"<aiopool.Client <ConnectionPool \[Requests: 0 active, 0 queued \| "
            r"Connections: 0 active, 3 idle, 0 connecting\]>>",
            repr(client),
        )
        with pytest.raises(AttributeError):
            stats.requests = 0  # type: ignore[misc]  # a frozen snapshot


async def test_garbage_collected_open_stream_warns_and_closes(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        frame = sys._getframe()
        resp = await client.stream("GET", f"{server.url}/stall?sent=10").__aenter__()
        expected_line = frame.f_lineno - 1
        assert resp.status_code == 200
        gc.collect()  # unrelated garbage first, so only our warning is raised below
        with pytest.warns(ResourceWarning, match=r"unclosed streamed response") as record:
            del resp  # dropped without leaving a `stream()` block: a leak (freed at once)
        message = str(record[0].message)
        assert f"test_introspection.py:{expected_line}" in message
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1
        await eventually(lambda: server.open_connections() == 0)


async def test_garbage_collected_open_client_warns_and_closes(server: FaultServer) -> None:
    client = aiopool.Client()
    await client.get(f"{server.url}/echo")
    gc.collect()
    with pytest.warns(ResourceWarning, match="unclosed <aiopool.Client"):
        del client  # never closed, one idle socket: a leak
    await eventually(lambda: server.open_connections() == 0)


@pytest.mark.parametrize("fault", ["/drop-next", "/reset-next"])
async def test_reused_counts_responses_and_retries_are_counted_apart(
    server: FaultServer, fault: str
) -> None:
    # Every third request arms the server to drop the next one on the same (reused) socket:
    # that request is retried on a fresh socket. One request, one count, however many leases.
    responses: list[aiopool.Response] = []
    async with aiopool.Client(max_connections_per_host=1) as client:
        for index in range(30):
            path = fault if index % 3 == 0 else f"/echo?id={index}"
            responses.append(await client.get(server.url + path))
        stats = assert_settled(client)
    reused = sum(resp.conn_info.reused for resp in responses)
    assert stats.requests == 30
    assert stats.reused == reused
    assert stats.retries == {"stale_socket": 10}
    assert stats.connections_opened + stats.reused == stats.requests
    (host,) = stats.hosts.values()
    assert (host.requests, host.reused, host.retries) == (30, reused, 10)
    assert server.connections_accepted == stats.connections_opened == 11
