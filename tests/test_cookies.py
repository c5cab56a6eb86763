"""Cookies: the client's jar against real servers (hypercorn over TLS on HTTP/1.1 and HTTP/2,
and over plain HTTP), and `aiopool.Cookies` as a value type.

hypercorn's certificate is valid for ``localhost`` and ``127.0.0.1``: two cookie hosts.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from http.cookiejar import Cookie, CookieJar
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopool
from aiopool._headers import validate_header
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


@pytest.fixture(scope="module")
def plain_hypercorn(tls_ca: trustme.CA) -> Iterator[HypercornServer]:
    """hypercorn over plain HTTP at ``http://127.0.0.1:PORT``."""
    with HypercornServer(tls_ca, tls=False) as server:
        yield server


def sent_cookies(response: aiopool.Response) -> list[str]:
    """The Cookie header values an /inspect response says the server received."""
    return [v for n, v in response.json()["headers"] if n.lower() == "cookie"]


def set_cookie_url(base: str, *cookies: str) -> str:
    return f"{base}/set-cookie?" + "&".join(f"cookie={quote(c, safe='')}" for c in cookies)


# The jar against servers -----------------------------------------------------------------------


async def test_set_cookie_is_stored_and_sent_back(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        await client.get(set_cookie_url(hypercorn_server.url, "a=1", "b=two; Path=/"))
        assert (client.cookies["a"], client.cookies["b"]) == ("1", "two")
        resp = await client.get(f"{hypercorn_server.url}/inspect")
        assert sent_cookies(resp) == ["a=1; b=two"]
        assert_settled(client)


async def test_cookies_set_by_a_redirect_go_with_the_next_hop(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/redirect?to=/chain/1&cookie=hop%3D1"
    async with make_client() as client:
        resp = await client.get(url)
        assert [r.status_code for r in resp.history] == [302, 302]
        assert sent_cookies(resp) == ["hop=1"]
        # The hop's request, as our client built it, carried it too.
        assert resp.history[1].request.headers["cookie"] == "hop=1"
        assert "cookie" not in resp.history[0].request.headers


async def test_a_host_only_cookie_stays_with_its_host(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    other = f"https://127.0.0.1:{hypercorn_server.port}"
    async with make_client() as client:
        await client.get(set_cookie_url(hypercorn_server.url, "mine=1"))
        assert sent_cookies(await client.get(f"{other}/inspect")) == []
        # Redirected there: not sent either; the other host's own cookies are.
        await client.get(set_cookie_url(other, "theirs=2"))
        resp = await client.get(f"{hypercorn_server.url}/redirect?to={other}/inspect")
        assert sent_cookies(resp) == ["theirs=2"]
        assert sent_cookies(await client.get(f"{hypercorn_server.url}/inspect")) == ["mine=1"]


async def test_secure_cookies_only_over_https_and_ports_do_not_isolate(
    hypercorn_server: HypercornServer,
    plain_hypercorn: HypercornServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    secure = f"https://127.0.0.1:{hypercorn_server.port}"
    async with aiopool.Client(verify=client_ssl_context) as client:
        await client.get(set_cookie_url(secure, "plain=1", "sec=2; Secure"))
        assert sent_cookies(await client.get(f"{secure}/inspect")) == ["plain=1; sec=2"]
        # Same host, another port, plain HTTP: RFC 6265 section 8.5, cookies do not isolate
        # by port; section 4.1.2.5, a Secure cookie never travels unencrypted.
        resp = await client.get(f"{plain_hypercorn.url}/inspect")
        assert sent_cookies(resp) == ["plain=1"]


async def test_path_scoping(hypercorn_server: HypercornServer, make_client: MakeClient) -> None:
    async with make_client() as client:
        await client.get(set_cookie_url(hypercorn_server.url, "p=1; Path=/chain"))
        assert sent_cookies(await client.get(f"{hypercorn_server.url}/chain/0")) == ["p=1"]
        assert sent_cookies(await client.get(f"{hypercorn_server.url}/inspect")) == []


async def test_expiry_and_deletion_by_the_server(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = hypercorn_server.url
    async with make_client() as client:
        await client.get(set_cookie_url(url, "gone=1", "later=2; Max-Age=3600"))
        await client.get(
            set_cookie_url(url, "gone=1; Max-Age=0", "old=3; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        )
        assert sorted(client.cookies) == ["later"]
        assert sent_cookies(await client.get(f"{url}/inspect")) == ["later=2"]


@pytest.mark.parametrize("kind", ["dict", "pairs", "Cookies", "CookieJar"])
async def test_client_cookies_in_every_form(
    hypercorn_server: HypercornServer, make_client: MakeClient, kind: str
) -> None:
    seed: aiopool.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]
    if kind == "dict":
        seed = {"a": "1", "b": "2"}
    elif kind == "pairs":
        seed = [("a", "1"), ("b", "2")]
    else:
        seed = aiopool.Cookies({"a": "1", "b": "2"})
        if kind == "CookieJar":
            seed = seed.jar
    async with make_client(cookies=seed) as client:
        resp = await client.get(f"{hypercorn_server.url}/inspect")
        assert sent_cookies(resp) == ["a=1; b=2"]
        if kind == "CookieJar":
            assert client.cookies.jar is seed  # adopted, not copied


async def test_the_jar_can_be_replaced_and_edited_between_requests(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    url = f"{hypercorn_server.url}/inspect"
    async with make_client() as client:
        client.cookies = {"a": "1"}  # coerced, as httpx does
        assert isinstance(client.cookies, aiopool.Cookies)
        assert sent_cookies(await client.get(url)) == ["a=1"]
        client.cookies["b"] = "2"
        del client.cookies["a"]
        assert sent_cookies(await client.get(url)) == ["b=2"]
        client.cookies.clear()
        assert sent_cookies(await client.get(url)) == []


async def test_a_user_cookie_header_wins_over_the_jar(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client(cookies={"jar": "1"}) as client:
        resp = await client.get(f"{hypercorn_server.url}/inspect", headers={"Cookie": "mine=2"})
        assert sent_cookies(resp) == ["mine=2"]
    async with make_client(cookies={"jar": "1"}, headers={"Cookie": "default=3"}) as client:
        resp = await client.get(f"{hypercorn_server.url}/inspect")
        assert sent_cookies(resp) == ["default=3"]


async def test_cookies_without_a_domain_go_where_the_user_asks_not_where_redirects_lead(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    other = f"https://127.0.0.1:{hypercorn_server.port}/inspect"
    async with make_client(cookies={"token": "t0k"}) as client:
        assert sent_cookies(await client.get(other)) == ["token=t0k"]
        resp = await client.get(f"{hypercorn_server.url}/redirect?to={quote(other, safe='')}")
        assert sent_cookies(resp) == []
        # Back on the origin the user asked for, they are sent again.
        resp = await client.get(f"{hypercorn_server.url}/chain/1")
        assert sent_cookies(resp) == ["token=t0k"]


async def test_a_cookie_scoped_by_domain(
    hypercorn_server: HypercornServer, make_client: MakeClient
) -> None:
    async with make_client() as client:
        client.cookies.set("scoped", "1", domain="127.0.0.1")
        other = f"https://127.0.0.1:{hypercorn_server.port}/inspect"
        assert sent_cookies(await client.get(other)) == ["scoped=1"]
        assert sent_cookies(await client.get(f"{hypercorn_server.url}/inspect")) == []


async def test_a_cookie_that_cannot_be_sent_fails_before_any_socket(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client() as client:
        jar_cookie = aiopool.Cookies({"x": "1"}).jar
        (cookie,) = list(jar_cookie)
        cookie.value = "a\r\nInjected: 1"  # straight into the jar, past Cookies.set's checks
        client.cookies.jar.set_cookie(cookie)
        with pytest.raises(aiopool.LocalProtocolError):
            await client.get(f"{fresh_fault_server.url}/echo")
        assert fresh_fault_server.connections_accepted == 0
        assert client.stats().requests == 0


# Cookies as a value ----------------------------------------------------------------------------


def test_cookies_mapping_api() -> None:
    cookies = aiopool.Cookies({"a": "1"})
    cookies["b"] = "2"
    cookies.set("c", "3", domain="example.org", path="/x")
    assert "a" in cookies and "zzz" not in cookies
    assert sorted(cookies) == ["a", "b", "c"]
    assert len(cookies) == 3
    assert cookies.get("c") == "3"
    assert cookies.get("c", domain="other.example") is None
    assert cookies.get("missing", "default") == "default"
    del cookies["a"]
    with pytest.raises(KeyError):
        del cookies["a"]
    with pytest.raises(KeyError):
        cookies["a"]
    cookies.delete("c", domain="example.org")
    assert sorted(cookies) == ["b"]
    cookies.clear()
    assert len(cookies) == 0 and not cookies
    assert isinstance(cookies.jar, CookieJar)


def test_same_name_in_two_domains_is_a_conflict_until_narrowed() -> None:
    cookies = aiopool.Cookies()
    cookies.set("sid", "1", domain="a.example")
    cookies.set("sid", "2", domain="b.example")
    with pytest.raises(aiopool.CookieConflict):
        cookies.get("sid")
    assert cookies.get("sid", domain="b.example") == "2"
    assert (list(cookies), len(cookies)) == (["sid"], 1)  # a mapping by name
    cookies.clear(domain="a.example")
    assert cookies["sid"] == "2"


def test_repr_shows_names_and_domains_never_values() -> None:
    cookies = aiopool.Cookies()
    cookies.set("session", "v3ry-s3cret", domain="example.org")
    text = repr(cookies)
    assert "session" in text and "example.org" in text
    assert "v3ry-s3cret" not in text


@pytest.mark.parametrize(
    ("name", "value"), [("a b", "1"), ("a;b", "1"), ("", "1"), ("a", "x;y"), ("a", "x\r\ny")]
)
def test_illegal_cookies_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="illegal cookie"):
        aiopool.Cookies().set(name, value)


def test_non_text_cookies_are_refused() -> None:
    with pytest.raises(TypeError):
        aiopool.Cookies().set("a", 1)  # type: ignore[arg-type]


def test_a_hostile_set_cookie_is_dropped_not_stored() -> None:
    cookies = aiopool.Cookies()
    headers = aiopool.Headers(
        [
            (b"set-cookie", b"bad=a\x01b"),
            (b"set-cookie", b"b@d name=1"),
            (b"set-cookie", b"good=1"),
        ]
    )
    cookies.extract(headers, aiopool.URL("http://h.example/"))
    assert list(cookies) == ["good"]


def test_a_cookie_for_another_domain_is_refused() -> None:
    cookies = aiopool.Cookies()
    headers = aiopool.Headers([(b"set-cookie", b"x=1; Domain=bank.example")])
    cookies.extract(headers, aiopool.URL("http://evil.example/"))
    assert len(cookies) == 0


def test_a_host_only_cookie_is_not_sent_to_subdomains() -> None:
    # RFC 6265 section 5.3 step 6; the stdlib's default policy would send it.
    cookies = aiopool.Cookies()
    cookies.extract(aiopool.Headers([(b"set-cookie", b"x=1")]), aiopool.URL("http://h.example/"))
    assert cookies.header_for(aiopool.URL("http://h.example/")) == b"x=1"
    assert cookies.header_for(aiopool.URL("http://sub.h.example/")) is None


def test_an_existing_cookie_object_can_be_added_through_the_jar() -> None:
    cookies = aiopool.Cookies()
    cookie = Cookie(
        0, "j", "1", None, False, "h.example", True, False, "/", True, False, None, True, None,
        None, {},
    )  # fmt: skip
    cookies.jar.set_cookie(cookie)
    assert cookies.header_for(aiopool.URL("http://h.example/p")) == b"j=1"


def test_the_remembered_header_follows_every_change_to_the_jar() -> None:
    cookies = aiopool.Cookies()
    url = aiopool.URL("http://h.example/p")
    assert cookies.header_for(url) is None
    cookies.extract(aiopool.Headers([(b"set-cookie", b"a=1")]), url)
    assert cookies.header_for(url) == b"a=1"
    cookies.extract(aiopool.Headers([(b"set-cookie", b"a=2")]), url)  # replaced by the server
    assert cookies.header_for(url) == b"a=2"
    cookies["b"] = "3"
    assert cookies.header_for(url) == b"a=2; b=3"
    del cookies["a"]
    assert cookies.header_for(url) == b"b=3"
    assert cookies.header_for(url, cross_origin_hop=True) is None  # remembered apart
    cookies.jar.set_cookie(next(iter(aiopool.Cookies({"c": "4"}).jar)))
    assert cookies.header_for(url) == b"b=3; c=4"
    cookies.clear()
    assert cookies.header_for(url) is None


def test_the_remembered_header_forgets_a_cookie_that_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cookies = aiopool.Cookies({"session": "s"})
    url = aiopool.URL("http://h.example/")
    cookies.extract(aiopool.Headers([(b"set-cookie", b"short=1; Max-Age=60")]), url)
    assert cookies.header_for(url) == b"session=s; short=1"
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)  # the jar and the stdlib read this clock
    assert cookies.header_for(url) == b"session=s"
    assert list(cookies) == ["session"]  # and the stdlib dropped it from the jar


def test_a_cookie_set_again_with_a_later_expiry_lives_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cookies = aiopool.Cookies()
    url = aiopool.URL("http://h.example/")
    cookies.extract(aiopool.Headers([(b"set-cookie", b"sticky=1; Max-Age=60")]), url)
    assert cookies.header_for(url) == b"sticky=1"
    # Re-set with the same value (a load balancer does it on every response): kept longer.
    cookies.extract(aiopool.Headers([(b"set-cookie", b"sticky=1; Max-Age=3600")]), url)
    assert cookies.header_for(url) == b"sticky=1"
    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)
    assert cookies.header_for(url) == b"sticky=1"
    cookies.extract(aiopool.Headers([(b"set-cookie", b"sticky=2; Max-Age=3600")]), url)
    assert cookies.header_for(url) == b"sticky=2"  # a new value is seen at once


_COOKIE_PIECES = st.sampled_from(
    [
        *"=; ,\"'abcXYZ019-._",
        "Expires=",
        "Max-Age=",
        "Domain=",
        "Path=",
        "Secure",
        "Version=1",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        ".h.example",
        "-1",
        "99999999999999999999",
        "\x80",
        "ü",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_COOKIE_PIECES, max_size=14).map("".join), min_size=1, max_size=3))
def test_any_set_cookie_is_stored_or_dropped_and_what_is_stored_can_be_sent(
    values: list[str],
) -> None:
    # A warning from http.cookiejar ("http.cookiejar bug!") would be an error here.
    cookies = aiopool.Cookies()
    url = aiopool.URL("http://h.example/a/b")
    cookies.extract(aiopool.Headers([(b"set-cookie", v.encode()) for v in values]), url)
    value = cookies.header_for(url)
    if value is not None:
        validate_header(b"cookie", value)
