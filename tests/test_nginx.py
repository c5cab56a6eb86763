"""Against a real server: nginx over HTTP/1.1 and HTTPS (the `nginx` fixture, see conftest)."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig.nginx import STATIC_FILES, Nginx

pytestmark = [pytest.mark.nginx, pytest.mark.both_parsers]

MIB = 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", ["small.txt", "1m.bin", "10m.bin"])
async def test_download(nginx: Nginx, name: str) -> None:
    expected = nginx.file_bytes(name)
    assert len(expected) == STATIC_FILES[name]
    async with aiopool.Client() as client:
        resp = await client.get(f"{nginx.http_url}/{name}")
        assert resp.status_code == 200
        assert resp.http_version == "HTTP/1.1"
        assert resp.headers["content-length"] == str(len(expected))
        assert len(resp.content) == len(expected)
        assert sha256(resp.content) == sha256(expected)
        stats = assert_settled(client)
        assert stats.idle == 1  # read to the end: the socket went back to the pool


async def test_content_type_and_text(nginx: Nginx) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{nginx.http_url}/small.txt")
        assert resp.headers["content-type"].startswith("text/plain")
        assert resp.text == "Hello, world\n"
        binary = await client.get(f"{nginx.http_url}/1k.bin")
        assert binary.headers["content-type"] == "application/octet-stream"


async def test_500_gathered_requests_each_get_their_own_body(nginx: Nginx) -> None:
    async with aiopool.Client(max_connections_per_host=10) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.http_url}/echo", params={"id": f"req-{i}"}) for i in range(500))
        )
        assert [r.text for r in responses] == [f"req-{i}" for i in range(500)]
        assert all(r.status_code == 200 for r in responses)
        stats = assert_settled(client)
        assert stats.requests == 500
        assert 1 <= stats.connections_opened <= 10
        assert stats.reused == 500 - stats.connections_opened
        assert stats.idle == stats.connections_opened  # all back in the pool, none lost
        assert stats.connections_closed == 0


async def test_keep_alive_reuses_one_socket(nginx: Nginx) -> None:
    async with aiopool.Client() as client:
        responses = [await client.get(f"{nginx.http_url}/small.txt") for _ in range(5)]
        assert [r.conn_info.reused for r in responses] == [False, True, True, True, True]
        assert len({r.conn_info.id for r in responses}) == 1
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused, stats.idle) == (1, 4, 1)


async def test_connection_close_is_honoured(nginx: Nginx) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{nginx.http_url}/close")
        assert resp.text == "bye"
        assert resp.headers["connection"] == "close"
        stats = assert_settled(client)
        assert (stats.idle, stats.connections_closed) == (0, 1)
        again = await client.get(f"{nginx.http_url}/small.txt")
        assert not again.conn_info.reused
        assert again.conn_info.id != resp.conn_info.id
        assert client.stats().connections_opened == 2


@pytest.mark.parametrize("name", ["small.txt", "1m.bin", "10m.bin"])
@pytest.mark.parametrize(
    ("http2", "version", "alpn"), [(True, "HTTP/2", "h2"), (False, "HTTP/1.1", "http/1.1")]
)
async def test_https_download(
    nginx: Nginx, ca_path: str, name: str, http2: bool, version: str, alpn: str
) -> None:
    events: list[aiopool.TraceEvent] = []
    expected = nginx.file_bytes(name)
    async with aiopool.Client(verify=ca_path, trace=events.append, http2=http2) as client:
        first = await client.get(f"{nginx.https_url}/{name}")
        second = await client.get(f"{nginx.https_url}/small.txt")
        assert first.http_version == second.http_version == version
        assert first.conn_info.http_version == version
        assert sha256(first.content) == sha256(expected)
        assert second.conn_info.reused
        assert assert_settled(client).connections_opened == 1
    (tls_done,) = [e for e in events if e.name == "tls_handshake_done"]
    assert tls_done.info["alpn"] == alpn


async def test_https_to_the_plain_http_port_is_a_connect_error(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        with pytest.raises(aiopool.ConnectError, match="TLS handshake") as info:
            await client.get(f"https://127.0.0.1:{nginx.http_port}/small.txt")
        assert f"127.0.0.1:{nginx.http_port}" in str(info.value)
        stats = assert_settled(client)
        assert stats.connections_opened == 0


async def test_streaming_10m_and_closing_early_closes_the_socket(nginx: Nginx) -> None:
    expected = nginx.file_bytes("10m.bin")
    async with aiopool.Client() as client:
        received = bytearray()
        async with client.stream("GET", f"{nginx.http_url}/10m.bin") as resp:
            assert resp.headers["content-length"] == str(10 * MIB)
            async for chunk in resp.aiter_bytes():
                received += chunk
                if len(received) >= MIB:
                    break
            assert not resp.is_closed
        assert resp.is_closed
        assert bytes(received) == expected[: len(received)]
        # 9 MB unread is past the drain bound (256 KiB): closed, not pooled.
        stats = assert_settled(client)
        assert (stats.idle, stats.connections_closed) == (0, 1)
        again = await client.get(f"{nginx.http_url}/small.txt")
        assert not again.conn_info.reused


async def test_streaming_in_chunks_to_the_end_pools_the_socket(nginx: Nginx) -> None:
    expected = nginx.file_bytes("10m.bin")
    async with aiopool.Client() as client:
        digest = hashlib.sha256()
        chunks = 0
        async with client.stream("GET", f"{nginx.http_url}/10m.bin") as resp:
            async for chunk in resp.aiter_bytes():
                assert chunk
                digest.update(chunk)
                chunks += 1
        assert chunks > 1
        assert digest.hexdigest() == sha256(expected)
        stats = assert_settled(client)
        assert (stats.idle, stats.connections_closed) == (1, 0)


async def test_head_on_10m_has_no_body(nginx: Nginx) -> None:
    async with aiopool.Client() as client:
        resp = await client.head(f"{nginx.http_url}/10m.bin")
        assert resp.status_code == 200
        assert resp.headers["content-length"] == str(10 * MIB)
        assert resp.content == b""
        after = await client.get(f"{nginx.http_url}/small.txt")
        assert after.conn_info.reused  # nothing of the 10 MB was waiting on the socket
        assert after.text == "Hello, world\n"
        assert assert_settled(client).connections_opened == 1


async def test_missing_file_is_a_response_not_an_error(nginx: Nginx) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{nginx.http_url}/no-such-file")
        assert resp.status_code == 404
        with pytest.raises(aiopool.HTTPStatusError, match="404"):
            resp.raise_for_status()
        assert assert_settled(client).idle == 1


async def test_10000_gathered_tasks_on_one_host(nginx: Nginx) -> None:
    """Invariant 2 at scale: 10,000 tasks queue on a pool of 100 sockets; each gets its own body,
    no more than 100 sockets are ever opened, and the pool settles with all of them idle."""
    peak_waiting = 0

    async def one(i: int) -> str:
        nonlocal peak_waiting
        peak_waiting = max(peak_waiting, client.stats().waiting)
        return (await client.get(f"{nginx.http_url}/echo?id={i}")).text

    async with aiopool.Client(
        max_connections=100, max_connections_per_host=100, max_idle_per_host=100
    ) as client:
        bodies = await asyncio.gather(*(one(i) for i in range(10_000)))
        assert bodies == [str(i) for i in range(10_000)]
        stats = assert_settled(client)
        assert stats.requests == 10_000
        assert stats.connections_opened == 100 == stats.idle
        assert stats.reused == 10_000 - 100
        assert peak_waiting >= 9_000  # they really queued
