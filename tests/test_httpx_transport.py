"""`aiopool.integrations.httpx.AiopoolTransport`: httpx's public API over aiopool's pool.

Everything here goes through `httpx.AsyncClient` as an httpx user would; aiopool shows only in
the transport's construction and in `client.stats()`, where reuse and leaks are visible. Servers:
the fault server (HTTP/1.1, hostile answers), nginx (h2 over TLS), hypercorn (h2 over TLS, a
Python peer), tinyproxy and the black hole (timeouts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest

import aiopool
from tests.conftest import _running_under_ci
from tests.helpers import assert_settled, cancellation_storm, eventually
from tests.rig import encodings
from tests.rig.fault_server import BlackholeServer, FaultServer, pattern
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx
from tests.rig.proxy import Tinyproxy, find_tinyproxy

httpx = pytest.importorskip("httpx")

from aiopool.integrations.httpx import AiopoolTransport  # noqa: E402  (needs httpx)


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


# Requests and responses --------------------------------------------------------------------------


async def test_get_post_and_stream_over_http11(server: FaultServer) -> None:
    transport = AiopoolTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        resp = await client.get("/echo", params={"id": "one"})
        assert resp.status_code == 200
        assert resp.http_version == "HTTP/1.1"
        assert resp.reason_phrase == "OK"
        assert resp.headers["content-type"] == "application/json"
        echoed = resp.json()
        assert (echoed["id"], echoed["method"]) == ("one", "GET")
        sent = {name.lower(): value for name, value in echoed["headers"]}
        assert sent["user-agent"].startswith("python-httpx/")  # httpx's headers, not ours

        posted = (await client.post("/echo", content=b"whole body")).json()
        assert posted["body"] == "whole body"
        streamed = (await client.post("/echo", content=chunks(b"in ", b"pieces"))).json()
        assert streamed["body"] == "in pieces"
        assert {n.lower(): v for n, v in streamed["headers"]}["transfer-encoding"] == "chunked"
        form = (await client.post("/echo", data={"a": "1"})).json()
        assert form["body"] == "a=1"

        async with client.stream("GET", "/chunked/300000?chunks=7") as resp:
            received = b"".join([piece async for piece in resp.aiter_bytes()])
        assert received == pattern(300_000)

        stats = assert_settled(transport.client)
        # One socket carried all five requests: the pool, not a socket per request.
        assert (stats.requests, stats.connections_opened, stats.reused) == (5, 1, 4)
        assert server.connections_accepted == 1
    assert transport.client.is_closed  # the transport made the client, so it closed it


async def test_a_shared_client_is_used_but_not_closed(server: FaultServer) -> None:
    async with aiopool.Client() as pool:
        await pool.get(f"{server.url}/echo")
        async with httpx.AsyncClient(transport=AiopoolTransport(pool)) as client:
            resp = await client.get(f"{server.url}/echo")
            assert resp.json()["request_no"] == 2  # the socket aiopool's own request opened
        assert not pool.is_closed
        assert (await pool.get(f"{server.url}/echo")).conn_info.reused
        assert pool.stats().connections_opened == 1


async def test_the_transport_api_directly(server: FaultServer) -> None:
    # httpx's transport contract, without an httpx client: no timeout extension (the aiopool
    # client's applies), the stream read by hand, then closed.
    async with AiopoolTransport(timeout=5) as transport:
        assert repr(transport).startswith("<AiopoolTransport owned <aiopool.Client")
        request = httpx.Request("GET", f"{server.url}/echo?id=direct")
        response = await transport.handle_async_request(request)
        try:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            body = b"".join([chunk async for chunk in response.stream])
        finally:
            await response.aclose()
        assert json.loads(body)["id"] == "direct"
        assert response.extensions["http_version"] == b"HTTP/1.1"
        assert response.extensions["reason_phrase"] == b"OK"
        assert assert_settled(transport.client).idle == 1

        # A synchronous body cannot be sent by an asynchronous transport: refused, unsent.
        sync_body = httpx.Request("POST", f"{server.url}/echo", content=iter([b"a"]))
        with pytest.raises(TypeError, match="async iterable"):
            await transport.handle_async_request(sync_body)
        assert transport.client.stats().requests == 1
    assert transport.client.is_closed


def test_client_and_options_are_exclusive() -> None:
    with pytest.raises(TypeError, match="not both"):
        AiopoolTransport(aiopool.Client(), max_connections=3)


async def test_http2_through_nginx_multiplexes(nginx: Nginx, ca_path: str) -> None:
    transport = AiopoolTransport(verify=ca_path)
    async with httpx.AsyncClient(transport=transport) as client:
        url = f"{nginx.https_url}/1m.bin"
        responses = await asyncio.gather(*(client.get(url) for _ in range(6)))
        expected = nginx.file_bytes("1m.bin")
        assert all(r.content == expected for r in responses)
        assert {r.http_version for r in responses} == {"HTTP/2"}
        stats = assert_settled(transport.client)
        assert (stats.requests, stats.connections_opened) == (6, 1)
        again = await client.get(f"{nginx.https_url}/small.txt")
        assert again.text == "Hello, world\n"
        assert transport.client.stats().reused >= 1


async def test_http2_upload_through_hypercorn(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    body = random.Random(7).randbytes(300_000)
    transport = AiopoolTransport(verify=client_ssl_context)
    async with httpx.AsyncClient(transport=transport, base_url=hypercorn_server.url) as client:
        whole = await client.post("/upload", content=body)
        pieces = await client.post(
            "/upload", content=chunks(body[:100_000], body[100_000:200_000], body[200_000:])
        )
        for resp in (whole, pieces):
            assert resp.http_version == "HTTP/2"
            assert resp.headers["x-http-version"] == "2"
            assert resp.content == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        assert assert_settled(transport.client).connections_opened == 1


# Errors ------------------------------------------------------------------------------------------


async def test_timeouts_map_to_httpx_timeouts(
    server: FaultServer, blackhole: BlackholeServer
) -> None:
    # httpx's timeout (0.2 s) overrides the aiopool client's (30 s): the test would hang if not.
    async with httpx.AsyncClient(transport=AiopoolTransport(), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout) as waited_for_head:
            await client.get(f"{server.url}/stall-headers")
        assert isinstance(waited_for_head.value.__cause__, aiopool.ReadTimeout)
        assert waited_for_head.value.request.url.path == "/stall-headers"

        async with client.stream("GET", f"{server.url}/stall?sent=10") as resp:
            with pytest.raises(httpx.ReadTimeout):
                await resp.aread()

        # The black hole accepts TCP but never answers a TLS ClientHello. (A request waits in
        # the pool while its socket is dialed: the pool timeout must be the longer one here.)
        with pytest.raises(httpx.ConnectTimeout) as handshake:
            await client.get(blackhole.https_url, timeout=httpx.Timeout(0.2, pool=5))
        assert isinstance(handshake.value.__cause__, aiopool.ConnectTimeout)

        # ... nor reads: a large body fills the socket buffers and the write times out.
        endless = chunks(*[b"w" * 1024 * 1024] * 256)
        with pytest.raises(httpx.WriteTimeout):
            await client.post(f"{blackhole.url}/", content=endless)


async def test_pool_timeout(server: FaultServer) -> None:
    transport = AiopoolTransport(max_connections_per_host=1)
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        async with client.stream("GET", "/bytes/10"):  # holds the only connection
            with pytest.raises(httpx.PoolTimeout) as exc_info:
                await client.get("/echo", timeout=httpx.Timeout(5, pool=0.1))
        assert isinstance(exc_info.value.__cause__, aiopool.PoolTimeout)
        assert (await client.get("/echo")).status_code == 200
        assert_settled(transport.client)


@pytest.mark.parametrize("path", ["/malformed-status", "/garbage", "/bad-header"])
async def test_malformed_response_is_remote_protocol_error(server: FaultServer, path: str) -> None:
    transport = AiopoolTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        with pytest.raises(httpx.RemoteProtocolError) as exc_info:
            await client.get(path)
        assert isinstance(exc_info.value.__cause__, aiopool.RemoteProtocolError)
        stats = assert_settled(transport.client)
        assert (stats.idle, stats.connections_closed) == (0, 1)  # discarded, not pooled
        assert (await client.get("/echo")).status_code == 200


async def test_errors_while_streaming_the_body(server: FaultServer) -> None:
    transport = AiopoolTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/truncated?declared=1000&sent=500")
        with pytest.raises(httpx.ReadError) as reset:
            await client.get("/reset-mid-body")
        assert isinstance(reset.value.__cause__, aiopool.ReadError)
        stats = assert_settled(transport.client)
        assert (stats.idle, stats.connections_closed) == (0, 2)


async def test_connect_errors_and_unsupported_urls() -> None:
    with FaultServer() as gone:
        url = gone.url  # nobody listens there once the server stops
    async with httpx.AsyncClient(transport=AiopoolTransport()) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get(url)
        assert isinstance(refused.value.__cause__, aiopool.ConnectError)
        with pytest.raises(httpx.UnsupportedProtocol) as unsupported:
            await client.get("ftp://127.0.0.1/")
        assert isinstance(unsupported.value.__cause__, aiopool.InvalidURL)


async def test_untrusted_certificate_is_connect_error(nginx: Nginx) -> None:
    async with httpx.AsyncClient(transport=AiopoolTransport()) as client:
        with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
            await client.get(f"{nginx.https_url}/small.txt")


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[Tinyproxy]:
    if find_tinyproxy() is None:
        if _running_under_ci():
            pytest.fail("tinyproxy is required under CI (CI is set); .ci/run installs it")
        pytest.skip("tinyproxy not installed")
    with Tinyproxy(auth=("user", "secret")) as proxy:
        yield proxy


async def test_proxy_through_aiopool_and_proxy_errors(
    tinyproxy: Tinyproxy, nginx: Nginx, ca_path: str
) -> None:
    proxied = AiopoolTransport(proxy=tinyproxy.url, verify=ca_path)
    async with httpx.AsyncClient(transport=proxied) as client:
        resp = await client.get(f"{nginx.https_url}/small.txt")
        assert (resp.text, resp.http_version) == ("Hello, world\n", "HTTP/2")
    assert f"CONNECT localhost:{nginx.https_port} HTTP/1.1" in tinyproxy.log()

    anonymous = f"http://127.0.0.1:{tinyproxy.port}"
    refused = AiopoolTransport(proxy=anonymous, verify=ca_path)  # no credentials: 407
    async with httpx.AsyncClient(transport=refused) as client:
        with pytest.raises(httpx.ProxyError, match="407") as exc_info:
            await client.get(f"{nginx.https_url}/small.txt")
        assert isinstance(exc_info.value.__cause__, aiopool.ProxyError)
        assert_settled(refused.client)


async def test_a_closed_shared_client_is_a_runtime_error(server: FaultServer) -> None:
    pool = aiopool.Client()
    await pool.aclose()
    async with httpx.AsyncClient(transport=AiopoolTransport(pool)) as client:
        with pytest.raises(RuntimeError, match="closed"):
            await client.get(f"{server.url}/echo")


# Releasing connections ---------------------------------------------------------------------------


async def test_early_close_of_a_streamed_response_releases_the_socket(server: FaultServer) -> None:
    others = server.open_connections()  # the session's server: sockets of earlier tests
    transport = AiopoolTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        # A small unread rest is drained, and the socket pooled for the next request.
        async with client.stream("GET", "/slow?chunks=2&delay=0.01") as resp:
            assert resp.status_code == 200
        stats = assert_settled(transport.client)
        assert (stats.idle, stats.connections_closed) == (1, 0)
        assert (await client.get("/echo")).json()["request_no"] == 2

        # A large rest is not worth draining: the socket is closed, the lease released.
        async with client.stream("GET", "/big/20000000") as resp:
            async for first in resp.aiter_raw():
                assert first == pattern(len(first))
                break
        stats = assert_settled(transport.client)
        assert (stats.idle, stats.connections_closed) == (0, 1)
        # ... really closed: the server sees it go.
        await eventually(lambda: server.open_connections() <= others)


async def test_break_out_of_httpx_iteration_drains_and_reuses(server: FaultServer) -> None:
    # httpx's `aiter_bytes()` wraps ours in generators of its own; a `break` abandons them all,
    # and their late finalisation must not abort the drain httpx's close starts.
    transport = AiopoolTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        for _ in range(3):
            async with client.stream("GET", "/slow?chunks=4&size=16384&delay=0.002") as resp:
                async for chunk in resp.aiter_bytes():
                    assert chunk
                    break
        stats = assert_settled(transport.client)
        assert (stats.idle, stats.connections_closed) == (1, 0)
        assert (await client.get("/echo")).json()["request_no"] == 4
    assert server.connections_accepted == 1


async def test_early_close_over_http2_resets_only_the_stream(nginx: Nginx, ca_path: str) -> None:
    transport = AiopoolTransport(verify=ca_path)
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{nginx.https_url}/10m.bin") as resp:
            assert resp.http_version == "HTTP/2"
            async for _ in resp.aiter_raw():
                break
        stats = assert_settled(transport.client)
        assert stats.connections_closed == 0
        resp = await client.get(f"{nginx.https_url}/small.txt")
        assert resp.text == "Hello, world\n"
        assert transport.client.stats().connections_opened == 1  # the socket survived


async def test_cancellation_leaves_the_pool_settled(server: FaultServer) -> None:
    transport = AiopoolTransport(max_connections_per_host=3)
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:

        async def one(i: int) -> None:
            if i % 2:
                await client.get(f"/delay?s=0.05&id={i}")
            else:
                async with client.stream("GET", "/slow?chunks=4&delay=0.02") as resp:
                    await resp.aread()

        errors = await cancellation_storm(
            one, tasks=30, cancels=12, max_pause=0.03, rng=random.Random(11)
        )
        assert all(isinstance(e, asyncio.CancelledError) for e in errors)
        stats = assert_settled(transport.client)
        assert stats.connections_opened <= 3 + stats.connections_closed
        assert (await client.get("/echo?id=after")).json()["id"] == "after"


async def test_cancellation_over_http2_resets_streams_not_the_socket(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    transport = AiopoolTransport(verify=client_ssl_context)
    async with httpx.AsyncClient(transport=transport, base_url=hypercorn_server.url) as client:

        async def one(i: int) -> None:
            async with client.stream("GET", "/slow?chunks=3&delay=0.02") as resp:
                assert resp.http_version == "HTTP/2"
                await resp.aread()

        errors = await cancellation_storm(
            one, tasks=20, cancels=8, max_pause=0.02, rng=random.Random(5)
        )
        assert all(isinstance(e, asyncio.CancelledError) for e in errors)
        stats = assert_settled(transport.client)  # no stream left open
        assert (stats.connections_opened, stats.connections_closed) == (1, 0)
        assert (await client.get("/echo?id=after")).text == "after"


# httpx's own features on top -----------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate"])
async def test_httpx_decodes_on_top_of_the_raw_body(server: FaultServer, coding: str) -> None:
    header, wire = encodings.encode(encodings.text(20_000), [coding])
    async with httpx.AsyncClient(transport=AiopoolTransport(), base_url=server.url) as client:
        url = f"/encoded?coding={coding}&size=20000&chunks=3"
        resp = await client.get(url)
        # httpx decoded it, once: the transport handed over the bytes as sent.
        assert resp.headers["content-encoding"] == header
        assert resp.content == encodings.text(20_000)
        async with client.stream("GET", url) as streamed:
            assert b"".join([piece async for piece in streamed.aiter_raw()]) == wire


async def test_httpx_follows_redirects_over_the_pool(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    transport = AiopoolTransport(verify=client_ssl_context)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        resp = await client.get(f"{hypercorn_server.url}/chain/3?mode=rel")
        assert [r.status_code for r in resp.history] == [302, 302, 302]
        assert resp.json()["path"] == "/chain/0"
        assert {r.http_version for r in [*resp.history, resp]} == {"HTTP/2"}
        stats = assert_settled(transport.client)
        # Four requests, one socket: each hop httpx made was a stream on the pooled socket.
        assert (stats.requests, stats.connections_opened) == (4, 1)
