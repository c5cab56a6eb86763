"""A scripted network backend: byte-exact HTTP/1.1 scenarios without a server.

`MockDialer([script, script, ...])` replaces the pool's dialer; each dial takes the next script,
a list of what the "server" sends: each item is returned by one `read()` (an exception item is
raised instead), and the stream reads as EOF once the script runs out. Everything the client
writes is recorded in `MockStream.written`. Real servers prove the rest (tests/rig/); this is
for what they cannot do on cue: split a response at every byte, send bytes after a response,
answer in one read with an interim and a final response.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aiopool._exceptions import ConnectError, WriteError

Script = Sequence[bytes | BaseException]
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _has_h2_headers(data: bytearray) -> bool:
    """Whether the client's bytes so far hold an HTTP/2 HEADERS frame."""
    pos = len(_H2_PREFACE) if data.startswith(_H2_PREFACE) else 0
    while pos + 9 <= len(data):
        if data[pos + 3] == 0x1:
            return True
        pos += 9 + int.from_bytes(data[pos : pos + 3], "big")
    return False


class MockStream:
    """`NetworkStream` whose incoming bytes come from a script.

    With `answers_requests`, an HTTP/2 script's items after the first (the server's preface)
    are read only once the client has written a HEADERS frame, as a real server answers only
    what it received (the client sends HEADERS at the end of its event-loop turn)."""

    def __init__(self, script: Script, *, answers_requests: bool = False) -> None:
        self._script: deque[bytes | BaseException] = deque(script)
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self._idle_callback: Callable[[], None] | None = None
        self._answers = answers_requests
        self._reads = 0
        self._requested = asyncio.Event()

    async def read(self, timeout: float | None) -> bytes:
        await asyncio.sleep(0)  # a real read always yields to the loop
        if self._answers and self._reads:
            await self._requested.wait()
        self._reads += 1
        if not self._script:
            return b""
        item = self._script.popleft()
        if isinstance(item, BaseException):
            raise item
        return item

    def write_nowait(self, data: bytes) -> None:
        if self.closed:
            raise WriteError("connection closed")
        self.written += data
        if self._answers and not self._requested.is_set() and _has_h2_headers(self.written):
            self._requested.set()

    async def drain(self, timeout: float | None) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    async def wait_closed(self, timeout: float) -> None:
        return None

    def is_idle_clean(self) -> bool:
        return not self.closed

    def set_idle_callback(self, callback: Callable[[], None] | None) -> None:
        self._idle_callback = callback

    def extra(self, name: str) -> Any:
        return None

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str, timeout: float | None
    ) -> MockStream:
        # Scripts are plaintext: a scripted proxy test ends before the TLS layer would start.
        raise ConnectError(f"the scripted backend cannot start TLS to {server_hostname}")


class MockDialer:
    """A `Dialer` handing out one `MockStream` per script, in order."""

    def __init__(self, scripts: Sequence[Script]) -> None:
        self._scripts = deque(scripts)
        self.streams: list[MockStream] = []

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> MockStream:
        if not self._scripts:
            raise ConnectError(f"no more scripted connections to {host}:{port}")
        stream = MockStream(self._scripts.popleft())
        self.streams.append(stream)
        return stream


def response(body: bytes, *headers: tuple[bytes, bytes], status: bytes = b"200 OK") -> bytes:
    """A complete HTTP/1.1 response with Content-Length."""
    lines = [b"HTTP/1.1 " + status, b"Content-Length: " + str(len(body)).encode()]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
