"""Request bodies: `data=` forms, `files=` multipart, file objects as `content=`.

Against Starlette and python-multipart under hypercorn (HTTP/1.1 and HTTP/2), real parsers of
what the client sends; the encoder's exact bytes where browsers define them (WHATWG).
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import threading
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from python_multipart import MultipartParser

import aiopool
from aiopool._bodies import FileBody
from aiopool._multipart import MultipartBody
from tests.rig.fault_server import FaultServer, pattern
from tests.rig.hypercorn_app import HypercornServer

# This file, as bytes: a file body the tests upload (read once, not inside the event loop).
_THIS_FILE = Path(__file__).read_bytes()

HTTP_VERSIONS = pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])


def _client(context: ssl.SSLContext, http2: bool) -> aiopool.Client:
    return aiopool.Client(verify=context, http2=http2, http1=True)


async def _echo(request: aiopool.Request) -> aiopool.Response:
    """A MockTransport handler answering with the request's body and framing headers."""
    content = request.content
    if content is None or isinstance(content, bytes):
        body = content or b""
    else:
        body = b"".join([chunk async for chunk in request.body_chunks()])
    headers = [
        (name, request.headers.get(name, "-"))
        for name in ("content-type", "content-length", "transfer-encoding")
    ]
    return aiopool.Response(200, content=body, headers=headers)


def _mock() -> aiopool.Client:
    return aiopool.Client(transport=aiopool.MockTransport(_echo))


async def _body(source: Any) -> bytes:
    return b"".join([chunk async for chunk in source])


# data= --------------------------------------------------------------------------------------------


async def test_data_is_an_urlencoded_form() -> None:
    async with _mock() as client:
        response = await client.post(
            "http://h/", data={"q": "a b&c", "é": ["1", 2], "raw": b"\xff"}
        )
    assert response.content == b"q=a+b%26c&%C3%A9=1&%C3%A9=2&raw=%FF"
    assert response.headers["content-type"] == "application/x-www-form-urlencoded"
    assert response.headers["content-length"] == str(len(response.content))


async def test_data_as_pairs_keeps_order_and_repeats() -> None:
    async with _mock() as client:
        response = await client.post("http://h/", data=[("b", "1"), ("a", "2"), ("b", "3")])
    assert response.content == b"b=1&a=2&b=3"


@pytest.mark.parametrize("value", [None, True, {"x": 1}, object()])
async def test_data_refuses_values_that_are_not_text(value: Any) -> None:
    async with _mock() as client:
        with pytest.raises(TypeError):
            await client.post("http://h/", data={"a": value})


async def test_one_kind_of_body_only() -> None:
    async with _mock() as client:
        with pytest.raises(TypeError):
            await client.post("http://h/", data={"a": "1"}, content=b"x")
        with pytest.raises(TypeError):
            await client.post("http://h/", files={"a": b"1"}, json={})


# The multipart encoder ----------------------------------------------------------------------------


def _parse(body: bytes, boundary: bytes) -> list[tuple[dict[bytes, bytes], bytes]]:
    """python-multipart's reading of a multipart body: (headers, data) per part."""
    parts: list[tuple[dict[bytes, bytes], bytes]] = []
    field: list[bytes] = [b"", b""]
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.update(headers={}, data=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field[1] += data[start:end]

    def on_header_end() -> None:
        current["headers"][field[0].lower()] = field[1]
        field[0] = field[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        parts.append((current["headers"], current["data"]))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


async def test_multipart_bytes_are_exact_and_sized() -> None:
    body = MultipartBody(
        {"a": "1", "b": ["x", b"\xff"]},
        [("f", ("a.txt", b"hello", "text/plain")), ("g", ("data.bin", io.BytesIO(b"\0" * 10)))],
        boundary=b"B",
    )
    data = await _body(body)
    assert data == (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
        b'--B\r\nContent-Disposition: form-data; name="b"\r\n\r\nx\r\n'
        b'--B\r\nContent-Disposition: form-data; name="b"\r\n\r\n\xff\r\n'
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n"
        b'--B\r\nContent-Disposition: form-data; name="g"; filename="data.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + b"\0" * 10 + b"\r\n"
        b"--B--\r\n"
    )
    assert body.size == len(data)
    assert body.replayable
    assert await _body(body) == data  # a second pass is the same body


async def test_filenames_are_escaped_as_browsers_do() -> None:
    """WHATWG HTML: the UTF-8 name raw, only LF, CR and `"` percent-encoded; python-multipart
    reads the name back whole (no RFC 2231 `filename*`)."""
    name = 'ré"sumé\r\n.pdf'
    body = MultipartBody(None, {'fi"eld': (name, b"%PDF")}, boundary=b"B")
    data = await _body(body)
    assert (
        'Content-Disposition: form-data; name="fi%22eld"; filename="ré%22sumé%0D%0A.pdf"'.encode()
        in data
    )
    [(headers, content)] = _parse(data, b"B")
    assert content == b"%PDF"
    assert headers[b"content-type"] == b"application/pdf"
    disposition = headers[b"content-disposition"].decode("utf-8")
    assert disposition.endswith('filename="ré%22sumé%0D%0A.pdf"')


async def test_part_headers_cannot_inject() -> None:
    with pytest.raises(aiopool.LocalProtocolError):
        MultipartBody(None, {"f": ("a", b"x", "text/plain", {"X-A": "1\r\nX-B: 2"})})
    with pytest.raises(TypeError):
        MultipartBody(None, {"f": ("a", b"x", None, {"Content-Disposition": "form-data"})})


async def test_multipart_with_an_unsized_part_is_chunked() -> None:
    async with await anyio.open_file(__file__, "rb") as afile, _mock() as client:
        response = await client.post("http://h/", files={"f": ("t.py", afile)})
    assert response.headers["content-length"] == "-"
    assert response.headers["transfer-encoding"] == "chunked"
    boundary = response.headers["content-type"].split("boundary=")[1].encode()
    [(_, content)] = _parse(response.content, boundary)
    assert content == _THIS_FILE


async def test_text_mode_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("x")
    async with _mock() as client:
        with path.open() as text:
            with pytest.raises(TypeError, match="binary mode"):
                await client.post("http://h/", content=text)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="binary mode"):
                await client.post("http://h/", files={"f": text})  # type: ignore[dict-item]


# content= file objects ----------------------------------------------------------------------------


class _ThreadRecordingFile(io.BytesIO):
    """A seekable file that notes which threads read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.threads: set[int] = set()

    def read(self, size: int | None = -1, /) -> bytes:
        self.threads.add(threading.get_ident())
        return super().read(size)


async def test_sync_file_is_read_off_the_event_loop_from_its_offset() -> None:
    data = pattern(200_000)
    file = _ThreadRecordingFile(data)
    file.seek(1000)  # sent from where it stands
    async with _mock() as client:
        response = await client.put("http://h/", content=file)
    assert response.content == data[1000:]
    assert response.headers["content-length"] == str(len(data) - 1000)
    assert file.threads and threading.get_ident() not in file.threads


async def test_unseekable_file_goes_chunked_once() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as writer:
        writer.write(b"piped")
    with os.fdopen(read_end, "rb") as reader:
        body = FileBody(reader)
        assert body.size is None and not body.replayable
        async with _mock() as client:
            response = await client.post("http://h/", content=reader)
    assert response.content == b"piped"
    assert response.headers["transfer-encoding"] == "chunked"


async def test_a_file_that_shrinks_is_refused() -> None:
    file = io.BytesIO(b"x" * 100)
    body = FileBody(file)
    file.truncate(50)
    with pytest.raises(aiopool.LocalProtocolError, match="short"):
        await _body(body)


# Against Starlette / python-multipart under hypercorn ---------------------------------------------


@HTTP_VERSIONS
async def test_form_parsed_by_starlette(
    bodies_server: HypercornServer,
    client_ssl_context: ssl.SSLContext,
    tmp_path: Path,
    http2: bool,
) -> None:
    disk = tmp_path / "report.csv"
    disk.write_bytes(pattern(300_000, 3))
    async with _client(client_ssl_context, http2) as client:
        with disk.open("rb") as on_disk:
            response = await client.post(
                f"{bodies_server.url}/form",
                data={"title": "Grüße", "tags": ["a", "b"]},
                files=[
                    ("doc", ("résumé 1.pdf", b"%PDF-1.7", "application/pdf")),
                    ("doc", ("n.txt", "text é", None, {"X-Note": "yes"})),
                    ("memory", io.BytesIO(b"in memory")),
                    ("disk", on_disk),
                ],
            )
    assert response.status_code == 200
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert "content-length" in response.request.headers
    fields = response.json()["fields"]
    assert fields[:3] == [
        ["title", {"value": "Grüße"}],
        ["tags", {"value": "a"}],
        ["tags", {"value": "b"}],
    ]
    files = {(name, entry["filename"]): entry for name, entry in fields[3:]}
    pdf = files["doc", "résumé 1.pdf"]
    assert (pdf["content_type"], pdf["size"]) == ("application/pdf", 8)
    note = files["doc", "n.txt"]
    assert note["content_type"] == "text/plain"  # guessed from the name
    assert ["x-note", "yes"] in note["headers"]
    assert note["sha256"] == hashlib.sha256("text é".encode()).hexdigest()
    assert files["memory", "upload"]["size"] == 9
    on_disk_entry = files["disk", "report.csv"]
    assert on_disk_entry["sha256"] == hashlib.sha256(pattern(300_000, 3)).hexdigest()


@HTTP_VERSIONS
async def test_async_file_and_iterable_bodies_go_chunked(
    bodies_server: HypercornServer, client_ssl_context: ssl.SSLContext, http2: bool
) -> None:
    async def numbers() -> AsyncIterator[bytes]:
        for n in range(3):
            yield str(n).encode()

    async with _client(client_ssl_context, http2) as client:
        async with await anyio.open_file(__file__, "rb") as afile:
            response = await client.post(
                f"{bodies_server.url}/form", files={"src": ("test_forms.py", afile)}
            )
        entry = response.json()["fields"][0][1]
        assert entry["sha256"] == hashlib.sha256(_THIS_FILE).hexdigest()
        assert "content-length" not in response.request.headers
        response = await client.post(
            f"{bodies_server.url}/form",
            content=numbers(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.json()["fields"] == [["012", {"value": ""}]]


@HTTP_VERSIONS
async def test_seekable_bodies_are_sent_again_for_a_307(
    hypercorn_server: HypercornServer,
    client_ssl_context: ssl.SSLContext,
    tmp_path: Path,
    http2: bool,
) -> None:
    """Before: `RedirectBodyNotReplayable` for any body but bytes."""
    data = pattern(150_000, 5)
    path = tmp_path / "body"
    path.write_bytes(data)
    url = f"{hypercorn_server.url}/redirect?status=307&to=/upload"
    async with _client(client_ssl_context, http2) as client:
        with path.open("rb") as file:
            file.seek(10)
            response = await client.post(url, content=file)
        assert response.history[0].status_code == 307
        assert response.text == f"{len(data) - 10} {hashlib.sha256(data[10:]).hexdigest()}"
        form = MultipartBody({"a": "b"}, {"f": ("f", io.BytesIO(data))})
        expected = await _body(form)
        response = await client.post(url, files={"f": ("f", io.BytesIO(data))}, data={"a": "b"})
        assert response.history[0].status_code == 307
        assert response.text.split()[0] == str(len(expected))  # (boundaries differ, not in length)

        async def once() -> AsyncIterator[bytes]:
            yield b"once"

        with pytest.raises(aiopool.RedirectBodyNotReplayable):
            await client.post(url, content=once())


# Large uploads at bounded memory ------------------------------------------------------------------

_LARGE = 20 * 1024 * 1024


@HTTP_VERSIONS
async def test_large_multipart_upload_streams_at_bounded_memory(
    bodies_server: HypercornServer,
    client_ssl_context: ssl.SSLContext,
    tmp_path: Path,
    http2: bool,
) -> None:
    """A 20 MB file through multipart: parsed whole by python-multipart, while the process
    (client and server both) never holds more than a small part of it."""
    path = tmp_path / "large.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for n in range(_LARGE // (1024 * 1024)):
            block = pattern(1024 * 1024, n)
            digest.update(block)
            out.write(block)
    async with _client(client_ssl_context, http2) as client:
        await client.get(f"{bodies_server.url}/proxy-stats")  # (connected before measuring)
        tracemalloc.start()
        try:
            with path.open("rb") as file:
                response = await client.post(
                    f"{bodies_server.url}/multipart-digest",
                    data={"name": "large"},
                    files={"file": ("large.bin", file, "application/octet-stream")},
                )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    parts = response.json()
    assert parts[1][1:] == [_LARGE, digest.hexdigest()]
    assert parts[0][1] == 5
    assert response.request.headers["content-length"].isdigit()
    # Streamed in 64 KiB reads: a few MiB at most in flight (buffers, flow-control windows),
    # against 20 MiB if the file were read whole.
    assert peak < 4 * 1024 * 1024, peak


async def test_a_seekable_file_body_is_replayed_on_a_stale_socket(
    fresh_fault_server: FaultServer,
) -> None:
    """Go's rule (docs/pool.md): an idempotent request that failed on a stale reused socket is
    sent again, with its body, when the body can be re-read. Before: a file body (like any
    streamed one) could not be, and the PUT failed."""
    server = fresh_fault_server
    file = io.BytesIO(b"--payload--")
    file.seek(2)
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/drop-next")
        response = await client.put(f"{server.url}/echo?id=f", content=file)
        assert response.json()["body"] == "payload--"
        assert not response.conn_info.reused
    # Seen twice: once dropped on the stale socket, once answered on the fresh one.
    assert server.requests_seen.count("PUT /echo?id=f") == 2
