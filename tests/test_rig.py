"""Checks that the test rig itself behaves, using only asyncio streams (never aiopool).

If these fail, every client test built on the rig is suspect, so they are kept fast and
independent of the library under development.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.rig.fault_server import BlackholeServer, FaultServer, pattern
from tests.rig.nginx import Nginx

# Per-operation bound: a rig bug should fail a test quickly, not hit the 60 s pytest timeout.
_IO_TIMEOUT = 3.0


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunk_sizes: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


@contextlib.asynccontextmanager
async def _connect(
    port: int, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(_IO_TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_context,
            server_hostname="localhost" if ssl_context is not None else None,
        )
    try:
        yield reader, writer
    finally:
        writer.close()
        # The server may already have reset the connection; that is what some tests want.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _send(
    writer: asyncio.StreamWriter,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()


async def _read_response(reader: asyncio.StreamReader, *, to_head: bool = False) -> _Response:
    async with asyncio.timeout(_IO_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, _ = status_line.split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
        headers = [
            (name, value.strip()) for name, _, value in (h.partition(":") for h in header_lines)
        ]
        response = _Response(int(status), headers, b"")
        if to_head or response.status in (204, 304) or response.status < 200:
            return response
        if (response.header("transfer-encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    break
                response.chunk_sizes.append(size)
                chunks.append(await reader.readexactly(size))
                assert await reader.readexactly(2) == b"\r\n"
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            response.body = b"".join(chunks)
        elif (length := response.header("content-length")) is not None:
            response.body = await reader.readexactly(int(length))
        else:
            response.body = await reader.read()
        return response


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> _Response:
    await _send(writer, "GET", target)
    return await _read_response(reader)


async def _assert_closed(reader: asyncio.StreamReader) -> None:
    # A FIN or an RST both mean closed: a server that stops with our request still unread in
    # its socket buffer resets the connection (the kernel's rule), which is not an error here.
    async with asyncio.timeout(_IO_TIMEOUT):
        try:
            data = await reader.read()
        except ConnectionResetError:
            return
        assert data == b""


# -- FaultServer ------------------------------------------------------------------------------


async def test_echo_and_keep_alive(fresh_fault_server: FaultServer) -> None:
    server = fresh_fault_server
    async with _connect(server.port) as (reader, writer):
        first = await _get(reader, writer, "/echo?id=a")
        await _send(writer, "POST", "/echo?id=b", body=b"h\xe9llo", headers=(("X-Test", "1"),))
        second = await _read_response(reader)

    assert first.status == second.status == 200
    assert first.header("content-type") == "application/json"
    assert first.header("x-conn-id") == second.header("x-conn-id")
    assert (first.header("x-request-no"), second.header("x-request-no")) == ("1", "2")
    one, two = json.loads(first.body), json.loads(second.body)
    assert (one["id"], one["method"], one["path"]) == ("a", "GET", "/echo?id=a")
    assert (two["id"], two["method"], two["body"]) == ("b", "POST", "h\xe9llo")
    assert ["X-Test", "1"] in two["headers"]
    assert ["Content-Length", "5"] in two["headers"]
    assert one["conn"] == two["conn"] == int(first.header("x-conn-id") or 0)
    assert (one["request_no"], two["request_no"]) == (1, 2)
    assert server.connections_accepted == 1


async def test_connections_get_distinct_ids(fault_server: FaultServer) -> None:
    ids = set()
    for _ in range(3):
        async with _connect(fault_server.port) as (reader, writer):
            ids.add((await _get(reader, writer, "/empty")).header("x-conn-id"))
    assert len(ids) == 3


async def test_simple_endpoints(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        teapot = await _get(reader, writer, "/status/418")
        assert (teapot.status, teapot.body) == (418, b"status 418\n")
        assert (await _get(reader, writer, "/bytes/10")).body == b"x" * 10
        assert (await _get(reader, writer, "/empty")).header("content-length") == "0"
        nocontent = await _get(reader, writer, "/nocontent")
        assert (nocontent.status, nocontent.header("content-length")) == (204, None)
        assert (await _get(reader, writer, "/no/such/path")).status == 404
        assert (await _get(reader, writer, "/bytes/abc")).status == 400

    async with _connect(fault_server.port) as (reader, writer):
        many = await _get(reader, writer, "/headers-many?n=5")
        assert [v for k, v in many.headers if k.startswith("X-Many-")] == [
            f"value-{i}" for i in range(5)
        ]
        interim = await _get(reader, writer, "/status/103")
        assert interim.status == 103
        assert (await _read_response(reader)).status == 200


async def test_request_framing_head_and_continue(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        await _send(writer, "HEAD", "/bytes/7")
        head = await _read_response(reader, to_head=True)
        assert head.header("content-length") == "7"

        chunked = (("Transfer-Encoding", "chunked"), ("Expect", "100-continue"))
        await _send(writer, "POST", "/echo?id=c", headers=chunked)
        assert (await _read_response(reader)).status == 100
        writer.write(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
        echoed = await _read_response(reader)
        assert json.loads(echoed.body)["body"] == "abcde"
        # Request 2 on the connection: the HEAD response carried no stray body bytes.
        assert echoed.header("x-request-no") == "2"


async def test_streamed_bodies(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        assert (await _get(reader, writer, "/big/1000000")).body == pattern(1_000_000)
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = await _get(reader, writer, "/slow?chunks=3&delay=0.02&size=5")
        assert loop.time() - started >= 0.06
        assert (slow.header("content-length"), slow.body) == ("15", pattern(15))
        delayed = await _get(reader, writer, "/delay?s=0.02&id=d")
        assert json.loads(delayed.body)["id"] == "d"


async def test_close_closes(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        response = await _get(reader, writer, "/close/5")
        assert response.header("connection") == "close"
        assert response.body == b"xxxxx"
        await _assert_closed(reader)


async def test_read_until_close_and_http10(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        response = await _get(reader, writer, "/eof/4")
        assert response.header("content-length") is None
        assert response.body == b"xxxx"  # read() returned, so the server closed
    async with _connect(fault_server.port) as (reader, writer):
        await _send(writer, "GET", "/http10/3")
        async with asyncio.timeout(_IO_TIMEOUT):
            raw = await reader.read()
        assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
        assert raw.endswith(b"\r\n\r\nxxx")


async def test_drop_next_drops_after_reading_the_request(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        assert (await _get(reader, writer, "/drop-next")).status == 200
        # A body the server failed to read would turn its close into an RST; a clean EOF shows
        # the request was consumed in full.
        await _send(writer, "POST", "/echo", body=b"payload" * 1000)
        await _assert_closed(reader)


async def test_reset_next_resets(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        assert (await _get(reader, writer, "/reset-next")).status == 200
        await _send(writer, "GET", "/echo")
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(_IO_TIMEOUT):
                await reader.read()


async def test_chunked_is_well_formed(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        response = await _get(reader, writer, "/chunked/1000?chunks=3")
        assert response.header("transfer-encoding") == "chunked"
        assert response.header("content-length") is None
        assert response.chunk_sizes == [334, 333, 333]
        assert response.body == pattern(1000)
        # The connection is still usable, so the terminating chunk was framed correctly.
        with_trailer = await _get(reader, writer, "/chunked/10?chunks=20&trailer=1")
        assert with_trailer.chunk_sizes == [1] * 10
        assert with_trailer.body == pattern(10)
        assert (await _get(reader, writer, "/empty")).header("x-request-no") == "3"


async def test_idle_closers(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        assert (await _get(reader, writer, "/close-idle?after=0.05")).status == 200
        await _assert_closed(reader)
    async with _connect(fault_server.port) as (reader, writer):
        assert (await _get(reader, writer, "/408-idle?after=0.05")).status == 200
        async with asyncio.timeout(_IO_TIMEOUT):
            assert await reader.read() == (
                b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            )
    async with _connect(fault_server.port) as (reader, writer):
        # A request inside the idle window cancels the close.
        assert (await _get(reader, writer, "/close-idle?after=5")).status == 200
        assert (await _get(reader, writer, "/empty")).header("x-request-no") == "2"


async def test_truncated_and_reset_bodies(fault_server: FaultServer) -> None:
    async with _connect(fault_server.port) as (reader, writer):
        await _send(writer, "GET", "/truncated?declared=100&sent=40")
        async with asyncio.timeout(_IO_TIMEOUT):
            raw = await reader.read()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"Content-Length: 100" in head
        assert body == b"x" * 40
    async with _connect(fault_server.port) as (reader, writer):
        await _send(writer, "GET", "/reset-mid-body?sent=100")
        async with asyncio.timeout(_IO_TIMEOUT):
            await reader.readuntil(b"\r\n\r\n")
            with pytest.raises(ConnectionResetError):
                await reader.read()


async def test_tls_fault_server_verifies_with_ca(
    tls_fault_server: FaultServer, ca_path: str, client_ssl_context: ssl.SSLContext
) -> None:
    assert tls_fault_server.url.startswith("https://localhost:")
    context = ssl.create_default_context(cafile=ca_path)
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with _connect(tls_fault_server.port, ssl_context=context) as (reader, writer):
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        response = await _get(reader, writer, "/echo?id=tls")
        assert json.loads(response.body)["id"] == "tls"

    async with _connect(tls_fault_server.port, ssl_context=client_ssl_context) as (reader, writer):
        assert (await _get(reader, writer, "/empty")).status == 200

    untrusting = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        async with _connect(tls_fault_server.port, ssl_context=untrusting):
            pass


async def test_private_server_lifecycle() -> None:
    # A private instance, so the open-connection counts are not disturbed by other tests.
    with FaultServer() as server:
        async with _connect(server.port) as (reader, writer):
            await _get(reader, writer, "/empty")
            assert server.open_connections() == 1
        # The client closed; the server notices and forgets the connection.
        assert await server.wait_for_async(lambda: server.open_connections() == 0)

        async with _connect(server.port) as (reader, writer):
            await _send(writer, "GET", "/stall-headers")
            assert await server.wait_for_async(lambda: server.open_connections() == 1)
            await asyncio.to_thread(server.stop)  # closes the stalled connection
            await _assert_closed(reader)
        assert server.open_connections() == 0
        assert server.connections_accepted == 2
        assert not server.errors


async def test_blackhole_never_answers(blackhole: BlackholeServer) -> None:
    blackhole.reset()
    async with _connect(blackhole.port) as (reader, writer):
        await _send(writer, "GET", "/")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await reader.read(1)
    assert await blackhole.wait_for_async(lambda: blackhole.connections_accepted == 1)


# -- nginx ------------------------------------------------------------------------------------


async def test_nginx_http(nginx: Nginx) -> None:
    async with _connect(nginx.http_port) as (reader, writer):
        small = await _get(reader, writer, "/small.txt")
        assert (small.status, small.body) == (200, b"Hello, world\n")
        assert (await _get(reader, writer, "/1k.bin")).body == nginx.file_bytes("1k.bin")
        assert (await _get(reader, writer, "/echo?id=abc")).body == b"abc"
        bye = await _get(reader, writer, "/close")
        assert (bye.body, bye.header("connection")) == (b"bye", "close")
        await _assert_closed(reader)


async def test_nginx_https_offers_h2(nginx: Nginx, ca_path: str) -> None:
    context = ssl.create_default_context(cafile=ca_path)
    context.set_alpn_protocols(["h2", "http/1.1"])
    async with _connect(nginx.https_port, ssl_context=context) as (_, writer):
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"

    context = ssl.create_default_context(cafile=ca_path)
    context.set_alpn_protocols(["http/1.1"])
    async with _connect(nginx.https_port, ssl_context=context) as (reader, writer):
        assert (await _get(reader, writer, "/small.txt")).body == b"Hello, world\n"
        assert (await _get(reader, writer, "/echo?id=abc")).body == b"abc"


async def test_nginx_h2c_speaks_http2(nginx: Nginx) -> None:
    async with _connect(nginx.h2c_port) as (reader, writer):
        # Client preface plus an empty SETTINGS frame; the server must answer with SETTINGS.
        empty_settings = struct.pack(">3sBBI", b"\x00\x00\x00", 4, 0, 0)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings)
        async with asyncio.timeout(_IO_TIMEOUT):
            frame_header = await reader.readexactly(9)
        _length, frame_type, _flags, stream_id = struct.unpack(">3sBBI", frame_header)
        assert (frame_type, stream_id) == (4, 0)
