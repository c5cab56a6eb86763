"""Raw asyncio servers that answer the fuzzed request with a case's bytes.

Each runs in the test's own event loop (the harness owns it), on 127.0.0.1, and serves two
paths: ``/fuzz`` gets the current case's answer, written in the case's pieces with a yield to
the loop after each so the client often reads them separately; ``/check/<n>`` gets a correct
response whose body names ``n``, so a client that reused a socket with stale bytes on it would
read the wrong answer. The server records which of its connections served which path.

After answering ``/fuzz`` the server keeps the connection only if the case says so (a response
that is complete and allows reuse); otherwise it lingers briefly for a follow-up request and
then closes, so an answer that never ends costs the linger, not the client's read timeout.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

import hpack
from hyperframe.frame import DataFrame, HeadersFrame, PingFrame, SettingsFrame

__all__ = ("H2FuzzServer", "H11FuzzServer", "check_body")

# How long a connection that answered /fuzz waits for a follow-up before closing. Only speed
# depends on it: a follow-up that comes later finds the socket closed and dials a new one.
LINGER = 0.05
_CLOSE_TIMEOUT = 2.0
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def check_body(nonce: str) -> bytes:
    return f"check {nonce} ok".encode()


class _Case(Protocol):
    """What a server needs of a case (`http11.H11Case`, `http2.H2Case`)."""

    keep_open: bool


class _FuzzServer:
    """Accepts connections, counts them, and tracks their handler tasks for cleanup."""

    def __init__(self) -> None:
        self.accepted = 0
        self._accepted_before = 0
        self.error: BaseException | None = None  # a bug in the rig itself, re-raised by the harness
        self.served: list[tuple[str, int]] = []  # (path kind, connection number)
        self.written = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def begin(self) -> None:
        """A new example: forget the last one's records."""
        self.served = []
        self.written = asyncio.Event()
        self.error = None
        self._accepted_before = self.accepted

    @property
    def accepted_now(self) -> int:
        """Connections accepted during this example."""
        return self.accepted - self._accepted_before

    async def end_example(self) -> None:
        """Close every connection still open (their handlers end)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.end_example()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def conn_of(self, kind: str) -> int | None:
        """The connection that served the last request of `kind` ("fuzz" or "check")."""
        for served, conn in reversed(self.served):
            if served == kind:
                return conn
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        conn = self.accepted
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve(reader, writer, conn)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client gave up on the connection: that is its right
        except asyncio.CancelledError:
            # `end_example` closing us. Ending normally, not cancelled: asyncio's stream
            # callback (3.11) would log a cancelled handler task as an error.
            pass
        except Exception as exc:
            self.error = exc
        finally:
            self.written.set()  # nothing more will be written on this connection
            self._tasks.discard(task)
            writer.transport.abort()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
    ) -> None:
        raise NotImplementedError

    async def _write(self, writer: asyncio.StreamWriter, pieces: list[bytes]) -> None:
        try:
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
        finally:
            self.written.set()

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        """A graceful close (FIN after the queued bytes), bounded."""
        writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass

    @staticmethod
    def _deadline(case: _Case) -> float | None:
        return None if case.keep_open else asyncio.get_running_loop().time() + LINGER


class _H11Case(_Case, Protocol):
    close_after: bool

    def chunks(self) -> list[bytes]: ...


class H11FuzzServer(_FuzzServer):
    """HTTP/1.1: reads request heads, answers /fuzz with the case's bytes."""

    case: _H11Case

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
    ) -> None:
        deadline: float | None = None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    head = await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                await self._close(writer)
                return
            target = head.split(b" ", 2)[1].decode()
            if target == "/fuzz":
                self.served.append(("fuzz", conn))
                case = self.case
                await self._write(writer, case.chunks())
                if case.close_after:
                    await self._close(writer)
                    return
                deadline = self._deadline(case)
            elif target.startswith("/check/"):
                self.served.append(("check", conn))
                body = check_body(target.removeprefix("/check/"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                deadline = None
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


class _H2Case(_Case, Protocol):
    def chunks(self, own: int) -> list[bytes]: ...


class H2FuzzServer(_FuzzServer):
    """HTTP/2 by prior knowledge: handshake, then /fuzz gets the case's frames."""

    case: _H2Case

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: int
    ) -> None:
        if await reader.readexactly(len(_PREFACE)) != _PREFACE:
            return
        writer.write(SettingsFrame(0).serialize())
        decoder = hpack.Decoder()
        block = b""
        deadline: float | None = None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    header = await reader.readexactly(9)
                    payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
            except TimeoutError:
                await self._close(writer)
                return
            if writer.transport.is_closing():
                return  # the client is gone: frames still buffered need no answer
            kind, flags = header[3], header[4]
            sid = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
            if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledge
                writer.write(SettingsFrame(0, flags={"ACK"}).serialize())
            elif kind == 0x6 and not flags & 0x1:  # PING: answer
                writer.write(PingFrame(0, payload, flags={"ACK"}).serialize())
            elif kind == 0x7:  # GOAWAY: the client is done with this connection
                return
            elif kind == 0x0 and payload:  # DATA of an upload: credit it back, as servers do
                size = len(payload).to_bytes(4, "big")
                writer.write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + size)
                if not flags & 0x1:
                    stream = sid.to_bytes(4, "big")
                    writer.write(b"\x00\x00\x04\x08\x00" + stream + size)
            elif kind in (0x1, 0x9):  # HEADERS, CONTINUATION
                if kind == 0x1:
                    start = 1 if flags & 0x8 else 0
                    end = len(payload) - (payload[0] if flags & 0x8 else 0)
                    if flags & 0x20:
                        start += 5
                    block = payload[start:end]
                else:
                    block += payload
                if flags & 0x4:  # END_HEADERS: a request is complete
                    fields = dict(decoder.decode(block, raw=True))
                    path = fields[b":path"].decode()
                    deadline = await self._answer(writer, conn, sid, path, deadline)

    async def _hold(self, writer: asyncio.StreamWriter, sid: int, body: bytes) -> None:
        written = self.written
        try:
            await written.wait()
            writer.write(HeadersFrame(sid, b"\x88", flags={"END_HEADERS"}).serialize())
            writer.write(DataFrame(sid, body, flags={"END_STREAM"}).serialize())
            await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass  # the connection is gone (or the example over): nothing to answer on

    async def _answer(
        self, writer: asyncio.StreamWriter, conn: int, sid: int, path: str, deadline: float | None
    ) -> float | None:
        if path == "/fuzz":
            self.served.append(("fuzz", conn))
            case = self.case
            await self._write(writer, case.chunks(sid))
            return self._deadline(case)
        if path.startswith("/hold/"):
            # Answered only once the fuzzed answer is out: this stream is open meanwhile.
            self.served.append(("hold", conn))
            body = check_body(path.removeprefix("/hold/"))
            task = asyncio.create_task(self._hold(writer, sid, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return deadline
        if path.startswith("/check/"):
            self.served.append(("check", conn))
            # b"\x88" is ":status: 200" from the HPACK static table: it cannot disagree with
            # whatever the fuzzed answer did to the client's dynamic table.
            writer.write(HeadersFrame(sid, b"\x88", flags={"END_HEADERS"}).serialize())
            body = check_body(path.removeprefix("/check/"))
            writer.write(DataFrame(sid, body, flags={"END_STREAM"}).serialize())
            await writer.drain()
            # A connection that carried a broken answer still closes at its deadline: bytes
            # of it may sit in the client's frame buffer and swallow this answer, and only
            # the close ends that wait (the client then retries on a new socket).
        return deadline
