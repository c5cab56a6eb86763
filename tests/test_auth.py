"""HTTP Basic auth (RFC 7617), credentials in URLs, base_url and the User-Agent, against hypercorn
over TLS (HTTP/1.1 and HTTP/2); which origins credentials reach is in test_redirects.py."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

import aiopool
from aiopool._auth import basic_auth_header
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer

MakeClient = Callable[..., aiopool.Client]


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def make_client(request: pytest.FixtureRequest, client_ssl_context: ssl.SSLContext) -> MakeClient:
    def make(**kwargs: Any) -> aiopool.Client:
        http2 = request.param == "HTTP/2"
        return aiopool.Client(verify=client_ssl_context, http2=http2, **kwargs)

    return make


def auth_url(server: HypercornServer, user: str, password: str) -> str:
    return f"{server.url}/basic-auth?user={quote(user)}&password={quote(password)}"


def authorization(response: aiopool.Response) -> list[str]:
    """The Authorization values an /inspect response says the server received."""
    return [v for n, v in response.json()["headers"] if n.lower() == "authorization"]


# Basic auth ------------------------------------------------------------------------------------


async def test_client_auth_is_sent_with_every_request(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client(auth=("alice", "s3cret")) as client:
        for _ in range(3):
            resp = await client.get(auth_url(hypercorn_server, "alice", "s3cret"))
            assert (resp.status_code, resp.text) == (200, "ok")
        resp = await client.get(auth_url(hypercorn_server, "alice", "other"))
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Basic")
        assert_settled(client)


async def test_utf8_credentials(hypercorn_server: HypercornServer, make_client: MakeClient) -> None:
    # RFC 7617 section 2.1: UTF-8, the one charset a server may ask for.
    async with make_client(auth=("jürgen", "pässwörd€")) as client:
        resp = await client.get(auth_url(hypercorn_server, "jürgen", "pässwörd€"))
        assert resp.status_code == 200
    assert basic_auth_header(("jürgen", "pässwörd€")) == b"Basic " + base64.b64encode(
        "jürgen:pässwörd€".encode()
    )
    assert basic_auth_header((b"raw", b"\xff")) == b"Basic " + base64.b64encode(b"raw:\xff")


async def test_request_auth_overrides_and_none_disables_the_clients(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/inspect"
    async with make_client(auth=("client", "pw")) as client:
        assert authorization(await client.get(url)) == ["Basic Y2xpZW50OnB3"]
        assert authorization(await client.get(url, auth=("req", "pw"))) == ["Basic cmVxOnB3"]
        assert authorization(await client.get(url, auth=None)) == []
    async with make_client() as client:
        assert authorization(await client.get(url)) == []
        assert authorization(await client.get(url, auth=("req", "pw"))) == ["Basic cmVxOnB3"]


async def test_an_authorization_header_wins_over_auth_and_auth_over_default_headers(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/inspect"
    async with make_client(
        auth=("client", "pw"), headers={"Authorization": "Bearer default"}
    ) as client:
        # One Authorization header, never two.
        assert authorization(await client.get(url)) == ["Basic Y2xpZW50OnB3"]
        resp = await client.get(url, headers={"Authorization": "Bearer mine"})
        assert authorization(resp) == ["Bearer mine"]
        assert authorization(await client.get(url, auth=None)) == ["Bearer default"]


@pytest.mark.parametrize(
    ("auth", "error"),
    [
        (("a:b", "pw"), ValueError),  # RFC 7617 section 2: no colon in the user-id
        (("user", "p\nw"), ValueError),  # no control characters
        (("user",), TypeError),
        ("user:pw", TypeError),
        ((1, "pw"), TypeError),
    ],
)
async def test_malformed_auth_is_refused_before_anything_is_sent(
    fresh_fault_server: FaultServer, auth: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        aiopool.Client(auth=auth)
    async with aiopool.Client() as client:
        with pytest.raises(error):
            await client.get(f"{fresh_fault_server.url}/echo", auth=auth)
    assert fresh_fault_server.connections_accepted == 0


# Credentials in the URL ------------------------------------------------------------------------


async def test_userinfo_in_the_url_is_basic_auth_and_leaves_the_url(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    host = hypercorn_server.url.removeprefix("https://")
    url = f"https://b%40b:p%3Ass@{host}/basic-auth?user=b%40b&password=p%3Ass"
    async with make_client(auth=("client", "pw")) as client:  # the URL's are more specific
        resp = await client.get(url)
        assert resp.status_code == 200
        # Neither the URL the request went to nor anything printed carries them.
        assert str(resp.url) == f"{hypercorn_server.url}/basic-auth?user=b%40b&password=p%3Ass"
        for text in (repr(resp.request), repr(resp), str(resp.url), repr(resp.url)):
            assert "p%3Ass@" not in text and "b%40b:" not in text, text
        # A per-request auth= wins over the URL's.
        resp = await client.get(url, auth=("x", "y"))
        assert resp.status_code == 401


async def test_a_password_never_shows_in_reprs_or_errors(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = aiopool.URL("https://user:hunter2@localhost:1/p")
    assert "hunter2" not in repr(url)
    assert repr(url) == "URL('https://user:[secure]@localhost:1/p')"
    assert (url.username, url.password) == ("user", "hunter2")
    assert str(url.without_userinfo()) == "https://localhost:1/p"
    host = hypercorn_server.url.removeprefix("https://")
    async with make_client() as client:
        resp = await client.get(f"https://user:hunter2@{host}/missing")
        with pytest.raises(aiopool.HTTPStatusError) as info:
            resp.raise_for_status()
        assert "hunter2" not in str(info.value)
        assert "hunter2" not in repr(info.value.request)
    built = aiopool.Request("GET", url, aiopool.Headers())  # by hand, userinfo and all
    assert repr(built) == "<Request [GET https://localhost:1/p]>"
    # Nor in the message of a URL refused for another reason.
    for bad in (
        "https://user:hunter2@host:99999/",
        "ftp://user:hunter2@host/",
        "http://u:hunter2@",
    ):
        with pytest.raises(aiopool.InvalidURL) as refused:
            aiopool.URL(bad)
        assert "hunter2" not in str(refused.value)
        assert "[secure]" in str(refused.value)


# base_url and default headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "relative", "path", "query"),
    [
        ("/api/v1", "users", "/api/v1/users", ""),
        ("/api/v1", "/users", "/api/v1/users", ""),  # httpx's merge: the base path is kept
        ("/api/v1/", "users?page=2", "/api/v1/users", "page=2"),
        ("", "inspect", "/inspect", ""),
        ("/api", "", "/api/", ""),
        ("/v1", "items:batchGet", "/v1/items:batchGet", ""),  # a colon, but no "//"
    ],
)
async def test_base_url_prefixes_relative_urls(
    hypercorn_server: HypercornServer,
    make_client: MakeClient,
    base: str,
    relative: str,
    path: str,
    query: str,
) -> None:
    async with make_client(base_url=hypercorn_server.url + base) as client:
        resp = await client.get(relative)
        assert resp.request.url.path == path
        if path == "/inspect":
            assert resp.json()["path"] == "/inspect"
        assert resp.request.url.query == query


async def test_base_url_leaves_absolute_urls_alone(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    other = f"https://127.0.0.1:{hypercorn_server.port}"
    async with make_client(base_url=f"{hypercorn_server.url}/api") as client:
        resp = await client.get(f"{other}/inspect")
        assert str(resp.url) == f"{other}/inspect"
        assert resp.json()["path"] == "/inspect"
        resp = await client.get("x", params={"q": "1"})
        assert str(resp.url) == f"{hypercorn_server.url}/api/x?q=1"
        assert client.base_url == f"{hypercorn_server.url}/api/"


def test_base_url_must_be_a_prefix() -> None:
    for bad in ("http://h/api?x=1", "http://h/api#frag"):
        with pytest.raises(ValueError, match="base_url"):
            aiopool.Client(base_url=bad)
    with pytest.raises(aiopool.InvalidURL):
        aiopool.Client(base_url="ftp://h/")


async def test_relative_urls_without_base_url_are_invalid(fresh_fault_server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidURL):
            await client.get("/echo")
    assert fresh_fault_server.connections_accepted == 0


async def test_the_user_agent_names_the_version(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        seen = (await client.get(f"{hypercorn_server.url}/inspect")).json()["headers"]
        assert ["user-agent", f"aiopool/{aiopool.__version__}"] in seen
    async with make_client(headers={"User-Agent": "mine/1"}) as client:
        seen = (await client.get(f"{hypercorn_server.url}/inspect")).json()["headers"]
        assert [v for n, v in seen if n == "user-agent"] == ["mine/1"]
