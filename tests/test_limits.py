"""Caps on what a server can make us hold: response head bytes, header fields, interim responses.

A response over a cap is a `RemoteProtocolError`; its socket is closed, never pooled, and the same
client goes on working. Each cap is configurable on the `Client`. Run on both HTTP/1.1 parsers.
"""

from __future__ import annotations

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig import FaultServer
from tests.test_bad_input import assert_fresh_connection_works, host_key

pytestmark = pytest.mark.both_parsers


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def base_header_count(client: aiopool.Client, server: FaultServer) -> int:
    """Fields the fault server sends besides the ``X-Many-i`` ones."""
    resp = await client.get(f"{server.url}/headers-many?n=0")
    return len(resp.headers.raw)


async def assert_refused_and_closed(
    client: aiopool.Client, server: FaultServer, url: str, detail: str
) -> None:
    with pytest.raises(aiopool.RemoteProtocolError, match=detail):
        await client.get(url)
    stats = assert_settled(client)
    # The refused response's socket was closed, not pooled: nothing is left open.
    assert stats.connections_closed == stats.connections_opened
    assert stats.hosts[host_key(server)].idle == 0
    await assert_fresh_connection_works(client, server)


async def test_default_header_count_cap_is_256(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        base = await base_header_count(client, server)
        at_cap = await client.get(f"{server.url}/headers-many?n={256 - base}")
        assert len(at_cap.headers.raw) == 256
        assert at_cap.conn_info.reused  # a response within the cap leaves a clean socket
        await assert_refused_and_closed(
            client,
            server,
            f"{server.url}/headers-many?n={257 - base}",
            "257 header fields, more than the limit of 256",
        )


async def test_header_count_cap_is_configurable(server: FaultServer) -> None:
    async with aiopool.Client(max_response_headers=1000) as client:
        resp = await client.get(f"{server.url}/headers-many?n=900")
        assert resp.headers["x-many-899"] == "value-899"
    async with aiopool.Client(max_response_headers=20) as client:
        base = await base_header_count(client, server)
        await client.get(f"{server.url}/headers-many?n={20 - base}")
        await assert_refused_and_closed(
            client, server, f"{server.url}/headers-many?n={21 - base}", "max_response_headers"
        )


async def test_default_head_size_cap_is_100_kib(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/oversized-headers?size=90000")
        assert resp.status_code == 200
        await assert_refused_and_closed(
            client,
            server,
            f"{server.url}/oversized-headers?size=110000",
            "head larger than 102400 bytes",
        )


async def test_head_size_cap_is_configurable(server: FaultServer) -> None:
    async with aiopool.Client(max_response_header_bytes=8192) as client:
        await assert_refused_and_closed(
            client,
            server,
            f"{server.url}/oversized-headers?size=9000",
            "max_response_header_bytes",
        )
    async with aiopool.Client(
        max_response_header_bytes=1024 * 1024, max_response_headers=1000
    ) as client:
        resp = await client.get(f"{server.url}/oversized-headers?size=500000")
        assert resp.headers["x-filler-0"] == "a" * 1000


async def test_interim_responses_are_skipped_up_to_a_cap(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/interim?n=10")
        assert (resp.status_code, resp.content) == (200, b"ok\n")
        assert "link" not in resp.headers  # the 103's fields are not the response's
        again = await client.get(f"{server.url}/echo")
        assert again.conn_info.reused
        await assert_refused_and_closed(
            client, server, f"{server.url}/interim?n=11", "more than 10 interim"
        )


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"max_response_header_bytes": 100}, "max_response_header_bytes must be >= 1024"),
        ({"max_response_headers": 0}, "max_response_headers must be >= 1"),
    ],
)
def test_caps_are_validated(kwargs: dict[str, int], detail: str) -> None:
    with pytest.raises(ValueError, match=detail):
        aiopool.Client(**kwargs)  # type: ignore[arg-type]
