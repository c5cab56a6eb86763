"""Bad input from the caller and hostile bytes from the server.

Two rules, after Go's transport and RFC 9110/9112:
- what the caller got wrong (URL, header, method) is refused with a typed error before any socket
  is touched: the server never sees a connection and an idle socket is never spent on it;
- what the server got wrong (malformed or truncated responses, resets, refusals) is a typed
  `aiopool` error carrying `.request`, the broken socket is discarded, and the next request on the
  same client works on a new connection.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest

import aiopool
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import FaultServer
from tests.rig.h2_server import H2ScriptServer

pytestmark = pytest.mark.both_parsers

# A host name that can never resolve (RFC 6761 section 6.4).
UNRESOLVABLE = "http://does-not-exist.invalid/"


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


def host_key(server: FaultServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def closed_port() -> int:
    """A loopback port nothing listens on: bound a moment ago, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def assert_fresh_connection_works(client: aiopool.Client, server: FaultServer) -> None:
    """After a failure, the same client still works, on a socket it has just opened."""
    before = client.stats()
    resp = await client.get(f"{server.url}/echo?id=after")
    assert resp.json()["id"] == "after"
    assert not resp.conn_info.reused
    assert not resp.conn_info.was_idle
    assert resp.headers["x-request-no"] == "1"
    assert client.stats().connections_opened == before.connections_opened + 1


async def _stream_all(
    client: aiopool.Client,
    url: str,
    chunks: list[bytes] | None = None,
    opened: list[aiopool.Response] | None = None,
) -> None:
    """Stream `url` to its end, keeping the chunks and the response for inspection."""
    async with client.stream("GET", url) as resp:
        if opened is not None:
            opened.append(resp)
        async for chunk in resp.aiter_bytes():
            if chunks is not None:
                chunks.append(chunk)


# Invalid URLs ----------------------------------------------------------------------------------

INVALID_URLS = [
    pytest.param("example.org/x", id="no-scheme"),
    pytest.param("//example.org/x", id="scheme-relative"),
    pytest.param("ftp://example.org/", id="ftp"),
    pytest.param("file:///x", id="file"),
    pytest.param("http:///x", id="empty-host"),
    pytest.param("http://", id="nothing"),
    pytest.param("http://h:99999/", id="port-too-big"),
    pytest.param("http://h:0/", id="port-zero"),
    pytest.param("http://h:abc/", id="port-not-a-number"),
    pytest.param("http://[::1/", id="unclosed-ipv6"),
    pytest.param("http://h/a b", id="space-in-path"),
    pytest.param("http://h/?q=a b", id="space-in-query"),
    pytest.param("http://h/x\r\nX-Injected: 1", id="crlf-in-path"),
    pytest.param("http://h/x\rY", id="cr"),
    pytest.param("http://h/x\nY", id="lf"),
    pytest.param("http://h/x\x00", id="nul"),
    pytest.param("http://h/x\tY", id="tab"),
    pytest.param("http://h/x\x7f", id="del"),
    pytest.param("http://h\r\n/", id="crlf-in-host"),
    pytest.param(" http://h/", id="leading-space"),
]


@pytest.mark.parametrize("url", INVALID_URLS)
async def test_invalid_url_is_refused_before_any_socket(url: str) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidURL):
            await client.get(url)
        with pytest.raises(aiopool.InvalidURL):
            client.stream("GET", url)  # refused when the context is made, not when entered
        with pytest.raises(aiopool.InvalidURL):
            aiopool.URL(url)
        stats = client.stats()
        assert (stats.requests, stats.connections_opened, stats.hosts) == (0, 0, {})


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param("/echo?id=a b", id="space"),
        pytest.param("/echo\r\nX-Injected: yes", id="crlf"),
        pytest.param("/echo\r", id="cr"),
        pytest.param("/echo?id=\n", id="lf"),
        pytest.param("/echo\x00", id="nul"),
    ],
)
async def test_control_characters_in_url_never_reach_the_server(
    server: FaultServer, suffix: str
) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidURL, match="whitespace or control"):
            await client.get(server.url + suffix)
        assert client.stats().requests == 0
        assert server.connections_accepted == 0
        # The next request is the first this server ever saw from us.
        await assert_fresh_connection_works(client, server)
        assert client.stats().requests == 1
    assert server.connections_accepted == 1


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(123, id="int"),
        pytest.param(None, id="none"),
        pytest.param(b"http://127.0.0.1/", id="bytes"),
        pytest.param(["http://127.0.0.1/"], id="list"),
    ],
)
async def test_non_str_url_is_invalid(url: Any) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.InvalidURL, match="must be a str"):
            await client.get(url)
        assert client.stats().requests == 0


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(123, id="int"),
        pytest.param(None, id="none"),
        pytest.param(b"http://127.0.0.1/", id="bytes"),
    ],
)
def test_url_class_refuses_non_str(url: Any) -> None:
    with pytest.raises(aiopool.InvalidURL, match="must be a str"):
        aiopool.URL(url)


def test_url_class_refuses_unhashable_non_str() -> None:
    with pytest.raises(aiopool.InvalidURL, match="must be a str"):
        aiopool.URL(["http://127.0.0.1/"])  # type: ignore[arg-type]


# Illegal headers and methods -------------------------------------------------------------------

BAD_HEADERS = [
    pytest.param({"X-A": "a\r\nX-Injected: 1"}, id="crlf-in-value"),
    pytest.param({"X-A": "a\rb"}, id="cr-in-value"),
    pytest.param({"X-A": "a\nb"}, id="lf-in-value"),
    pytest.param({"X-A": "a\x00b"}, id="nul-in-value"),
    pytest.param({"X-A\r\nX-B": "v"}, id="crlf-in-name"),
    pytest.param({"X-A\x00": "v"}, id="nul-in-name"),
    pytest.param({"Bad Name": "v"}, id="space-in-name"),
    pytest.param({"Bad:Name": "v"}, id="colon-in-name"),
    pytest.param({"X-A:": "v"}, id="trailing-colon-in-name"),
    pytest.param({"": "v"}, id="empty-name"),
    pytest.param({"X-Ä": "v"}, id="non-ascii-name"),
    pytest.param([(b"X-A", b"a\r\n\r\nGET /smuggled HTTP/1.1")], id="bytes-smuggling"),
    pytest.param([("Host", "h\r\nX-Injected: 1")], id="host-override"),
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_illegal_header_is_refused_before_the_wire(server: FaultServer, headers: Any) -> None:
    async with aiopool.Client() as client:
        warm = await client.get(f"{server.url}/echo")
        with pytest.raises(aiopool.LocalProtocolError, match="illegal"):
            await client.get(f"{server.url}/echo", headers=headers)
        with pytest.raises(aiopool.LocalProtocolError, match="illegal"):
            client.stream("POST", f"{server.url}/echo", headers=headers)
        # Not counted, and the idle socket was not spent on it.
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_closed) == (1, 0)
        assert stats.hosts[host_key(server)].idle == 1
        # Nothing was written on that socket: the server sees our next request as its second.
        again = await client.get(f"{server.url}/echo")
        assert again.conn_info.reused
        assert again.headers["x-conn-id"] == warm.headers["x-conn-id"]
        assert again.headers["x-request-no"] == "2"
    assert server.connections_accepted == 1


@pytest.mark.parametrize("headers", BAD_HEADERS[:4])
async def test_illegal_header_opens_no_connection(server: FaultServer, headers: Any) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.LocalProtocolError):
            await client.post(f"{server.url}/echo", headers=headers, content=b"body")
        assert client.stats().hosts == {}
        assert server.connections_accepted == 0
        await assert_fresh_connection_works(client, server)
    assert server.connections_accepted == 1


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(" leading", id="leading-space"),
        pytest.param("trailing ", id="trailing-space"),
        pytest.param("form\x0cfeed", id="form-feed"),
        pytest.param("vertical\x0btab", id="vertical-tab"),
    ],
)
async def test_header_value_h11_refuses_does_not_spend_a_socket(
    server: FaultServer, value: str
) -> None:
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")
        with pytest.raises(aiopool.LocalProtocolError):
            await client.get(f"{server.url}/echo", headers={"X-A": value})
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_closed) == (1, 0)
        assert stats.hosts[host_key(server)].idle == 1


@pytest.mark.parametrize("headers", BAD_HEADERS[::2])
def test_illegal_default_header_fails_at_construction(headers: Any) -> None:
    with pytest.raises(aiopool.LocalProtocolError, match="illegal"):
        aiopool.Client(headers=headers)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("GE T", id="space"),
        pytest.param("GET\r\n", id="crlf"),
        pytest.param("GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET", id="smuggling"),
        pytest.param("GET\x00", id="nul"),
        pytest.param("", id="empty"),
        pytest.param("GÉT", id="non-ascii"),
    ],
)
async def test_illegal_method_is_refused_before_the_wire(server: FaultServer, method: str) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.LocalProtocolError, match="illegal HTTP method"):
            await client.request(method, f"{server.url}/echo")
        with pytest.raises(aiopool.LocalProtocolError, match="illegal HTTP method"):
            client.stream(method, f"{server.url}/echo")
        assert client.stats().hosts == {}
        assert server.connections_accepted == 0
        await assert_fresh_connection_works(client, server)


async def test_method_is_upper_cased_not_refused(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.request("patch", f"{server.url}/echo")
        assert resp.json()["method"] == "PATCH"
        assert resp.request.method == "PATCH"


# Malformed and hostile responses ---------------------------------------------------------------

# (path, what the message says: h11's wording | llhttp's wording)
PROTOCOL_FAULTS = [
    pytest.param(
        "/malformed-status", "illegal status line|Invalid status code", id="malformed-status"
    ),
    pytest.param("/garbage", "malformed HTTP/1.1 response", id="garbage"),
    pytest.param("/bad-header", "illegal header line|Invalid header token", id="bad-header"),
    pytest.param(
        "/bad-chunk", "illegal chunk header|Invalid character in chunk size", id="bad-chunk"
    ),
    pytest.param("/conflicting-length?kind=cl", "Content-Length", id="two-content-lengths"),
    pytest.param("/oversized-headers", "too long|head larger than", id="oversized-headers"),
    pytest.param("/truncated", "complete message body", id="truncated"),
]


@pytest.mark.parametrize(("path", "detail"), PROTOCOL_FAULTS)
async def test_malformed_response_is_a_remote_protocol_error(
    server: FaultServer, path: str, detail: str
) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.RemoteProtocolError, match=detail) as info:
            await client.get(server.url + path)
        exc = info.value
        assert isinstance(exc, aiopool.ProtocolError)
        assert exc.request is not None
        assert exc.request.method == "GET"
        assert exc.request.url == server.url + path
        # The broken socket was closed, not pooled.
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened, stats.connections_closed) == (1, 1, 1)
        assert stats.hosts[host_key(server)].idle == 0
        await assert_fresh_connection_works(client, server)
    assert server.connections_accepted == 2


async def test_malformed_response_on_a_reused_socket_is_not_retried(server: FaultServer) -> None:
    # The server answered (with junk): that is not a stale socket, so there is no silent replay.
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.get(f"{server.url}/bad-header")
        stats = assert_settled(client)
        # (`reused` counts responses: the junk never became one.)
        assert (stats.requests, stats.connections_opened, stats.reused) == (2, 1, 0)
        assert stats.retries == {}
        assert stats.hosts[host_key(server)].idle == 0
        await assert_fresh_connection_works(client, server)
    assert server.connections_accepted == 2


async def test_content_length_with_transfer_encoding_is_refused(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.get(f"{server.url}/conflicting-length?kind=te")
        stats = assert_settled(client)
        assert stats.connections_closed == 1
        assert stats.hosts[host_key(server)].idle == 0


async def test_reset_mid_body_is_a_transport_error(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.TransportError) as info:
            await client.get(f"{server.url}/reset-mid-body")
        exc = info.value
        assert isinstance(exc, aiopool.ReadError | aiopool.RemoteProtocolError)
        assert isinstance(exc, aiopool.AiopoolError)
        assert exc.request is not None
        assert exc.request.url.path == "/reset-mid-body"
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)
        assert stats.hosts[host_key(server)].idle == 0
        await assert_fresh_connection_works(client, server)


@pytest.mark.parametrize(
    ("path", "expected", "sent"),
    [
        pytest.param("/truncated?declared=1000&sent=500", aiopool.RemoteProtocolError, 500),
        pytest.param("/reset-mid-body?sent=1024", aiopool.ReadError, 1024),
    ],
    ids=["truncated", "reset-mid-body"],
)
async def test_broken_body_while_streaming(
    server: FaultServer, path: str, expected: type[Exception], sent: int
) -> None:
    chunks: list[bytes] = []
    opened: list[aiopool.Response] = []
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.TransportError) as info:
            await _stream_all(client, server.url + path, chunks, opened)
        # A reset may also surface as the peer vanishing mid-message.
        assert isinstance(info.value, expected | aiopool.RemoteProtocolError)
        (resp,) = opened
        assert resp.status_code == 200
        conn_id = resp.headers["x-conn-id"]
        received = len(b"".join(chunks))
        assert received <= sent
        if expected is aiopool.RemoteProtocolError:
            assert received == sent  # a FIN delivers everything before it
        assert resp.is_closed
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)
        assert stats.hosts[host_key(server)].idle == 0
        again = await client.get(f"{server.url}/echo")
        assert again.headers["x-conn-id"] != conn_id
        assert not again.conn_info.reused


async def test_broken_streamed_body_error_carries_request(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.RemoteProtocolError) as info:
            await _stream_all(client, f"{server.url}/truncated")
        assert info.value.request is not None


# Connecting ------------------------------------------------------------------------------------


async def test_connection_refused_is_a_connect_error() -> None:
    port = closed_port()
    async with aiopool.Client() as client:
        for attempt in (1, 2):  # a failed dial is not cached: the second one fails the same way
            with pytest.raises(aiopool.ConnectError) as info:
                await client.get(f"http://127.0.0.1:{port}/")
            message = str(info.value)
            assert f"127.0.0.1:{port}" in message
            assert "refused" in message
            assert isinstance(info.value.__cause__, ConnectionRefusedError)
            stats = assert_settled(client)
            assert (stats.requests, stats.connections_opened) == (attempt, 0)
            host = stats.hosts[f"http://127.0.0.1:{port}"]
            assert (host.opened, host.idle) == (0, 0)


async def test_unresolvable_host_is_a_connect_error() -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.ConnectError, match=r"does-not-exist\.invalid"):
            await client.get(UNRESOLVABLE)
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened) == (1, 0)


async def test_connect_failure_does_not_poison_other_hosts(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.ConnectError):
            await client.get(f"http://127.0.0.1:{closed_port()}/")
        resp = await client.get(f"{server.url}/echo?id=ok")
        assert resp.json()["id"] == "ok"
        assert_settled(client)


async def test_connect_error_carries_request() -> None:
    url = f"http://127.0.0.1:{closed_port()}/x"
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get(url)
        assert info.value.request is not None
        assert info.value.request.url == url


# Nothing untyped escapes -----------------------------------------------------------------------

Scenario = Callable[[aiopool.Client, FaultServer], Awaitable[object]]


SCENARIOS: list[Any] = [
    pytest.param(lambda c, s: c.get("ftp://h/"), id="invalid-url"),
    pytest.param(lambda c, s: c.get(f"{s.url}/\r\n"), id="crlf-url"),
    pytest.param(lambda c, s: c.get(42), id="non-str-url"),
    pytest.param(lambda c, s: c.get(f"{s.url}/echo", headers={"a": "\n"}), id="bad-header"),
    pytest.param(lambda c, s: c.request("GE T", f"{s.url}/echo"), id="bad-method"),
    pytest.param(
        lambda c, s: c.post(f"{s.url}/echo", headers={"Content-Length": "3"}, content=b"x" * 10),
        id="false-content-length",
    ),
    pytest.param(lambda c, s: c.get(f"http://127.0.0.1:{closed_port()}/"), id="refused"),
    pytest.param(lambda c, s: c.get(UNRESOLVABLE), id="unresolvable"),
    pytest.param(
        lambda c, s: c.get(f"{s.url}/stall-headers", timeout=aiopool.Timeout(read=0.05)),
        id="read-timeout",
    ),
    *(
        pytest.param(lambda c, s, p=path: c.get(s.url + p), id=f"get{path}")
        for path in (
            "/malformed-status",
            "/garbage",
            "/bad-header",
            "/bad-chunk",
            "/conflicting-length?kind=cl",
            "/oversized-headers",
            "/truncated",
            "/reset-mid-body",
        )
    ),
    pytest.param(lambda c, s: _stream_all(c, f"{s.url}/truncated"), id="stream/truncated"),
    pytest.param(lambda c, s: _stream_all(c, f"{s.url}/reset-mid-body"), id="stream/reset"),
    pytest.param(lambda c, s: _stream_all(c, f"{s.url}/bad-chunk"), id="stream/bad-chunk"),
]


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_only_aiopool_errors_escape(server: FaultServer, scenario: Scenario) -> None:
    async with aiopool.Client() as client:
        # pytest.raises re-raises anything else (OSError, ssl.SSLError, h11's errors...).
        with pytest.raises(aiopool.AiopoolError) as info:
            await scenario(client, server)
        exc = info.value
        assert not isinstance(exc, OSError | h11.ProtocolError)
        assert type(exc).__module__ == "aiopool._exceptions"
        assert type(exc).__name__ in aiopool.__all__
        assert str(exc)  # a message, not an empty repr
        assert_settled(client)
        assert client.stats().idle == 0


# Framing from the caller ------------------------------------------------------------------------
# The client owns framing (Go's transport takes it from the body, not from the headers): a
# caller's Host, Content-Length or Transfer-Encoding that could make a server read the message
# differently from how it is sent is refused before a socket is leased, on both parsers and on
# HTTP/2. What is allowed is said in `aiopool._headers.check_framing`.

TEN = b"0123456789"

# (headers, content, what the message says)
BAD_FRAMING = [
    pytest.param({"Content-Length": "3"}, TEN, "does not match", id="length-short-of-body"),
    pytest.param({"Content-Length": "30"}, TEN, "does not match", id="length-past-body"),
    pytest.param({"Content-Length": "5"}, None, "does not match", id="length-without-body"),
    pytest.param({"Content-Length": "+3"}, b"abc", "invalid Content-Length", id="plus-sign"),
    pytest.param({"Content-Length": "3 , 3"}, b"abc", "invalid Content-Length", id="list"),
    pytest.param({"Content-Length": "3,3"}, b"abc", "invalid Content-Length", id="list-bare"),
    pytest.param({"Content-Length": "0x3"}, b"abc", "invalid Content-Length", id="hex"),
    pytest.param({"Content-Length": "-1"}, b"", "invalid Content-Length", id="negative"),
    pytest.param({"Content-Length": "3a"}, b"abc", "invalid Content-Length", id="non-digit"),
    pytest.param({"Content-Length": "1" * 20}, b"", "invalid Content-Length", id="20-digits"),
    pytest.param(
        [("Content-Length", "3"), ("Content-Length", "3")], b"abc", "more than one", id="two-cl"
    ),
    pytest.param(
        {"Transfer-Encoding": "chunked", "Content-Length": "3"},
        b"abc",
        "together with Transfer-Encoding",
        id="te-and-cl",
    ),
    pytest.param({"Transfer-Encoding": "gzip"}, b"abc", "Transfer-Encoding", id="te-gzip"),
    pytest.param({"Transfer-Encoding": "gzip, chunked"}, b"abc", "Transfer-Encoding", id="te-list"),
    pytest.param(
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        b"abc",
        "Transfer-Encoding",
        id="two-te",
    ),
    pytest.param(
        [("Host", "a.test"), ("Host", "b.test")], b"", "more than one Host", id="two-host"
    ),
    pytest.param({"Host": "a.test/x"}, b"", "invalid Host", id="host-with-path"),
    pytest.param({"Host": "user@a.test"}, b"", "invalid Host", id="host-with-userinfo"),
    pytest.param({"Host": "a.test x"}, b"", "invalid Host", id="host-with-space"),
]


@pytest.mark.parametrize(("headers", "content", "detail"), BAD_FRAMING)
async def test_contradictory_framing_is_refused_before_a_socket(
    server: FaultServer, headers: Any, content: bytes | None, detail: str
) -> None:
    async with aiopool.Client() as client:
        url = f"{server.url}/echo"
        with pytest.raises(aiopool.LocalProtocolError, match=detail):
            await client.post(url, headers=headers, content=content)
        with pytest.raises(aiopool.LocalProtocolError, match=detail):
            client.stream("POST", url, headers=headers, content=content)
        stats = client.stats()
        assert (stats.requests, stats.connections_opened, stats.hosts) == (0, 0, {})
        assert server.connections_accepted == 0
        await assert_fresh_connection_works(client, server)


async def test_json_body_with_a_false_content_length_is_refused(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.LocalProtocolError, match="does not match"):
            await client.post(f"{server.url}/echo", headers={"Content-Length": "2"}, json=[1, 2])
        assert client.stats().connections_opened == 0
    assert server.connections_accepted == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Content-Length": "3"}, id="content-length"),
        pytest.param({"Transfer-Encoding": "chunked"}, id="transfer-encoding"),
        pytest.param([("Host", "a.test"), ("Host", "b.test")], id="two-hosts"),
    ],
)
def test_framing_cannot_be_a_client_default(headers: Any) -> None:
    with pytest.raises(aiopool.LocalProtocolError):
        aiopool.Client(headers=headers)


def test_a_hand_built_request_is_held_to_the_same_rules() -> None:
    url = aiopool.URL("http://example.test/")
    cases: list[tuple[list[tuple[str, str]], bytes | None]] = [
        ([("Content-Length", "3")], TEN),
        ([("Content-Length", "+3")], b"abc"),
        ([("Transfer-Encoding", "chunked"), ("Content-Length", "3")], b"abc"),
        ([("Host", "a"), ("Host", "b")], None),
    ]
    for headers, content in cases:
        with pytest.raises(aiopool.LocalProtocolError):
            aiopool.Request("POST", url, aiopool.Headers(headers), content)


def _received(resp: aiopool.Response) -> tuple[list[tuple[str, str]], str]:
    """The header fields (names lower-cased) and body the fault server received."""
    echo = resp.json()
    return [(n.lower(), v) for n, v in echo["headers"]], echo["body"]


async def test_true_content_length_is_sent_once(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.post(
            f"{server.url}/echo", headers={"Content-Length": "3"}, content=b"abc"
        )
    fields, body = _received(resp)
    assert [v for n, v in fields if n in ("content-length", "transfer-encoding")] == ["3"]
    assert body == "abc"


@pytest.mark.parametrize(
    "content", [pytest.param(b"abc", id="bytes"), pytest.param(None, id="no-body")]
)
async def test_caller_chunked_is_framed_by_the_client(
    server: FaultServer, content: bytes | None
) -> None:
    # `Transfer-Encoding: chunked` from the caller is honoured (curl, Go): the body goes out
    # chunked, and never beside a Content-Length (not even the POST's usual "0").
    async with aiopool.Client() as client:
        resp = await client.post(
            f"{server.url}/echo", headers={"Transfer-Encoding": "chunked"}, content=content
        )
    fields, body = _received(resp)
    assert [(n, v.lower()) for n, v in fields if n in ("content-length", "transfer-encoding")] == [
        ("transfer-encoding", "chunked")
    ]
    assert body == (content or b"").decode()


@pytest.mark.parametrize("where", ["request", "client"])
async def test_a_host_from_the_caller_is_the_only_host(server: FaultServer, where: str) -> None:
    headers = {"Host": "virtual.test"}
    async with aiopool.Client(headers=headers if where == "client" else None) as client:
        resp = await client.get(
            f"{server.url}/echo", headers=headers if where == "request" else None
        )
    fields, _ = _received(resp)
    assert [v for n, v in fields if n == "host"] == ["virtual.test"]


async def _pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.parametrize(
    ("chunks", "detail"),
    [
        pytest.param((b"abc", b"defg"), "longer than its Content-Length 5", id="long"),
        pytest.param((b"abc",), "shorter than its Content-Length 5", id="short"),
    ],
)
async def test_streamed_body_must_match_its_content_length(
    server: FaultServer, chunks: tuple[bytes, ...], detail: str
) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.LocalProtocolError, match=detail):
            await client.post(
                f"{server.url}/echo", headers={"Content-Length": "5"}, content=_pieces(*chunks)
            )
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)
        # Exactly as many bytes as it says: the same framing, streamed, is fine.
        resp = await client.post(
            f"{server.url}/echo", headers={"Content-Length": "5"}, content=_pieces(b"ab", b"cde")
        )
        assert _received(resp)[1] == "abcde"


# The same rules over HTTP/2, on both engines (the scripted h2 peer, h2c with prior knowledge).

H2_ENGINES = [pytest.param("h2", id="h2"), pytest.param("native", id="native")]


@pytest.mark.parametrize("engine", H2_ENGINES)
@pytest.mark.parametrize(("headers", "content", "detail"), BAD_FRAMING[:4] + BAD_FRAMING[11:14])
async def test_contradictory_framing_is_refused_before_an_http2_socket(
    fresh_h2_server: H2ScriptServer, engine: str, headers: Any, content: bytes | None, detail: str
) -> None:
    server = fresh_h2_server
    async with aiopool.Client(http1=False, http2_engine=engine) as client:  # type: ignore[arg-type]
        with pytest.raises(aiopool.LocalProtocolError, match=detail):
            await client.post(f"{server.url}/echo", headers=headers, content=content)
        assert client.stats().connections_opened == 0
        assert server.connections_accepted == 0
        resp = await client.post(f"{server.url}/echo?id=ok", content=b"abc")
        assert resp.text == "ok"
    assert server.protocol_errors == []


@pytest.mark.parametrize("engine", H2_ENGINES)
@pytest.mark.parametrize("chunks", [(b"abc", b"defg"), (b"abc",)], ids=["long", "short"])
async def test_streamed_body_must_match_its_content_length_over_http2(
    fresh_h2_server: H2ScriptServer, engine: str, chunks: tuple[bytes, ...]
) -> None:
    server = fresh_h2_server
    async with aiopool.Client(http1=False, http2_engine=engine) as client:  # type: ignore[arg-type]
        with pytest.raises(aiopool.LocalProtocolError, match="Content-Length 5"):
            await client.post(
                f"{server.url}/upload", headers={"Content-Length": "5"}, content=_pieces(*chunks)
            )
        # The stream was reset, never ended with a length its content-length contradicts.
        await eventually(lambda: server.streams_reset_by_client == 1)
        assert server.protocol_errors == []
        (stream,) = server.requests
        assert server.body_bytes(stream.conn_id, stream.stream_id) <= 5
        assert_settled(client)


# Strict and equal parsers ---------------------------------------------------------------------
# Both HTTP/1.1 parsers must end a line, a field and a message at the same bytes, or a client and
# a proxy can be made to split one response stream differently. Both refuse a bare LF as a head
# line end and obs-fold (llhttp's strict reading; see `_h1_h11._check_head_lines`).


class RawServer:
    """A loopback server answering every request with exactly `reply` (in pieces of at most
    64 KiB, each awaited, so that a large reply never sits whole in memory), then closing."""

    def __init__(self, reply: bytes | Callable[[], AsyncIterator[bytes]]) -> None:
        self._reply = reply
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            reply = self._reply
            pieces = _split(reply) if isinstance(reply, bytes) else reply()
            async for piece in pieces:
                writer.write(piece)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client gave up on the reply: what these tests want
        finally:
            writer.close()


async def _split(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]


LENIENT_HEADS = [
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", id="all-bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nhi", id="status-line-bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\r\nA: b\nContent-Length: 2\r\n\r\nhi", id="field-bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nhi", id="end-of-head-bare-lf"),
    pytest.param(
        b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        id="interim-bare-lf",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 2\r\n\r\nhi", id="obs-fold"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nA: b\r\n\tc\r\nContent-Length: 2\r\n\r\nhi", id="obs-fold-tab"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nA: b\rContent-Length: 2\r\n\r\nhi", id="bare-cr"),
]


@pytest.mark.parametrize("reply", LENIENT_HEADS)
async def test_bare_lf_and_obs_fold_are_refused_by_both_parsers(reply: bytes) -> None:
    async with RawServer(reply) as raw, aiopool.Client() as client:
        with pytest.raises(aiopool.RemoteProtocolError, match=r"malformed HTTP/1\.1 response"):
            await client.get(raw.url)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)


async def test_a_strict_head_is_accepted_by_both_parsers() -> None:
    # (The control for the test above: the same heads with CRLF and one line per field.)
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nA: b c\r\nContent-Length: 2\r\n\r\nhi"
    async with RawServer(reply) as raw, aiopool.Client() as client:
        resp = await client.get(raw.url)
        assert (resp.headers["a"], resp.content) == ("b c", b"hi")


def _chunked_with_extension(size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def reply() -> AsyncIterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;ext="
        for start in range(0, size, 65536):
            yield b"x" * min(65536, size - start)
        yield b"\r\nhi\r\n0\r\n\r\n"

    return reply


async def test_an_oversized_chunk_extension_is_refused_with_a_bounded_buffer() -> None:
    # 8 MiB of chunk extension: h11 used to call it an oversized *head*, and llhttp streamed
    # past it without a bound. Now both stop past max_response_header_bytes, saying where.
    tracemalloc.start()
    try:
        async with RawServer(_chunked_with_extension(8 << 20)) as raw, aiopool.Client() as client:
            with pytest.raises(
                aiopool.RemoteProtocolError,
                match=r"chunk header or trailer larger than 102400 bytes",
            ):
                await client.get(raw.url)
            stats = assert_settled(client)
            assert (stats.connections_opened, stats.connections_closed) == (1, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the bound plus a few reads, never the 8 MiB sent


async def test_a_modest_chunk_extension_is_accepted() -> None:
    async with RawServer(_chunked_with_extension(1000)) as raw, aiopool.Client() as client:
        resp = await client.get(raw.url)
        assert resp.content == b"hi"
