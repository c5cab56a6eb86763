"""The pool against real servers other than nginx: Apache httpd (mod_http2), caddy, h2o, nghttpd
and node's http2 module, over every protocol each speaks (HTTP/1.1 over TLS, HTTP/2 over TLS,
h2c by prior knowledge), through the public API only.

Each case runs once per (server, protocol); the HTTP/2 ones once per HTTP/2 engine (h2,
native).
The servers are started once per session (tests/rig/fixtures.py) and serve the same files
(tests/rig/_process.py: BODIES).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import pytest

import aiopool
from tests.helpers import assert_settled, cancellation_storm, eventually
from tests.rig._process import Endpoint, ProcessServer
from tests.rig.apache import Apache
from tests.rig.fixtures import SERVERS

_MAX_PER_HOST: Final = 10
_UPLOAD: Final = random.Random("upload").randbytes(5 * 1024 * 1024)
_UPLOAD_SHA256: Final = hashlib.sha256(_UPLOAD).hexdigest()


@dataclass(frozen=True)
class Target:
    """One server reached over one protocol."""

    server: ProcessServer
    endpoint: Endpoint

    @property
    def url(self) -> str:
        return self.endpoint.url

    def client(self, ca_path: str) -> aiopool.Client:
        return aiopool.Client(
            verify=ca_path,
            http1=self.endpoint.http1,
            http2=self.endpoint.http2,
            max_connections_per_host=_MAX_PER_HOST,
            timeout=30,
        )

    def body(self, name: str) -> bytes:
        return self.server.docroot.read(name)


def _params(*, limited: bool) -> list[object]:
    params: list[object] = []
    for name, kind in SERVERS.items():
        for protocol in kind.LIMITED if limited else kind.PROTOCOLS:
            engines = ["h2", "native"] if protocol != "h1-tls" else [None]
            for engine in engines:
                params.append(
                    pytest.param(
                        (name, protocol),
                        engine,
                        id="-".join(filter(None, (name, protocol, engine))),
                        marks=getattr(pytest.mark, name),
                    )
                )
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The HTTP/2 engine matters only where HTTP/2 is spoken: the HTTP/1.1 cases run once.
    for fixture in ("target", "limited_target"):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(
                (fixture, "http2_engine"),
                _params(limited=fixture == "limited_target"),
                indirect=True,
            )


def _target(request: pytest.FixtureRequest) -> Target:
    name, protocol = request.param
    server = request.getfixturevalue(name)
    assert isinstance(server, ProcessServer)
    return Target(server, server.endpoints()[protocol])


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Target:
    return _target(request)


@pytest.fixture
def limited_target(request: pytest.FixtureRequest) -> Target:
    """A target whose server ends each connection after ``endpoint.limit`` requests."""
    return _target(request)


def _check_counts(host: aiopool.HostStats, responses: list[aiopool.Response], total: int) -> None:
    """The host's counters agree with what the responses say about their sockets."""
    assert host.requests == len(responses) == total
    assert host.reused == sum(r.conn_info.reused for r in responses)
    assert len({r.conn_info.id for r in responses}) <= host.opened
    if responses[0].http_version == "HTTP/1.1":
        # Every request dialed its socket or reused one (a dial overtaken by late binding
        # adds an opened socket whose first request then counts as reused: hence >=). Over
        # HTTP/2 the streams that share a socket before it carried a request are neither
        # (docs/http2.md), so there is no such sum.
        assert host.opened + host.reused >= total, host


async def test_fan_out(target: Target, ca_path: str) -> None:
    """200 gathered GETs: all answered, over one or two HTTP/2 sockets (the servers allow 100+
    concurrent streams) or at most max_connections_per_host HTTP/1.1 sockets."""
    async with target.client(ca_path) as client:
        responses = await asyncio.gather(*(client.get(f"{target.url}/small") for _ in range(200)))
        assert {r.status_code for r in responses} == {200}
        assert {r.content for r in responses} == {target.body("small")}
        assert {r.http_version for r in responses} == {target.endpoint.http_version}
        # A second HTTP/2 socket dialed while the first was full may still be connecting.
        await eventually(lambda: client.stats().connecting == 0)
        host = assert_settled(client).hosts[target.url]
        _check_counts(host, responses, 200)
        limit = 2 if target.endpoint.http_version == "HTTP/2" else _MAX_PER_HOST
        assert 1 <= host.opened <= limit, host


async def test_10mb_download(target: Target, ca_path: str) -> None:
    async with target.client(ca_path) as client:
        resp = await client.get(f"{target.url}/10m.bin")
        assert resp.status_code == 200
        assert resp.http_version == target.endpoint.http_version
        assert len(resp.content) == 10 * 1024 * 1024
        assert hashlib.sha256(resp.content).hexdigest() == target.server.docroot.sha256("10m.bin")
        assert_settled(client)


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("body", ["bytes", "async-iterator"])
async def test_5mb_upload(target: Target, ca_path: str, body: str) -> None:
    """POST 5 MB (Content-Length, or chunked / DATA frames without a length from an async
    iterator): the server shows it received every byte, by count and sha256 or by sending the
    body back."""
    content = _UPLOAD if body == "bytes" else _chunks(_UPLOAD)
    async with target.client(ca_path) as client:
        resp = await client.post(f"{target.url}/upload", content=content)
        assert resp.status_code == 200
        assert resp.http_version == target.endpoint.http_version
        if target.endpoint.upload_proof == "echo":
            assert len(resp.content) == len(_UPLOAD)
            assert hashlib.sha256(resp.content).hexdigest() == _UPLOAD_SHA256
        else:
            assert resp.text == f"{len(_UPLOAD)} {_UPLOAD_SHA256}"
        assert_settled(client)


async def test_requests_beyond_the_per_connection_limit(
    limited_target: Target, ca_path: str
) -> None:
    """The server ends each connection after `limit` requests (HTTP/1.1: Connection: close;
    HTTP/2: GOAWAY): three times as many requests, a few in flight at once, all succeed on a
    succession of sockets."""
    endpoint = limited_target.endpoint
    assert endpoint.limited_url is not None and endpoint.limit is not None
    total = endpoint.limit * 3 + 5
    responses_seen: list[aiopool.Response] = []
    async with limited_target.client(ca_path) as client:
        for batch in range(0, total, 4):
            responses = await asyncio.gather(
                *(client.get(f"{endpoint.limited_url}/small") for _ in range(min(4, total - batch)))
            )
            assert {r.content for r in responses} == {limited_target.body("small")}
            assert {r.http_version for r in responses} == {endpoint.http_version}
            responses_seen.extend(responses)
        await eventually(lambda: client.stats().connecting == 0)
        host = assert_settled(client).hosts[endpoint.limited_url]
        _check_counts(host, responses_seen, total)
        assert host.opened >= 3, host


async def test_early_close_of_a_10mb_stream(target: Target, ca_path: str) -> None:
    """Leaving `client.stream()` after the first chunk of 10 MB closes (HTTP/1.1) or resets
    (HTTP/2) the response; nothing stays leased, no stream stays open, the next request works
    (over HTTP/2 on the same socket: RST_STREAM freed the slot)."""
    async with target.client(ca_path) as client:
        async with client.stream("GET", f"{target.url}/10m.bin") as resp:
            assert resp.status_code == 200
            async for chunk in resp.aiter_bytes():
                assert chunk == target.body("10m.bin")[: len(chunk)]
                break
        first = resp.conn_info
        assert_settled(client)
        again = await client.get(f"{target.url}/small")
        assert again.content == target.body("small")
        if target.endpoint.http_version == "HTTP/2":
            assert again.conn_info.id == first.id and again.conn_info.reused
        stats = assert_settled(client)
        assert stats.hosts[target.url].streams == 0


async def test_partial_read_then_reuse(target: Target, ca_path: str) -> None:
    """Break out of `aiter_bytes()` on a 200 KB body and leave the block: the rest is drained
    (HTTP/1.1; within the drain bound) or the stream reset (HTTP/2), and the socket serves the
    next request."""
    async with target.client(ca_path) as client:
        async with client.stream("GET", f"{target.url}/200k.bin") as resp:
            async for _chunk in resp.aiter_bytes():
                break
        assert_settled(client)
        again = await client.get(f"{target.url}/small")
        assert again.content == target.body("small")
        assert again.conn_info.reused, again.conn_info
        assert again.conn_info.id == resp.conn_info.id
        assert_settled(client)


# mod_http2 (Apache 2.4) races a client's RST_STREAM against the response it is submitting for
# that stream: nghttp2 refuses the HEADERS ("Stream was already closed", logged as AH10509 at
# http2:debug, which the rig enables), and mod_http2 takes that for a protocol error: it ends the
# connection, with a GOAWAY whose error code is nghttp2's internal -902
# (NGHTTP2_ERR_CALLBACK_FAILURE) as an unsigned 32-bit value, or by closing it outright. Requests
# whose responses were under way on it fail (those it never processed are replayed); nothing a
# client does but not cancelling avoids it. Those failures are accepted only when Apache's own
# log shows the race in that run.
_APACHE_GOAWAY = f"GOAWAY with {2**32 - 902}"
_APACHE_CLOSED = "server closed the HTTP/2 connection"
_APACHE_RACE_LOGGED = "AH10509"


def _apache_reset_race(target: Target, errors: list[BaseException]) -> list[BaseException]:
    """The errors that Apache's RST_STREAM race explains, if its log shows the race."""
    if not isinstance(target.server, Apache):
        return []
    explained: list[BaseException] = [
        e
        for e in errors
        if (isinstance(e, aiopool.RemoteProtocolError) and _APACHE_GOAWAY in str(e))
        or (isinstance(e, aiopool.ReadError) and _APACHE_CLOSED in str(e))
    ]
    log = target.server.prefix / "error.log"
    if explained and _APACHE_RACE_LOGGED in log.read_text(errors="replace"):
        return explained
    return []


async def test_cancellation_storm(target: Target, ca_path: str) -> None:
    """1,000 gathered GETs, 300 cancelled at random moments: every other one succeeds with the
    body of the file it asked for, and the pool is settled afterwards."""
    names = ("small", "1k.bin")
    expected = {name: target.body(name) for name in names}
    rng = random.Random(11)
    async with target.client(ca_path) as client:
        await client.get(f"{target.url}/small")  # learn the protocol first

        async def one(i: int) -> None:
            name = names[i % 2]
            resp = await client.get(f"{target.url}/{name}")
            assert resp.status_code == 200
            assert resp.content == expected[name]

        errors = await cancellation_storm(one, tasks=1000, cancels=300, max_pause=0.002, rng=rng)
        failed: list[BaseException] = [
            e for e in errors if not isinstance(e, asyncio.CancelledError)
        ]
        explained = _apache_reset_race(target, failed)
        unexpected = [e for e in failed if not any(e is x for x in explained)]
        assert not unexpected, (len(unexpected), unexpected[:3])
        assert len(errors) < 1000
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert stats.hosts[target.url].streams == 0
        assert (await client.get(f"{target.url}/small")).content == expected["small"]
