"""HTTP/2 against nginx: ALPN h2 over TLS, h2c by prior knowledge, small stream limits, GOAWAY."""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

import aiopool
from aiopool._backend import NetworkStream, open_stream
from tests.helpers import assert_settled, cancellation_storm, eventually
from tests.rig.fault_server import BlackholeServer, FaultServer
from tests.rig.nginx import LIMITED_REQUESTS, LIMITED_STREAMS, Nginx

pytestmark = [pytest.mark.nginx, pytest.mark.both_engines]


async def test_alpn_picks_h2_and_100_requests_share_one_socket(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/echo?id={i}") for i in range(100))
        )
        assert [r.text for r in responses] == [str(i) for i in range(100)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert {r.conn_info.id for r in responses} == {1}
        assert responses[0].reason == "OK"
        stats = assert_settled(client)
        # Every request waited for the one socket being dialed instead of dialing its own.
        assert stats.connections_opened == 1
        assert stats.hosts[f"https://localhost:{nginx.https_port}"].idle == 1


class _CountingStream:
    """A real socket whose writes are counted."""

    def __init__(self, stream: NetworkStream) -> None:
        self._stream = stream
        self.writes = 0

    def write_nowait(self, data: bytes) -> None:
        self.writes += 1
        self._stream.write_nowait(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


async def test_streams_opened_in_one_loop_turn_leave_in_one_write(
    nginx: Nginx, ca_path: str
) -> None:
    # 50 requests gathered at once open their streams in one turn of the event loop; their
    # HEADERS leave in one write (one TLS record, one send), not 50: the syscalls and TLS
    # records were a fifth of a small request's cost over HTTP/2.
    sockets: list[_CountingStream] = []

    async def dial(host: str, port: int, **options: Any) -> _CountingStream:
        sockets.append(_CountingStream(await open_stream(host, port, **options)))
        return sockets[-1]

    async with aiopool.Client(verify=ca_path, dialer=dial) as client:
        await client.get(f"{nginx.https_url}/small.txt")
        (socket,) = sockets
        before = socket.writes
        responses = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/echo?id={i}") for i in range(50))
        )
        assert [r.text for r in responses] == [str(i) for i in range(50)]
        # (One write for the 50 HEADERS; window credits and the like may add a few.)
        assert socket.writes - before <= 5
        assert_settled(client)


async def test_streams_are_counted_while_in_flight(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        await client.get(f"{nginx.https_url}/small.txt")  # learn the protocol first
        contexts = [client.stream("GET", f"{nginx.https_url}/1m.bin") for _ in range(5)]
        responses = [await c.__aenter__() for c in contexts]
        host = client.stats().hosts[f"https://localhost:{nginx.https_port}"]
        assert (host.streams, host.active, host.opened) == (5, 1, 1)
        for ctx, resp in zip(contexts, responses, strict=True):
            assert resp.http_version == "HTTP/2"
            await ctx.__aexit__(None, None, None)  # closed unread: RST_STREAM, slot freed
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.idle == 1
        again = await client.get(f"{nginx.https_url}/small.txt")
        assert again.conn_info.reused and again.conn_info.id == 1


async def test_h2c_by_prior_knowledge(nginx: Nginx) -> None:
    async with aiopool.Client(http1=False) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.h2c_url}/echo?id={i}") for i in range(50))
        )
        assert [r.text for r in responses] == [str(i) for i in range(50)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert assert_settled(client).connections_opened == 1


async def test_http1_only_client_never_speaks_h2(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path, http2=False) as client:
        resp = await client.get(f"{nginx.https_url}/small.txt")
        assert resp.http_version == "HTTP/1.1"


async def test_h2_only_client_refuses_an_http1_server(
    tls_fault_server: FaultServer, ca_path: str
) -> None:
    # The TLS fault server answers ALPN with http/1.1 only.
    async with aiopool.Client(verify=ca_path, http1=False) as client:
        with pytest.raises(aiopool.ConnectError, match="did not negotiate HTTP/2"):
            await client.get(f"{tls_fault_server.url}/echo")
        assert_settled(client)


async def test_small_stream_limit_opens_more_sockets_never_fails(nginx: Nginx) -> None:
    """nginx allows LIMITED_STREAMS streams per socket: 40 requests need 10 sockets' worth of
    streams; none may fail with "too many streams", none may hang."""
    async with aiopool.Client(http1=False, max_connections_per_host=3) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.h2c_limited_url}/echo?id={i}") for i in range(40))
        )
        assert [r.text for r in responses] == [str(i) for i in range(40)]
        stats = assert_settled(client)
        assert stats.hosts[f"http://127.0.0.1:{nginx.h2c_limited_port}"].opened <= 3 + (
            40 // LIMITED_REQUESTS
        )


async def test_goaway_after_keepalive_requests_is_transparent(nginx: Nginx) -> None:
    """nginx sends GOAWAY after LIMITED_REQUESTS requests on a socket; the client moves to a
    new socket without losing or failing a request."""
    n = LIMITED_REQUESTS * 4
    async with aiopool.Client(http1=False, max_connections_per_host=2) as client:
        ids: list[str] = []
        for batch in range(0, n, LIMITED_STREAMS):
            responses = await asyncio.gather(
                *(
                    client.get(f"{nginx.h2c_limited_url}/echo?id={i}")
                    for i in range(batch, min(batch + LIMITED_STREAMS, n))
                )
            )
            ids.extend(r.text for r in responses)
        assert ids == [str(i) for i in range(n)]
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert stats.connections_opened >= n // LIMITED_REQUESTS
        assert stats.requests == n


async def test_10mb_download_over_h2_matches(nginx: Nginx, ca_path: str) -> None:
    expected = nginx.file_bytes("10m.bin")
    async with aiopool.Client(verify=ca_path) as client:
        resp = await client.get(f"{nginx.https_url}/10m.bin")
        assert resp.http_version == "HTTP/2"
        assert resp.content == expected
        # Several downloads at once over the one socket share its window fairly.
        many = await asyncio.gather(*(client.get(f"{nginx.https_url}/1m.bin") for _ in range(8)))
        assert all(r.content == nginx.file_bytes("1m.bin") for r in many)
        assert assert_settled(client).connections_opened == 1


async def test_cancellation_storm_over_one_h2_socket(nginx: Nginx, ca_path: str) -> None:
    """Thousands of tasks over HTTP/2, a third cancelled at random: every completed body
    matches its request id, and no stream is left open afterwards."""
    rng = random.Random(7)
    async with aiopool.Client(verify=ca_path) as client:
        await client.get(f"{nginx.https_url}/small.txt")

        async def one(i: int) -> None:
            resp = await client.get(f"{nginx.https_url}/echo?id={i}")
            assert resp.text == str(i)

        errors = await cancellation_storm(one, tasks=2000, cancels=700, max_pause=0.001, rng=rng)
        assert all(isinstance(e, asyncio.CancelledError) for e in errors), errors[:3]
        assert len(errors) < 2000
        stats = assert_settled(client)
        assert stats.hosts[f"https://localhost:{nginx.https_port}"].streams == 0
        assert (await client.get(f"{nginx.https_url}/echo?id=after")).text == "after"


async def test_ping_health_check_fails_a_silent_peer_fast() -> None:
    """h2c to a peer that sends its SETTINGS and then says nothing, not even PING ACKs: with a
    PING health check the waiting request fails with ReadError after interval + timeout, not
    after the read timeout."""

    async def settings_then_silence(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):  # read (and ignore) everything, answer nothing
                pass
        writer.close()

    server = await asyncio.start_server(settings_then_silence, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with aiopool.Client(
            http1=False, http2_ping_interval=0.1, http2_ping_timeout=0.1, timeout=30
        ) as client:
            with pytest.raises(aiopool.ReadError, match="PING"):
                await client.get(url)
            stats = assert_settled(client)
            assert stats.connections_closed == 1


async def test_a_peer_that_never_sends_settings_is_a_connect_timeout(
    blackhole: BlackholeServer,
) -> None:
    # RFC 9113 section 3.4: the server's preface (SETTINGS) comes first. Until it arrives the
    # socket is not handed to any request, so a silent peer fails the dial, not a stream.
    url = f"http://127.0.0.1:{blackhole.port}/"
    async with aiopool.Client(http1=False, timeout=aiopool.Timeout(30, connect=0.2)) as client:
        with pytest.raises(aiopool.ConnectTimeout, match="SETTINGS"):
            await client.get(url)
        stats = assert_settled(client)
        assert stats.connections_opened == 0 and stats.hosts[url.rstrip("/")].opened == 0


async def test_ping_health_check_keeps_a_live_socket(nginx: Nginx) -> None:
    async with aiopool.Client(http1=False, http2_ping_interval=0.05) as client:
        first = await client.get(f"{nginx.h2c_url}/echo?id=1")
        await asyncio.sleep(0.3)  # several PINGs, each answered
        second = await client.get(f"{nginx.h2c_url}/echo?id=2")
        assert second.conn_info.id == first.conn_info.id
        assert assert_settled(client).connections_closed == 0


async def test_discarded_data_is_credited_to_the_connection_window(
    nginx: Nginx, ca_path: str
) -> None:
    """Close five 10 MB streams after their first chunk: whatever the server had already sent
    (up to the 16 MiB connection window) is discarded, and must be credited back, or the
    socket's window would run dry and the next download stall."""
    expected = nginx.file_bytes("10m.bin")
    async with aiopool.Client(verify=ca_path, timeout=10) as client:
        for _ in range(5):
            async with client.stream("GET", f"{nginx.https_url}/10m.bin") as resp:
                async for _chunk in resp.aiter_bytes():
                    await asyncio.sleep(0.02)  # let the server fill the window meanwhile
                    break
        resp = await client.get(f"{nginx.https_url}/10m.bin")
        assert resp.content == expected
        stats = assert_settled(client)
        assert stats.connections_opened == 1
