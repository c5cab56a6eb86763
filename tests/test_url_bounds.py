"""URLs as an attack: the length limit, what the parse cache may hold, and secrets in text.

Reported: 52 requests following 10 redirects each to unique 90 KB Locations left 300 MiB held
after they returned, 100 distinct 1 MiB URLs 396 MiB (the parse caches kept them); and
`str(URL)` returned the password, which an `InvalidURL` also quoted when a `/`, `?` or `#` in
it broke the URL. The tests assert the bounds, not memory figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopool
from aiopool import _urls
from aiopool._proxy import Proxy
from aiopool._urls import _CACHE_ENTRIES, _CACHEABLE, MAX_URL_LENGTH
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer

# The length limit --------------------------------------------------------------------------------


def test_a_url_at_the_limit_is_accepted_and_one_past_it_refused() -> None:
    head = "http://example.org/?q="
    at_limit = head + "x" * (MAX_URL_LENGTH - len(head))
    assert aiopool.URL(at_limit).target.endswith(b"x")
    with pytest.raises(aiopool.InvalidURL, match="over the limit of 65,536") as info:
        aiopool.URL(at_limit + "x")
    assert len(str(info.value)) < 300  # the URL is not quoted whole


def test_percent_encoding_cannot_take_a_url_past_the_limit() -> None:
    # Each "ü" becomes "%C3%BC": 8,000 characters given, 48,000 on the wire... and past it.
    aiopool.URL("http://h/" + "ü" * 8_000)
    with pytest.raises(aiopool.InvalidURL, match="over the limit"):
        aiopool.URL("http://h/" + "ü" * (MAX_URL_LENGTH // 6 + 1))


def test_join_and_params_are_held_to_the_limit() -> None:
    base = aiopool.URL("http://h/")
    with pytest.raises(aiopool.InvalidURL, match="over the limit"):
        base.join("/" + "x" * MAX_URL_LENGTH)
    with pytest.raises(aiopool.InvalidURL, match="over the limit"):
        base.copy_merge_params({"q": "x" * MAX_URL_LENGTH})


async def test_a_long_url_is_refused_before_a_connection_is_made(
    fresh_fault_server: FaultServer,
) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidURL, match="over the limit"):
            await client.get(f"{fresh_fault_server.url}/echo?q=" + "x" * MAX_URL_LENGTH)
        stats = assert_settled(client)
        assert stats.connections_opened == 0
    assert fresh_fault_server.connections_accepted == 0


# The parse cache ---------------------------------------------------------------------------------


def test_a_long_url_is_not_cached() -> None:
    long = "http://example.org/long?" + "x" * _CACHEABLE
    short = "http://example.org/short"
    aiopool.URL(long)
    aiopool.URL(short)
    assert long not in _urls._cache
    assert short in _urls._cache
    # Short as given, long once percent-encoded: not cached either.
    encoded = "http://example.org/" + "ü" * (_CACHEABLE // 4)
    aiopool.URL(encoded)
    assert encoded not in _urls._cache


def test_the_cache_holds_a_bounded_number_of_bounded_entries() -> None:
    for i in range(_CACHE_ENTRIES + 100):
        aiopool.URL(f"http://example.org/{i}?" + "q" * (_CACHEABLE - 40))
    assert len(_urls._cache) <= _CACHE_ENTRIES
    # Every entry: its key, its text and its target, each at most _CACHEABLE characters.
    for key, (_, target, _, text, _) in _urls._cache.items():
        assert max(len(key), len(text), len(target)) <= _CACHEABLE
    # ...and a URL still in use comes back from it (the newest is never the one evicted).
    newest = f"http://example.org/{_CACHE_ENTRIES + 99}?" + "q" * (_CACHEABLE - 40)
    assert newest in _urls._cache


@pytest.mark.skipif(not hasattr(urlsplit, "cache_info"), reason="urlsplit has no cache here")
def test_parsing_does_not_fill_the_standard_library_cache() -> None:
    # urlsplit's own cache (Python 3.11+) has a count bound only: what goes in stays alive.
    info = urlsplit.cache_info  # type: ignore[attr-defined]
    before = info()
    aiopool.URL("http://example.org/stdlib?" + "y" * 10_000)
    after = info()
    assert (after.hits, after.misses) == (before.hits, before.misses)


# A hostile server's Locations ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def redirecting_server(location_size: int) -> AsyncIterator[str]:
    """A loopback server answering /h... with a 302 to a new, unique Location of about
    `location_size` bytes, ten hops deep, then 200."""
    counter = itertools.count()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                hops = path.split(b"?")[0].count(b"/h")
                if hops <= 10:  # the first request is /h: ten redirects
                    unique = str(next(counter)).encode()
                    pad = b"x" * max(location_size - 2 * hops - len(unique) - 4, 0)
                    location = b"/h" * (hops + 1) + b"?" + unique + b"&" + pad
                    writer.write(
                        b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nLocation: "
                        + location
                        + b"\r\n\r\n"
                    )
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1024 * 1024)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_location_past_the_limit_is_an_invalid_redirect() -> None:
    # 70,000 bytes: inside the 100 KiB response head bound, over the URL limit.
    async with redirecting_server(70_000) as origin, aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidRedirect, match="over the limit") as info:
            await client.get(f"{origin}/h")
        assert len(str(info.value)) < 300
        assert info.value.history == []  # refused at the first hop
        assert_settled(client)
    assert not any(len(key) > _CACHEABLE for key in _urls._cache)


async def test_long_locations_under_the_limit_are_followed_and_not_kept() -> None:
    # The reported attack, at sizes the limit lets through: 10 hops of unique 20 KB Locations
    # for each of 8 requests at once. Followed, then nothing of them stays in the cache.
    async with redirecting_server(20_000) as origin, aiopool.Client() as client:
        responses = await asyncio.gather(*(client.get(f"{origin}/h?{i}") for i in range(8)))
        assert [(r.status_code, len(r.history)) for r in responses] == [(200, 10)] * 8
        assert_settled(client)
    assert not any(len(key) > _CACHEABLE for key in _urls._cache)


# Secrets in text ---------------------------------------------------------------------------------


def test_str_masks_the_password_and_unmasked_has_it() -> None:
    url = aiopool.URL("http://alice:s3cret@example.org/p?q=1#f")
    for text in (str(url), f"{url}", repr(url), f"{url!r}"):
        assert "s3cret" not in text
        assert "alice:[secure]@example.org/p?q=1#f" in text
    assert url.unmasked == "http://alice:s3cret@example.org/p?q=1#f"
    assert (url.username, url.password) == ("alice", "s3cret")
    # The masked text is for reading only: equality and hashing use the full URL.
    other = aiopool.URL("http://alice:other@example.org/p?q=1#f")
    assert str(other) == str(url) and other != url
    assert url == "http://alice:s3cret@example.org/p?q=1#f"
    # Nothing that goes on the wire changes.
    assert (url.target, url.host_header, str(url.origin)) == (
        b"/p?q=1",
        b"example.org",
        "http://example.org:80",
    )


def test_a_url_without_a_password_reads_as_it_is() -> None:
    assert str(aiopool.URL("http://example.org/a")) == "http://example.org/a"
    assert str(aiopool.URL("http://alice@example.org/a")) == "http://alice@example.org/a"


async def test_credentials_in_a_base_url_still_become_basic_auth(
    fresh_fault_server: FaultServer,
) -> None:
    # The base URL is extended by its full text, not its masked str().
    base = fresh_fault_server.url.replace("http://", "http://alice:s3cret@") + "/"
    async with aiopool.Client(base_url=base) as client:
        resp = await client.get("echo")
    headers = {name.lower(): value for name, value in resp.json()["headers"]}
    assert headers["authorization"] == "Basic YWxpY2U6czNjcmV0"
    assert "s3cret" not in str(resp.url) and "alice" not in str(resp.url)


@pytest.mark.parametrize("char", ["/", "?", "#"])
def test_a_password_that_breaks_the_url_is_not_quoted(char: str) -> None:
    # An unencoded "/", "?" or "#" ends the authority: the parser then reads "s3" as a port.
    text = f"http://alice:s3{char}cr3t@example.org/"
    with pytest.raises(aiopool.InvalidURL) as info:
        aiopool.URL(text)
    message = str(info.value)
    assert "s3" not in message and "cr3t" not in message, message
    assert "alice:[secure]@" in message
    with pytest.raises(aiopool.InvalidURL) as info:
        aiopool.URL("http://example.org/").join(text)
    assert "s3" not in str(info.value) and "cr3t" not in str(info.value)
    with pytest.raises(aiopool.InvalidURL) as info:
        Proxy(f"http://alice:s3{char}cr3t@proxy.example:3128")
    assert "s3" not in str(info.value) and "cr3t" not in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "ftp://alice:s3cr3t@example.org/",  # unsupported scheme
        "http://alice:s3cr3t@example.org:0/",  # port 0
        "http://alice:s3cr3t@example.org:99999/",  # port out of range
        "http://alice:s3cr3t@/",  # no host
        "http://alice:s3cr3t@example.org/a b",  # whitespace
        "http://alice:s3/cr3t@example.org/?q=" + "x" * MAX_URL_LENGTH,  # too long, and broken
    ],
)
def test_no_invalid_url_message_quotes_a_password(text: str) -> None:
    with pytest.raises(aiopool.InvalidURL) as info:
        aiopool.URL(text)
    assert "s3" not in str(info.value) and "cr3t" not in str(info.value), str(info.value)


def test_an_at_sign_in_a_path_is_not_taken_for_userinfo() -> None:
    # Only when the authority cannot be a host and port is the text up to "@" hidden.
    with pytest.raises(aiopool.InvalidURL) as info:
        aiopool.URL("ftp://example.org:21/mail/a@b.example")
    assert "ftp://example.org:21/mail/a@b.example" in str(info.value)


# join: urljoin's results, without the standard library's cache -------------------------------

_PIECES = st.sampled_from(
    [*"/?#:@;=.%aZ09", "//", "..", "./", "../", "http:", "https:", "HTTP://", "[::1]", ":8", "g;x"]
)
_BASES = st.sampled_from(
    ["http://a/b/c/d;p?q", "http://a/", "https://u:p@a:8443/x/y/?k#f", "http://a", "http://a/b/"]
)


@settings(max_examples=500, deadline=None)
@given(_BASES, st.lists(_PIECES, max_size=10).map("".join))
def test_join_gives_what_urljoin_gives(base: str, reference: str) -> None:
    try:
        expected: str | Exception = urljoin(base, reference)
    except ValueError as exc:
        expected = exc
    try:
        got: str | Exception = _urls._join(base, reference)
    except ValueError as exc:
        got = exc
    if isinstance(expected, Exception):
        assert isinstance(got, ValueError)
    else:
        assert got == expected


def test_join_does_not_fill_the_standard_library_cache() -> None:
    if not hasattr(urlsplit, "cache_info"):
        pytest.skip("urlsplit has no cache here")
    info = urlsplit.cache_info  # type: ignore[attr-defined]
    before = info()
    aiopool.URL("http://example.org/a/b?" + "q" * 10_000).join("../c?" + "z" * 10_000)
    after = info()
    assert (after.hits, after.misses) == (before.hits, before.misses)
