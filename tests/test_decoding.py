"""Content-Encoding against real servers: the fault server (HTTP/1.1, both parsers), nginx with
`gzip on` (HTTP/1.1, h2 over TLS, h2c) and hypercorn (h2 over TLS).

Each decoded response must still hand its socket back; each failure (corrupt data, a bomb, too
many codings, a cancellation mid-decode) must leave the pool settled with the socket closed
(on HTTP/2: the stream reset, the socket kept for others).
"""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc

import pytest

import aiopool
from aiopool._decoders import DECODE_STEP, MAX_RATIO, RATIO_FLOOR
from tests.helpers import assert_settled, eventually
from tests.rig.encodings import encode, text
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx

pytestmark = pytest.mark.both_parsers

SIZE = 100_000
BODY = text(SIZE)
STACKED = ["gzip,br", "zstd,deflate,gzip", "deflate-raw,gzip"]
ALL = ["gzip", "deflate", "deflate-raw", "br", "zstd", "identity", *STACKED]


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


def wire_name(coding: str) -> str:
    return encode(b"", coding.split(","))[0]


# -- HTTP/1.1: the fault server ------------------------------------------------------------


@pytest.mark.parametrize("framing", ["", "&chunks=97"], ids=["content-length", "chunked"])
@pytest.mark.parametrize("coding", ALL)
async def test_decoded_and_the_socket_returned(
    server: FaultServer, coding: str, framing: str
) -> None:
    async with aiopool.Client() as client:
        for attempt in range(2):
            resp = await client.get(f"{server.url}/encoded?coding={coding}{framing}")
            assert resp.headers["content-encoding"] == wire_name(coding)
            assert resp.content == BODY
            assert resp.text == BODY.decode()
            assert resp.conn_info.reused is (attempt == 1)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused) == (1, 1)
    assert server.connections_accepted == 1


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "gzip,br"])
async def test_streamed_decoded_in_bounded_pieces(server: FaultServer, coding: str) -> None:
    url = f"{server.url}/encoded?coding={coding}&size=1000000&chunks=5"
    async with aiopool.Client() as client:
        async with client.stream("GET", url) as resp:
            pieces = [piece async for piece in resp.aiter_bytes()]
        assert b"".join(pieces) == text(1_000_000)
        # A chunk of ~100 KB (compressed) never arrives as one big piece.
        assert len(pieces) > 1_000_000 // (2 * DECODE_STEP)
        assert max(map(len, pieces)) <= 2 * DECODE_STEP
        async with client.stream("GET", url) as resp:
            raw = b"".join([chunk async for chunk in resp.aiter_raw()])
        assert raw == encode(text(1_000_000), coding.split(","))[1]
        assert_settled(client)
        assert client.stats().connections_opened == 1


async def test_aiter_raw_after_a_decoded_read_is_refused(server: FaultServer) -> None:
    async with aiopool.Client() as client, client.stream("GET", f"{server.url}/encoded") as resp:
        assert await resp.aread() == BODY
        with pytest.raises(aiopool.StreamConsumed):
            async for _ in resp.aiter_raw():
                pass


async def test_default_accept_encoding(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        sent = (await client.get(f"{server.url}/echo")).json()["headers"]
        assert [v for n, v in sent if n.lower() == "accept-encoding"] == ["gzip, deflate, br, zstd"]


async def test_user_accept_encoding_wins_and_we_still_decode(server: FaultServer) -> None:
    async with aiopool.Client(headers={"Accept-Encoding": "br"}) as client:
        sent = (await client.get(f"{server.url}/echo")).json()["headers"]
        assert [v for n, v in sent if n.lower() == "accept-encoding"] == ["br"]
        headers = {"accept-encoding": "identity"}
        sent = (await client.get(f"{server.url}/echo", headers=headers)).json()["headers"]
        assert [v for n, v in sent if n.lower() == "accept-encoding"] == ["identity"]
        # The server sends gzip anyway: what arrives is decoded.
        resp = await client.get(f"{server.url}/encoded?coding=gzip", headers=headers)
        assert resp.content == BODY


@pytest.mark.parametrize(
    "query",
    ["coding=gzip&status=204", "coding=br&status=304", "coding=zstd&damage=empty"],
)
async def test_bodiless_responses_with_an_encoding(server: FaultServer, query: str) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/encoded?{query}")
        assert resp.content == b""
        resp = await client.get(f"{server.url}/encoded?coding=gzip")  # the socket is fine
        assert resp.content == BODY
        assert resp.conn_info.reused


async def test_head_with_an_encoding(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.head(f"{server.url}/encoded?coding=gzip,gzip,gzip,gzip,gzip,gzip")
        assert resp.headers["content-encoding"].count("gzip") == 6  # too many, but no body
        assert int(resp.headers["content-length"]) > 0
        assert resp.content == b""
        assert (await client.get(f"{server.url}/encoded")).conn_info.reused


async def test_unknown_coding_passes_through(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/encoded?coding=x-unknown")
        assert resp.content == BODY
        # gzip applied after x-unknown is undone; x-unknown is left for the caller.
        resp = await client.get(f"{server.url}/encoded?coding=x-unknown,gzip")
        assert resp.content == BODY
        # The outer coding is unknown: the body arrives as sent.
        resp = await client.get(f"{server.url}/encoded?coding=gzip,x-unknown")
        assert resp.content == encode(BODY, ["gzip"])[1]


async def assert_closed(client: aiopool.Client, server: FaultServer) -> None:
    """The failed request's socket was closed, not pooled, and nothing is held."""
    stats = assert_settled(client)
    assert stats.connections_closed == stats.connections_opened
    await eventually(lambda: server.open_connections() == 0)


# Not br alone: garbled br data here decodes without complaint to the end and is found
# truncated only then, as in `test_truncated_data_in_a_whole_message`.
@pytest.mark.parametrize("coding", ["gzip", "deflate", "zstd", "gzip,br"])
async def test_corrupt_data_closes_the_socket(server: FaultServer, coding: str) -> None:
    async with aiopool.Client() as client:
        url = f"{server.url}/encoded?coding={coding}&damage=corrupt&chunks=8"
        with pytest.raises(aiopool.DecodingError) as caught:
            await client.get(url)
        assert caught.value.request is not None
        assert str(caught.value.request.url) == url
        await assert_closed(client, server)
        assert not (await client.get(f"{server.url}/encoded")).conn_info.reused


async def test_corrupt_data_while_streaming_closes_the_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        url = f"{server.url}/encoded?coding=gzip&size=1000000&damage=corrupt&chunks=8"
        with pytest.raises(aiopool.DecodingError):  # noqa: PT012
            async with client.stream("GET", url) as resp:
                async for _ in resp.aiter_bytes():
                    pass
        await assert_closed(client, server)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
async def test_truncated_data_in_a_whole_message(server: FaultServer, coding: str) -> None:
    """The coding is cut short, but the HTTP message arrived whole (its Content-Length
    matches): the error is found at the end, when the socket is already back in the pool, and
    it is clean there; it stays (as Go's transport does when its gzip reader fails)."""
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.DecodingError, match="truncated"):
            await client.get(f"{server.url}/encoded?coding={coding}&damage=truncate")
        assert_settled(client)
        assert (await client.get(f"{server.url}/encoded")).conn_info.reused
    assert server.connections_accepted == 1


async def test_too_many_codings(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.DecodingError, match="6 codings"):
            await client.get(f"{server.url}/encoded?coding=gzip,gzip,gzip,gzip,gzip,gzip")
        await assert_closed(client, server)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_bomb_refused(server: FaultServer, coding: str) -> None:
    """1 GiB of zeros in about 1 MB (gzip), 2 KB (br), 32 KB (zstd)."""
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.DecodingError, match="decompression bomb"):
            await client.get(f"{server.url}/bomb?coding={coding}")
        await assert_closed(client, server)


async def test_bomb_refused_while_streaming(server: FaultServer) -> None:
    # Streaming is not capped by max_response_size; the ratio bound still holds.
    decoded: list[int] = []

    async def pull(client: aiopool.Client) -> None:
        async with client.stream("GET", f"{server.url}/bomb") as resp:
            async for piece in resp.aiter_bytes():
                decoded.append(len(piece))

    async with aiopool.Client(max_response_size=None) as client:
        with pytest.raises(aiopool.DecodingError, match="decompression bomb"):
            await pull(client)
        await assert_closed(client, server)
    # Past the floor, stopped within MAX_RATIO times the bytes received so far (a socket read
    # may bring a few hundred KB of bomb at once): megabytes of the gigabyte, no more.
    assert RATIO_FLOOR - DECODE_STEP < sum(decoded) <= MAX_RATIO * 256 * 1024


async def test_cancelled_mid_decode(server: FaultServer) -> None:
    started = asyncio.Event()

    async def pull(client: aiopool.Client) -> None:
        async with client.stream("GET", f"{server.url}/endless?coding=gzip") as resp:
            async for _ in resp.aiter_bytes():
                started.set()

    async with aiopool.Client() as client:
        task = asyncio.create_task(pull(client))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await assert_closed(client, server)


# -- nginx: gzip on -------------------------------------------------------------------------


def nginx_urls(nginx: Nginx) -> dict[str, tuple[str, bool]]:
    # name -> (base URL, http1 allowed)
    return {
        "http1": (nginx.http_url, True),
        "h2-tls": (nginx.https_url, True),
        "h2c": (nginx.h2c_url, False),
    }


@pytest.mark.parametrize("listener", ["http1", "h2-tls", "h2c"])
async def test_nginx_gzip(nginx: Nginx, ca_path: str, listener: str) -> None:
    base, http1 = nginx_urls(nginx)[listener]
    expected = nginx.file_bytes("text.txt")
    async with aiopool.Client(verify=ca_path, http1=http1) as client:
        for attempt in range(2):
            resp = await client.get(f"{base}/gzip/text.txt")
            assert resp.headers["content-encoding"] == "gzip"
            assert resp.content == expected
            assert resp.conn_info.reused is (attempt == 1)
            assert resp.http_version == ("HTTP/1.1" if listener == "http1" else "HTTP/2")
        async with client.stream("GET", f"{base}/gzip/text.txt") as resp:
            raw = b"".join([chunk async for chunk in resp.aiter_raw()])
        assert 0 < len(raw) < len(expected) // 2  # it really was compressed
        # HEAD: Content-Encoding, no body, nothing to decode.
        resp = await client.head(f"{base}/gzip/text.txt")
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.content == b""
        # Asked for identity, nginx does not compress.
        resp = await client.get(f"{base}/gzip/text.txt", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in resp.headers
        assert resp.content == expected
        stats = assert_settled(client)
        assert stats.connections_opened == 1


# -- HTTP/2: hypercorn ---------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate-raw", "br", "zstd", "zstd,deflate,gzip"])
async def test_hypercorn_h2(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext, coding: str
) -> None:
    async with aiopool.Client(verify=client_ssl_context) as client:
        for framing in ("", "&chunks=50"):
            resp = await client.get(f"{hypercorn_server.url}/encoded?coding={coding}{framing}")
            assert resp.http_version == "HTTP/2"
            assert resp.content == BODY
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused) == (1, 1)


@pytest.mark.parametrize("path", ["/encoded?damage=corrupt&chunks=8", "/bomb"])
async def test_hypercorn_h2_failure_resets_only_the_stream(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext, path: str
) -> None:
    async with aiopool.Client(verify=client_ssl_context) as client:
        assert (await client.get(f"{hypercorn_server.url}/encoded")).content == BODY
        with pytest.raises(aiopool.DecodingError):
            await client.get(f"{hypercorn_server.url}{path}")
        stats = assert_settled(client)  # no stream left open
        # The stream was reset; the socket, shared by other streams, stays.
        resp = await client.get(f"{hypercorn_server.url}/encoded")
        assert resp.content == BODY
        assert resp.conn_info.reused
        assert stats.connections_opened == 1


async def test_hypercorn_h2_cancelled_mid_decode(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    started = asyncio.Event()

    async def pull(client: aiopool.Client) -> None:
        url = f"{hypercorn_server.url}/endless?coding=gzip"
        async with client.stream("GET", url) as resp:
            async for _ in resp.aiter_bytes():
                started.set()

    async with aiopool.Client(verify=client_ssl_context) as client:
        task = asyncio.create_task(pull(client))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)  # the stream reset, no slot held
        resp = await client.get(f"{hypercorn_server.url}/encoded")
        assert resp.content == BODY
        assert resp.conn_info.reused
        assert stats.connections_opened == 1


async def test_ratio_bound_can_be_raised_or_removed(server: FaultServer) -> None:
    url = f"{server.url}/bomb?size={64 * 1024 * 1024}"
    async with aiopool.Client(max_decompression_ratio=None) as client:
        async with client.stream("GET", url) as resp:
            size = sum([len(piece) async for piece in resp.aiter_bytes()])
        assert size == 64 * 1024 * 1024
        with pytest.raises(aiopool.ResponseTooLarge):  # buffering is still capped
            await client.get(url, max_response_size=32 * 1024 * 1024)
    for ratio in (0, -1, 0.5):
        with pytest.raises(ValueError, match="max_decompression_ratio"):
            aiopool.Client(max_decompression_ratio=ratio)


async def test_cancelled_while_buffering_a_decoded_body(server: FaultServer) -> None:
    # The non-streaming path: `client.get()` cancelled inside its decoding read.
    async with aiopool.Client() as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.get(f"{server.url}/endless?coding=gzip&chunk=4096&delay=0.001")
        await assert_closed(client, server)


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
async def test_bomb_memory_stays_bounded(server: FaultServer, coding: str) -> None:
    """Allocation, not just the final count: decoding a 1 GiB bomb while streaming never holds
    more than a few steps at once (an unbounded decoder would turn one 64 KiB read of the
    gzip bomb into 64 MiB, of the zstd one into 2 GiB)."""

    async def pull(client: aiopool.Client) -> None:
        async with client.stream("GET", f"{server.url}/bomb?coding={coding}") as resp:
            async for _ in resp.aiter_bytes():
                pass

    async with aiopool.Client() as client:
        await client.get(f"{server.url}/bytes/1")  # dial outside the measurement
        tracemalloc.start()
        try:
            with pytest.raises(aiopool.DecodingError, match="decompression bomb"):
                await pull(client)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * 1024 * 1024
        assert_settled(client)
