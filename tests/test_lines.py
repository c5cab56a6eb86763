"""Reading responses: `aiter_text()`, `aiter_lines()`, `elapsed`, and handing a streamed body to
a web framework (`StreamContext.open()`), against Starlette under hypercorn."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Iterable

import pytest

import aiopool
from tests.rig.hypercorn_app import HypercornServer

HTTP_VERSIONS = pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])


def _response(chunks: Iterable[bytes], content_type: str = "text/plain") -> aiopool.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    response = aiopool.Response(200, content=body(), headers={"content-type": content_type})
    response.request = aiopool.Request("GET", "http://h/")
    return response


async def _lines(response: aiopool.Response, **kwargs: int | None) -> list[str]:
    return [line async for line in response.aiter_lines(**kwargs)]


# aiter_text / aiter_lines -------------------------------------------------------------------------


async def test_aiter_text_decodes_characters_split_across_chunks() -> None:
    data = "Grüße, 世界".encode()
    response = _response([data[:3], data[3:11], data[11:]])
    assert "".join([text async for text in response.aiter_text()]) == "Grüße, 世界"


async def test_aiter_text_uses_the_response_charset() -> None:
    data = "déjà".encode("latin-1")
    response = _response([data[:1], data[1:]], "text/plain; charset=ISO-8859-1")
    assert "".join([text async for text in response.aiter_text()]) == "déjà"


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a\nb\r\nc\rd"],
        [b"a\n", b"b\r", b"\nc\r", b"d"],  # a CRLF split across chunks is one line end
        [b"a", b"\nb", b"\r", b"\n", b"c", b"\r", b"d"],
        [bytes([c]) for c in b"a\nb\r\nc\rd"],
    ],
)
async def test_aiter_lines_splits_at_every_line_end(chunks: list[bytes]) -> None:
    assert await _lines(_response(chunks)) == ["a", "b", "c", "d"]


async def test_aiter_lines_keeps_empty_lines_and_other_separators() -> None:
    # Empty lines dispatch SSE events; VT, FF and U+2028 are not line ends (JSON may hold them).
    data = "x\n\n\r\r\ny\x0bz\u2028w\r\n".encode()
    assert await _lines(_response([data])) == ["x", "", "", "", "y\x0bz\u2028w"]


async def test_aiter_lines_bounds_a_line() -> None:
    """A server that never sends a line break cannot make us hold more than the bound."""
    response = _response([b"a" * 600, b"b" * 600, b"\n"])
    with pytest.raises(aiopool.ResponseTooLarge) as info:
        await _lines(response, max_line_length=1000)
    assert info.value.limit == 1000
    assert response.is_closed
    # Exactly at the bound is fine; a whole line within one chunk counts too.
    assert await _lines(_response([b"a" * 1000 + b"\nb"]), max_line_length=1000) == [
        "a" * 1000,
        "b",
    ]
    with pytest.raises(aiopool.ResponseTooLarge):
        await _lines(_response([b"a" * 1001 + b"\n"]), max_line_length=1000)
    assert await _lines(_response([b"a" * 5000]), max_line_length=None) == ["a" * 5000]


async def test_elapsed_is_set_per_hop() -> None:
    async def handler(request: aiopool.Request) -> aiopool.Response:
        await asyncio.sleep(0.01)
        return aiopool.Response(200, text="ok")

    async with aiopool.Client(transport=aiopool.MockTransport(handler)) as client:
        response = await client.get("http://h/")
    assert response.elapsed >= datetime.timedelta(seconds=0.01)
    assert aiopool.Response(200).elapsed == datetime.timedelta(0)


# Server-sent events and NDJSON over hypercorn -----------------------------------------------------


async def _events(response: aiopool.Response) -> AsyncIterator[str]:
    """A minimal SSE reader (WHATWG HTML 9.2.6): `data:` lines, dispatched at a blank line."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


@HTTP_VERSIONS
@pytest.mark.parametrize("eol", ["lf", "crlf", "cr"])
async def test_server_sent_events(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext, http2: bool, eol: str
) -> None:
    async with aiopool.Client(verify=client_ssl_context, http2=http2) as client:
        url = f"{bodies_server.url}/sse?events=20&eol={eol}"
        async with client.stream("GET", url) as response:
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.elapsed > datetime.timedelta(0)
            events = [event async for event in _events(response)]
        assert events == [json.dumps({"n": n}) for n in range(20)] + ["[DONE]"]
        assert client.stats().hosts[bodies_server.url + ""].idle == 1  # released, pooled


@HTTP_VERSIONS
async def test_ndjson(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext, http2: bool
) -> None:
    url = f"{bodies_server.url}/ndjson?n=50"
    async with (
        aiopool.Client(verify=client_ssl_context, http2=http2) as client,
        client.stream("GET", url) as response,
    ):
        rows = [json.loads(line) async for line in response.aiter_lines()]
    assert rows == [{"n": n, "text": "é" * (n % 5)} for n in range(50)]


# Handing a streamed body to Starlette -------------------------------------------------------------


async def _proxy_stats(client: aiopool.Client, url: str) -> dict[str, int]:
    response = await client.get(f"{url}/proxy-stats")
    stats: dict[str, int] = response.json()
    return stats


async def _released(client: aiopool.Client, url: str) -> dict[str, int]:
    """The proxy app's books once its upstream stream is over (polled: the framework releases
    it after the response, on its own schedule)."""
    for _ in range(500):
        stats = await _proxy_stats(client, url)
        if stats["active"] == 0 and stats["sse_running"] == 0:
            return stats
        await asyncio.sleep(0.02)
    return stats


@HTTP_VERSIONS
async def test_handoff_releases_when_the_framework_finishes(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext, http2: bool
) -> None:
    url = bodies_server.url
    upstream = f"{url}/sse?events=30"
    async with aiopool.Client(verify=client_ssl_context, http2=http2) as client:
        response = await client.get(f"{url}/proxy", params={"to": upstream})
        assert response.text.count("data: ") == 31
        stats = await _released(client, url)
    assert stats["active"] == 0
    assert stats["idle"] >= 1  # read to its end: the upstream socket went back to the pool


@HTTP_VERSIONS
@pytest.mark.parametrize("background", ["1", "0"], ids=["background-task", "iterator-only"])
async def test_handoff_releases_when_the_framework_client_disconnects(
    bodies_server: HypercornServer,
    client_ssl_context: ssl.SSLContext,
    http2: bool,
    background: str,
) -> None:
    """The proxied stream never ends; the framework's client goes away after one event. The
    upstream connection is released (by the background task, or by the iterator's close when
    there is none) and the upstream server sees its stream end."""
    url = bodies_server.url
    params = {"to": f"{url}/sse?forever=1", "background": background}
    async with aiopool.Client(verify=client_ssl_context, http2=http2) as client:
        async with client.stream("GET", f"{url}/proxy", params=params) as response:
            async for event in _events(response):
                assert event == json.dumps({"n": 0})
                break
            response._abort()  # (gone at once, no drain: the client disconnects)
        stats = await _released(client, url)
    assert stats == {"active": 0, "idle": stats["idle"], "sse_running": 0}


async def test_open_is_once_only(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(verify=client_ssl_context) as client:
        context = client.stream("GET", f"{bodies_server.url}/ndjson?n=1")
        response = await context.open()
        with pytest.raises(RuntimeError):
            await context.open()
        assert await response.aread() == b'{"n": 0, "text": ""}\n'
        assert response.is_closed


@HTTP_VERSIONS
async def test_opened_response_is_released_when_its_iterator_is_closed_early(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext, http2: bool
) -> None:
    """What a framework does when its client goes away while the body waits to be sent: the
    iterator is closed (or finalised) unfinished. No `async with` block is left to release
    the connection, so the iterator does (closing it: the rest of the stream is unwanted)."""
    async with aiopool.Client(verify=client_ssl_context, http2=http2) as client:
        response = await client.stream("GET", f"{bodies_server.url}/sse?forever=1").open()
        lines = response.aiter_lines()
        assert await anext(lines) == ": a comment line"
        await lines.aclose()
        assert response.is_closed
        host = client.stats().hosts[bodies_server.url]
        assert (host.active, host.streams) == (0, 0)
