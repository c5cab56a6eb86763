"""HTTP/2 floods from a hostile server (SECURITY.md, "HTTP/2 floods").

A small raw HTTP/2 server, one connection per test, in its own thread with blocking sockets:
it writes frames by hand (no state machine could be talked into flooding) and reads only when
the scenario says so. Each test runs on both engines (h2, native: see conftest).

- PING and SETTINGS floods while the server reads nothing (CVE-2019-9512, CVE-2019-9515): the
  client's answers must not pile up, and the request must end with a typed error, the server
  receiving GOAWAY(ENHANCE_YOUR_CALM);
- empty DATA frames (CVE-2019-9518), slow or fast, and other frames that bring nothing: they
  must neither keep a request alive past its read timeout nor loop for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from h2.errors import ErrorCodes

import aiopool
from aiopool._backend import NetworkStream, open_stream
from tests.helpers import assert_settled

pytestmark = pytest.mark.both_engines

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0, 1, 2, 3, 4, 6, 7
_ACK = 0x1
_END_HEADERS = 0x4
_STATUS_200 = b"\x88"  # HPACK: the static table's ":status: 200", indexed
# Bounds a test waits on, never measured: a hang fails the test instead of the suite.
_OUTER = 60.0
_SERVER_WAIT = 30.0


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


def frames_in(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each whole frame in `data`."""
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3])
        kind, flags = data[offset + 3], data[offset + 4]
        stream_id = int.from_bytes(data[offset + 5 : offset + 9]) & 0x7FFFFFFF
        payload = data[offset + 9 : offset + 9 + length]
        if len(payload) < length:
            return
        yield kind, flags, stream_id, payload
        offset += 9 + length


@dataclass
class Seen:
    """What the server read from the client."""

    frames: list[tuple[int, int, int, bytes]] = field(default_factory=list)

    def count(self, kind: int, flags: int | None = None) -> int:
        return sum(1 for f in self.frames if f[0] == kind and (flags is None or f[1] & flags))

    @property
    def goaway_codes(self) -> list[int]:
        return [int.from_bytes(f[3][4:8]) for f in self.frames if f[0] == _GOAWAY]

    @property
    def resets(self) -> list[int]:
        return [f[2] for f in self.frames if f[0] == _RST_STREAM]


Script = Callable[[socket.socket, bytearray], None]


class RawH2Server:
    """Accepts one connection, does the preface dance, then runs `script(sock, unread)`; then
    reads whatever the client sends until it closes (or `_SERVER_WAIT` passes)."""

    def __init__(self, script: Script, *, rcvbuf: int | None = None) -> None:
        self._script = script
        self._listener = socket.socket()
        if rcvbuf is not None:
            # Set before listen(): accepted sockets inherit it, and the window it implies is
            # what the handshake advertises.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.seen = Seen()
        self.sent = 0  # frames the script wrote
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._listener.settimeout(_SERVER_WAIT)
            sock, _ = self._listener.accept()
            with sock:
                sock.settimeout(_SERVER_WAIT)
                unread = bytearray()
                while len(unread) < len(_PREFACE):
                    unread += sock.recv(65536) or b"!" * len(_PREFACE)
                del unread[: len(_PREFACE)]
                # (The client waits for our SETTINGS before it sends a request.)
                sock.sendall(frame(_SETTINGS, 0, 0) + frame(_SETTINGS, _ACK, 0))
                while not any(f[0] == _HEADERS for f in frames_in(bytes(unread))):
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    unread += chunk
                self._script(sock, unread)
                self._read_all(sock, unread)
        except BaseException as exc:  # (reported by `join`)
            self.error = exc
        finally:
            self._listener.close()

    def _read_all(self, sock: socket.socket, unread: bytearray) -> None:
        sock.settimeout(_SERVER_WAIT)
        with contextlib.suppress(OSError):  # a reset ends it too
            while chunk := sock.recv(65536):
                unread += chunk
        self.seen.frames = list(frames_in(bytes(unread)))

    def join(self) -> Seen:
        self._thread.join(_SERVER_WAIT * 2)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.seen


def small_send_buffer_dialer(size: int = 4096) -> aiopool.Dialer:
    """Dial as usual, then shrink the socket's send buffer: the kernel then holds a few KiB of
    what the client writes instead of megabytes (loopback autotuning), so a flood the server
    does not read fills the client's own buffer within a few thousand frames."""

    async def dial(
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> NetworkStream:
        stream = await open_stream(
            host, port, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout
        )
        stream.extra("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        return stream

    return dial


# PING and SETTINGS floods ----------------------------------------------------------------------

_FLOOD = 60_000  # frames: 1 MB of PINGs, far past what the kernels on both sides hold


@pytest.mark.parametrize(
    ("unit", "answer"),
    [
        pytest.param(frame(_PING, 0, 0, b"floodme!"), _PING, id="ping"),
        pytest.param(frame(_SETTINGS, 0, 0), _SETTINGS, id="settings"),
    ],
)
async def test_a_control_frame_flood_ends_in_goaway_enhance_your_calm(
    unit: bytes, answer: int
) -> None:
    sent = [0]

    def script(sock: socket.socket, unread: bytearray) -> None:
        batch = unit * 1000
        with contextlib.suppress(OSError):  # the client may be gone before the flood ends
            while sent[0] < _FLOOD:
                sock.sendall(batch)
                sent[0] += 1000

    server = RawH2Server(script, rcvbuf=4096)
    client = aiopool.Client(
        http1=False, dialer=small_send_buffer_dialer(), timeout=aiopool.Timeout(_OUTER)
    )
    async with client:
        with pytest.raises(aiopool.RemoteProtocolError, match="ENHANCE_YOUR_CALM") as info:
            await asyncio.wait_for(client.get(f"{server.url}/"), _OUTER)
        assert "answers" in str(info.value)
        seen = await asyncio.to_thread(server.join)
        assert_settled(client)
    assert seen.goaway_codes == [ErrorCodes.ENHANCE_YOUR_CALM]
    # The client answered the frames the two kernels' small buffers took (~90 KB: 5,000 PING
    # or 10,000 SETTINGS ACKs) and at most 1,000 more, then discarded the rest: before the bound
    # it answered all 60,000, queueing up to 1 MB.
    assert seen.count(answer, _ACK) < _FLOOD // 2


# Frames that bring nothing -----------------------------------------------------------------------

_RESPONSE_HEAD = frame(_HEADERS, _END_HEADERS, 1, _STATUS_200)


def _reset_or_closed(sock: socket.socket, unread: bytearray, wait: float) -> bool:
    """Read for up to `wait` seconds; True once the client reset stream 1 or closed."""
    sock.settimeout(wait)
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(_SERVER_WAIT)
    unread += chunk
    return not chunk or any(f[0] == _RST_STREAM for f in frames_in(bytes(unread)))


async def test_empty_data_frames_do_not_hold_off_the_read_timeout() -> None:
    # One empty DATA frame every 0.3 s, for up to 12 s: a read timeout of 1 s must fire (no
    # body byte arrives), where each frame used to restart it.
    sent = [0]

    def script(sock: socket.socket, unread: bytearray) -> None:
        sock.sendall(_RESPONSE_HEAD)
        while sent[0] < 40:
            sock.sendall(frame(_DATA, 0, 1))
            sent[0] += 1
            if _reset_or_closed(sock, unread, 0.3):
                return

    server = RawH2Server(script)
    async with aiopool.Client(http1=False, timeout=aiopool.Timeout(_OUTER, read=1)) as client:
        async with client.stream("GET", f"{server.url}/") as resp:
            assert resp.status_code == 200
            received = bytearray()

            async def read_body() -> None:
                async for chunk in resp.aiter_bytes():
                    received.extend(chunk)

            with pytest.raises(aiopool.ReadTimeout, match="reading the response body"):
                await asyncio.wait_for(read_body(), _OUTER)
        assert not received
        assert_settled(client)
    seen = await asyncio.to_thread(server.join)  # (it reads until the client closes)
    assert sent[0] < 40  # the client reset the stream before the server gave up
    assert seen.resets == [1]


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param(frame(_DATA, 0, 1), id="empty-data"),
        pytest.param(frame(_DATA, 0x8, 1, b"\x04" + b"\0" * 4), id="padding-only-data"),
        pytest.param(frame(_PRIORITY, 0, 1, b"\0\0\0\0\x0f"), id="priority"),
        pytest.param(frame(0xFA, 0, 0, b"?"), id="unknown-type"),
    ],
)
async def test_a_flood_of_frames_that_bring_nothing_is_refused(unit: bytes) -> None:
    # 10,000 frames that carry no response byte, as fast as the socket takes them: the client
    # must not spin on them while the request waits (its read timeout is generous here).
    def script(sock: socket.socket, unread: bytearray) -> None:
        sock.sendall(_RESPONSE_HEAD)
        with contextlib.suppress(OSError):
            sock.sendall(unit * 10_000)

    server = RawH2Server(script)
    async with aiopool.Client(http1=False, timeout=aiopool.Timeout(_OUTER)) as client:

        async def fetch() -> None:
            async with client.stream("GET", f"{server.url}/") as resp:
                await resp.aread()

        with pytest.raises(aiopool.RemoteProtocolError, match="ENHANCE_YOUR_CALM"):
            await asyncio.wait_for(fetch(), _OUTER)
        seen = await asyncio.to_thread(server.join)
        assert_settled(client)
    assert seen.goaway_codes == [ErrorCodes.ENHANCE_YOUR_CALM]
