"""Tracing, Go's `httptrace` model: which events each hook hears, in what order, with which
fields; the "aiopool" logger at DEBUG; and nothing built when nobody listens.

Against real servers: the fault server (plain and TLS, both HTTP/1.1 parsers), nginx (h2 over
TLS, both HTTP/2 engines) and hypercorn (h2 over TLS).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable
from typing import Any

import pytest

import aiopool
from aiopool import _trace
from aiopool._backend import open_stream
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import FaultServer
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx

both_parsers = pytest.mark.both_parsers
both_engines = pytest.mark.both_engines

Events = list[aiopool.TraceEvent]

# What a request that dials a new TLS socket sees before its `got_conn`.
# The TLS servers are reached by name ("localhost"): the dialer resolves it first, and says so.
TLS_DIAL = [
    "get_conn",
    "dns_start",
    "dns_done",
    "connect_start",
    "connect_done",
    "tls_handshake_start",
    "tls_handshake_done",
]
ONE_H1_EXCHANGE = ["wrote_headers", "wrote_request", "got_first_response_byte", "put_idle_conn"]


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


def names(events: Events) -> list[str]:
    return [e.name for e in events]


def own(event: aiopool.TraceEvent) -> dict[str, object]:
    """The event's own fields: `info` without the `origin` and `conn_id` it repeats."""
    assert event.info["origin"] == event.origin and event.info["conn_id"] == event.conn_id
    return {k: v for k, v in event.info.items() if k not in ("origin", "conn_id")}


def only(events: Events, name: str) -> list[aiopool.TraceEvent]:
    return [e for e in events if e.name == name]


def in_order(events: Events) -> bool:
    return all(a.time <= b.time for a, b in itertools.pairwise(events))


# A fresh dial, then an idle socket reused ------------------------------------------------------


@both_parsers
async def test_fresh_dial_then_idle_reuse(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        first = await client.get(f"{server.url}/echo?id=1")
        second = await client.get(f"{server.url}/echo?id=2")
    assert names(events) == [
        "get_conn",
        "connect_start",
        "connect_done",
        "got_conn",
        *ONE_H1_EXCHANGE,
        "get_conn",
        "got_conn",
        *ONE_H1_EXCHANGE,
        "conn_closed",  # at aclose()
    ]
    assert in_order(events)
    origin, port = f"http://127.0.0.1:{server.port}", server.port
    assert {e.origin for e in events} == {origin}
    conn_id = first.conn_info.id
    assert second.conn_info.id == conn_id
    # Before a socket exists there is no conn id; from connect_done on, it is the socket's.
    assert [e.conn_id for e in events[:2]] == [None, None]
    assert {e.conn_id for e in events[2:] if e.name != "get_conn"} == {conn_id}
    assert {e.conn_id for e in only(events, "get_conn")} == {None}
    get_conn, start, done, got = events[:4]
    assert own(get_conn) == {"host_port": f"127.0.0.1:{port}"}
    assert own(start) == {"network": "tcp", "addr": f"127.0.0.1:{port}"}
    assert own(done) == {"network": "tcp", "addr": f"127.0.0.1:{port}", "error": None}
    assert own(got) == {
        "reused": False,
        "was_idle": False,
        "idle_time": 0.0,
        "http_version": "HTTP/1.1",
    }
    headers1, headers2 = only(events, "wrote_headers")
    assert own(headers1) == {"method": "GET", "target": "/echo?id=1"}
    assert own(headers2) == {"method": "GET", "target": "/echo?id=2"}
    for wrote in only(events, "wrote_request"):
        assert own(wrote) == {"error": None, "body_withheld": False}
    for put in only(events, "put_idle_conn"):
        assert own(put) == {"error": None}
    reused = only(events, "got_conn")[1]
    assert reused.info["reused"] is True and reused.info["was_idle"] is True
    assert reused.info["idle_time"] >= 0.0
    assert reused.info["idle_time"] == second.conn_info.idle_time
    (closed,) = only(events, "conn_closed")
    assert own(closed) == {"reason": "client_closed"}


# TLS ----------------------------------------------------------------------------------------------


@both_parsers
async def test_tls_dial_reports_tcp_then_the_handshake(
    tls_fault_server: FaultServer, ca_path: str
) -> None:
    events: Events = []
    async with aiopool.Client(verify=ca_path, trace=events.append) as client:
        response = await client.get(f"{tls_fault_server.url}/echo")
    assert names(events)[:8] == [*TLS_DIAL, "got_conn"]
    assert in_order(events)
    _, dns_start, dns_done, start, done, tls_start, tls_done, _ = events[:8]
    assert dns_start.info["host"] == "localhost" and dns_start.conn_id is None
    assert "127.0.0.1" in dns_done.info["addrs"] and dns_done.info["error"] is None
    port = tls_fault_server.port
    assert start.info["addr"] == f"localhost:{port}" and done.info["error"] is None
    assert done.conn_id == tls_start.conn_id == tls_done.conn_id == response.conn_info.id
    assert own(tls_start) == {"server_name": "localhost"}
    assert tls_done.info["version"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(tls_done.info["cipher"], str) and tls_done.info["cipher"]
    assert tls_done.info["alpn"] == "http/1.1"
    assert tls_done.info["error"] is None


@both_parsers
async def test_a_failed_handshake_follows_a_good_connect(tls_fault_server: FaultServer) -> None:
    # The rig's certificate is not trusted by the default store: TCP connects, TLS fails.
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        with pytest.raises(aiopool.ConnectError, match="certificate") as info:
            await client.get(f"{tls_fault_server.url}/echo")
        assert_settled(client)
    assert names(events) == TLS_DIAL
    done, tls_done = events[4], events[6]
    assert done.info["error"] is None and done.conn_id is not None
    assert tls_done.conn_id == done.conn_id
    assert tls_done.info["error"] is info.value
    assert (tls_done.info["version"], tls_done.info["alpn"]) == (None, None)


async def test_tls_dial_is_traced_the_same_on_uvloop(
    tls_fault_server: FaultServer, ca_path: str
) -> None:
    # The traced TLS dial takes two steps (TCP, then start_tls); uvloop implements start_tls
    # on its own, so it gets its own run.
    uvloop = pytest.importorskip("uvloop")
    events: Events = []

    async def main() -> int:
        async with aiopool.Client(verify=ca_path, trace=events.append) as client:
            return (await client.get(f"{tls_fault_server.url}/echo")).status_code

    def run() -> int:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())

    assert await asyncio.to_thread(run) == 200
    assert names(events)[:8] == [*TLS_DIAL, "got_conn"]
    assert only(events, "tls_handshake_done")[0].info["alpn"] == "http/1.1"


# Failed dials ------------------------------------------------------------------------------------


@both_parsers
async def test_a_refused_dial_reports_its_error_in_connect_done() -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get("http://127.0.0.1:1/")
        assert_settled(client)
    assert names(events) == ["get_conn", "connect_start", "connect_done"]
    done = events[2]
    assert done.conn_id is None  # no socket was made
    assert done.info["error"] is info.value
    assert done.info["addr"] == "127.0.0.1:1"


# HTTP/2 over TLS -------------------------------------------------------------------------------


@both_engines
async def test_h2_over_tls_with_nginx(nginx: Nginx, ca_path: str) -> None:
    events: Events = []
    async with aiopool.Client(verify=ca_path, trace=events.append) as client:
        first = await client.get(f"{nginx.https_url}/small.txt")
        second = await client.get(f"{nginx.https_url}/small.txt")
    assert first.http_version == second.http_version == "HTTP/2"
    one_stream = ["wrote_headers", "wrote_request", "got_first_response_byte"]
    assert names(events) == [
        *TLS_DIAL,
        "got_conn",
        *one_stream,
        "get_conn",
        "got_conn",
        *one_stream,
        "conn_closed",
    ]  # (no put_idle_conn: a stream ending pools no socket)
    assert in_order(events)
    assert only(events, "tls_handshake_done")[0].info["alpn"] == "h2"
    got1, got2 = only(events, "got_conn")
    assert got1.info["http_version"] == "HTTP/2" and got1.info["reused"] is False
    # The second stream reuses the socket, which carried no stream then: idle (Go's rule).
    assert got2.info["reused"] is True and got2.info["was_idle"] is True
    assert [e.info["stream_id"] for e in only(events, "wrote_headers")] == [1, 3]
    assert [e.info["stream_id"] for e in only(events, "got_first_response_byte")] == [1, 3]
    assert {e.conn_id for e in events[4:] if e.name != "get_conn"} == {first.conn_info.id}


async def test_h2_request_hooks_each_hear_their_own_stream(
    hypercorn_server: HypercornServer, ca_path: str
) -> None:
    client_events: Events = []
    per_request: list[Events] = [[] for _ in range(5)]
    async with aiopool.Client(verify=ca_path, trace=client_events.append) as client:
        responses = await asyncio.gather(
            *(
                client.get(f"{hypercorn_server.url}/echo?id={i}", trace=per_request[i].append)
                for i in range(5)
            )
        )
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert len({r.conn_info.id for r in responses}) == 1
    targets = [only(events, "wrote_headers")[0].info["target"] for events in per_request]
    assert targets == [f"/echo?id={i}" for i in range(5)]
    stream_ids = set()
    for events in per_request:
        (headers,) = only(events, "wrote_headers")
        (first_byte,) = only(events, "got_first_response_byte")
        assert headers.info["stream_id"] == first_byte.info["stream_id"]
        stream_ids.add(headers.info["stream_id"])
        assert only(events, "conn_closed") == []  # a socket's end is the client's to hear
    assert len(stream_ids) == 5
    # One dial for the five: its events go to the request whose wait started it, the first.
    dialed = [i for i, events in enumerate(per_request) if only(events, "connect_start")]
    assert dialed == [0]
    assert names(per_request[0])[1:7] == [
        "dns_start",
        "dns_done",
        "connect_start",
        "connect_done",
        "tls_handshake_start",
        "tls_handshake_done",
    ]
    # The client's hook hears every event of every request (the same objects), and more.
    heard = {id(e) for e in client_events}
    assert all(id(e) in heard for events in per_request for e in events)
    assert len(only(client_events, "conn_closed")) == 1


# Per-request and client hooks over HTTP/1.1 ---------------------------------------------------


@both_parsers
async def test_request_hook_hears_its_own_request_and_the_client_hook_all(
    server: FaultServer,
) -> None:
    client_events: Events = []
    per_request: list[Events] = [[] for _ in range(3)]
    async with aiopool.Client(max_connections_per_host=1, trace=client_events.append) as client:
        await asyncio.gather(
            *(
                client.get(f"{server.url}/echo?id={i}", trace=per_request[i].append)
                for i in range(3)
            )
        )
        assert_settled(client)
    for i, events in enumerate(per_request):
        (headers,) = only(events, "wrote_headers")
        assert headers.info["target"] == f"/echo?id={i}"
        assert names(events)[-len(ONE_H1_EXCHANGE) :] == ONE_H1_EXCHANGE
        assert len(only(events, "get_conn")) == len(only(events, "got_conn")) == 1
    # One socket (the per-host cap is 1): dialed for the first request, handed on to the others.
    assert [bool(only(events, "connect_start")) for events in per_request] == [True, False, False]
    assert [only(events, "got_conn")[0].info["reused"] for events in per_request] == [
        False,
        True,
        True,
    ]
    heard = {id(e) for e in client_events}
    assert all(id(e) in heard for events in per_request for e in events)
    assert names(client_events)[-1] == "conn_closed"


@both_parsers
async def test_a_request_hook_without_a_client_hook(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")  # no hook: nothing heard
        async with client.stream("GET", f"{server.url}/bytes/10", trace=events.append) as resp:
            assert await resp.aread() == b"x" * 10
        await client.get(f"{server.url}/echo")
    # The streamed request's own events only: the socket it reused, released after its body.
    assert names(events) == ["get_conn", "got_conn", *ONE_H1_EXCHANGE]


@both_parsers
async def test_dial_events_go_to_the_request_whose_wait_started_the_dial(
    server: FaultServer,
) -> None:
    """Go's late binding: a dial belongs to the request that queued it, even when that request
    is served meanwhile by a socket another request released."""
    gate = asyncio.Event()
    dials = 0

    async def gated_dialer(
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> Any:
        nonlocal dials
        dials += 1
        if dials > 1:
            await gate.wait()
        return await open_stream(
            host, port, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout
        )

    events: Events = []
    async with aiopool.Client(max_connections_per_host=2, dialer=gated_dialer) as client:
        async with client.stream("GET", f"{server.url}/echo") as held:
            late = asyncio.create_task(client.get(f"{server.url}/echo", trace=events.append))
            await eventually(lambda: "connect_start" in names(events))  # its dial is held
        # Leaving the block released the first socket: it went straight to the waiting request.
        response = await late
        assert response.conn_info.id == held.conn_info.id and response.conn_info.reused
        assert "connect_done" not in names(events)
        gate.set()
        await eventually(lambda: "connect_done" in names(events))
        assert client.stats().hosts[f"http://127.0.0.1:{server.port}"].idle == 2
    done = only(events, "connect_done")[0]
    assert done.conn_id is not None and done.conn_id != response.conn_info.id
    assert done.info["error"] is None
    # Its own exchange is intact, the dial's two events around it.
    assert names(events) == [
        "get_conn",
        "connect_start",
        "got_conn",
        *ONE_H1_EXCHANGE,
        "connect_done",
    ]


# Sockets closing, and going back to the pool ---------------------------------------------------


async def closed_reason(events: Events) -> str:
    await eventually(lambda: bool(only(events, "conn_closed")))
    (closed,) = only(events, "conn_closed")
    return str(closed.info["reason"])


@both_parsers
async def test_conn_closed_when_an_idle_socket_expires(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(idle_timeout=0.05, trace=events.append) as client:
        response = await client.get(f"{server.url}/echo")
        assert await closed_reason(events) == "idle_timeout"
        assert only(events, "conn_closed")[0].conn_id == response.conn_info.id
        assert client.stats().connections_closed == 1


@both_parsers
async def test_conn_closed_when_the_server_closes_an_idle_socket(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        await client.get(f"{server.url}/close-idle?after=0.05")
        assert await closed_reason(events) == "peer_closed_idle"
        assert client.stats().hosts[f"http://127.0.0.1:{server.port}"].idle == 0


@both_parsers
async def test_conn_closed_after_connection_close_and_no_put_idle(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        await client.get(f"{server.url}/close/5")
        assert await closed_reason(events) == "not_reusable"
    assert only(events, "put_idle_conn") == []


@both_parsers
async def test_conn_closed_after_a_protocol_error(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.get(f"{server.url}/garbage")
        assert await closed_reason(events) == "error"
        assert_settled(client)


@both_parsers
async def test_put_idle_conn_reports_a_socket_the_idle_limit_did_not_keep(
    server: FaultServer,
) -> None:
    events: Events = []
    async with aiopool.Client(max_idle_per_host=0, trace=events.append) as client:
        await client.get(f"{server.url}/echo")
        (put,) = only(events, "put_idle_conn")
        assert isinstance(put.info["error"], str) and put.info["error"]
        assert await closed_reason(events) == "idle_limit"
        assert client.stats().idle == 0


@both_parsers
async def test_put_idle_conn_when_handed_straight_to_a_waiter(server: FaultServer) -> None:
    per_request: list[Events] = [[], []]
    async with aiopool.Client(max_connections_per_host=1) as client:
        await asyncio.gather(
            *(client.get(f"{server.url}/echo", trace=per_request[i].append) for i in range(2))
        )
    # The first request's socket went to the second (Go: PutIdleConn(nil) all the same).
    assert [e.info["error"] for e in only(per_request[0], "put_idle_conn")] == [None]
    assert only(per_request[1], "got_conn")[0].info["was_idle"] is False


# The logger ----------------------------------------------------------------------------------


@both_parsers
async def test_the_aiopool_logger_hears_the_same_events_at_debug(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiopool")
    events: Events = []
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo", trace=events.append)
    records = [r for r in caplog.records if r.name == "aiopool"]
    assert [r.args[0] for r in records if isinstance(r.args, tuple)] == [
        *names(events),
        "conn_closed",  # (the client's, at aclose: no request hook hears it)
    ]
    for record in records:
        assert record.levelno == logging.DEBUG
        # Lazy formatting: the message is built only if a handler wants the record.
        assert record.msg == "trace %s %s conn=%s %s"
    assert f"trace get_conn http://127.0.0.1:{server.port} conn=None" in records[0].getMessage()


@both_parsers
async def test_nothing_is_logged_above_debug(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiopool")
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")
    assert [r for r in caplog.records if r.name == "aiopool"] == []


# Nobody listening costs nothing ----------------------------------------------------------------


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every `Tracer` and `TraceEvent` built from now on, by kind."""
    caplog.set_level(logging.WARNING, logger="aiopool")  # DEBUG off, whatever the config says
    seen: list[str] = []
    tracer_init = _trace.Tracer.__init__
    event_class = _trace.TraceEvent

    def counting_init(self: _trace.Tracer, *args: Any) -> None:
        seen.append("Tracer")
        tracer_init(self, *args)

    def counting_event(*args: Any) -> aiopool.TraceEvent:
        seen.append("TraceEvent")
        return event_class(*args)

    monkeypatch.setattr(_trace.Tracer, "__init__", counting_init)
    monkeypatch.setattr(_trace, "TraceEvent", counting_event)
    return seen


@both_parsers
async def test_no_event_is_built_when_nobody_listens(server: FaultServer, built: list[str]) -> None:
    async with aiopool.Client(idle_timeout=0.05) as client:
        await client.get(f"{server.url}/echo")
        await client.post(f"{server.url}/echo", content=b"x" * (2 * 1024 * 1024))
        async with client.stream("GET", f"{server.url}/close/3") as response:
            await response.aread()
        with pytest.raises(aiopool.ConnectError):
            await client.get("http://127.0.0.1:1/")
        await eventually(lambda: client.stats().idle == 0)  # expired: a conn_closed unheard
    assert built == []
    # The counters do count: one listener, and events are built.
    listener: Callable[[aiopool.TraceEvent], None] = lambda event: None  # noqa: E731
    async with aiopool.Client(trace=listener) as client:
        await client.get(f"{server.url}/echo")
    assert "Tracer" in built and "TraceEvent" in built


@both_engines
async def test_no_event_is_built_over_h2_when_nobody_listens(
    nginx: Nginx, ca_path: str, built: list[str]
) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/small.txt") for _ in range(5))
        )
        assert {r.http_version for r in responses} == {"HTTP/2"}
    assert built == []


# A hook that fails ---------------------------------------------------------------------------


@both_parsers
async def test_a_failing_hook_changes_nothing_but_is_logged(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aiopool")

    def broken(event: aiopool.TraceEvent) -> None:
        raise RuntimeError(f"hook bug at {event.name}")

    async with aiopool.Client(trace=broken) as client:
        # Every event raises, the dial's included: the dial must still be booked as done.
        responses = [await client.get(f"{server.url}/echo?id={i}") for i in range(2)]
        assert [r.json()["id"] for r in responses] == ["0", "1"]
        assert responses[1].conn_info.reused
        assert_settled(client)
    failures = [r for r in caplog.records if r.name == "aiopool" and r.levelno == logging.ERROR]
    assert failures and all(r.exc_info is not None for r in failures)
    assert "hook bug at get_conn" in str(failures[0].exc_info[1] if failures[0].exc_info else "")


# HTTP/2: a socket drained by GOAWAY ------------------------------------------------------------


@both_engines
async def test_conn_closed_after_goaway(fresh_h2_server: H2ScriptServer) -> None:
    fresh_h2_server.script(goaway_after_streams=1, scripted_connections=1)
    events: Events = []
    async with aiopool.Client(http1=False, trace=events.append) as client:
        first = await client.get(f"{fresh_h2_server.url}/echo?id=1")
        assert await closed_reason(events) == "goaway"
        assert only(events, "conn_closed")[0].conn_id == first.conn_info.id
        second = await client.get(f"{fresh_h2_server.url}/echo?id=2")
        assert second.conn_info.id != first.conn_info.id
        assert_settled(client)


# Redirects: every hop is the request's ---------------------------------------------------------


async def test_a_request_hook_hears_every_hop_of_a_redirect(
    hypercorn_server: HypercornServer, ca_path: str
) -> None:
    events: Events = []
    async with aiopool.Client(verify=ca_path) as client:
        response = await client.get(
            f"{hypercorn_server.url}/redirect?status=307&to=/echo?id=landed", trace=events.append
        )
        assert response.text == "landed"
    targets = [e.info["target"] for e in only(events, "wrote_headers")]
    assert targets == ["/redirect?status=307&to=/echo?id=landed", "/echo?id=landed"]
    assert len(only(events, "get_conn")) == len(only(events, "got_conn")) == 2
