"""`Expect: 100-continue` (RFC 9110 section 10.1.1): when the client asks, what it waits for,
and what it does on `100 Continue`, on silence, and on a final response that comes first.

Against the fault server (answers 100; never answers; rejects before reading the body), both
HTTP/1.1 parsers; the scripted HTTP/2 server, both engines; hypercorn over TLS (HTTP/1.1, which
answers 100 itself, and HTTP/2, which never does).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

import aiopool
from aiopool._expect import interim_verdict
from tests.helpers import assert_settled, eventually
from tests.mock_backend import MockDialer, Script, response
from tests.rig.fault_server import FaultServer
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer

both_parsers = pytest.mark.both_parsers
both_engines = pytest.mark.both_engines

Events = list[aiopool.TraceEvent]

MIB = 1024 * 1024
BIG = bytes(range(256)) * (2 * MIB // 256)  # 2 MiB: over the 1 MiB default threshold
EXPECT = {"Expect": "100-continue"}  # the caller's own: asked over both protocols


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


def digest(body: bytes) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()}"


def own(event: aiopool.TraceEvent) -> dict[str, object]:
    """The event's own fields: `info` without the `origin` and `conn_id` it repeats."""
    return {k: v for k, v in event.info.items() if k not in ("origin", "conn_id")}


def names(events: Events) -> list[str]:
    return [e.name for e in events]


class Body:
    """A streamed request body that records whether anyone started reading it."""

    def __init__(self, data: bytes, pieces: int = 4) -> None:
        self.data = data
        self.pieces = pieces
        self.started = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        step = -(-len(self.data) // self.pieces)
        for offset in range(0, len(self.data), step):
            yield self.data[offset : offset + step]


# HTTP/1.1: when the client asks -----------------------------------------------------------------


@both_parsers
async def test_a_large_body_asks_and_goes_on_100_continue(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        response = await client.post(f"{server.url}/upload", content=BIG)
        assert response.status_code == 200
        assert response.text == digest(BIG)
        assert response.headers["x-expect"] == "100-continue"
        assert response.request.headers["expect"] == "100-continue"
        # A completed exchange: the socket is clean and reused.
        again = await client.post(f"{server.url}/upload", content=b"small")
        assert again.conn_info.reused and again.headers["x-expect"] == "-"
        assert_settled(client)
    first = names(events)[: names(events).index("put_idle_conn") + 1]
    assert first[first.index("wrote_headers") :] == [
        "wrote_headers",
        "wait_100_continue",
        "got_first_response_byte",  # (the 100 is the response's first byte)
        "got_100_continue",
        "wrote_request",
        "put_idle_conn",
    ]
    wrote = next(e for e in events if e.name == "wrote_request")
    assert own(wrote) == {"error": None, "body_withheld": False}


@both_parsers
async def test_only_bodies_at_the_threshold_ask(server: FaultServer) -> None:
    async with aiopool.Client(expect_continue_threshold=1000) as client:
        below = await client.post(f"{server.url}/upload", content=b"x" * 999)
        at = await client.post(f"{server.url}/upload", content=b"x" * 1000)
        assert (below.headers["x-expect"], at.headers["x-expect"]) == ("-", "100-continue")
        assert at.text == digest(b"x" * 1000)
        # A stream of unknown length never asks by itself; one whose length is given does.
        unknown = await client.post(f"{server.url}/upload", content=Body(b"y" * 5000))
        assert unknown.headers["x-expect"] == "-" and unknown.text == digest(b"y" * 5000)
        known = await client.post(
            f"{server.url}/upload",
            content=Body(b"z" * 5000),
            headers={"content-length": "5000"},
        )
        assert known.headers["x-expect"] == "100-continue" and known.text == digest(b"z" * 5000)
        # No body, nothing to ask about.
        empty = await client.post(f"{server.url}/upload")
        assert empty.headers["x-expect"] == "-"
        assert_settled(client)


@both_parsers
async def test_the_threshold_can_be_switched_off(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(expect_continue_threshold=None, trace=events.append) as client:
        response = await client.post(f"{server.url}/upload", content=BIG)
    assert response.headers["x-expect"] == "-" and response.text == digest(BIG)
    assert "wait_100_continue" not in names(events)


@both_parsers
async def test_a_callers_expectation_is_honoured_for_any_body(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(trace=events.append) as client:
        small = await client.put(
            f"{server.url}/upload", content=b"tiny", headers={"Expect": "100-continue"}
        )
        streamed = await client.put(
            f"{server.url}/upload", content=Body(BIG), headers={"Expect": "100-continue"}
        )
        assert_settled(client)
    assert small.headers["x-expect"] == "100-continue" and small.text == digest(b"tiny")
    assert streamed.text == digest(BIG)
    assert names(events).count("got_100_continue") == 2


# HTTP/1.1: a server that never answers the expectation -----------------------------------------


@both_parsers
async def test_silence_sends_the_body_anyway(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(expect_continue_timeout=0.1, trace=events.append) as client:
        response = await client.post(f"{server.url}/expect-silent", content=BIG)
        streamed = await client.post(f"{server.url}/expect-silent", content=Body(BIG))
        # The exchange completed: the socket is reused.
        assert streamed.conn_info.reused
        assert_settled(client)
    assert response.status_code == streamed.status_code == 200
    assert response.text == streamed.text == digest(BIG)
    assert response.headers["x-expect"] == "100-continue"
    assert "got_100_continue" not in names(events)
    first = names(events)[: names(events).index("put_idle_conn") + 1]
    assert first[first.index("wrote_headers") :] == [
        "wrote_headers",
        "wait_100_continue",
        "wrote_request",
        "got_first_response_byte",
        "put_idle_conn",
    ]


@both_parsers
async def test_cancelled_while_waiting_for_100_leaks_nothing(server: FaultServer) -> None:
    events: Events = []
    async with aiopool.Client(expect_continue_timeout=3600, trace=events.append) as client:
        body = Body(BIG)
        task = asyncio.create_task(
            client.post(f"{server.url}/expect-silent", content=body, headers=EXPECT)
        )
        await eventually(lambda: "wait_100_continue" in names(events))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not body.started
        stats = assert_settled(client)
        assert (stats.idle, stats.connections_closed) == (0, 1)
        closed = [e for e in events if e.name == "conn_closed"]
        assert [e.info["reason"] for e in closed] == ["error"]
        # The next request is served on a fresh socket.
        response = await client.post(f"{server.url}/upload", content=b"after")
        assert response.text == digest(b"after") and not response.conn_info.reused
    await eventually(lambda: server.open_connections() == 0)


# HTTP/1.1: a final response before the body ----------------------------------------------------


@both_parsers
@pytest.mark.parametrize("status", [417, 413, 401])
async def test_an_early_final_response_is_the_answer_and_the_body_never_goes(
    server: FaultServer, status: int
) -> None:
    events: Events = []
    body = Body(BIG)
    async with aiopool.Client(trace=events.append) as client:
        response = await client.post(
            f"{server.url}/expect-reject/{status}",
            content=body,
            headers={"content-length": str(len(BIG))},
        )
        assert response.status_code == status
        assert response.text == f"rejected: {status}\n"
        assert not body.started  # not one byte was read from the body
        # The request was never completed: its socket is closed, not pooled.
        stats = assert_settled(client)
        assert (stats.idle, stats.connections_closed) == (0, 1)
        conn_id = int(response.headers["x-conn-id"])
        await eventually(lambda: conn_id in server.bytes_after_reject)
        assert server.bytes_after_reject[conn_id] == 0  # the server saw the head, nothing more
        # The pool carries on.
        after = await client.post(f"{server.url}/upload", content=BIG)
        assert after.text == digest(BIG) and not after.conn_info.reused
    wrote = next(e for e in events if e.name == "wrote_request")
    assert own(wrote) == {"error": None, "body_withheld": True}
    assert next(e.info["reason"] for e in events if e.name == "conn_closed") == "not_reusable"
    rejected = names(events)[: names(events).index("conn_closed")]
    assert "got_100_continue" not in rejected


@both_parsers
async def test_an_early_rejection_of_a_bytes_body(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        response = await client.put(f"{server.url}/expect-reject/413", content=BIG)
        assert response.status_code == 413
        conn_id = int(response.headers["x-conn-id"])
        assert assert_settled(client).idle == 0
    await eventually(lambda: conn_id in server.bytes_after_reject)
    assert server.bytes_after_reject[conn_id] == 0


# HTTP/2: the scripted server ------------------------------------------------------------------


@both_engines
async def test_h2_asks_only_when_the_caller_does(fresh_h2_server: H2ScriptServer) -> None:
    # nginx, h2o, hypercorn and granian never answer 100 over HTTP/2: an automatic expectation
    # would stall every large upload by the whole wait. The rig would answer this one, so a
    # question asked would show as `got_100_continue`.
    events: Events = []
    async with aiopool.Client(
        http1=False, expect_continue_timeout=3600, trace=events.append
    ) as client:
        response = await client.post(f"{fresh_h2_server.url}/upload", content=BIG)
        assert response.text == digest(BIG)
        assert "wait_100_continue" not in names(events)
        assert "got_100_continue" not in names(events)
        asked = await client.post(f"{fresh_h2_server.url}/upload", content=BIG, headers=EXPECT)
        assert asked.text == digest(BIG)
        assert names(events).count("got_100_continue") == 1
        assert_settled(client)


@both_engines
async def test_h2_a_large_body_goes_on_100_continue(fresh_h2_server: H2ScriptServer) -> None:
    events: Events = []
    async with aiopool.Client(http1=False, trace=events.append) as client:
        url = f"{fresh_h2_server.url}/upload"
        response = await client.post(url, content=BIG, headers=EXPECT)
        streamed = await client.post(url, content=Body(BIG, 7))
        assert_settled(client)
    assert response.http_version == "HTTP/2"
    assert response.text == streamed.text == digest(BIG)
    assert names(events).count("got_100_continue") == 1  # the second did not ask
    first = names(events)[: names(events).index("get_conn", 1)]
    assert first[first.index("wrote_headers") :] == [
        "wrote_headers",
        "wait_100_continue",
        "got_first_response_byte",
        "got_100_continue",
        "wrote_request",
    ]


@both_engines
async def test_h2_silence_sends_the_body_anyway(fresh_h2_server: H2ScriptServer) -> None:
    events: Events = []
    async with aiopool.Client(
        http1=False, expect_continue_timeout=0.1, trace=events.append
    ) as client:
        url = f"{fresh_h2_server.url}/expect-silent"
        response = await client.post(url, content=BIG, headers=EXPECT)
        assert_settled(client)
    assert response.status_code == 200 and response.text == digest(BIG)
    assert "wait_100_continue" in names(events) and "got_100_continue" not in names(events)


@both_engines
async def test_h2_an_early_final_response_resets_the_stream_and_keeps_the_socket(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    events: Events = []
    body = Body(BIG)
    async with aiopool.Client(http1=False, trace=events.append) as client:
        response = await client.post(
            f"{server.url}/expect-reject?status=417",
            content=body,
            headers={"content-length": str(len(BIG)), **EXPECT},
        )
        assert response.status_code == 417 and response.text == "rejected: 417\n"
        assert not body.started
        # The stream is reset (our half never finished); the socket stays for the next one.
        await eventually(lambda: server.reset_codes == [8])  # CANCEL
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 0)
        after = await client.post(f"{server.url}/upload", content=BIG)
        assert after.text == digest(BIG) and after.conn_info.reused
    rejected = server.requests[0]
    assert rejected.path == "/expect-reject"
    assert server.body_bytes(rejected.conn_id, rejected.stream_id) == 0
    wrote = next(e for e in events if e.name == "wrote_request")
    assert own(wrote) == {"error": None, "body_withheld": True}


@both_engines
async def test_h2_a_rejected_stream_read_only_in_part_is_reset_too(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    async with aiopool.Client(http1=False) as client:
        async with client.stream(
            "POST", f"{server.url}/expect-reject?status=413", content=BIG, headers=EXPECT
        ) as response:
            assert response.status_code == 413  # left without reading the body
        await eventually(lambda: server.reset_codes == [8])
        assert_settled(client)
    rejected = server.requests[0]
    assert server.body_bytes(rejected.conn_id, rejected.stream_id) == 0


# hypercorn: a real server ----------------------------------------------------------------------


async def test_hypercorn_http11_answers_100_and_gets_the_body(
    hypercorn_server: HypercornServer, ca_path: str
) -> None:
    events: Events = []
    async with aiopool.Client(
        verify=ca_path, http2=False, expect_continue_timeout=3600, trace=events.append
    ) as client:
        # The wait is an hour: only hypercorn's `100 Continue` lets the body go.
        response = await client.post(f"{hypercorn_server.url}/upload", content=BIG)
        assert_settled(client)
    assert response.http_version == "HTTP/1.1"
    assert response.text == digest(BIG)
    assert "got_100_continue" in names(events)


async def test_hypercorn_http2_is_asked_only_explicitly_and_gets_the_body_after_the_wait(
    hypercorn_server: HypercornServer, ca_path: str
) -> None:
    # hypercorn answers no expectation over HTTP/2: the automatic one is not asked at all,
    # and the body of an explicit one goes when the wait runs out.
    events: Events = []
    async with aiopool.Client(
        verify=ca_path, expect_continue_timeout=0.1, trace=events.append
    ) as client:
        url = f"{hypercorn_server.url}/upload"
        response = await client.post(url, content=BIG)
        assert "wait_100_continue" not in names(events)
        asked = await client.post(url, content=Body(BIG), headers=EXPECT)
        assert_settled(client)
    assert response.http_version == "HTTP/2"
    assert response.text == asked.text == digest(BIG)
    assert names(events).count("wait_100_continue") == 1
    assert "got_100_continue" not in names(events)


# Settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"expect_continue_threshold": -1},
        {"expect_continue_timeout": -0.5},
        {"expect_continue_timeout": float("nan")},
    ],
)
def test_bad_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="expect_continue"):
        aiopool.Client(**options)  # type: ignore[arg-type]


# Byte-exact (scripted backend), both parsers --------------------------------------------------


def mock_client(*scripts: Script) -> tuple[aiopool.Client, MockDialer]:
    dialer = MockDialer(scripts)
    client = aiopool.Client(expect_continue_threshold=10, dialer=dialer)
    return client, dialer


PAYLOAD = b"0123456789abcdef"


@both_parsers
async def test_a_100_split_at_every_byte_releases_the_body() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    client, dialer = mock_client(
        [*[interim[i : i + 1] for i in range(len(interim))], response(b"ok")]
    )
    async with client:
        reply = await client.post("http://mock.test/up", content=PAYLOAD)
        assert (reply.status_code, reply.content) == (200, b"ok")
    head, _, body = bytes(dialer.streams[0].written).partition(b"\r\n\r\n")
    assert b"\r\nexpect: 100-continue" in head
    assert body == PAYLOAD


@both_parsers
async def test_early_hints_before_the_100_are_skipped() -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    client, dialer = mock_client([hints + b"HTTP/1.1 100 Continue\r\n\r\n", response(b"ok")])
    async with client:
        reply = await client.post("http://mock.test/up", content=PAYLOAD)
        assert reply.content == b"ok"
    assert bytes(dialer.streams[0].written).endswith(b"\r\n\r\n" + PAYLOAD)


@both_parsers
async def test_an_early_417_leaves_nothing_but_the_head_on_the_wire() -> None:
    refusal = response(b"no", status=b"417 Expectation Failed")
    client, dialer = mock_client([refusal])
    async with client:
        reply = await client.post("http://mock.test/up", content=PAYLOAD)
        assert (reply.status_code, reply.content) == (417, b"no")
        assert assert_settled(client).connections_closed == 1
    written = bytes(dialer.streams[0].written)
    assert written.endswith(b"\r\n\r\n") and written.count(b"\r\n\r\n") == 1
    assert PAYLOAD not in written
    assert dialer.streams[0].closed


@both_parsers
async def test_garbage_while_waiting_is_a_protocol_error() -> None:
    client, dialer = mock_client([b"\x00\xffNOT-HTTP\r\n\r\n"])
    async with client:
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.post("http://mock.test/up", content=PAYLOAD)
        assert_settled(client)
    assert dialer.streams[0].closed
    assert PAYLOAD not in bytes(dialer.streams[0].written)


@pytest.mark.parametrize(
    ("data", "verdict"),
    [
        (b"", None),
        (b"HTTP/1.1 1", None),
        (b"HTTP/1.1 100 Continue\r\n", True),
        (b"HTTP/1.1 417 Expectation Failed\r\n", False),
        (b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n", None),
        (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", True),
        (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\n", False),
        (b"garbage\r\n", False),
        (b"HTTP/1.1 1x0 Odd\r\n", False),
        (b"x" * 70_000, False),  # no status line in sight: the parser will say what is wrong
    ],
)
def test_interim_verdict(data: bytes, verdict: bool | None) -> None:
    assert interim_verdict(data)[0] is verdict


@both_engines
async def test_h2_a_response_then_reset_no_error_is_the_answer(
    fresh_h2_server: H2ScriptServer,
) -> None:
    # RFC 9113 section 8.1: a complete response, then RST_STREAM(NO_ERROR): "stop sending".
    server = fresh_h2_server
    async with aiopool.Client(http1=False) as client:
        response = await client.post(
            f"{server.url}/expect-reject?status=413&rst=1",
            content=Body(BIG),
            headers={"content-length": str(len(BIG)), **EXPECT},
        )
        assert (response.status_code, response.text) == (413, "rejected: 413\n")
        assert_settled(client)
        again = await client.get(f"{server.url}/echo?id=next")
        assert again.text == "next" and again.conn_info.reused
    rejected = server.requests[0]
    assert server.body_bytes(rejected.conn_id, rejected.stream_id) == 0


@both_engines
async def test_h2_an_upload_stopped_by_response_and_reset_no_error(
    fresh_h2_server: H2ScriptServer,
) -> None:
    # No expectation: the body is on its way when the answer and the "stop" come. (The server
    # never returns window, so at most its first 64 KiB can have gone before the answer.)
    server = fresh_h2_server
    server.script(ack_delay=3600)
    events: Events = []
    async with aiopool.Client(
        http1=False, expect_continue_threshold=None, trace=events.append
    ) as client:
        response = await client.post(f"{server.url}/expect-reject?status=413&rst=1", content=BIG)
        assert (response.status_code, response.text) == (413, "rejected: 413\n")
        assert_settled(client)
        again = await client.get(f"{server.url}/echo?id=next")
        assert again.text == "next" and again.conn_info.reused
    rejected = server.requests[0]
    assert server.body_bytes(rejected.conn_id, rejected.stream_id) <= 65535
    wrote = next(e for e in events if e.name == "wrote_request")
    assert own(wrote) == {"error": None, "body_withheld": True}


@both_engines
async def test_h2_cancelled_while_waiting_for_100_resets_only_the_stream(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    events: Events = []
    async with aiopool.Client(
        http1=False, expect_continue_timeout=3600, trace=events.append
    ) as client:
        body = Body(BIG)
        task = asyncio.create_task(
            client.post(f"{server.url}/expect-silent", content=body, headers=EXPECT)
        )
        await eventually(lambda: "wait_100_continue" in names(events))
        await eventually(lambda: server.streams_received == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not body.started
        await eventually(lambda: server.reset_codes == [8])  # CANCEL
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 0)
        again = await client.get(f"{server.url}/echo?id=next")
        assert again.text == "next" and again.conn_info.reused
