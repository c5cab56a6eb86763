"""Byte-exact HTTP/1.1 scenarios on a scripted backend (tests/mock_backend.py), both parsers."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

import aiopool
from aiopool._decoders import ACCEPT_ENCODING
from tests.helpers import assert_settled
from tests.mock_backend import MockDialer, MockStream, Script, response

pytestmark = pytest.mark.both_parsers

URL = "http://mock.test"


def client_with(*scripts: Script) -> tuple[aiopool.Client, MockDialer]:
    dialer = MockDialer(scripts)
    client = aiopool.Client(dialer=dialer)
    return client, dialer


async def test_request_bytes_are_exact() -> None:
    client, dialer = client_with([response(b"ok")])
    async with client:
        await client.get(f"{URL}/path?q=1", headers={"X-Trace": "abc"})
    assert bytes(dialer.streams[0].written) == (
        b"GET /path?q=1 HTTP/1.1\r\n"
        b"host: mock.test\r\n"
        b"user-agent: aiopool/0.1.0\r\n"
        b"accept: */*\r\n"
        b"accept-encoding: " + ACCEPT_ENCODING + b"\r\n"
        b"X-Trace: abc\r\n"
        b"\r\n"
    )


async def test_streamed_upload_is_chunk_encoded() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"hello"
        yield b""
        yield b" world!"

    client, dialer = client_with([response(b"ok")])
    async with client:
        await client.post(f"{URL}/up", content=body())
    written = bytes(dialer.streams[0].written)
    head, _, framed = written.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert framed == b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n"


async def test_response_split_at_every_byte() -> None:
    wire = response(b"0123456789", (b"X-Long", b"v" * 300))
    client, dialer = client_with([*[wire[i : i + 1] for i in range(len(wire))], response(b"2")])
    async with client:
        first = await client.get(URL)
        assert first.content == b"0123456789"
        assert first.headers["x-long"] == "v" * 300
        second = await client.get(URL)
        assert second.content == b"2"
        assert second.conn_info.reused  # the byte-split response left the socket clean
    assert len(dialer.streams) == 1


async def test_bytes_after_a_response_are_never_handed_to_the_next_request() -> None:
    # One read carries the response and a second, unsolicited one: a desync. Reusing the
    # socket would deliver "SMUGGLED" as the answer to the next request.
    client, dialer = client_with(
        [response(b"first") + response(b"SMUGGLED")],
        [response(b"second")],
    )
    async with client:
        assert (await client.get(URL)).content == b"first"
        second = await client.get(URL)
        assert second.content == b"second"
        assert not second.conn_info.reused
        stats = assert_settled(client)
        assert stats.connections_closed == 1
    assert len(dialer.streams) == 2


async def test_interim_and_final_response_in_one_read() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
    client, _ = client_with([interim + response(b"done"), response(b"again")])
    async with client:
        resp = await client.get(URL)
        assert (resp.status_code, resp.content) == (200, b"done")
        assert "link" not in resp.headers
        assert (await client.get(URL)).conn_info.reused


async def test_coding_and_length_are_the_final_heads_own() -> None:
    # The parser tells the response whether its head named a Content-Encoding, and its
    # Content-Length, so the response need not look through the fields again: an interim
    # head's fields and a chunked body's trailer fields must not count.
    interim = b"HTTP/1.1 103 Early Hints\r\nContent-Encoding: gzip\r\nContent-Length: 99999\r\n\r\n"
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\nContent-Encoding: gzip\r\n\r\n"
    )
    coded = response(gzip.compress(b"unzipped"), (b"Content-Encoding", b"gzip"))
    client, dialer = client_with([interim + chunked, coded, response(b"long")])
    async with client:
        first = await client.get(URL, max_response_size=1000)
        assert first.content == b"ok"  # not refused as 99999 bytes, not gunzipped
        assert (await client.get(URL)).content == b"unzipped"
        with pytest.raises(aiopool.ResponseTooLarge):  # the final head's length does count
            await client.get(URL, max_response_size=2)
    assert len(dialer.streams) == 1


async def test_a_coding_added_to_the_headers_by_hand_is_decoded() -> None:
    # Changing the fields forgets what the parser said about them.
    client, _ = client_with([response(gzip.compress(b"unzipped"))])
    async with client, client.stream("GET", URL) as resp:
        resp.headers.add("Content-Encoding", "gzip")
        assert await resp.aread() == b"unzipped"


async def test_head_response_with_length_and_no_body_keeps_the_socket() -> None:
    head_wire = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    client, dialer = client_with([head_wire, response(b"after")])
    async with client:
        resp = await client.head(URL)
        assert resp.headers["content-length"] == "1000" and resp.content == b""
        after = await client.get(URL)
        assert after.content == b"after" and after.conn_info.reused
    assert len(dialer.streams) == 1


async def test_reset_before_any_response_byte_on_a_reused_socket_is_retried() -> None:
    client, dialer = client_with(
        [response(b"one"), aiopool.ReadError("connection reset by peer")],
        [response(b"two")],
    )
    async with client:
        await client.get(URL)
        again = await client.get(URL)  # the reused socket fails before a byte: replay
        assert again.content == b"two"
    assert len(dialer.streams) == 2


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", id="short-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", id="bad-length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", id="header-without-colon"),
        pytest.param(b"HTTX/1.1 200 OK\r\n\r\n", id="bad-version"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"
        ),
    ],
)
async def test_hostile_bytes_raise_remote_protocol_error(wire: bytes) -> None:
    client, dialer = client_with([wire])
    async with client:
        with pytest.raises(aiopool.RemoteProtocolError):
            await client.get(URL)
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1
    assert dialer.streams[0].closed


async def test_streamed_body_of_text_chunks_is_refused_and_the_socket_closed() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"ok"
        yield "not bytes"  # type: ignore[misc]

    client, dialer = client_with([response(b"never read")])
    async with client:
        with pytest.raises(TypeError, match="must be bytes"):
            await client.post(f"{URL}/up", content=body())
        stats = assert_settled(client)
        assert stats.idle == 0 and stats.connections_closed == 1
    assert dialer.streams[0].aborted


class _ClosedUnnoticed(MockStream):
    """A socket the server closed while idle, its FIN not yet seen: it looks clean in the pool,
    and the first write of the next request finds it closed (nothing of that request left)."""

    def __init__(self, script: Script) -> None:
        super().__init__(script)
        self.writes = 0

    def is_idle_clean(self) -> bool:
        return True

    def write_nowait(self, data: bytes) -> None:
        self.writes += 1
        if self.writes > 1:
            raise aiopool.WriteError("connection closed")
        super().write_nowait(data)


async def test_a_post_nothing_of_which_was_written_is_sent_on_a_fresh_socket() -> None:
    # Go's rule for a request the server provably never saw: retried whatever its method.
    stale = _ClosedUnnoticed([response(b"first")])
    fresh = MockStream([response(b"second")])
    streams = iter([stale, fresh])

    async def dialer(host: str, port: int, **_: object) -> MockStream:
        return next(streams)

    client = aiopool.Client(dialer=dialer)
    async with client:
        await client.get(URL)
        resp = await client.post(f"{URL}/charge", content=b"amount=100")
        assert resp.content == b"second"
        assert not resp.conn_info.reused
    assert b"POST /charge" not in stale.written
    assert bytes(fresh.written).count(b"POST /charge") == 1


async def test_a_streamed_body_without_framing_is_refused_by_either_codec() -> None:
    # A body with neither Content-Length nor chunked framing would be read by the server as the
    # start of the next request (RFC 9112 section 6.3: such a request has no body). `Request`
    # frames a body it is built with, but its headers can be replaced afterwards (a middleware
    # may): both codecs then refuse it with our typed error.
    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    client, dialer = client_with([response(b"ok")])
    async with client:
        url = aiopool.URL(f"{URL}/up")
        request = aiopool.Request("POST", url, aiopool.Headers([("Host", "mock.test")]), body())
        assert request.headers["transfer-encoding"] == "chunked"
        request.headers = aiopool.Headers([("Host", "mock.test")])
        with pytest.raises(aiopool.LocalProtocolError):
            await client.transport.handle_request(request)
        assert not bytes(dialer.streams[0].written).endswith(b"abc")
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)
