"""HTTP/1.1 pool behaviour against the fault-injecting server, after Go's transport_test.go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import aiopool
from tests.helpers import assert_settled, cancellation_storm, eventually
from tests.rig.fault_server import FaultServer

pytestmark = pytest.mark.both_parsers


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def test_keep_alive_reuses_one_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        first = await client.get(f"{server.url}/echo?id=1")
        second = await client.get(f"{server.url}/echo?id=2")
        assert first.headers["x-conn-id"] == second.headers["x-conn-id"]
        assert second.headers["x-request-no"] == "2"
        assert not first.conn_info.reused and not first.conn_info.was_idle
        assert second.conn_info.reused and second.conn_info.was_idle
        assert second.conn_info.idle_time >= 0.0
        assert second.conn_info.http_version == first.http_version == "HTTP/1.1"
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened, stats.reused) == (2, 1, 1)
        assert stats.hosts[f"http://127.0.0.1:{server.port}"].idle == 1
    assert server.connections_accepted == 1


@pytest.mark.parametrize(
    "path",
    ["/bytes/1000", "/chunked/5000?chunks=7", "/empty", "/nocontent", "/status/404"],
)
async def test_complete_bodies_return_the_socket(server: FaultServer, path: str) -> None:
    async with aiopool.Client() as client:
        for _ in range(3):
            await client.get(server.url + path)
        assert assert_settled(client).connections_opened == 1


async def test_head_response_has_no_body_and_keeps_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.head(f"{server.url}/bytes/1000")
        assert resp.headers["content-length"] == "1000"
        assert resp.content == b""
        await client.get(f"{server.url}/echo")
        assert assert_settled(client).connections_opened == 1


@pytest.mark.parametrize("path", ["/eof/100", "/http10/100", "/close/100"])
async def test_connection_close_from_server_is_honoured(server: FaultServer, path: str) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(server.url + path)
        assert resp.content == b"x" * 100
        stats = assert_settled(client)
        assert stats.hosts[f"http://127.0.0.1:{server.port}"].idle == 0
        assert stats.connections_closed == 1
        await client.get(f"{server.url}/echo")
        assert client.stats().connections_opened == 2


async def test_http10_response_reports_its_version(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/http10/5")
        assert resp.http_version == "HTTP/1.0"


async def test_connection_close_from_client_is_honoured(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo", headers={"Connection": "close"})
        assert assert_settled(client).hosts[f"http://127.0.0.1:{server.port}"].idle == 0
        await client.get(f"{server.url}/echo")
    assert server.connections_accepted == 2


async def test_per_host_idle_cap(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=5, max_idle_per_host=2) as client:
        await asyncio.gather(*(client.get(f"{server.url}/delay?s=0.1") for _ in range(5)))
        stats = assert_settled(client)
        host = stats.hosts[f"http://127.0.0.1:{server.port}"]
        assert host.opened == 5
        assert host.idle == 2
        assert stats.connections_closed == 3
    await eventually(lambda: server.open_connections() == 0)


async def test_per_host_cap_makes_requests_wait(server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=2) as client:
        tasks = [
            asyncio.create_task(client.get(f"{server.url}/delay?s=0.2&id={i}")) for i in range(6)
        ]
        await eventually(lambda: client.stats().waiting == 4)
        host = client.stats().hosts[f"http://127.0.0.1:{server.port}"]
        assert host.active + host.connecting == 2
        responses = await asyncio.gather(*tasks)
        assert [r.json()["id"] for r in responses] == [str(i) for i in range(6)]
        assert len({r.headers["x-conn-id"] for r in responses}) == 2
        assert assert_settled(client).connections_opened == 2


async def test_waiters_are_served_in_arrival_order(server: FaultServer) -> None:
    order: list[int] = []

    async def one(i: int) -> None:
        resp = await client.get(f"{server.url}/delay?s=0.02&id={i}")
        order.append(int(resp.json()["id"]))

    async with aiopool.Client(max_connections_per_host=1) as client:
        tasks = []
        for i in range(20):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0)  # queue strictly in order
        await asyncio.gather(*tasks)
    assert order == list(range(20))


async def test_global_cap_across_hosts(server: FaultServer) -> None:
    # Two origins for one server: 127.0.0.1 and localhost.
    other = server.url.replace("127.0.0.1", "localhost")
    async with aiopool.Client(max_connections=2, max_connections_per_host=None) as client:
        urls = [f"{server.url}/delay?s=0.1", f"{other}/delay?s=0.1"] * 3
        tasks = [asyncio.create_task(client.get(u)) for u in urls]
        await eventually(lambda: client.stats().waiting == 4)
        stats = client.stats()
        assert stats.active + stats.connecting == 2
        # Sample the busy count until all are done: it must never exceed the global cap, and
        # the queue on the other origin must be served too (both hosts get requests through).
        peak = 0
        while not all(t.done() for t in tasks):
            now = client.stats()
            peak = max(peak, now.active + now.connecting)
            await asyncio.sleep(0.002)
        responses = await asyncio.gather(*tasks)
        assert peak <= 2
        assert {r.url.host for r in responses} == {"127.0.0.1", "localhost"}
        assert assert_settled(client).connections_opened <= 6
        assert server.open_connections() <= 2 + stats.idle + 2


async def test_expired_idle_socket_is_never_handed_out(server: FaultServer) -> None:
    async with aiopool.Client(idle_timeout=0.1) as client:
        first = await client.get(f"{server.url}/echo")
        await asyncio.sleep(0.25)
        second = await client.get(f"{server.url}/echo")
        assert first.headers["x-conn-id"] != second.headers["x-conn-id"]
        assert not second.conn_info.reused
        assert assert_settled(client).connections_closed == 1


async def test_idle_timeout_closes_sockets_without_new_requests(server: FaultServer) -> None:
    async with aiopool.Client(idle_timeout=0.05) as client:
        await client.get(f"{server.url}/echo")
        await eventually(lambda: client.stats().idle == 0)
        await eventually(lambda: server.open_connections() == 0)
        assert client.stats().connections_closed == 1


@pytest.mark.parametrize("path", ["/close-idle?after=0.02", "/408-idle?after=0.02"])
async def test_server_closed_idle_socket_is_dropped(server: FaultServer, path: str) -> None:
    async with aiopool.Client() as client:
        first = await client.get(server.url + path)
        await eventually(lambda: client.stats().idle == 0)  # seen without any new request
        second = await client.get(f"{server.url}/echo")
        assert second.headers["x-conn-id"] != first.headers["x-conn-id"]
        assert not second.conn_info.reused
        assert_settled(client)


@pytest.mark.parametrize("path", ["/drop-next", "/reset-next"])
async def test_stale_reused_socket_is_retried_once(server: FaultServer, path: str) -> None:
    async with aiopool.Client() as client:
        await client.get(server.url + path)
        resp = await client.get(f"{server.url}/echo?id=after")  # dropped, then retried
        assert resp.json()["id"] == "after"
        assert not resp.conn_info.reused
        stats = assert_settled(client)
        assert stats.requests == 2
        assert stats.connections_opened == 2


@pytest.mark.parametrize("path", ["/drop-next", "/reset-next"])
async def test_a_written_post_is_never_sent_twice(server: FaultServer, path: str) -> None:
    # The server read the POST whole and then dropped the socket: it may have charged the
    # card. Go's rule: once a byte was written, only an idempotent request is replayed.
    async with aiopool.Client() as client:
        await client.get(server.url + path)
        with pytest.raises(aiopool.RemoteProtocolError) as info:
            await client.post(f"{server.url}/echo?charge=100", content=b"amount=100")
        assert info.value.request is not None and info.value.request.method == "POST"
        stats = assert_settled(client)
        assert stats.connections_opened == 1
    assert server.requests_seen.count("POST /echo?charge=100") == 1


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("PUT", {}),
        ("DELETE", {}),
        ("POST", {"Idempotency-Key": "order-17"}),
        ("PATCH", {"X-Idempotency-Key": "order-17"}),
    ],
)
async def test_an_idempotent_request_is_replayed_with_its_body(
    server: FaultServer, method: str, headers: dict[str, str]
) -> None:
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/drop-next")
        resp = await client.request(
            method, f"{server.url}/echo?id=x", content=b"payload", headers=headers
        )
        assert resp.json()["body"] == "payload"
        assert not resp.conn_info.reused
    # Seen twice: once dropped on the stale socket, once answered on the fresh one.
    assert server.requests_seen.count(f"{method} /echo?id=x") == 2


async def test_no_retry_once_a_one_shot_body_was_written(server: FaultServer) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part-1"
        yield b"part-2"

    async with aiopool.Client() as client:
        await client.get(f"{server.url}/drop-next")
        with pytest.raises(aiopool.RemoteProtocolError) as info:
            await client.post(f"{server.url}/echo", content=body())
        assert info.value.request is not None
        assert info.value.request.method == "POST"
        assert assert_settled(client).connections_opened == 1


async def test_read_timeout_on_reused_socket_is_not_retried(server: FaultServer) -> None:
    # A timeout says nothing about staleness (the server may be working on it): no replay.
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")
        with pytest.raises(aiopool.ReadTimeout):
            await client.get(f"{server.url}/stall-headers", timeout=aiopool.Timeout(read=0.05))
        assert assert_settled(client).requests == 2
    assert server.connections_accepted == 1


async def test_streamed_body_fully_read_returns_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", f"{server.url}/chunked/100000?chunks=10") as resp:
            total = 0
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
            assert total == 100_000
        stats = assert_settled(client)
        assert stats.idle == 1


async def test_unread_small_body_is_drained_and_socket_pooled(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", f"{server.url}/bytes/10000") as resp:
            assert resp.status_code == 200
        assert assert_settled(client).idle == 1
        again = await client.get(f"{server.url}/echo")
        assert again.conn_info.reused


async def test_unread_large_body_closes_the_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", f"{server.url}/big/20000000") as resp:
            first = await anext(aiter(resp.aiter_bytes()))
            assert first
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_stalled_body_is_closed_promptly(server: FaultServer) -> None:
    # The read timeout is an hour: only the 50 ms drain bound can end this block (or the
    # test's own timeout would fail it).
    async with aiopool.Client(timeout=aiopool.Timeout(3600)) as client:
        async with client.stream("GET", f"{server.url}/stall?sent=10") as resp:
            pass
        assert resp.is_closed
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_error_inside_stream_block_closes_without_draining(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(RuntimeError):
            async with client.stream("GET", f"{server.url}/bytes/100"):
                raise RuntimeError("boom")
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1


async def test_streamed_response_content_requires_read(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        async with client.stream("GET", f"{server.url}/bytes/10") as resp:
            with pytest.raises(aiopool.StreamError):
                _ = resp.content
            assert await resp.aread() == b"x" * 10
            assert resp.content == b"x" * 10
            assert resp.text == "x" * 10
        async with client.stream("GET", f"{server.url}/bytes/10") as resp:
            async for _ in resp.aiter_bytes():
                pass
            with pytest.raises(aiopool.StreamConsumed):
                async for _ in resp.aiter_bytes():
                    pass
        assert_settled(client)


async def test_request_bodies(server: FaultServer) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for part in (b"a", b"", b"bc"):
            yield part

    async with aiopool.Client() as client:
        resp = await client.post(f"{server.url}/echo", content=b"raw")
        assert resp.json()["body"] == "raw"
        resp = await client.put(f"{server.url}/echo", json={"k": [1, 2]})
        data = resp.json()
        assert data["method"] == "PUT" and data["body"] == '{"k":[1,2]}'
        assert ["content-type", "application/json"] in [[k.lower(), v] for k, v in data["headers"]]
        resp = await client.patch(f"{server.url}/echo", content=gen())
        assert resp.json()["body"] == "abc"
        resp = await client.post(f"{server.url}/echo")
        assert ["content-length", "0"] in [[k.lower(), v] for k, v in resp.json()["headers"]]
        resp = await client.delete(f"{server.url}/echo", params={"id": "d", "x": [1, 2]})
        assert resp.json()["path"] == "/echo?id=d&x=1&x=2"
        resp = await client.options(f"{server.url}/echo")
        assert resp.json()["method"] == "OPTIONS"
        assert assert_settled(client).connections_opened == 1


async def test_response_api(server: FaultServer) -> None:
    async with aiopool.Client(headers={"X-Default": "yes"}) as client:
        resp = await client.request("GET", f"{server.url}/echo?id=r", headers={"x-extra": "1"})
        assert resp.status_code == 200 and resp.reason == "OK"
        assert resp.headers["Content-Type"] == resp.headers["content-type"] == "application/json"
        assert resp.url == f"{server.url}/echo?id=r"
        sent = {k.lower(): v for k, v in resp.json()["headers"]}
        assert sent["x-default"] == "yes" and sent["x-extra"] == "1"
        assert sent["user-agent"].startswith("aiopool/")
        assert sent["host"] == f"127.0.0.1:{server.port}"
        assert resp.raise_for_status() is resp
        many = await client.get(f"{server.url}/headers-many?n=3")
        assert len([k for k in many.headers if k.startswith("x-many")]) == 3
        missing = await client.get(f"{server.url}/status/404")
        with pytest.raises(aiopool.HTTPStatusError) as info:
            missing.raise_for_status()
        assert info.value.response is missing
        assert "404" in str(info.value)
        assert repr(missing) == "<Response [404 Not Found]>"


async def test_crossed_responses_impossible_under_random_cancellation(
    server: FaultServer,
) -> None:
    """Thousands of gathered tasks, a third cancelled at random points: every completed body
    carries its own request id, and the pool settles with nothing leaked."""
    import random

    rng = random.Random(1234)
    async with aiopool.Client(max_connections_per_host=20) as client:

        async def one(i: int) -> None:
            resp = await client.get(
                f"{server.url}/delay?s={rng.choice([0, 0, 0.001, 0.005])}&id={i}"
            )
            assert resp.json()["id"] == str(i)

        errors = await cancellation_storm(one, tasks=3000, cancels=1000, max_pause=0.002, rng=rng)
        assert all(isinstance(e, asyncio.CancelledError) for e in errors), errors[:3]
        assert len(errors) < 3000
        stats = assert_settled(client)
        assert (
            stats.hosts[f"http://127.0.0.1:{server.port}"].opened <= 20 + stats.connections_closed
        )
        # Still works afterwards.
        resp = await client.get(f"{server.url}/echo?id=after")
        assert resp.json()["id"] == "after"


async def test_informational_responses_are_skipped(server: FaultServer) -> None:
    # 103 Early Hints, then the final 200: the client returns the 200, socket reusable.
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/status/103")
        assert resp.status_code == 200
        again = await client.get(f"{server.url}/echo")
        assert again.conn_info.reused
        assert_settled(client)


async def test_chunked_body_with_trailers_returns_the_socket(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(f"{server.url}/chunked/3000?chunks=3&trailer=1")
        assert len(resp.content) == 3000
        again = await client.get(f"{server.url}/echo")
        assert again.conn_info.reused
        assert_settled(client)
