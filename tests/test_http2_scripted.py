"""HTTP/2 byte-level scenarios against the scripted h2 peer (tests/rig/h2_server.py).

GOAWAY with streams on both sides of last_stream_id, RST_STREAM, a lowered stream limit,
window exhaustion on upload, a socket dying under 50 open streams, PINGs, early close and
cancellation sending RST_STREAM(CANCEL).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
from collections.abc import AsyncIterator

import pytest
from h2.errors import ErrorCodes

import aiopool
import aiopool._pool
from aiopool._h2engine import select_engine
from tests.helpers import assert_settled, eventually, pool_of
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer

pytestmark = pytest.mark.both_engines


@pytest.fixture
def server(fresh_h2_server: H2ScriptServer) -> H2ScriptServer:
    return fresh_h2_server


def h2_client(**options: object) -> aiopool.Client:
    return aiopool.Client(http1=False, **options)  # type: ignore[arg-type]


async def test_streams_share_one_socket_and_ids_match(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/echo?id={i}") for i in range(50))
        )
        assert [r.text for r in responses] == [str(i) for i in range(50)]
        assert len({r.headers["x-conn-id"] for r in responses}) == 1
        assert len({r.headers["x-stream-id"] for r in responses}) == 50
        assert assert_settled(client).connections_opened == 1
    assert server.max_open_streams_seen > 1


async def test_goaway_mid_flight_retries_streams_above_last_id(server: H2ScriptServer) -> None:
    # The first connection answers its first 3 streams, then GOAWAY(last = 3rd stream);
    # streams above it were never processed and must move to a new socket.
    server.script(goaway_after_streams=3, scripted_connections=1)
    async with h2_client() as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/echo?id={i}") for i in range(8))
        )
        assert [r.text for r in responses] == [str(i) for i in range(8)]
        conns = [r.headers["x-conn-id"] for r in responses]
        assert len(set(conns)) == 2
        assert conns.count(conns[0]) == 3  # streams 1, 3 and 5 finished on the first socket
        await eventually(lambda: client.stats().idle == 1)
        stats = assert_settled(client)
        assert stats.connections_opened == 2 and stats.requests == 8
    assert server.goaways_sent == 1


async def test_refused_stream_is_retried(server: H2ScriptServer) -> None:
    server.script(refuse_first_n=1)
    async with h2_client() as client:
        resp = await client.post(f"{server.url}/echo?id=x", content=b"body")
        assert resp.text == "x"
        assert server.streams_received == 2
        assert assert_settled(client).connections_opened == 1


async def test_refused_every_time_gives_up_with_a_typed_error(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        with pytest.raises(aiopool.RemoteProtocolError, match="REFUSED_STREAM") as info:
            await client.get(f"{server.url}/rst?code={ErrorCodes.REFUSED_STREAM}")
        assert info.value.unprocessed
        assert server.streams_received == 7  # the first try and six retries
        assert_settled(client)


async def test_reset_stream_fails_only_that_stream(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        first = await client.get(f"{server.url}/echo?id=1")
        with pytest.raises(aiopool.RemoteProtocolError, match="INTERNAL_ERROR") as info:
            await client.get(f"{server.url}/rst?code={ErrorCodes.INTERNAL_ERROR}")
        assert not info.value.unprocessed
        after = await client.get(f"{server.url}/echo?id=2")
        assert after.headers["x-conn-id"] == first.headers["x-conn-id"]
        assert assert_settled(client).connections_opened == 1


async def test_lowered_stream_limit_never_fails_a_request(server: H2ScriptServer) -> None:
    # After the 3rd stream the server allows only 1 concurrent stream, though more are open.
    server.script(lower_max_concurrent_to=(3, 1))
    async with h2_client(max_connections_per_host=1) as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/slow?chunks=2&delay=0.02") for _ in range(12))
        )
        assert all(r.status_code == 200 and len(r.content) == 20 for r in responses)
        stats = assert_settled(client)
        assert stats.connections_opened == 1
    assert not server.protocol_errors


async def test_upload_waits_for_window_updates_without_blocking_others(
    server: H2ScriptServer,
) -> None:
    # 64 KiB receive window, acknowledged only after 20 ms: a 1 MiB upload needs ~16 updates.
    server.script(initial_window_size=65535, ack_delay=0.02)
    payload = bytes(range(256)) * 4096
    async with h2_client() as client:
        await client.get(f"{server.url}/echo?id=warm")
        upload = asyncio.create_task(client.post(f"{server.url}/upload", content=payload))
        # 16 windows at >= 20 ms each: the upload is still waiting for WINDOW_UPDATEs while
        # another stream on the same socket completes.
        await asyncio.sleep(0.05)
        echo = await client.get(f"{server.url}/echo?id=meanwhile")
        assert echo.text == "meanwhile"
        assert not upload.done()
        resp = await upload
        count, digest = resp.text.split()
        assert int(count) == len(payload)
        assert digest == hashlib.sha256(payload).hexdigest()
        assert assert_settled(client).connections_opened == 1


async def test_dead_socket_fails_all_50_streams_at_once(server: H2ScriptServer) -> None:
    server.script(drop_after_streams=50)
    async with h2_client(timeout=30) as client:
        results = await asyncio.gather(
            *(client.get(f"{server.url}/echo?id={i}") for i in range(50)),
            return_exceptions=True,
        )
        assert all(isinstance(r, aiopool.TransportError) for r in results), results[:3]
        assert not any(isinstance(r, aiopool.TimeoutException) for r in results)
        stats = assert_settled(client)
        assert stats.connections_closed == 1 and stats.idle == 0
        server.reset_script()
        assert (await client.get(f"{server.url}/echo?id=next")).text == "next"


async def test_server_ping_is_answered(server: H2ScriptServer) -> None:
    server.script(ping_on_connect=True)
    async with h2_client() as client:
        await client.get(f"{server.url}/echo")
        await eventually(lambda: server.pings_acked == 1)


async def test_early_close_sends_rst_stream_cancel(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        async with client.stream("GET", f"{server.url}/stall") as resp:
            assert resp.status_code == 200
        await eventually(lambda: server.streams_reset_by_client == 1)
        assert server.reset_codes == [ErrorCodes.CANCEL]
        host = assert_settled(client).hosts[f"http://127.0.0.1:{server.port}"]
        assert host.streams == 0 and host.idle == 1
        assert (await client.get(f"{server.url}/echo?id=1")).conn_info.reused


async def test_cancelled_task_frees_its_stream(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        task = asyncio.create_task(client.get(f"{server.url}/stall-headers"))
        # Cancel only once the server has the stream: cancelled earlier, the slot goes back
        # without a HEADERS frame ever sent, and there is nothing to reset.
        await eventually(lambda: server.streams_received == 1)
        assert client.stats().hosts[f"http://127.0.0.1:{server.port}"].streams == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: server.streams_reset_by_client == 1)
        stats = assert_settled(client)
        assert stats.connections_closed == 0


async def test_read_timeout_resets_the_stream_not_the_socket(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        first = await client.get(f"{server.url}/echo?id=1")
        with pytest.raises(aiopool.ReadTimeout):
            await client.get(f"{server.url}/stall-headers", timeout=aiopool.Timeout(5, read=0.05))
        again = await client.get(f"{server.url}/echo?id=2")
        assert again.headers["x-conn-id"] == first.headers["x-conn-id"]
        assert assert_settled(client).connections_closed == 0


async def test_tls_h2_with_alpn(fresh_tls_h2_server: H2ScriptServer, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        responses = await asyncio.gather(
            *(client.get(f"{fresh_tls_h2_server.url}/echo?id={i}") for i in range(20))
        )
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert assert_settled(client).connections_opened == 1


async def test_hypercorn_echo_upload_and_slow_streams(
    hypercorn_server: HypercornServer, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (The socket count below is this test's point; a first handshake slower than
    # SLOW_HANDSHAKE, as hypercorn's can be on a loaded CI machine, would let the waiters dial
    # in parallel, by design: tests/test_dialing.py covers that rule.)
    monkeypatch.setattr(aiopool._pool, "SLOW_HANDSHAKE", 60.0)
    url = hypercorn_server.url
    payload = b"\x00\x01" * (2 * 1024 * 1024)
    async with aiopool.Client(verify=ca_path) as client:
        slow = asyncio.create_task(client.get(f"{url}/slow?chunks=3&delay=0.5"))
        echoes = await asyncio.gather(*(client.get(f"{url}/echo?id={i}") for i in range(200)))
        assert [r.text for r in echoes] == [str(i) for i in range(200)]
        assert not slow.done()  # 200 fast streams passed the slow one on the same socket
        upload = await client.post(f"{url}/upload", content=payload)
        count, digest = upload.text.split()
        assert int(count) == len(payload)
        assert digest == hashlib.sha256(payload).hexdigest()
        assert (await slow).status_code == 200
        assert {r.http_version for r in echoes} == {"HTTP/2"}
        # hypercorn allows 100 concurrent streams per socket: 201 at once need 3 sockets.
        assert assert_settled(client).connections_opened <= 3


async def test_the_parametrised_engine_is_the_one_in_use(
    server: H2ScriptServer, http2_engine: str | None
) -> None:
    async with h2_client() as client:
        await client.get(f"{server.url}/echo")
        assert pool_of(client)._h2_engine.name == http2_engine
        with pytest.raises(ValueError, match="http2_engine"):
            aiopool.Client(http2_engine="nghttp2")  # type: ignore[arg-type]


async def test_garbage_collected_open_h2_stream_warns_and_resets(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        resp = await client.stream("GET", f"{server.url}/stall").__aenter__()
        assert resp.http_version == "HTTP/2"
        gc.collect()
        with pytest.warns(ResourceWarning, match="unclosed streamed response"):
            del resp  # dropped while open: the stream is reset, the socket kept
        await eventually(lambda: server.streams_reset_by_client == 1)
        host = assert_settled(client).hosts[f"http://127.0.0.1:{server.port}"]
        assert host.streams == 0 and host.idle == 1


async def test_ping_health_check_pings_a_quiet_socket_and_keeps_it(server: H2ScriptServer) -> None:
    async with h2_client(http2_ping_interval=0.05, http2_ping_timeout=5) as client:
        first = await client.get(f"{server.url}/echo?id=1")
        await eventually(lambda: server.pings_received >= 2)  # silent socket: PINGs go out
        second = await client.get(f"{server.url}/echo?id=2")
        assert second.headers["x-conn-id"] == first.headers["x-conn-id"]  # answered: kept
        assert assert_settled(client).connections_closed == 0


async def test_no_ping_without_the_health_check(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        await client.get(f"{server.url}/echo")
        await asyncio.sleep(0.2)
    assert server.pings_received == 0


# Caps on response heads (`max_response_headers`, `max_response_header_bytes`) ----------------


async def test_too_many_header_fields_fail_the_stream_not_the_socket(
    server: H2ScriptServer,
) -> None:
    async with h2_client(max_response_headers=50) as client:
        first = await client.get(f"{server.url}/headers?n=40")
        assert first.headers["x-many-39"] == "v" * 10
        with pytest.raises(aiopool.RemoteProtocolError, match="51 header fields"):
            await client.get(f"{server.url}/headers?n=50")  # + content-length
        again = await client.get(f"{server.url}/echo?id=again")
        assert again.conn_info.reused and again.text == "again"
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.connections_closed == 0


async def test_oversized_header_list_fails_the_connection(server: H2ScriptServer) -> None:
    # 20 fields of 8,000 bytes: ~160 KB decoded, over the 100 KiB default that the client
    # advertises as SETTINGS_MAX_HEADER_LIST_SIZE. HPACK makes a header list cheap to send and
    # dear to decode, so the whole socket goes (h2 treats it as a connection error).
    async with h2_client() as client:
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.get(f"{server.url}/headers?n=20&size=8000")
        stats = assert_settled(client)
        assert stats.connections_closed == stats.connections_opened == 1
        after = await client.get(f"{server.url}/echo?id=after")
        assert after.text == "after" and not after.conn_info.reused
    async with h2_client(max_response_header_bytes=512 * 1024) as client:
        resp = await client.get(f"{server.url}/headers?n=20&size=8000")
        assert resp.headers["x-many-19"] == "v" * 8000


async def test_interim_responses_are_skipped_up_to_a_cap(server: H2ScriptServer) -> None:
    async with h2_client() as client:
        resp = await client.get(f"{server.url}/interim?n=10")
        assert (resp.status_code, resp.content) == (200, b"ok\n")
        assert "link" not in resp.headers  # the 103s' fields are not the response's
        with pytest.raises(aiopool.RemoteProtocolError, match="more than 10 interim"):
            await client.get(f"{server.url}/interim?n=11")
        # Only that stream failed: the socket carries on.
        again = await client.get(f"{server.url}/echo?id=again")
        assert again.conn_info.reused and again.text == "again"
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.connections_closed == 0


async def test_first_burst_respects_the_stream_limit_of_the_servers_preface(
    server: H2ScriptServer,
) -> None:
    # The socket is handed out only once the server's SETTINGS arrived, so even the first burst
    # on a brand-new socket stays within a small limit (a server may treat excess streams as a
    # connection error before it has seen us acknowledge its SETTINGS).
    server.script(max_concurrent_streams=5)
    async with h2_client() as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/slow?chunks=2&delay=0.05") for _ in range(12))
        )
        assert all(r.status_code == 200 for r in responses)
        assert server.max_open_streams_seen <= 5
        assert server.protocol_errors == []
        assert_settled(client)


async def test_upload_stuck_on_a_closed_window_is_a_write_timeout(server: H2ScriptServer) -> None:
    # The server never returns the 64 KiB window in time: the upload waits on its stream's
    # window, and the write timeout ends that wait as a WriteTimeout (a timeout, not an error).
    server.script(initial_window_size=65535, ack_delay=5.0)
    async with h2_client(timeout=aiopool.Timeout(10, write=0.2)) as client:
        with pytest.raises(aiopool.WriteTimeout):
            await client.post(f"{server.url}/upload", content=b"x" * 300_000)
        stats = assert_settled(client)
        assert stats.connections_closed == 0  # only the stream was reset


async def test_settings_a_server_leaves_unstated_are_the_rfc_defaults(
    server: H2ScriptServer,
) -> None:
    # Apache's SETTINGS state no INITIAL_WINDOW_SIZE (and it opens the connection's window
    # wide): its stream windows are RFC 9113's 65,535 bytes (section 6.5.2), whatever the
    # engine presumes (jh2, an engine once, presumed 6,291,456). A 1 MiB upload must stay
    # inside them, not end in FLOW_CONTROL_ERROR. (The server returns window only after
    # 10 ms, so what overruns it cannot hide behind quick WINDOW_UPDATEs.)
    server.script(initial_window_size=None, connection_window=2**24, ack_delay=0.01)
    payload = bytes(range(256)) * 4096
    async with h2_client() as client:
        resp = await client.post(f"{server.url}/upload", content=payload)
        assert resp.text == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
        assert assert_settled(client).connections_opened == 1
    assert server.protocol_errors == []
    engine = select_engine("auto")  # (the engine this test runs on)
    fresh = engine.connection_class(engine.config_class(client_side=True)).remote_settings
    assert (fresh.initial_window_size, fresh.header_table_size) == (65_535, 4_096)


async def test_nothing_is_written_once_the_peer_is_gone(
    fresh_tls_h2_server: H2ScriptServer, ca_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 20 uploads in full flow when the server resets the TCP connection: every task that
    # writes before the loop has told the TLS layer the socket is lost used to reach the dead
    # socket (asyncio logs "socket.send() raised exception." from the sixth such write on).
    server = fresh_tls_h2_server
    server.script(drop_after_streams=20, initial_window_size=2**24, connection_window=2**30)

    async def body() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 4096
            await asyncio.sleep(0)

    async with h2_client(verify=ca_path) as client:
        results = await asyncio.gather(
            *(client.post(f"{server.url}/upload", content=body()) for _ in range(20)),
            return_exceptions=True,
        )
        assert all(isinstance(r, aiopool.TransportError) for r in results), results
        assert_settled(client)
    assert "socket.send() raised exception" not in caplog.text


# Cancellation storms (CVE-2023-44487 defences) and GOAWAY -------------------------------------


async def test_frames_crossing_our_reset_are_ignored_not_reset_again(
    server: H2ScriptServer,
) -> None:
    # RFC 9113 section 5.1: after sending RST_STREAM, ignore what still comes on the stream.
    # Servers count client resets against rapid-reset limits; one cancellation, one reset.
    server.script(data_after_reset=3)
    async with h2_client() as client:
        async with client.stream("GET", f"{server.url}/stall") as resp:
            assert resp.status_code == 200  # left unread: RST_STREAM(CANCEL)
        # The late DATA precedes this answer on the wire, so the client has handled it.
        after = await client.get(f"{server.url}/echo?id=after")
        assert after.conn_info.reused
        stats = assert_settled(client)
        assert stats.connections_closed == 0
    await eventually(lambda: server.goaways_received == 1)  # all the client sent has arrived
    assert server.rst_frames_received == [(1, ErrorCodes.CANCEL)]


async def test_no_reset_for_a_stream_whose_response_ended(server: H2ScriptServer) -> None:
    # The whole response is in (END_STREAM) but unread when the caller leaves: the stream is
    # closed on both sides, and a reset would only count against us.
    async with h2_client() as client:
        async with client.stream("GET", f"{server.url}/bytes/100") as resp:
            await eventually(lambda: client.stats().hosts[server.url].streams == 1)
            await asyncio.sleep(0.05)  # (let the DATA with END_STREAM arrive)
            assert resp.status_code == 200
        await client.get(f"{server.url}/echo?id=after")
        assert_settled(client)
    await eventually(lambda: server.goaways_received == 1)
    assert server.rst_frames_received == []


async def test_streams_per_socket_are_capped_when_the_server_states_no_limit(
    server: H2ScriptServer,
) -> None:
    # No SETTINGS_MAX_CONCURRENT_STREAMS (node's default): unbounded by the letter of RFC 9113,
    # but node resets streams past what its session memory allows. 100 per socket, as curl.
    server.script(max_concurrent_streams=None)
    async with h2_client(max_connections_per_host=None) as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/slow?chunks=2&delay=0.05") for _ in range(150))
        )
        assert all(r.status_code == 200 for r in responses)
        assert len({r.headers["x-conn-id"] for r in responses}) == 2
        assert_settled(client)
    assert 1 < server.max_open_streams_seen <= 100


async def test_a_stated_limit_above_the_default_cap_is_used(server: H2ScriptServer) -> None:
    server.script(max_concurrent_streams=128)  # nginx's default
    async with h2_client(max_connections_per_host=None) as client:
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/slow?chunks=2&delay=0.05") for _ in range(120))
        )
        assert len({r.headers["x-conn-id"] for r in responses}) == 1
        assert_settled(client)
    assert server.max_open_streams_seen > 100


async def test_streams_above_goaway_are_retried_though_the_socket_closes_at_once(
    server: H2ScriptServer,
) -> None:
    # GOAWAY naming stream 1, then the connection is reset at once (Go's server does this
    # now and then): stream 1 may have been processed and fails; stream 3 was not and goes to
    # a new socket. The socket's end is the GOAWAY's, however the close shows (over TLS,
    # nginx and node closing after GOAWAY used to be "error", over h2c "goaway").
    server.script(goaway_after_streams=1, close_on_goaway=True, scripted_connections=1)
    events: list[aiopool.TraceEvent] = []
    async with h2_client(trace=events.append) as client:
        first, second = await asyncio.gather(
            client.get(f"{server.url}/echo?id=1"),
            client.get(f"{server.url}/echo?id=3"),
            return_exceptions=True,
        )
        assert isinstance(first, aiopool.ReadError)
        assert isinstance(second, aiopool.Response) and second.text == "3"
        assert second.headers["x-conn-id"] != str(server.requests[0].conn_id)
        assert_settled(client)
    assert server.goaways_sent == 1
    closed = [e.info["reason"] for e in events if e.name == "conn_closed"]
    assert closed[0] == "goaway"


async def test_goaway_with_an_error_code_retries_what_is_safe_to_replay(
    server: H2ScriptServer,
) -> None:
    # Apache answers a cancellation storm with GOAWAY and an error code, then closes: a
    # connection error. Streams 3 and 5 (at or below last_stream_id) had no response byte
    # yet on a reused socket: GETs, so sent again on a new socket (docs/design.md invariant 6);
    # streams above were never processed. No request that was not cancelled fails.
    server.script(
        goaway_after_streams=3,
        goaway_error_code=ErrorCodes.INTERNAL_ERROR,
        scripted_connections=1,
    )
    async with h2_client() as client:
        warm = await client.get(f"{server.url}/echo?id=warm")  # stream 1
        responses = await asyncio.gather(
            *(client.get(f"{server.url}/echo?id={i}") for i in range(4))
        )
        assert [r.text for r in responses] == [str(i) for i in range(4)]
        assert any(r.headers["x-conn-id"] != warm.headers["x-conn-id"] for r in responses)
        assert_settled(client)
    assert server.goaways_sent == 1
