"""`aiopool.Transport`, `aiopool.PoolTransport` and `aiopool.Client(dialer=...)`, through the
public API, against the real servers of the rig.

The pattern Go services use on their `http.RoundTripper`, an instrumented transport wrapping
the default one to count requests in flight and time them, written here as a user would:
over HTTP/1.1 (the fault server), and over HTTP/2 (hypercorn and nginx, TLS with ALPN).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.mock_backend import MockDialer, MockStream, response
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx


@dataclass
class Metrics:
    in_flight: int = 0
    max_in_flight: int = 0
    durations: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Instrumented(aiopool.Transport):
    """Counts requests in flight and times each until its response head (Go's
    `promhttp.InstrumentRoundTripperInFlight` and `...Duration`)."""

    def __init__(self, inner: aiopool.Transport) -> None:
        self.inner = inner
        self.metrics = Metrics()
        self.closed = False

    async def handle_request(self, request: aiopool.Request) -> aiopool.Response:
        metrics = self.metrics
        loop = asyncio.get_running_loop()
        started = loop.time()
        metrics.in_flight += 1
        metrics.max_in_flight = max(metrics.max_in_flight, metrics.in_flight)
        try:
            response = await self.inner.handle_request(request)
        except aiopool.TransportError as exc:
            metrics.errors.append(type(exc).__name__)
            raise
        finally:
            metrics.in_flight -= 1
            metrics.durations.append(loop.time() - started)
        metrics.statuses.append(response.status_code)
        return response

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def pool_settled(transport: aiopool.PoolTransport) -> aiopool.PoolStats:
    stats = transport.stats()
    for origin, host in stats.hosts.items():
        assert (host.active, host.connecting, host.waiting, host.streams) == (0, 0, 0, 0), origin
    return stats


# A user's transport around the pool ----------------------------------------------------------


async def test_an_instrumented_transport_over_http11(fresh_fault_server: FaultServer) -> None:
    pool = aiopool.PoolTransport(max_connections_per_host=4)
    transport = Instrumented(pool)
    async with aiopool.Client(transport=transport) as client:
        assert client.transport is transport
        url = fresh_fault_server.url
        responses = await asyncio.gather(*(client.get(f"{url}/echo?id={i}") for i in range(20)))
        assert [r.json()["id"] for r in responses] == [str(i) for i in range(20)]
        async with client.stream("GET", f"{url}/bytes/100000") as streamed:
            # Counted until the head: the body still streams.
            assert transport.metrics.in_flight == 0
            assert len(await streamed.aread()) == 100_000
        with pytest.raises(aiopool.RemoteProtocolError) as caught:
            await client.get(f"{url}/malformed-status")
        assert caught.value.request is not None
        metrics = transport.metrics
        assert metrics.in_flight == 0
        assert 1 <= metrics.max_in_flight <= 20
        assert len(metrics.durations) == 22
        assert all(d >= 0 for d in metrics.durations)
        assert metrics.statuses == [200] * 21
        assert metrics.errors == ["RemoteProtocolError"]
        stats = pool_settled(pool)
        assert client.stats() == aiopool.PoolStats(  # a wrapper keeps no pool books itself
            requests=0, connections_opened=0, connections_closed=0, reused=0
        )
    assert stats.requests == 22
    assert stats.connections_opened <= 5  # 4 per host, the malformed response's own
    assert transport.closed and pool.is_closed
    assert fresh_fault_server.connections_accepted == stats.connections_opened


@pytest.fixture(params=["hypercorn", "nginx"])
def h2_url(request: pytest.FixtureRequest) -> str:
    if request.param == "hypercorn":
        server: HypercornServer = request.getfixturevalue("hypercorn_server")
        return server.url
    nginx: Nginx = request.getfixturevalue("nginx")
    return nginx.https_url


async def test_an_instrumented_transport_over_http2(h2_url: str, ca_path: str) -> None:
    pool = aiopool.PoolTransport(verify=ca_path)
    transport = Instrumented(pool)
    async with aiopool.Client(transport=transport) as client:
        first = await client.get(f"{h2_url}/echo?id=first")
        assert first.http_version == "HTTP/2"
        responses = await asyncio.gather(*(client.get(f"{h2_url}/echo?id={i}") for i in range(20)))
        assert [r.text.strip() for r in responses] == [str(i) for i in range(20)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        async with client.stream("GET", f"{h2_url}/echo?id=streamed") as streamed:
            assert transport.metrics.in_flight == 0
            assert pool.stats().hosts[str(streamed.request.url.origin)].streams == 1
            assert (await streamed.aread()).strip() == b"streamed"
        stats = pool_settled(pool)
    metrics = transport.metrics
    assert (metrics.in_flight, len(metrics.durations), metrics.statuses) == (0, 22, [200] * 22)
    assert metrics.max_in_flight >= 1
    assert stats.requests == 22
    assert stats.connections_opened == 1  # every stream multiplexed on the first socket
    assert pool.is_closed


async def test_the_pool_transport_given_to_a_client(fresh_fault_server: FaultServer) -> None:
    pool = aiopool.PoolTransport(max_connections_per_host=2)
    async with aiopool.Client(transport=pool, headers={"X-App": "1"}) as client:
        responses = await asyncio.gather(
            *(client.get(f"{fresh_fault_server.url}/echo") for _ in range(6))
        )
        assert len({r.json()["conn"] for r in responses}) == 2
        stats = assert_settled(client)  # client.stats() is the given pool's
        assert (stats.requests, stats.connections_opened) == (6, 2)
    assert pool.is_closed


async def test_the_pool_transport_directly(fresh_fault_server: FaultServer) -> None:
    async with aiopool.PoolTransport() as transport:
        request = aiopool.Request("POST", f"{fresh_fault_server.url}/echo", content=b"hi")
        response = await transport.handle_request(request)
        assert response.request is request
        assert response.conn_info.reused is False
        assert not response.is_closed  # a transport returns the body unread
        echoed = json.loads(await response.aread())
        assert response.is_closed
        # What every request carries, added to one built by hand: Host (RFC 9112 section
        # 3.2), first, and the body's framing.
        assert echoed["headers"] == [
            ["host", f"127.0.0.1:{fresh_fault_server.port}"],
            ["content-length", "2"],
        ]
        assert echoed["body"] == "hi"

        async def chunks() -> AsyncIterator[bytes]:
            yield b"streamed "
            yield b"body"

        # Framed as the client would: chunked for a stream (Content-Length above).
        streamed = aiopool.Request("PUT", f"{fresh_fault_server.url}/echo", content=chunks())
        assert streamed.headers["transfer-encoding"] == "chunked"
        again = await transport.handle_request(streamed)
        assert again.conn_info.reused is True
        assert b'"body": "streamed body"' in await again.aread()
        pool_settled(transport)
    with pytest.raises(aiopool.ClientClosed):
        await transport.handle_request(aiopool.Request("GET", fresh_fault_server.url))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_pool_transports_errors_carry_the_request() -> None:
    url = f"http://127.0.0.1:{_closed_port()}/x"
    async with aiopool.PoolTransport() as transport:
        request = aiopool.Request("GET", url)
        with pytest.raises(aiopool.ConnectError) as caught:
            await transport.handle_request(request)
        assert caught.value.request is request
        pool_settled(transport)


# The network seam: Client(dialer=...) -------------------------------------------------------------


async def test_a_scripted_dialer_serves_the_client() -> None:
    dialer = MockDialer([[response(b"hello", (b"X-Scripted", b"1")), response(b"again")]])
    async with aiopool.Client(dialer=dialer) as client:
        first = await client.get("http://scripted.test/a")
        second = await client.post("http://scripted.test/b", content=b"body")
        assert (first.content, first.headers["x-scripted"]) == (b"hello", "1")
        assert (second.content, second.conn_info.reused) == (b"again", True)
        assert_settled(client)
    [stream] = dialer.streams
    written = bytes(stream.written)
    assert written.startswith(b"GET /a HTTP/1.1\r\n")
    assert b"POST /b HTTP/1.1\r\n" in written and written.endswith(b"\r\n\r\nbody")
    assert b"\r\nhost: scripted.test\r\n" in written.lower()
    assert stream.closed  # the client's close closed the socket


@dataclass
class Call:
    host: str
    port: int
    tls: bool
    server_hostname: str | None
    timeout: float | None


class Refusing:
    """A dialer recording what it was asked to open, and failing as told."""

    def __init__(self, error: BaseException) -> None:
        self.calls: list[Call] = []
        self.error = error

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> MockStream:  # (never returns)
        self.calls.append(Call(host, port, ssl_context is not None, server_hostname, timeout))
        raise self.error


async def test_a_dialer_is_asked_for_the_origin_with_its_tls_and_timeout() -> None:
    dialer = Refusing(aiopool.ConnectError("no route"))
    async with aiopool.Client(dialer=dialer, timeout=aiopool.Timeout(5, connect=2)) as client:
        with pytest.raises(aiopool.ConnectError, match="no route") as caught:
            await client.get("https://api.test/x")
        assert caught.value.request is not None
        assert caught.value.request.url.host == "api.test"
        with pytest.raises(aiopool.ConnectError):
            await client.get("http://api.test:8080/")
        assert_settled(client)
    assert dialer.calls == [
        Call("api.test", 443, True, "api.test", 2.0),
        Call("api.test", 8080, False, "api.test", 2.0),
    ]


async def test_a_dialers_own_exception_becomes_a_connect_error() -> None:
    dialer = Refusing(OSError(113, "No route to host"))
    async with aiopool.Client(dialer=dialer) as client:
        with pytest.raises(aiopool.ConnectError) as caught:
            await client.get("http://api.test/")
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.request is not None
        assert_settled(client)


async def test_a_dialer_is_traced(fresh_fault_server: FaultServer) -> None:
    events: list[str] = []
    dialer = MockDialer([[response(b"ok")]])
    async with aiopool.Client(dialer=dialer, trace=lambda e: events.append(e.name)) as client:
        await client.get("http://scripted.test/")
    assert events[:3] == ["get_conn", "connect_start", "connect_done"]
    assert "got_conn" in events


def test_a_dialer_with_a_transport_is_refused() -> None:
    mock = aiopool.MockTransport(lambda request: aiopool.Response(200))
    with pytest.raises(TypeError, match="dialer configure the default PoolTransport"):
        aiopool.Client(transport=mock, dialer=MockDialer([]))
