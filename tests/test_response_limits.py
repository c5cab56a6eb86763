"""`max_response_size`: the most a buffered read (`client.get()`, `response.aread()`) holds.

Against the fault server (HTTP/1.1, both parsers) and hypercorn (HTTP/2 over TLS): a body over
the limit raises `ResponseTooLarge` and its socket is closed, never drained; a Content-Length
over it fails before a byte of the body is read; the count is of decoded bytes; streaming is
not capped.
"""

from __future__ import annotations

import ssl

import pytest

import aiopool
from aiopool._config import DEFAULT_MAX_RESPONSE_SIZE
from tests.helpers import assert_settled, eventually
from tests.rig.encodings import text
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer

pytestmark = pytest.mark.both_parsers

MIB = 1024 * 1024


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def assert_closed(client: aiopool.Client, server: FaultServer) -> None:
    stats = assert_settled(client)
    assert stats.connections_closed == stats.connections_opened
    await eventually(lambda: server.open_connections() == 0)


@pytest.mark.parametrize("coding", ["identity", "gzip"])
async def test_endless_body_hits_the_limit(server: FaultServer, coding: str) -> None:
    async with aiopool.Client(max_response_size=MIB) as client:
        url = f"{server.url}/endless?coding={coding}"
        with pytest.raises(aiopool.ResponseTooLarge) as caught:
            await client.get(url)
        error = caught.value
        assert error.limit == MIB
        assert str(error.request.url) == url
        assert "max_response_size=1048576" in str(error)
        assert "client.stream()" in str(error)
        assert not isinstance(error, aiopool.TransportError)  # retrying cannot help
        await assert_closed(client, server)
        # The pool is fine afterwards.
        assert (await client.get(f"{server.url}/bytes/10")).content == b"x" * 10


async def test_the_default_limit_is_finite(server: FaultServer) -> None:
    """A server trickling without end at `await client.get()` meets the default cap."""
    assert DEFAULT_MAX_RESPONSE_SIZE == 100 * MIB
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.ResponseTooLarge) as caught:
            await client.get(f"{server.url}/endless?chunk=1048576")
        assert caught.value.limit == DEFAULT_MAX_RESPONSE_SIZE
        await assert_closed(client, server)


async def test_content_length_over_the_limit_fails_before_the_body(server: FaultServer) -> None:
    # /stall declares 1,000,000 bytes, sends 10 and goes silent: reading the body would hang
    # for the hour-long read timeout, so only a check of the head can pass this test.
    async with aiopool.Client(max_response_size=1000, timeout=3600) as client:
        with pytest.raises(aiopool.ResponseTooLarge, match="declares 1000000 bytes"):
            await client.get(f"{server.url}/stall")
        await assert_closed(client, server)


async def test_limit_counts_decoded_bytes(server: FaultServer) -> None:
    # 200,000 bytes of text are ~70 KB of gzip: under the limit on the wire, over it decoded.
    async with aiopool.Client(max_response_size=100_000) as client:
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{server.url}/encoded?coding=gzip&size=200000&chunks=4")
        await assert_closed(client, server)
        # Exactly the limit is allowed; the socket goes back to the pool.
        for _ in range(2):
            resp = await client.get(f"{server.url}/encoded?coding=gzip&size=100000")
            assert resp.content == text(100_000)
        assert resp.conn_info.reused


async def test_exactly_the_limit_and_one_more(server: FaultServer) -> None:
    async with aiopool.Client(max_response_size=5000) as client:
        assert len((await client.get(f"{server.url}/chunked/5000?chunks=7")).content) == 5000
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{server.url}/chunked/5001?chunks=7")
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{server.url}/bytes/5001")


async def test_per_request_limit_overrides_the_client(server: FaultServer) -> None:
    async with aiopool.Client(max_response_size=1000) as client:
        resp = await client.get(f"{server.url}/bytes/5000", max_response_size=None)
        assert len(resp.content) == 5000
        resp = await client.get(f"{server.url}/bytes/5000", max_response_size=5000)
        assert len(resp.content) == 5000
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{server.url}/bytes/5000")
    async with aiopool.Client(max_response_size=None) as client:
        assert len((await client.get(f"{server.url}/bytes/200000")).content) == 200_000
        with pytest.raises(aiopool.ResponseTooLarge) as caught:
            await client.get(f"{server.url}/bytes/200000", max_response_size=100)
        assert caught.value.limit == 100


async def test_streaming_is_not_capped_but_aread_is(server: FaultServer) -> None:
    async with aiopool.Client(max_response_size=1000) as client:
        async with client.stream("GET", f"{server.url}/big/300000") as resp:
            size = sum([len(chunk) async for chunk in resp.aiter_bytes()])
        assert size == 300_000
        async with client.stream("GET", f"{server.url}/bytes/5000") as resp:
            with pytest.raises(aiopool.ResponseTooLarge):
                await resp.aread()
        url = f"{server.url}/bytes/5000"
        async with client.stream("GET", url, max_response_size=None) as resp:
            assert len(await resp.aread()) == 5000
        stats = assert_settled(client)
        assert stats.connections_closed == 1  # only the one refused


async def test_head_and_bodiless_statuses_ignore_the_declared_length(server: FaultServer) -> None:
    async with aiopool.Client(max_response_size=10) as client:
        resp = await client.head(f"{server.url}/bytes/5000")
        assert resp.headers["content-length"] == "5000"
        assert resp.content == b""
        assert (await client.get(f"{server.url}/nocontent")).status_code == 204
        assert (await client.get(f"{server.url}/bytes/10")).conn_info.reused


@pytest.mark.parametrize("value", [-1, "10", 1.5, True])
async def test_invalid_limits(server: FaultServer, value: object) -> None:
    error = ValueError if value == -1 else TypeError
    with pytest.raises(error):
        aiopool.Client(max_response_size=value)  # type: ignore[arg-type]
    async with aiopool.Client() as client:
        with pytest.raises(error):
            await client.get(f"{server.url}/bytes/1", max_response_size=value)  # type: ignore[arg-type]


async def test_hypercorn_h2_limit_resets_only_the_stream(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(verify=client_ssl_context, max_response_size=MIB) as client:
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{hypercorn_server.url}/endless")
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{hypercorn_server.url}/endless?coding=gzip")
        with pytest.raises(aiopool.ResponseTooLarge, match="declares 2000000 bytes"):
            await client.get(f"{hypercorn_server.url}/bytes/2000000")
        stats = assert_settled(client)  # no h2 stream left open
        resp = await client.get(f"{hypercorn_server.url}/bytes/1000")
        assert resp.http_version == "HTTP/2"
        assert resp.conn_info.reused  # the socket carried on
        assert stats.connections_opened == 1


async def test_a_trickle_hits_the_limit(server: FaultServer) -> None:
    # 100 bytes a millisecond apart: many small reads, each under the limit, add up past it.
    async with aiopool.Client(max_response_size=20_000) as client:
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(f"{server.url}/endless?chunk=100&delay=0.001")
        await assert_closed(client, server)
