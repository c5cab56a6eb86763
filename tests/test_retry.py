"""The client's retry policy (`aiopool.Retry`) against the fault server: statuses, Retry-After,
failures before a response, the method and body rules, the retry budget, trace events and
stats, and cancellation inside a backoff."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

import aiopool
from aiopool._retry import BudgetAccount, retry_after
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import FaultServer

# No backoff wait in the tests that are not about it: fast and no timing involved.
NOW = aiopool.Retry(attempts=3, statuses={503}, backoff=0)


def flaky(server: FaultServer, **query: object) -> str:
    """A /flaky URL with a key of its own (the server counts requests per key)."""
    params = "&".join(f"{k}={v}" for k, v in {"key": uuid.uuid4().hex, **query}.items())
    return f"{server.url}/flaky?{params}"


def seen(server: FaultServer, fragment: str) -> int:
    return sum(fragment in line for line in server.requests_seen)


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_contract_spelling_retries_a_503_until_it_succeeds(
    fresh_fault_server: FaultServer,
) -> None:
    events: list[aiopool.TraceEvent] = []
    url = flaky(fresh_fault_server, fails=2, status=503)
    async with aiopool.Client(retry=aiopool.Retry(attempts=3, statuses={503})) as client:
        response = await client.get(url, trace=events.append)
        assert response.status_code == 200
        assert response.text == "ok\n"
        assert seen(fresh_fault_server, "/flaky") == 3
        retries = [e for e in events if e.name == "retry"]
        assert [(e.info["reason"], e.info["attempt"]) for e in retries] == [
            ("status_503", 2),
            ("status_503", 3),
        ]
        stats = assert_settled(client)
        assert stats.retries["policy_status_503"] == 2
        # The retried 503s were read and their socket reused: one connection for all three.
        assert stats.connections_opened == 1


async def test_the_last_response_is_returned_when_the_attempts_run_out(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client(retry=NOW) as client:
        response = await client.get(f"{fresh_fault_server.url}/status/503")
        assert response.status_code == 503
        assert seen(fresh_fault_server, "/status/503") == 3
        assert client.stats().retries["policy_status_503"] == 2
        assert_settled(client)


async def test_a_status_not_listed_is_not_retried(fresh_fault_server: FaultServer) -> None:
    async with aiopool.Client(retry=NOW) as client:
        assert (await client.get(f"{fresh_fault_server.url}/status/500")).status_code == 500
        assert seen(fresh_fault_server, "/status/500") == 1


async def test_per_request_retry_overrides_and_disables(fresh_fault_server: FaultServer) -> None:
    url = f"{fresh_fault_server.url}/status/503"
    async with aiopool.Client(retry=NOW) as client:
        await client.get(url, retry=None)
        await client.get(url, retry=False)
        assert seen(fresh_fault_server, "/status/503") == 2
    fresh_fault_server.reset()
    async with aiopool.Client() as client:  # no policy by default
        await client.get(url)
        assert seen(fresh_fault_server, "/status/503") == 1
        await client.get(url, retry=NOW)
        assert seen(fresh_fault_server, "/status/503") == 4


async def test_middleware_sees_every_retry(fresh_fault_server: FaultServer) -> None:
    calls: list[str] = []

    async def mw(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        # A middleware that adds a header each time: the retries start from the request as
        # built, so the header is not doubled.
        request.headers.add("x-mw", "1")  # in place, on purpose
        response = await call_next(request)
        calls.append(f"{request.headers.get_list('x-mw')} {response.status_code}")
        return response

    url = flaky(fresh_fault_server, fails=2)
    async with aiopool.Client(retry=NOW, middleware=[mw]) as client:
        assert (await client.get(url)).status_code == 200
    assert calls == ["['1'] 503", "['1'] 503", "['1'] 200"]


# Methods and bodies ----------------------------------------------------------------------------


async def test_a_post_is_not_retried_on_a_status_nor_on_a_read_error(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client(retry=NOW) as client:
        response = await client.post(f"{fresh_fault_server.url}/status/503", content=b"x")
        assert response.status_code == 503
        assert seen(fresh_fault_server, "/status/503") == 1
        url = flaky(fresh_fault_server, fails=1, reset=1)
        with pytest.raises(aiopool.TransportError) as caught:
            await client.post(url, content=b"x")
        assert caught.value.attempts == 1
        assert seen(fresh_fault_server, "/flaky") == 1
        assert_settled(client)


async def test_an_idempotency_key_or_a_listed_method_makes_a_post_retryable(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client(retry=NOW) as client:
        url = flaky(fresh_fault_server, fails=1)
        response = await client.post(url, content=b"x", headers={"Idempotency-Key": "k1"})
        assert response.status_code == 200
        policy = aiopool.Retry(statuses={503}, methods={"post"}, backoff=0)
        url = flaky(fresh_fault_server, fails=1)
        assert (await client.post(url, content=b"x", retry=policy)).status_code == 200
        assert seen(fresh_fault_server, "POST /flaky") == 4


async def test_a_get_is_retried_after_the_connection_is_reset(
    fresh_fault_server: FaultServer,
) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(retry=NOW) as client:
        url = flaky(fresh_fault_server, fails=2, reset=1)
        response = await client.get(url, trace=events.append)
        assert response.status_code == 200
        reasons = [e.info["reason"] for e in events if e.name == "retry"]
        assert reasons == ["read_error", "read_error"]
        first = next(e for e in events if e.name == "retry")
        assert isinstance(first.info["error"], aiopool.TransportError)
        assert client.stats().retries["policy_read_error"] == 2
        assert_settled(client)


async def test_a_connect_error_is_retried_for_any_method_and_carries_the_attempts() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    async with aiopool.Client(retry=NOW) as client:
        with pytest.raises(aiopool.ConnectError) as caught:
            await client.post(url, content=b"nothing of it was sent")
        assert caught.value.attempts == 3
        assert "the last of 3 attempts" in "".join(getattr(caught.value, "__notes__", []))
        assert client.stats().retries["policy_connect_error"] == 2
        assert_settled(client)


async def one_shot(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_streamed_body_is_replayed_only_while_unread(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client(retry=NOW) as client:
        # Sent once: its chunks are gone, so the 503 is the answer.
        url = flaky(fresh_fault_server, fails=1)
        response = await client.put(url, content=one_shot([b"a", b"b"]))
        assert response.status_code == 503
        assert seen(fresh_fault_server, "PUT /flaky") == 1
        # The same with bytes: re-readable, retried.
        url = flaky(fresh_fault_server, fails=1)
        assert (await client.put(url, content=b"ab")).status_code == 200
        # Refused before a byte of it was taken: retried, and the whole body arrives.
        with pytest.raises(aiopool.ConnectError) as caught:
            await client.put(f"http://127.0.0.1:{closed_port()}/", content=one_shot([b"a"]))
        assert caught.value.attempts == 3
        assert_settled(client)


# Retry-After -----------------------------------------------------------------------------------


async def test_retry_after_in_seconds_is_obeyed(fresh_fault_server: FaultServer) -> None:
    events: list[aiopool.TraceEvent] = []
    url = flaky(fresh_fault_server, fails=1, status=429, retry_after=1)
    policy = aiopool.Retry(statuses={429}, backoff=0)
    async with aiopool.Client(retry=policy) as client:
        assert (await client.get(url, trace=events.append)).status_code == 200
    (retry,) = [e for e in events if e.name == "retry"]
    assert retry.info["delay"] == 1.0


async def test_retry_after_as_an_http_date_is_obeyed(fresh_fault_server: FaultServer) -> None:
    events: list[aiopool.TraceEvent] = []
    url = flaky(fresh_fault_server, fails=1, retry_after="date:2")
    async with aiopool.Client(retry=NOW) as client:
        assert (await client.get(url, trace=events.append)).status_code == 200
    (retry,) = [e for e in events if e.name == "retry"]
    assert 0 < retry.info["delay"] <= 2  # (an HTTP-date has whole seconds)


@pytest.mark.parametrize("retry_after", ["120", "date:3600"])
async def test_a_retry_after_beyond_the_cap_ends_retrying(
    fresh_fault_server: FaultServer, retry_after: str
) -> None:
    url = flaky(fresh_fault_server, fails=1, retry_after=retry_after)
    async with aiopool.Client(retry=NOW) as client:
        response = await client.get(url)
        assert response.status_code == 503
        assert response.headers["retry-after"]  # the caller has what the server said
        assert seen(fresh_fault_server, "/flaky") == 1


def test_retry_after_parsing() -> None:
    def parse(value: str) -> float | None:
        return retry_after(aiopool.Response(503, headers={"retry-after": value}), now=1e9)

    assert parse("7") == 7.0
    assert parse("Sun, 09 Sep 2001 01:46:50 GMT") == 10.0  # 1e9 + 10
    assert parse("Sun, 09 Sep 2001 01:40:00 GMT") == 0.0  # in the past: at once
    assert parse("soon") is None
    assert parse("-5") is None
    assert parse("1.5") is None  # RFC 9110: delay-seconds is 1*DIGIT


# The budget ------------------------------------------------------------------------------------


async def test_the_budget_stops_a_retry_storm(fresh_fault_server: FaultServer) -> None:
    # A reserve of one retry per window and no share of requests: the first call may retry
    # once, then no call may.
    budget = aiopool.RetryBudget(ratio=0.0, min_per_second=0.1, ttl=10)
    policy = aiopool.Retry(attempts=5, statuses={503}, backoff=0, budget=budget)
    url = f"{fresh_fault_server.url}/status/503"
    async with aiopool.Client(retry=policy) as client:
        await client.get(url)
        assert seen(fresh_fault_server, "/status/503") == 2
        for _ in range(3):
            await client.get(url)
        assert seen(fresh_fault_server, "/status/503") == 5
        assert client.stats().retries["policy_status_503"] == 1
    # Without a budget, every call makes its five attempts.
    fresh_fault_server.reset()
    unbounded = aiopool.Retry(attempts=5, statuses={503}, backoff=0, budget=None)
    async with aiopool.Client(retry=unbounded) as client:
        await client.get(url)
        await client.get(url)
        assert seen(fresh_fault_server, "/status/503") == 10


def test_the_budget_allows_a_share_of_requests_plus_a_reserve() -> None:
    account = BudgetAccount(aiopool.RetryBudget(ratio=0.2, min_per_second=0, ttl=10))
    assert not account.withdraw()
    for _ in range(10):
        account.deposit()
    assert [account.withdraw() for _ in range(3)] == [True, True, False]


def test_retry_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts"):
        aiopool.Retry(attempts=0)
    with pytest.raises(ValueError, match="backoff"):
        aiopool.Retry(backoff=-1)
    with pytest.raises(ValueError, match="ttl"):
        aiopool.RetryBudget(ttl=0)
    with pytest.raises(TypeError, match="retry"):
        aiopool.Client(retry=3)  # type: ignore[arg-type]
    policy = aiopool.Retry(statuses=[503, 503], methods=["get"])
    assert policy.statuses == frozenset({503})
    assert policy.methods == frozenset({"GET"})
    # Full jitter: never beyond the cap.
    capped = aiopool.Retry(backoff=1, backoff_max=2)
    assert all(0 <= capped.backoff_for(n) <= 2 for n in range(1, 80))


# Cancellation ----------------------------------------------------------------------------------


async def test_cancelled_in_the_backoff_sleep_leaves_nothing_leased(
    fresh_fault_server: FaultServer,
) -> None:
    events: list[aiopool.TraceEvent] = []
    url = flaky(fresh_fault_server, fails=1, retry_after=30)
    async with aiopool.Client(retry=NOW) as client:
        task = asyncio.create_task(client.get(url, trace=events.append))
        await eventually(lambda: any(e.name == "retry" for e in events))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)
        # The 503 was read to its end before the sleep: its socket is idle, reusable.
        assert stats.idle == 1
        assert (await client.get(flaky(fresh_fault_server, fails=0))).status_code == 200
        assert client.stats().reused == 1
