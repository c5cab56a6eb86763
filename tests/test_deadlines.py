"""Deadlines over several waits: `Timeout(total=...)` for the whole call (a trickling body, a
redirect chain, retries, `stream()`), `response_header` for the head, `tls_handshake` apart
from the TCP connect. Each raises its own `TimeoutException` subclass; the pool stays
consistent. Real servers: the fault server (HTTP/1.1), hypercorn (HTTP/2), the blackhole."""

from __future__ import annotations

import ssl
import uuid

import pytest

import aiopool
from aiopool._pool_transport import HTTP1Parser
from tests.helpers import assert_settled
from tests.rig.fault_server import BlackholeServer, FaultServer
from tests.rig.hypercorn_app import HypercornServer

# Every per-phase timeout is far above the deadline under test: only the deadline can fire.
LONG = 30.0


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> HTTP1Parser:
    value: HTTP1Parser = request.param
    return value


def test_timeout_keeps_its_one_float_form_and_checks_the_deadlines() -> None:
    timeout = aiopool.Timeout(5.0)
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (5.0,) * 4
    assert (timeout.total, timeout.response_header, timeout.tls_handshake) == (None,) * 3
    assert aiopool.Timeout.coerce(2).read == 2.0
    assert aiopool.Timeout(5, total=1).total == 1.0
    for name in ("total", "response_header", "tls_handshake"):
        with pytest.raises(ValueError, match=name):
            aiopool.Timeout(**{name: -1.0})
    assert issubclass(aiopool.TLSHandshakeTimeout, aiopool.ConnectTimeout)
    for cls in (aiopool.TotalTimeout, aiopool.ResponseHeaderTimeout):
        assert issubclass(cls, aiopool.TimeoutException)


# total -----------------------------------------------------------------------------------------


async def test_a_trickling_body_cannot_outlive_the_total(
    fresh_fault_server: FaultServer, parser: HTTP1Parser
) -> None:
    # A piece every 0.1 s: no read ever waits long, yet the whole body takes 20 s.
    url = f"{fresh_fault_server.url}/slow?chunks=200&delay=0.1"
    async with aiopool.Client(http1_parser=parser) as client:
        with pytest.raises(aiopool.TotalTimeout) as caught:
            await client.get(url, timeout=aiopool.Timeout(LONG, total=0.5))
        message = str(caught.value)
        assert "total timeout" in message
        assert "while reading the response body" in message
        assert message.startswith(f"GET {fresh_fault_server.url}")
        stats = assert_settled(client)
        assert stats.idle == 0  # cut mid-body: that socket was closed, not pooled
        # ...and the client goes on working.
        assert (await client.get(f"{fresh_fault_server.url}/bytes/3")).content == b"xxx"


async def test_the_total_covers_every_hop_of_a_redirect_chain(
    fresh_fault_server: FaultServer,
) -> None:
    # Ten hops of 0.1 s each: every one well inside the read timeout, the chain not.
    url = f"{fresh_fault_server.url}/hop/10?delay=0.1"
    async with aiopool.Client(timeout=aiopool.Timeout(LONG, total=0.5)) as client:
        with pytest.raises(aiopool.TotalTimeout) as caught:
            await client.get(url)
        assert "response head" in str(caught.value)
        hops = sum("/hop/" in line for line in fresh_fault_server.requests_seen)
        assert 2 <= hops < 11
        assert_settled(client)
        # Without the deadline the chain arrives.
        response = await client.get(
            f"{fresh_fault_server.url}/hop/3?delay=0", timeout=aiopool.Timeout(LONG)
        )
        assert response.text == "arrived\n"
        assert len(response.history) == 3


async def test_a_retry_after_beyond_the_deadline_ends_retrying(
    fresh_fault_server: FaultServer,
) -> None:
    url = f"{fresh_fault_server.url}/flaky?key={uuid.uuid4().hex}&fails=1&retry_after=5"
    policy = aiopool.Retry(statuses={503}, backoff=0)
    async with aiopool.Client(retry=policy) as client:
        response = await client.get(url, timeout=aiopool.Timeout(LONG, total=2))
        assert response.status_code == 503  # answered at once rather than sleeping past it
        assert sum("/flaky" in line for line in fresh_fault_server.requests_seen) == 1
        assert_settled(client)


async def test_the_stream_block_is_bounded_by_the_total(fresh_fault_server: FaultServer) -> None:
    url = f"{fresh_fault_server.url}/slow?chunks=200&delay=0.1"
    async with aiopool.Client() as client:
        received = 0

        async def read_all() -> None:
            nonlocal received
            async with client.stream("GET", url, timeout=aiopool.Timeout(LONG, total=0.5)) as r:
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    received += len(chunk)

        with pytest.raises(aiopool.TotalTimeout) as caught:
            await read_all()
        assert 0 < received < 2000
        assert "while reading the response body" in str(caught.value)
        assert_settled(client)


async def test_a_stream_read_after_the_deadline_fails_at_once(
    fresh_fault_server: FaultServer,
) -> None:
    # The head comes at once, the body stalls: the block's read is cut off by the deadline,
    # not by the 30 s read timeout.
    url = f"{fresh_fault_server.url}/stall?sent=10"
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.TotalTimeout):
            async with client.stream("GET", url, timeout=aiopool.Timeout(LONG, total=0.3)) as r:
                await r.aread()
        assert_settled(client)
        # A block whose body is read in time is not affected.
        async with client.stream(
            "GET", f"{fresh_fault_server.url}/bytes/5", timeout=aiopool.Timeout(LONG, total=LONG)
        ) as r:
            assert await r.aread() == b"xxxxx"
        assert assert_settled(client).idle == 1


# response_header -------------------------------------------------------------------------------


async def test_a_trickling_head_hits_the_response_header_timeout(
    fresh_fault_server: FaultServer, parser: HTTP1Parser
) -> None:
    # A header line every 0.1 s for 5 s: each read is quick, the head is not.
    url = f"{fresh_fault_server.url}/trickle-head?lines=50&delay=0.1"
    timeout = aiopool.Timeout(LONG, response_header=0.4)
    async with aiopool.Client(http1_parser=parser, timeout=timeout) as client:
        with pytest.raises(aiopool.ResponseHeaderTimeout) as caught:
            await client.get(url)
        assert "response_header timeout" in str(caught.value)
        assert_settled(client)
        # A head in time: the body is not under this limit.
        response = await client.get(f"{fresh_fault_server.url}/slow?chunks=6&delay=0.1")
        assert len(response.content) == 60


async def test_the_response_header_timeout_over_http2(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    timeout = aiopool.Timeout(LONG, response_header=0.3)
    async with aiopool.Client(verify=client_ssl_context, timeout=timeout) as client:
        with pytest.raises(aiopool.ResponseHeaderTimeout):
            await client.get(f"{hypercorn_server.url}/late?s=3")
        stats = assert_settled(client)
        assert stats.connections_closed == 0  # only the stream was reset
        response = await client.get(f"{hypercorn_server.url}/echo?id=after")
        assert response.http_version == "HTTP/2"
        assert response.conn_info.reused


# tls_handshake ---------------------------------------------------------------------------------


async def test_a_hanging_tls_handshake_hits_its_own_timeout(blackhole: BlackholeServer) -> None:
    timeout = aiopool.Timeout(LONG, tls_handshake=0.3)
    async with aiopool.Client(timeout=timeout) as client:
        with pytest.raises(aiopool.TLSHandshakeTimeout) as caught:
            await client.get(blackhole.https_url)
        assert "TLS handshake timeout" in str(caught.value)
        assert_settled(client)


async def test_the_tls_handshake_timeout_applies_when_traced(blackhole: BlackholeServer) -> None:
    events: list[aiopool.TraceEvent] = []
    timeout = aiopool.Timeout(LONG, tls_handshake=0.3)
    async with aiopool.Client(timeout=timeout, trace=events.append) as client:
        with pytest.raises(aiopool.TLSHandshakeTimeout):
            await client.get(blackhole.https_url)
    names = [e.name for e in events]
    assert "connect_done" in names
    (done,) = [e for e in events if e.name == "tls_handshake_done"]
    assert isinstance(done.info["error"], aiopool.TLSHandshakeTimeout)
