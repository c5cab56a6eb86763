"""Redirects against real servers: hypercorn (HTTP/1.1 on both parsers, and HTTP/2, over TLS)
for the chains, the fault server for a second origin in plain HTTP and for raw control.

hypercorn's certificate is valid for both ``localhost`` and ``127.0.0.1``, so one server is two
origins (and two cookie hosts): ``https://localhost:P`` and ``https://127.0.0.1:P``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopool
from aiopool._pool_transport import HTTP1Parser
from aiopool._redirects import MAX_REDIRECT_BODY, _same_site
from aiopool._urls import Origin
from tests.conftest import _running_under_ci
from tests.helpers import assert_settled, cancellation_storm
from tests.rig.fault_server import FaultServer, pattern
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.proxy import Tinyproxy, find_tinyproxy

MakeClient = Callable[..., aiopool.Client]


@pytest.fixture(params=["h11", "httptools", "h2"])
def protocol(request: pytest.FixtureRequest) -> str:
    """HTTP/1.1 on each parser, or HTTP/2 (hypercorn speaks both over TLS, chosen by ALPN)."""
    return str(request.param)


@pytest.fixture
def make_client(protocol: str, client_ssl_context: ssl.SSLContext) -> MakeClient:
    def make(**kwargs: Any) -> aiopool.Client:
        if protocol == "h2":
            return aiopool.Client(verify=client_ssl_context, **kwargs)
        parser: HTTP1Parser = "h11" if protocol == "h11" else "httptools"
        return aiopool.Client(verify=client_ssl_context, http2=False, http1_parser=parser, **kwargs)

    return make


@pytest.fixture
def expected_version(protocol: str) -> str:
    return "HTTP/2" if protocol == "h2" else "HTTP/1.1"


def other_origin(server: HypercornServer) -> str:
    """The same hypercorn under another host name: another origin, another cookie host."""
    return f"https://127.0.0.1:{server.port}"


def received(response: aiopool.Response) -> dict[str, list[str]]:
    """The headers an /inspect response says the server received, by lower-cased name."""
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def redirect_to(server: HypercornServer, location: str, **query: str) -> str:
    extra = "".join(f"&{k}={quote(v, safe='')}" for k, v in query.items())
    return f"{server.url}/redirect?to={quote(location, safe='')}{extra}"


# Following -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_chain_of_each_status_is_followed_on_one_reused_socket(
    hypercorn_server: HypercornServer, make_client: MakeClient, expected_version: str, status: int
) -> None:
    url = f"{hypercorn_server.url}/chain/3?status={status}"
    async with make_client() as client:
        resp = await client.get(url)
        assert resp.status_code == 200
        assert resp.http_version == expected_version
        assert resp.json()["path"] == "/chain/0"
        assert str(resp.url) == f"{hypercorn_server.url}/chain/0?status={status}"
        assert [r.status_code for r in resp.history] == [status] * 3
        assert [str(r.url) for r in resp.history] == [
            f"{hypercorn_server.url}/chain/{n}?status={status}" for n in (3, 2, 1)
        ]
        # Each redirect was read to the end (its body kept) before the next hop...
        assert [r.content for r in resp.history] == [b"moved\n"] * 3
        assert [len(r.history) for r in resp.history] == [0, 1, 2]
        assert all(r.is_closed for r in resp.history)
        # ...so all four exchanges went over one socket, which is idle again.
        assert [r.conn_info.reused for r in [*resp.history, resp]] == [False, True, True, True]
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.requests, stats.reused) == (1, 4, 3)
        assert stats.idle == 1


@pytest.mark.parametrize("mode", ["abs", "path", "rel"])
async def test_absolute_path_and_relative_locations(
    hypercorn_server: HypercornServer, make_client: MakeClient, mode: str
) -> None:
    async with make_client() as client:
        resp = await client.get(f"{hypercorn_server.url}/chain/2?mode={mode}")
        assert resp.json()["path"] == "/chain/0"
        assert len(resp.history) == 2


async def test_scheme_relative_location_changes_only_the_authority(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    location = f"//127.0.0.1:{hypercorn_server.port}/inspect"
    async with make_client() as client:
        resp = await client.get(redirect_to(hypercorn_server, location))
        assert str(resp.url) == f"{other_origin(hypercorn_server)}/inspect"
        # The Host header follows the URL to the new authority.
        assert received(resp)["host"] == [f"127.0.0.1:{hypercorn_server.port}"]


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_post_becomes_get_without_its_body(
    hypercorn_server: HypercornServer, make_client: MakeClient, status: int
) -> None:
    async with make_client() as client:
        resp = await client.post(
            f"{hypercorn_server.url}/chain/1?status={status}",
            content=b"payload",
            headers={"Content-Type": "text/x-test", "Content-Language": "en", "X-Keep": "1"},
        )
        seen = received(resp)
        assert resp.json()["method"] == "GET"
        assert resp.json()["body"] == ""
        for name in ("content-length", "content-type", "content-language", "transfer-encoding"):
            assert name not in seen, name
        assert seen["x-keep"] == ["1"]  # other headers travel on
        assert resp.history[0].request.method == "POST"


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_head_stays_head(
    hypercorn_server: HypercornServer, make_client: MakeClient, status: int
) -> None:
    async with make_client() as client:
        resp = await client.head(f"{hypercorn_server.url}/chain/2?status={status}")
        assert resp.status_code == 200
        assert resp.request.method == "HEAD"
        assert resp.content == b""
        assert len(resp.history) == 2
        assert_settled(client)


@pytest.mark.parametrize("status", [307, 308])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_307_and_308_resend_method_and_body(
    hypercorn_server: HypercornServer, make_client: MakeClient, status: int, method: str
) -> None:
    async with make_client() as client:
        resp = await client.request(
            method, f"{hypercorn_server.url}/chain/2?status={status}", json={"k": "v"}
        )
        assert resp.json()["method"] == method
        assert resp.json()["body"] == '{"k":"v"}'
        seen = received(resp)
        assert seen["content-type"] == ["application/json"]
        assert seen["content-length"] == ["9"]


@pytest.mark.parametrize("status", [303, 307])
async def test_a_large_upload_behind_expect_100_continue_through_a_redirect(
    hypercorn_server: HypercornServer, make_client: MakeClient, status: int
) -> None:
    body = pattern(2 * 1024 * 1024, 7)  # over the automatic Expect: 100-continue threshold
    async with make_client() as client:
        resp = await client.post(
            f"{hypercorn_server.url}/redirect?status={status}&to=/upload", content=body
        )
        assert resp.status_code == 200
        first = resp.history[0].request
        assert first.headers.get("expect") == "100-continue"
        if status == 303:
            # A GET without content must not carry the expectation (RFC 9110 section 10.1.1).
            assert resp.request.method == "GET"
            assert "expect" not in resp.request.headers
            assert resp.content == b"0 " + hashlib.sha256(b"").hexdigest().encode()
        else:
            assert resp.request.method == "POST"
            assert resp.content == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        assert_settled(client)


async def _streamed_body() -> AsyncIterator[bytes]:
    yield b"chunk-1 "
    yield b"chunk-2"


@pytest.mark.parametrize("status", [307, 308])
async def test_307_and_308_with_a_streamed_body_raise_never_send_it_empty(
    hypercorn_server: HypercornServer, make_client: MakeClient, status: int
) -> None:
    async with make_client() as client:
        with pytest.raises(aiopool.RedirectBodyNotReplayable) as info:
            await client.post(
                f"{hypercorn_server.url}/chain/2?status={status}", content=_streamed_body()
            )
        exc = info.value
        assert isinstance(exc, aiopool.RedirectError)
        assert exc.response.status_code == status
        assert exc.response.content == b"moved\n"  # read: its socket went back to the pool
        assert exc.request.method == "POST"
        assert exc.history == []
        assert "async iterable" in str(exc)
        stats = assert_settled(client)
        assert stats.requests == 1 and stats.idle == 1
        # Nothing reached /chain/1: the one request was the first.
        resp = await client.get(f"{hypercorn_server.url}/inspect")
        assert resp.conn_info.reused


async def test_303_with_a_streamed_body_is_fine_it_is_not_resent(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        resp = await client.post(
            f"{hypercorn_server.url}/chain/1?status=303", content=_streamed_body()
        )
        assert resp.json()["method"] == "GET"
        assert "transfer-encoding" not in received(resp)


# Not following ---------------------------------------------------------------------------------


async def test_follow_redirects_false_on_the_client_and_per_request(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/chain/1"
    async with make_client(follow_redirects=False) as client:
        resp = await client.get(url)
        assert (resp.status_code, resp.headers["location"], resp.history) == (302, "/chain/0", [])
        assert (await client.get(url, follow_redirects=True)).status_code == 200
    async with make_client() as client:
        assert (await client.get(url)).status_code == 200
        assert (await client.get(url, follow_redirects=False)).status_code == 302
        async with client.stream("GET", url, follow_redirects=False) as streamed:
            assert streamed.status_code == 302
        assert_settled(client)


async def test_a_redirect_without_location_is_the_answer(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        resp = await client.get(f"{hypercorn_server.url}/redirect?status=301&body=10")
        assert resp.status_code == 301
        assert resp.content == pattern(10)
        assert resp.history == []


async def test_other_3xx_are_not_redirects(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        for status in (300, 304, 305, 306):
            resp = await client.get(redirect_to(hypercorn_server, "/inspect", status=str(status)))
            assert resp.status_code == status
            assert resp.history == []


# Limits ----------------------------------------------------------------------------------------


async def test_a_loop_ends_with_too_many_redirects(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        with pytest.raises(aiopool.TooManyRedirects) as info:
            await client.get(f"{hypercorn_server.url}/loop")
        exc = info.value
        # Ten followed (Go's and aiohttp's default), the eleventh refused.
        assert len(exc.history) == 10
        assert exc.response.status_code == 302
        assert str(exc.response.url) == f"{hypercorn_server.url}/loop"
        assert [len(r.history) for r in exc.history] == list(range(10))
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened) == (11, 1)


async def test_stream_raises_redirect_errors_with_nothing_left_open(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client(max_redirects=3) as client:
        with pytest.raises(aiopool.TooManyRedirects):
            async with client.stream("GET", f"{hypercorn_server.url}/loop"):
                raise AssertionError("never entered")
        with pytest.raises(aiopool.InvalidRedirect):
            async with client.stream("GET", redirect_to(hypercorn_server, "ftp://h/")):
                raise AssertionError("never entered")
        stats = assert_settled(client)
        assert (stats.requests, stats.idle, stats.connections_opened) == (5, 1, 1)


@pytest.mark.parametrize(("limit", "hops", "ok"), [(0, 1, False), (2, 2, True), (2, 3, False)])
async def test_max_redirects_per_client_and_per_request(
    hypercorn_server: HypercornServer, make_client: MakeClient, limit: int, hops: int, ok: bool
) -> None:
    url = f"{hypercorn_server.url}/chain/{hops}"
    async with make_client(max_redirects=limit) as client:
        if ok:
            assert len((await client.get(url)).history) == hops
        else:
            with pytest.raises(aiopool.TooManyRedirects):
                await client.get(url)
        assert len((await client.get(url, max_redirects=hops)).history) == hops
        with pytest.raises(aiopool.TooManyRedirects):
            await client.get(url, max_redirects=hops - 1)
        assert_settled(client)


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_a_redirect_body_is_kept_when_short(
    hypercorn_server: HypercornServer, make_client: MakeClient, chunked: str
) -> None:
    url = redirect_to(hypercorn_server, "/inspect", body="5000", chunked=chunked)
    async with make_client() as client:
        resp = await client.get(url)
        assert resp.history[0].content == pattern(5000)
        stats = assert_settled(client)
        assert stats.connections_opened == 1 and stats.reused == 1


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_a_long_redirect_body_is_not_kept_and_the_hop_still_happens(
    hypercorn_server: HypercornServer,
    make_client: MakeClient,
    expected_version: str,
    chunked: str,
) -> None:
    size = 4 * MAX_REDIRECT_BODY
    url = redirect_to(hypercorn_server, "/inspect", body=str(size), chunked=chunked)
    async with make_client() as client:
        resp = await client.get(url)
        assert resp.json()["path"] == "/inspect"
        (hop,) = resp.history
        assert hop.is_closed
        with pytest.raises(aiopool.StreamError):
            hop.content  # noqa: B018  # past the bound, the body was not kept
        stats = assert_settled(client)
        if expected_version == "HTTP/2":
            # The stream was reset or drained; the socket carries on.
            assert stats.connections_opened == 1
        elif chunked == "1":
            # Go's rule: past the bound, an unknown length closes the socket.
            assert stats.connections_opened == 2 and stats.connections_closed == 1


async def test_an_encoded_redirect_body_is_decoded_and_a_bad_one_costs_only_its_content(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        resp = await client.get(redirect_to(hypercorn_server, "/inspect", body="3000", gzip="1"))
        assert resp.history[0].content == pattern(3000)
        # A broken coding, or a bomb (1 MiB of zeros in ~1 KiB of gzip) past the bound: the
        # redirect is still followed; that history entry just has no content.
        for query in ({"body": "100", "gzip": "broken"}, {"body": str(1 << 20), "zeros": "1"}):
            query.setdefault("gzip", "1")
            resp = await client.get(redirect_to(hypercorn_server, "/inspect", **query))
            assert resp.json()["path"] == "/inspect"
            with pytest.raises(aiopool.StreamError):
                resp.history[0].content  # noqa: B018
        stats = assert_settled(client)
        assert stats.connections_opened == 1  # every redirect body was read off the socket


# Locations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "http://[::1",  # unparsable
        "ftp://example.org/file",  # not http(s)
        "javascript:alert(1)",
        "http:///no-host",
    ],
)
async def test_an_unusable_location_raises_invalid_redirect(
    hypercorn_server: HypercornServer, make_client: MakeClient, location: str
) -> None:
    async with make_client() as client:
        with pytest.raises(aiopool.InvalidRedirect) as info:
            await client.get(redirect_to(hypercorn_server, location, body="3"))
        exc = info.value
        assert isinstance(exc, aiopool.InvalidURL)  # `except InvalidURL` catches it too
        assert exc.response.status_code == 302
        assert exc.response.headers["location"] == location
        assert exc.response.content == pattern(3)
        stats = assert_settled(client)
        assert stats.idle == 1 and stats.requests == 1


async def test_two_different_locations_are_refused(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/redirect?to=/inspect&to2=/echo"
    async with make_client() as client:
        with pytest.raises(aiopool.InvalidRedirect, match="several"):
            await client.get(url)
        assert_settled(client)


async def test_the_fragment_is_inherited_unless_the_location_has_one(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        resp = await client.get(f"{hypercorn_server.url}/chain/2#part")
        assert str(resp.url) == f"{hypercorn_server.url}/chain/0#part"
        assert resp.json()["path"] == "/chain/0"  # the fragment never went on the wire
        resp = await client.get(redirect_to(hypercorn_server, "/inspect#own") + "#part")
        assert str(resp.url) == f"{hypercorn_server.url}/inspect#own"


async def test_a_utf8_location_is_percent_encoded(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        resp = await client.get(redirect_to(hypercorn_server, "/inspect?name=jürgen"))
        assert resp.json()["query"] == "name=j%C3%BCrgen"


async def test_userinfo_in_a_location_is_ignored(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    location = f"https://evil:secret@127.0.0.1:{hypercorn_server.port}/inspect"
    async with make_client() as client:
        resp = await client.get(redirect_to(hypercorn_server, location))
        assert "authorization" not in received(resp)
        assert "secret" not in str(resp.url)


# Credentials and origins -----------------------------------------------------------------------

SECRETS = {"Cookie": "session=s3cret", "Proxy-Authorization": "Basic cHJveHk6cHc="}


async def test_credentials_reach_the_same_origin_through_redirects(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client(auth=("user", "pw")) as client:
        resp = await client.get(f"{hypercorn_server.url}/chain/2?mode=rel", headers=SECRETS)
        seen = received(resp)
        assert seen["authorization"] == ["Basic dXNlcjpwdw=="]
        assert seen["cookie"] == ["session=s3cret"]
        # (Proxy-Authorization is for a proxy: without one, no origin ever receives it.)
        assert "proxy-authorization" not in seen


async def test_credentials_never_reach_another_origin(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    target = f"{other_origin(hypercorn_server)}/inspect"
    async with make_client(auth=("user", "pw")) as client:
        resp = await client.get(redirect_to(hypercorn_server, target), headers=SECRETS)
        assert str(resp.url) == target
        seen = received(resp)
        for name in ("authorization", "cookie", "proxy-authorization"):
            assert name not in seen, name
        assert seen["host"] == [f"127.0.0.1:{hypercorn_server.port}"]
        # The same request straight to that origin does carry them: the user asked for it.
        seen = received(await client.get(target, headers=SECRETS))
        assert seen["authorization"] == ["Basic dXNlcjpwdw=="]
        # Per-request credentials are withheld the same way, and so is a header of the user's.
        resp = await client.get(redirect_to(hypercorn_server, target), auth=("other", "pw"))
        assert "authorization" not in received(resp)
        headers = {"Authorization": "Bearer t0ken"}
        resp = await client.get(redirect_to(hypercorn_server, target), headers=headers)
        assert "authorization" not in received(resp)
        assert resp.history[0].request.headers["authorization"] == "Bearer t0ken"


async def test_a_downgrade_to_plain_http_drops_credentials(
    hypercorn_server: HypercornServer, make_client: MakeClient, fresh_fault_server: FaultServer
) -> None:
    target = f"{fresh_fault_server.url}/echo"
    async with make_client(auth=("user", "pw")) as client:
        resp = await client.get(redirect_to(hypercorn_server, target), headers=SECRETS)
        assert resp.url.scheme == "http"
        names = {name.lower() for name, _ in resp.json()["headers"]}
        assert names.isdisjoint({"authorization", "cookie", "proxy-authorization"}), names
        assert {"host", "user-agent"} <= names


async def test_credentials_come_back_with_the_original_origin(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    back = f"{hypercorn_server.url}/inspect"
    away = f"{other_origin(hypercorn_server)}/redirect?to={quote(back, safe='')}"
    async with make_client(auth=("user", "pw")) as client:
        resp = await client.get(redirect_to(hypercorn_server, away), headers=SECRETS)
        assert [str(r.url.origin) for r in resp.history] == [
            f"https://localhost:{hypercorn_server.port}",
            f"https://127.0.0.1:{hypercorn_server.port}",
        ]
        assert "authorization" not in received_request(resp.history[1])
        seen = received(resp)
        assert seen["authorization"] == ["Basic dXNlcjpwdw=="]
        assert seen["cookie"] == ["session=s3cret"]


def received_request(response: aiopool.Response) -> set[str]:
    """The header names our client put on the request that got `response`."""
    return {name.lower() for name, _ in response.request.headers.multi_items()}


@pytest.mark.parametrize(
    ("origin", "target", "allowed"),
    [
        (("https", "a.example", 443), ("https", "a.example", 443), True),
        (("http", "a.example", 80), ("https", "a.example", 443), True),  # upgrade (httpx)
        (("http", "a.example", 8080), ("https", "a.example", 8443), False),
        (("https", "a.example", 443), ("http", "a.example", 80), False),  # downgrade
        (("https", "a.example", 443), ("https", "b.example", 443), False),
        (("https", "a.example", 443), ("https", "sub.a.example", 443), False),
        (("https", "a.example", 443), ("https", "a.example", 8443), False),
    ],
)
def test_which_hops_keep_credentials(
    origin: tuple[str, str, int], target: tuple[str, str, int], allowed: bool
) -> None:
    assert _same_site(Origin(*origin), Origin(*target)) is allowed


# Streaming, cancellation, retries --------------------------------------------------------------


async def test_stream_hands_out_only_the_final_response(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        url = redirect_to(hypercorn_server, "/bytes/100000?seed=3", body="100")
        async with client.stream("GET", url) as resp:
            assert resp.status_code == 200
            assert [r.content for r in resp.history] == [pattern(100)]
            host = client.stats().hosts[f"https://localhost:{hypercorn_server.port}"]
            assert host.active == 1 and host.requests == 2  # only the final one is held
            body = b"".join([chunk async for chunk in resp.aiter_bytes()])
        assert body == pattern(100000, 3)
        assert assert_settled(client).connections_opened == 1


async def test_cancelled_while_waiting_for_a_hop_leaves_nothing_leased(
    hypercorn_server: HypercornServer, make_client: MakeClient, fresh_fault_server: FaultServer
) -> None:
    # The hop goes to a server that reads the request and never answers.
    url = redirect_to(hypercorn_server, f"{fresh_fault_server.url}/stall-headers")
    async with make_client() as client:
        task = asyncio.create_task(client.stream("GET", url).__aenter__())
        # The hop dials only once the redirect was read and its socket released.
        assert await fresh_fault_server.wait_for_async(
            lambda: fresh_fault_server.connections_accepted >= 1
        )
        await asyncio.sleep(0.05)  # let the request go out; the test holds either way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = assert_settled(client)
        # The redirect's socket went back to the pool before the hop; the hop's was closed.
        assert stats.hosts[f"https://localhost:{hypercorn_server.port}"].idle == 1
        assert stats.hosts[str(aiopool.URL(fresh_fault_server.url).origin)].idle == 0


async def test_a_cancellation_storm_over_redirect_chains(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client(max_connections_per_host=4) as client:

        async def one(i: int) -> None:
            if i % 2:
                resp = await client.get(f"{hypercorn_server.url}/chain/3?status=307")
                assert resp.status_code == 200
            else:
                url = redirect_to(hypercorn_server, "/slow?chunks=3&delay=0.01", body="2000")
                async with client.stream("GET", url) as resp:
                    async for _ in resp.aiter_bytes():
                        pass

        errors = await cancellation_storm(
            one, tasks=40, cancels=15, max_pause=0.02, rng=random.Random(5)
        )
        assert all(isinstance(e, asyncio.CancelledError) for e in errors), errors
        assert_settled(client)
        resp = await client.get(f"{hypercorn_server.url}/chain/2")
        assert resp.status_code == 200
        assert_settled(client)


async def test_a_hop_on_a_stale_socket_is_retried_on_a_fresh_one(
    hypercorn_server: HypercornServer, make_client: MakeClient, fresh_fault_server: FaultServer
) -> None:
    async with make_client() as client:
        # Leave a socket to the fault server idle, and have it drop the next request.
        await client.get(f"{fresh_fault_server.url}/drop-next")
        resp = await client.get(redirect_to(hypercorn_server, f"{fresh_fault_server.url}/echo"))
        assert resp.status_code == 200
        assert resp.json()["method"] == "GET"
        assert resp.conn_info.reused is False  # the retry's fresh socket
        assert fresh_fault_server.connections_accepted == 2
        assert_settled(client)


async def test_a_refused_h2_stream_on_a_hop_is_sent_again(
    hypercorn_server: HypercornServer,
    fresh_h2_server: H2ScriptServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    fresh_h2_server.script(refuse_first_n=1)  # REFUSED_STREAM: the server did not act on it
    target = f"{fresh_h2_server.url}/echo?id=hop"
    async with aiopool.Client(verify=client_ssl_context, http1=False) as client:
        resp = await client.post(redirect_to(hypercorn_server, target, status="307"), content=b"x")
        assert (resp.text, resp.http_version, resp.request.method) == ("hop", "HTTP/2", "POST")
        assert resp.history[0].http_version == "HTTP/2"
        assert fresh_h2_server.streams_received == 2
        assert_settled(client)


@pytest.fixture(scope="module")
def auth_proxy() -> Iterator[Tinyproxy]:
    """tinyproxy requiring Basic proxy credentials (``PROXY_USER``)."""
    if find_tinyproxy() is None:
        if _running_under_ci():
            pytest.fail("tinyproxy is required under CI (CI is set); .ci/run installs it")
        pytest.skip("tinyproxy not installed")
    with Tinyproxy(auth=PROXY_USER) as proxy:
        yield proxy


PROXY_USER = ("proxy-user", "proxy-pw")


async def test_through_an_authenticating_proxy_every_hop_keeps_the_proxys_credentials(
    hypercorn_server: HypercornServer,
    fault_server: FaultServer,
    auth_proxy: Tinyproxy,
    client_ssl_context: ssl.SSLContext,
) -> None:
    # Credentials for the proxy come from its URL and go to the proxy on every hop (CONNECT
    # for https, Proxy-Authorization on forwarded http); the user's go to their origin only.
    proxy = auth_proxy.url_with(*PROXY_USER)
    away = f"{other_origin(hypercorn_server)}/redirect?to={quote(fault_server.url + '/echo')}"
    async with aiopool.Client(
        proxy=proxy, verify=client_ssl_context, auth=("user", "pw"), trust_env=False
    ) as client:
        resp = await client.get(redirect_to(hypercorn_server, away))
        assert resp.status_code == 200
        assert [str(r.url.origin) for r in resp.history] == [
            f"https://localhost:{hypercorn_server.port}",
            f"https://127.0.0.1:{hypercorn_server.port}",
        ]
        names = {name.lower() for name, _ in resp.json()["headers"]}
        assert names.isdisjoint({"authorization", "proxy-authorization"}), names
        assert "via" in names  # it did come through the proxy, as did the tunnels:
        for host in ("localhost", "127.0.0.1"):
            assert f"CONNECT {host}:{hypercorn_server.port} " in auth_proxy.log()
        assert "authorization" not in received_request(resp.history[1])
        assert received_request(resp.history[0]) >= {"authorization"}
        assert_settled(client)


# URL.join (RFC 3986 section 5.4) ---------------------------------------------------------------

BASE = "http://a/b/c/d;p?q"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        # 5.4.1 normal examples
        ("g", "http://a/b/c/g"),
        ("./g", "http://a/b/c/g"),
        ("g/", "http://a/b/c/g/"),
        ("/g", "http://a/g"),
        ("//g", "http://g/"),
        ("?y", "http://a/b/c/d;p?y"),
        ("g?y", "http://a/b/c/g?y"),
        ("#s", "http://a/b/c/d;p?q#s"),
        ("g#s", "http://a/b/c/g#s"),
        (";x", "http://a/b/c/;x"),
        ("", "http://a/b/c/d;p?q"),
        (".", "http://a/b/c/"),
        ("..", "http://a/b/"),
        ("../g", "http://a/b/g"),
        ("../..", "http://a/"),
        ("../../g", "http://a/g"),
        # 5.4.2 abnormal examples
        ("../../../g", "http://a/g"),
        ("/./g", "http://a/g"),
        ("g.", "http://a/b/c/g."),
        ("g/../h", "http://a/b/c/h"),
        ("g;x=1/../y", "http://a/b/c/y"),
        # absolute references replace everything
        ("https://other:8443/x?y#z", "https://other:8443/x?y#z"),
    ],
)
def test_url_join_follows_rfc_3986(reference: str, expected: str) -> None:
    assert str(aiopool.URL(BASE).join(reference)) == expected


@pytest.mark.parametrize("reference", ["ftp://h/", "http://[::1", "/a b", "/a\r\nb", "//"])
def test_url_join_refuses_what_cannot_be_sent(reference: str) -> None:
    with pytest.raises(aiopool.InvalidURL):
        aiopool.URL(BASE).join(reference)


# Anything a server could put in a Location: a URL or InvalidURL, nothing else (urljoin alone
# raised ValueError for "http://[::1" before `join` translated it).
_PIECES = st.sampled_from(
    [
        *"/?#:@[].%-_~!$&'()*+,;=aZ09 \\\x00\t\r\nü€",
        "//",
        "http:",
        "HTTPS://",
        "[::1]",
        ":0",
        ":99999",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_PIECES, max_size=12).map("".join), st.text(max_size=30)))
def test_url_join_gives_a_sendable_url_or_invalid_url(reference: str) -> None:
    try:
        url = aiopool.URL(BASE).join(reference)
    except aiopool.InvalidURL:
        return
    assert url.scheme in ("http", "https")
    assert url.target.startswith(b"/") and url.target.isascii()
    assert aiopool.URL(url.unmasked).unmasked == url.unmasked  # its text parses back to itself
