"""`follow_redirects=fn`: a redirect policy (Go's `CheckRedirect`) that sees the next request and
the history, and follows, stops (the 3xx is the answer) or raises. Against the fault server's
/hop chain (each hop a 302 to the next)."""

from __future__ import annotations

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer


class Refused(Exception):
    pass


async def test_the_policy_sees_each_next_request_and_the_history(
    fresh_fault_server: FaultServer,
) -> None:
    asked: list[tuple[str, str, list[int]]] = []

    def policy(request: aiopool.Request, history: list[aiopool.Response]) -> bool:
        asked.append((request.method, request.url.path, [r.status_code for r in history]))
        return True

    async with aiopool.Client(follow_redirects=policy) as client:
        response = await client.get(f"{fresh_fault_server.url}/hop/2?delay=0")
        assert response.text == "arrived\n"
        assert [r.url.path for r in response.history] == ["/hop/2", "/hop/1"]
    assert asked == [("GET", "/hop/1", [302]), ("GET", "/hop/0", [302, 302])]


async def test_stopping_returns_the_redirect_read_and_released(
    fresh_fault_server: FaultServer,
) -> None:
    def two_hops(request: aiopool.Request, history: list[aiopool.Response]) -> bool:
        return len(history) < 2

    async with aiopool.Client() as client:
        response = await client.get(
            f"{fresh_fault_server.url}/hop/5?delay=0", follow_redirects=two_hops
        )
        assert response.status_code == 302
        assert response.headers["location"].startswith("/hop/3")
        assert [r.url.path for r in response.history] == ["/hop/5"]
        assert response.content == b""
        assert sum("/hop/" in line for line in fresh_fault_server.requests_seen) == 2
        assert assert_settled(client).idle == 1


async def test_a_policy_may_be_async_and_may_raise(fresh_fault_server: FaultServer) -> None:
    async def same_path_prefix(request: aiopool.Request, history: list[aiopool.Response]) -> bool:
        if request.url.path == "/hop/0":
            raise Refused(f"not following to {request.url}")
        return True

    async with aiopool.Client(follow_redirects=same_path_prefix) as client:
        with pytest.raises(Refused):
            await client.get(f"{fresh_fault_server.url}/hop/3?delay=0")
        assert sum("/hop/" in line for line in fresh_fault_server.requests_seen) == 3
        assert_settled(client)
        # In stream() too.
        with pytest.raises(Refused):
            async with client.stream("GET", f"{fresh_fault_server.url}/hop/1?delay=0"):
                pass
        assert_settled(client)


async def test_max_redirects_still_applies_with_a_policy(fresh_fault_server: FaultServer) -> None:
    async with aiopool.Client(follow_redirects=lambda request, history: True) as client:
        with pytest.raises(aiopool.TooManyRedirects):
            await client.get(f"{fresh_fault_server.url}/hop/5?delay=0", max_redirects=2)


def test_follow_redirects_must_be_a_bool_or_a_callable() -> None:
    with pytest.raises(TypeError, match="follow_redirects"):
        aiopool.Client(follow_redirects="yes")  # type: ignore[arg-type]
