"""Value types without the network: URL, Headers, Timeout, Request and Response."""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

import aiopool

# URL -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "host_header"),
    [
        ("http://example.org/", "http", "example.org", 80, b"example.org"),
        ("https://example.org/", "https", "example.org", 443, b"example.org"),
        ("http://example.org:80/", "http", "example.org", 80, b"example.org"),
        ("https://example.org:443/", "https", "example.org", 443, b"example.org"),
        ("http://example.org:443/", "http", "example.org", 443, b"example.org:443"),
        ("https://example.org:80/", "https", "example.org", 80, b"example.org:80"),
        ("http://example.org:8080/", "http", "example.org", 8080, b"example.org:8080"),
        ("HTTP://Example.ORG/", "http", "example.org", 80, b"example.org"),
        ("http://127.0.0.1:1/", "http", "127.0.0.1", 1, b"127.0.0.1:1"),
        ("http://[::1]:8080/x", "http", "::1", 8080, b"[::1]:8080"),
        ("https://[::1]/", "https", "::1", 443, b"[::1]"),
        ("http://user:pw@example.org:81/", "http", "example.org", 81, b"example.org:81"),
    ],
)
def test_url_origin_and_host_header(
    url: str, scheme: str, host: str, port: int, host_header: bytes
) -> None:
    parsed = aiopool.URL(url)
    assert (parsed.scheme, parsed.host, parsed.port) == (scheme, host, port)
    assert parsed.host_header == host_header  # the default port is left out
    assert b"user" not in parsed.host_header


def test_url_origin_string_brackets_ipv6() -> None:
    url = aiopool.URL("http://[::1]:8080/x")
    assert str(url.origin) == "http://[::1]:8080"
    assert str(url) == "http://[::1]:8080/x"
    assert url.target == b"/x"


def test_url_idna_host() -> None:
    url = aiopool.URL("http://bücher.example/")
    assert url.host == "xn--bcher-kva.example"
    assert url.host_header == b"xn--bcher-kva.example"
    assert str(url) == "http://xn--bcher-kva.example/"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://h", b"/"),
        ("http://h?x=1", b"/?x=1"),
        ("http://h/a/b?x=1&y=2", b"/a/b?x=1&y=2"),
        ("http://h/ü", b"/%C3%BC"),
        ("http://h/p?q=ü", b"/p?q=%C3%BC"),
        ("http://h/%C3%BC", b"/%C3%BC"),  # already encoded: not encoded twice
        ("http://h/a%2Fb", b"/a%2Fb"),  # an encoded slash stays encoded
        ("http://h/p?q=1#frag", b"/p?q=1"),  # the fragment never goes on the wire
        ("http://h/#", b"/"),
    ],
)
def test_url_request_target(url: str, target: bytes) -> None:
    parsed = aiopool.URL(url)
    assert parsed.target == target
    assert parsed.target.isascii()


def test_url_keeps_the_fragment_in_its_text_only() -> None:
    url = aiopool.URL("http://h/p?q=1#frag")
    assert str(url).endswith("#frag")
    assert (url.path, url.query) == ("/p", "q=1")
    assert b"frag" not in url.target


@pytest.mark.parametrize(
    ("url", "params", "expected"),
    [
        ("http://h/p", {"a": "1"}, "http://h/p?a=1"),
        ("http://h/p?a=1", {"b": "2"}, "http://h/p?a=1&b=2"),
        ("http://h/p?a=1", {"a": "2"}, "http://h/p?a=1&a=2"),  # merged, not replaced
        (
            "http://h/p",
            {"x": [1, 2], "skip": None, "t": True, "f": False},
            "http://h/p?x=1&x=2&t=true&f=false",
        ),
        ("http://h/p", [("k", "a b"), ("k", "ü")], "http://h/p?k=a+b&k=%C3%BC"),
        ("http://h/p", "raw=1&z", "http://h/p?raw=1&z"),
    ],
)
def test_url_merge_params(url: str, params: Any, expected: str) -> None:
    merged = aiopool.URL(url).copy_merge_params(params)
    assert str(merged) == expected
    assert b"#" not in merged.target


def test_url_merge_params_before_the_fragment() -> None:
    merged = aiopool.URL("http://h/p?q=1#frag").copy_merge_params({"b": "2"})
    assert merged.target == b"/p?q=1&b=2"
    assert merged.query == "q=1&b=2"


def test_url_merge_no_params_returns_the_same_url() -> None:
    url = aiopool.URL("http://h/p?a=1")
    assert url.copy_merge_params({}) is url
    assert url.copy_merge_params({"a": None}) is url


def test_url_equality_and_hash() -> None:
    a = aiopool.URL("HTTP://H:80/p")
    b = aiopool.URL("http://h/p")
    assert a == b
    assert a == "http://h/p"
    assert hash(a) == hash(b)
    assert a != aiopool.URL("http://h/q")
    assert repr(b) == "URL('http://h/p')"


# Headers ---------------------------------------------------------------------------------------


def make_headers(pairs: Iterable[tuple[str, str]]) -> aiopool.Headers:
    return aiopool.Headers(list(pairs))


def test_headers_are_case_insensitive() -> None:
    headers = aiopool.Headers({"Content-Type": "text/plain"})
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "text/plain"
    assert "CONTENT-type" in headers
    assert headers.get("Content-Length") is None
    assert headers.get("content-length", "0") == "0"
    with pytest.raises(KeyError):
        headers["missing"]
    assert 42 not in headers  # type: ignore[comparison-overlap]


def test_headers_multi_values() -> None:
    headers = make_headers([("Set-Cookie", "a=1"), ("X-Other", "o"), ("set-cookie", "b=2")])
    assert headers["set-cookie"] == "a=1, b=2"
    assert headers.get_list("SET-COOKIE") == ["a=1", "b=2"]
    assert headers.get_list("missing") == []
    assert headers.multi_items() == [("Set-Cookie", "a=1"), ("X-Other", "o"), ("set-cookie", "b=2")]
    assert list(headers) == ["set-cookie", "x-other"]
    assert len(headers) == 2
    assert dict(headers) == {"set-cookie": "a=1, b=2", "x-other": "o"}


def test_headers_setitem_replaces_every_field() -> None:
    headers = make_headers([("A", "1"), ("B", "x"), ("a", "2")])
    headers["a"] = "3"
    assert headers.get_list("A") == ["3"]
    assert headers.multi_items() == [("B", "x"), ("a", "3")]


def test_headers_add_keeps_existing_fields() -> None:
    headers = aiopool.Headers({"Accept": "text/html"})
    assert headers["accept"] == "text/html"  # builds the index before the change
    headers.add("accept", "application/json")
    assert headers["accept"] == "text/html, application/json"
    assert headers.get_list("Accept") == ["text/html", "application/json"]


def test_headers_delete() -> None:
    headers = make_headers([("A", "1"), ("B", "2"), ("a", "3")])
    del headers["A"]
    assert "a" not in headers
    assert headers.multi_items() == [("B", "2")]
    with pytest.raises(KeyError):
        del headers["A"]


def test_headers_equality() -> None:
    headers = make_headers([("Content-Type", "text/plain"), ("X-A", "1")])
    assert headers == {"content-type": "text/plain", "x-a": "1"}
    assert headers == {"X-A": "1", "CONTENT-TYPE": "text/plain"}  # order and case of names
    assert headers == aiopool.Headers({"x-a": "1", "content-type": "text/plain"})
    assert headers != {"content-type": "TEXT/PLAIN", "x-a": "1"}  # values keep their case
    assert headers != {"content-type": "text/plain"}
    assert headers != "content-type: text/plain"


def test_headers_accept_bytes_and_copy() -> None:
    original = aiopool.Headers([(b"X-Raw", b"\xe9t\xe9")])
    assert original["x-raw"] == "été"  # latin-1, as on the wire
    copy = aiopool.Headers(original)
    copy["x-raw"] = "changed"
    assert original["x-raw"] == "été"
    assert original.raw == [(b"X-Raw", b"\xe9t\xe9")]


def test_headers_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(aiopool.Headers())


# Timeout ---------------------------------------------------------------------------------------


def fields_of(timeout: aiopool.Timeout) -> tuple[float | None, ...]:
    return (timeout.connect, timeout.read, timeout.write, timeout.pool)


def test_timeout_single_value_sets_all() -> None:
    assert fields_of(aiopool.Timeout(5)) == (5.0, 5.0, 5.0, 5.0)
    assert all(isinstance(v, float) for v in fields_of(aiopool.Timeout(5)))


def test_timeout_keywords_override_the_default() -> None:
    assert fields_of(aiopool.Timeout(5, connect=1)) == (1.0, 5.0, 5.0, 5.0)
    assert fields_of(aiopool.Timeout(read=2, pool=None)) == (30.0, 2.0, 30.0, None)
    assert fields_of(aiopool.Timeout(None, connect=3)) == (3.0, None, None, None)


def test_timeout_none_disables() -> None:
    assert fields_of(aiopool.Timeout(None)) == (None, None, None, None)
    assert aiopool.Timeout(0) == aiopool.Timeout(0.0)  # zero is allowed


@pytest.mark.parametrize(
    "kwargs",
    [{"default": -1}, {"connect": -0.1}, {"read": -1}, {"write": -1}, {"pool": -1}],
)
def test_timeout_negative_is_a_value_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        aiopool.Timeout(**kwargs)


def test_timeout_coerce() -> None:
    timeout = aiopool.Timeout(1, read=2)
    assert aiopool.Timeout.coerce(timeout) is timeout
    assert aiopool.Timeout.coerce(3) == aiopool.Timeout(3)
    assert aiopool.Timeout.coerce(2.5) == aiopool.Timeout(2.5, connect=2.5)
    assert fields_of(aiopool.Timeout.coerce(None)) == (None, None, None, None)


def test_timeout_is_frozen_and_hashable() -> None:
    timeout = aiopool.Timeout(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        timeout.read = 1  # type: ignore[misc]
    assert hash(timeout) == hash(aiopool.Timeout(5.0))


# Request ---------------------------------------------------------------------------------------


def make_request(
    method: str = "GET", url: str = "http://example.org/", content: bytes | None = None
) -> aiopool.Request:
    return aiopool.Request(method, aiopool.URL(url), aiopool.Headers(), content)


@pytest.mark.parametrize(
    ("method", "headers", "idempotent"),
    [
        ("GET", {}, True),
        ("HEAD", {}, True),
        ("OPTIONS", {}, True),
        ("TRACE", {}, True),
        ("PUT", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("PATCH", {}, False),
        ("POST", {"Idempotency-Key": "k1"}, True),
        ("PATCH", {"x-idempotency-key": "k1"}, True),
    ],
)
def test_request_replay_follows_gos_rule(
    method: str, headers: dict[str, str], idempotent: bool
) -> None:
    request = aiopool.Request(method, aiopool.URL("http://h/"), aiopool.Headers(headers), b"x")
    assert request.idempotent is idempotent
    # Nothing written yet: the server cannot have seen it, any method may be sent again.
    assert request.replayable
    # Once a byte reached the socket, only an idempotent request may be.
    request._written = True
    assert request.replayable is idempotent


def test_request_with_a_started_one_shot_body_is_not_replayable() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x"

    request = aiopool.Request("PUT", aiopool.URL("http://h/"), aiopool.Headers(), body())
    assert request.rereadable and request.replayable  # no chunk taken yet
    request.body_started = True
    assert not request.rereadable
    assert not request.replayable  # idempotent, but the body is gone


def test_request_validates_method_and_headers() -> None:
    with pytest.raises(aiopool.LocalProtocolError):
        make_request("GE T")
    with pytest.raises(aiopool.LocalProtocolError):
        aiopool.Request("GET", aiopool.URL("http://h/"), aiopool.Headers({"X": "a\r\nb"}))
    assert repr(make_request()) == "<Request [GET http://example.org/]>"


# Response --------------------------------------------------------------------------------------

CONN_INFO = aiopool.ConnInfo(
    id=1, reused=False, was_idle=False, idle_time=0.0, http_version="HTTP/1.1"
)


def make_response(
    status: int = 200,
    content: bytes | None = b"",
    headers: dict[str, str] | None = None,
    reason: str = "",
    stream: FakeBody | None = None,
    opened_at: str | None = None,
) -> aiopool.Response:
    return aiopool.Response(
        status,
        reason=reason,
        headers=aiopool.Headers(headers or {}),
        request=make_request(url="http://example.org/path"),
        conn_info=CONN_INFO,
        content=content,
        stream=stream,
        opened_at=opened_at,
    )


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        ("text/plain; charset=utf-8", "café".encode(), "café"),
        ("text/plain; charset=latin-1", "café".encode("latin-1"), "café"),
        ("text/plain; charset=ISO-8859-1", "café".encode("latin-1"), "café"),
        ('text/html; charset="windows-1252"', b"\x80", "€"),
        ("text/plain;charset=UTF-16", "hé".encode("utf-16"), "hé"),
        ("text/plain", "café".encode(), "café"),  # no charset: UTF-8
        ("application/json", "é".encode(), "é"),
        ("text/plain; charset=no-such-codec", "café".encode(), "café"),  # unknown: UTF-8
        (None, "café".encode(), "café"),
        ("text/plain", b"caf\xe9", "caf\ufffd"),  # undecodable bytes are replaced
    ],
)
def test_response_text(content_type: str | None, body: bytes, text: str) -> None:
    headers = {"Content-Type": content_type} if content_type else None
    assert make_response(content=body, headers=headers).text == text


def test_response_encoding_is_normalised() -> None:
    resp = make_response(headers={"content-type": "text/plain; charset=LATIN-1"})
    assert resp.encoding == "iso8859-1"
    assert make_response().encoding == "utf-8"


def test_response_json() -> None:
    resp = make_response(content=b'{"a": [1, 2.5, null], "b": "\xc3\xa9"}')
    assert resp.json() == {"a": [1, 2.5, None], "b": "é"}
    assert make_response(content=b"1.5").json(parse_float=str) == "1.5"
    with pytest.raises(ValueError, match="Expecting value"):
        make_response(content=b"not json").json()


@pytest.mark.parametrize("status", [200, 201, 204, 299, 301, 304, 399])
def test_raise_for_status_passes_below_400(status: int) -> None:
    resp = make_response(status)
    assert resp.raise_for_status() is resp
    assert resp.is_success is (status < 300)


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "Bad Request", "Client error"),
        (404, "Not Found", "Client error"),
        (499, "", "Client error"),
        (500, "Internal Server Error", "Server error"),
        (503, "Service Unavailable", "Server error"),
        (599, "", "Server error"),
    ],
)
def test_raise_for_status_raises_from_400(status: int, reason: str, kind: str) -> None:
    resp = make_response(status, reason=reason)
    with pytest.raises(aiopool.HTTPStatusError) as info:
        resp.raise_for_status()
    message = str(info.value)
    assert message.startswith(kind)
    assert str(status) in message
    assert "http://example.org/path" in message
    assert info.value.response is resp
    assert info.value.request is resp.request
    assert not resp.is_success


def test_response_basics() -> None:
    resp = make_response(404, reason="Not Found", content=b"gone")
    assert repr(resp) == "<Response [404 Not Found]>"
    assert resp.url == "http://example.org/path"
    assert resp.http_version == "HTTP/1.1"
    assert resp.conn_info is CONN_INFO
    assert resp.is_closed  # a read response holds no connection
    assert resp.content == b"gone"


class FakeBody:
    """A `BodyStream` that yields given chunks and records how it was finished."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self._chunks = list(chunks)
        self._fail_after = fail_after
        self.received = 0
        self.closed = False
        self.aborted = False

    async def receive(self) -> bytes:
        if self._fail_after is not None and self.received >= self._fail_after:
            raise aiopool.ReadError("connection lost")
        self.received += 1
        return self._chunks.pop(0) if self._chunks else b""

    async def aclose(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


async def collect(resp: aiopool.Response, into: list[bytes]) -> None:
    async for chunk in resp.aiter_bytes():
        into.append(chunk)


def open_and_drop(body: FakeBody, opened_at: str) -> None:
    """Make a streamed response and drop the only reference to it while still open."""
    make_response(content=None, stream=body, opened_at=opened_at)


async def test_streamed_response_reads_once() -> None:
    body = FakeBody([b"ab", b"cd"])
    resp = make_response(content=None, stream=body)
    assert not resp.is_closed
    with pytest.raises(aiopool.StreamConsumed, match="aread"):
        _ = resp.content
    assert [chunk async for chunk in resp.aiter_bytes()] == [b"ab", b"cd"]
    assert resp.is_closed
    with pytest.raises(aiopool.StreamConsumed):
        async for _ in resp.aiter_bytes():
            pass
    assert not body.aborted


async def test_streamed_response_aread_then_content() -> None:
    resp = make_response(content=None, stream=FakeBody([b"ab", b"cd"]))
    assert await resp.aread() == b"abcd"
    assert resp.content == b"abcd"
    assert await resp.aread() == b"abcd"  # cached
    assert [chunk async for chunk in resp.aiter_bytes()] == [b"abcd"]


async def test_closed_streamed_response_cannot_be_read() -> None:
    body = FakeBody([b"ab"])
    resp = make_response(content=None, stream=body)
    await resp.aclose()
    assert body.closed
    assert resp.is_closed
    with pytest.raises(aiopool.StreamClosed):
        await resp.aread()
    await resp.aclose()  # idempotent


async def test_error_while_streaming_aborts_the_body() -> None:
    body = FakeBody([b"ab", b"cd"], fail_after=1)
    resp = make_response(content=None, stream=body)
    chunks: list[bytes] = []
    with pytest.raises(aiopool.ReadError):
        await collect(resp, chunks)
    assert chunks == [b"ab"]
    assert body.aborted
    assert resp.is_closed


def test_unclosed_streamed_response_warns_where_it_was_opened() -> None:
    body = FakeBody([b"ab"])
    with pytest.warns(ResourceWarning, match=r"opened at client_code\.py:42"):
        open_and_drop(body, "client_code.py:42")
    assert body.aborted  # the socket is closed, not pooled


def test_read_response_is_collected_silently() -> None:
    resp = make_response(content=b"done")
    del resp
    gc.collect()  # with filterwarnings=error, a warning here would fail the test


async def test_a_response_made_without_a_body_has_an_empty_one() -> None:
    response = aiopool.Response(204)
    assert response.reason == "No Content"
    assert response.content == b"" and await response.aread() == b""
    assert [chunk async for chunk in response.aiter_bytes()] == []
    assert response.is_closed
