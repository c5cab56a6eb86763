"""Middleware: `aiopool.Client(middleware=[...])`, each `async def mw(request, call_next)`.

Run for every hop, for `request()` and `stream()` alike, in list order; able to change the
request (seen by a real server), replace the response, time it, short-circuit or raise, and
the pool stays settled whatever it does (including being cancelled inside).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer, pattern

API = "https://api.test"


def ok(request: aiopool.Request) -> aiopool.Response:
    return aiopool.Response(200, text="ok")


def recording(log: list[str], name: str) -> aiopool.Middleware:
    async def mw(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        log.append(f"{name}> {request.url.path}")
        response = await call_next(request)
        log.append(f"{name}< {response.status_code}")
        return response

    return mw


# Order, hops, stream() ---------------------------------------------------------------------------


async def test_middleware_runs_in_list_order_around_the_transport() -> None:
    log: list[str] = []

    def handler(request: aiopool.Request) -> aiopool.Response:
        log.append("transport")
        return ok(request)

    async with aiopool.Client(
        transport=aiopool.MockTransport(handler),
        middleware=[recording(log, "a"), recording(log, "b")],
    ) as client:
        await client.get(f"{API}/x")
        assert log == ["a> /x", "b> /x", "transport", "b< 200", "a< 200"]
        log.clear()
        async with client.stream("GET", f"{API}/y") as response:
            assert log == ["a> /y", "b> /y", "transport", "b< 200", "a< 200"]
            assert await response.aread() == b"ok"


async def test_middleware_sees_every_hop_of_a_redirect_chain() -> None:
    def handler(request: aiopool.Request) -> aiopool.Response:
        hops = int(request.url.path.rsplit("/", 1)[1])
        if hops:
            return aiopool.Response(302, headers={"Location": f"/chain/{hops - 1}"})
        return ok(request)

    log: list[str] = []
    async with aiopool.Client(
        transport=aiopool.MockTransport(handler), middleware=[recording(log, "mw")]
    ) as client:
        response = await client.get(f"{API}/chain/2")
        assert len(response.history) == 2
        assert log == [
            "mw> /chain/2",
            "mw< 302",
            "mw> /chain/1",
            "mw< 302",
            "mw> /chain/0",
            "mw< 200",
        ]
        log.clear()
        async with client.stream("GET", f"{API}/chain/1"):
            pass
        assert log == ["mw> /chain/1", "mw< 302", "mw> /chain/0", "mw< 200"]


async def test_middleware_sees_the_request_as_the_client_built_it() -> None:
    seen: list[aiopool.Request] = []

    async def mw(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        seen.append(request)
        return await call_next(request)

    async with aiopool.Client(
        transport=aiopool.MockTransport(ok),
        middleware=[mw],
        cookies={"sid": "abc"},
        headers={"X-Team": "payments"},
        timeout=7,
    ) as client:
        await client.post(f"{API}/x", json=[1], timeout=3)
    [request] = seen
    assert request.headers["cookie"] == "sid=abc"
    assert request.headers["x-team"] == "payments"
    assert request.headers["content-type"] == "application/json"
    assert request.content == b"[1]"
    assert request.timeout == aiopool.Timeout(3)


# Changing the request, replacing the response, timing -----------------------------------------


async def test_a_header_injected_by_middleware_reaches_the_server(
    fresh_fault_server: FaultServer,
) -> None:
    async def inject(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        request.headers["X-Request-Id"] = "req-42"
        request.headers["User-Agent"] = "billing/1.0"
        return await call_next(request)

    async with aiopool.Client(middleware=[inject]) as client:
        response = await client.get(f"{fresh_fault_server.url}/echo")
        async with client.stream("GET", f"{fresh_fault_server.url}/echo") as streamed:
            body = await streamed.aread()
        assert_settled(client)
    for echoed in (response.json(), json.loads(body)):
        headers = {name.lower(): value for name, value in echoed["headers"]}
        assert headers["x-request-id"] == "req-42"
        assert headers["user-agent"] == "billing/1.0"


async def test_middleware_may_send_another_request(fresh_fault_server: FaultServer) -> None:
    # Rewriting the URL (a canary host, a path prefix) by building a new Request.
    async def reroute(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        headers = aiopool.Headers(request.headers)
        del headers["host"]  # (the new URL's authority is sent instead)
        moved = aiopool.Request(
            request.method,
            f"{fresh_fault_server.url}/echo?id=moved",
            headers,
            request.content,
            timeout=request.timeout,
        )
        return await call_next(moved)

    async with aiopool.Client(middleware=[reroute]) as client:
        response = await client.get("http://unreachable.invalid/")
        echoed = response.json()
        assert echoed["id"] == "moved"
        assert ["host", f"127.0.0.1:{fresh_fault_server.port}"] in echoed["headers"]
        assert str(response.url) == f"{fresh_fault_server.url}/echo?id=moved"
        assert_settled(client)


async def test_middleware_may_replace_the_response(fresh_fault_server: FaultServer) -> None:
    async def replace(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        response = await call_next(request)
        if response.status_code != 503:
            return response
        await response.aclose()  # the original is released by whoever drops it
        return aiopool.Response(200, json={"cached": True}, request=request)

    async with aiopool.Client(middleware=[replace]) as client:
        response = await client.get(f"{fresh_fault_server.url}/status/503")
        assert response.json() == {"cached": True}
        async with client.stream("GET", f"{fresh_fault_server.url}/status/503") as streamed:
            assert await streamed.aread() == b'{"cached":true}'
        assert (await client.get(f"{fresh_fault_server.url}/status/201")).status_code == 201
        stats = assert_settled(client)
    assert stats.connections_opened == 1  # the dropped responses were drained and pooled


async def test_middleware_may_transform_the_body_of_the_response_it_got(
    fresh_fault_server: FaultServer,
) -> None:
    # The new response streams from the old one: it must not be closed under it.
    async def upper(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        response = await call_next(request)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk.upper()
            finally:
                await response.aclose()

        return aiopool.Response(response.status_code, headers=response.headers, content=body())

    async with aiopool.Client(middleware=[upper]) as client:
        response = await client.get(f"{fresh_fault_server.url}/chunked/1000")
        assert response.content == pattern(1000).upper()
        assert_settled(client)


async def test_middleware_timing_the_head_of_a_streamed_response(
    fresh_fault_server: FaultServer,
) -> None:
    # On stream(), call_next returns at the head: the body has not arrived yet.
    heads: list[tuple[int, bool, str]] = []

    async def timed(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await call_next(request)
        assert loop.time() >= started
        heads.append((response.status_code, response.is_closed, response.headers["x-conn-id"]))
        return response

    async with aiopool.Client(middleware=[timed]) as client:
        url = f"{fresh_fault_server.url}/slow?chunks=3&delay=0.05&size=7"
        async with client.stream("GET", url) as response:
            assert heads == [(200, False, response.headers["x-conn-id"])]
            chunks = [chunk async for chunk in response.aiter_bytes()]
            assert b"".join(chunks) == pattern(21)
        assert_settled(client)


# Short-circuits, errors, cancellation ---------------------------------------------------------


async def test_a_middleware_that_never_calls_next_opens_no_socket(
    fresh_fault_server: FaultServer,
) -> None:
    async def cached(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        return aiopool.Response(200, json={"from": "cache"})

    async with aiopool.Client(middleware=[cached]) as client:
        response = await client.get(f"{fresh_fault_server.url}/echo")
        assert response.json() == {"from": "cache"}
        assert response.request.url.path == "/echo"
        async with client.stream("GET", f"{fresh_fault_server.url}/echo") as streamed:
            assert await streamed.aread() == b'{"from":"cache"}'
        stats = client.stats()
    assert (stats.requests, stats.connections_opened, stats.hosts) == (0, 0, {})
    assert fresh_fault_server.connections_accepted == 0


class Refused(Exception):
    pass


async def fetch(client: aiopool.Client, url: str, streamed: bool) -> None:
    """GET `url` by `request()`, or by `stream()` leaving the body unread."""
    if streamed:
        async with client.stream("GET", url):
            pass
    else:
        await client.get(url)


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("streamed", [False, True], ids=["request", "stream"])
async def test_a_raising_middleware_leaves_the_pool_settled(
    fresh_fault_server: FaultServer, where: str, streamed: bool
) -> None:
    async def refuse(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        if where == "before":
            raise Refused("no")
        await call_next(request)  # a response dropped by raising: the chain closes it
        raise Refused("no")

    async with aiopool.Client(middleware=[refuse], max_connections_per_host=1) as client:
        url = f"{fresh_fault_server.url}/bytes/100000"
        for _ in range(3):  # one socket per host: a leaked lease would hang the second
            with pytest.raises(Refused):
                await asyncio.wait_for(fetch(client, url, streamed), 10)
        assert_settled(client)


async def test_raise_for_status_in_middleware_leaves_the_pool_settled(
    fresh_fault_server: FaultServer,
) -> None:
    async def strict(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        return (await call_next(request)).raise_for_status()

    async with aiopool.Client(middleware=[strict], max_connections_per_host=1) as client:
        for _ in range(2):
            with pytest.raises(aiopool.HTTPStatusError) as caught:
                await asyncio.wait_for(client.get(f"{fresh_fault_server.url}/status/500"), 10)
            assert caught.value.response.status_code == 500
        assert_settled(client)


async def test_a_transport_error_raised_by_middleware_carries_the_request() -> None:
    async def offline(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        raise aiopool.ConnectError("offline mode")

    async with aiopool.Client(transport=aiopool.MockTransport(ok), middleware=[offline]) as client:
        with pytest.raises(aiopool.ConnectError) as caught:
            await client.get(f"{API}/x")
    assert caught.value.request is not None
    assert caught.value.request.url.path == "/x"


@pytest.mark.parametrize("streamed", [False, True], ids=["request", "stream"])
async def test_cancelled_inside_middleware_leaves_the_pool_settled(
    fresh_fault_server: FaultServer, streamed: bool
) -> None:
    got_response = asyncio.Event()

    async def stuck(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        response = await call_next(request)
        if not got_response.is_set():  # the first request only
            got_response.set()
            await asyncio.Event().wait()  # never: cancelled here, holding the response
        return response

    async with aiopool.Client(middleware=[stuck], max_connections_per_host=1) as client:
        task = asyncio.create_task(
            fetch(client, f"{fresh_fault_server.url}/bytes/100000", streamed)
        )
        await asyncio.wait_for(got_response.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_settled(client)
        # The socket was closed (never pooled mid-body), and the host's one lease is free.
        assert client.stats().connections_closed == 1
        again = await asyncio.wait_for(client.get(f"{fresh_fault_server.url}/empty"), 10)
        assert again.conn_info.reused is False


async def test_cancelled_while_waiting_on_call_next(fresh_fault_server: FaultServer) -> None:
    entered = asyncio.Event()

    async def mw(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        entered.set()
        return await call_next(request)

    async with aiopool.Client(middleware=[mw]) as client:
        task = asyncio.create_task(client.get(f"{fresh_fault_server.url}/slow?delay=5"))
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_settled(client)


async def test_middleware_returning_something_else_is_a_type_error(
    fresh_fault_server: FaultServer,
) -> None:
    async def wrong(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        await call_next(request)
        return "ok"  # type: ignore[return-value]

    async with aiopool.Client(middleware=[wrong], max_connections_per_host=1) as client:
        for _ in range(2):
            with pytest.raises(TypeError, match=r"middleware .*wrong.* returned str"):
                await asyncio.wait_for(client.get(f"{fresh_fault_server.url}/bytes/10"), 10)
        assert_settled(client)


def test_a_middleware_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="middleware must be callable, not str"):
        aiopool.Client(middleware=["auth"])  # type: ignore[list-item]
