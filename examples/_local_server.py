"""A tiny HTTP/1.1 keep-alive server for the examples and the benchmark fallback.

It needs no internet: ``tls=True`` makes a throwaway ``trustme`` CA, issues a certificate
for ``localhost``/``127.0.0.1`` and writes the CA bundle to a temporary file the client
can pass as ``verify=``. The server counts accepted TCP connections, completed TLS
handshakes and requests, so a demo can show how many sockets a client really opened.

Routes: ``/`` and ``/small.txt`` (a short text), and ``/download/N``: N bytes (at most 1 GiB)
generated chunk by chunk, never held in memory whole, with its SHA-256 in the
``X-Content-SHA256`` header so a client can check what it streamed.

Run it standalone (used by ``benchmarks/run.py`` when nginx is missing)::

    python examples/_local_server.py [--port 0] [--tls]

It prints its base URL on the first line of stdout and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from types import TracebackType

SMALL_BODY = b"Hello from aiopool's local test server.\n"
PATHS = {"/": SMALL_BODY, "/small.txt": SMALL_BODY}
MAX_HEAD = 64 * 1024
DOWNLOAD_PREFIX = "/download/"
DOWNLOAD_CHUNK = 64 * 1024
MAX_DOWNLOAD = 1 << 30


def download_chunks(size: int) -> Iterator[bytes]:
    """The body of ``/download/<size>``: chunk i is sha256(i) repeated, so order matters."""
    for index, start in enumerate(range(0, size, DOWNLOAD_CHUNK)):
        block = hashlib.sha256(index.to_bytes(8, "big")).digest() * (DOWNLOAD_CHUNK // 32)
        yield block[: min(DOWNLOAD_CHUNK, size - start)]


@functools.lru_cache(maxsize=8)
def download_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in download_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


class LocalServer:
    """``async with LocalServer(tls=True) as srv: ... srv.url, srv.ca_path, srv.connections``."""

    def __init__(self, *, tls: bool = False, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tls = tls
        self.host = host
        self.port = port
        self.connections = 0  # accepted TCP connections
        self.handshakes = 0  # completed TLS handshakes
        self.requests = 0
        self.ca_path: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def reset_counters(self) -> None:
        self.connections = self.handshakes = self.requests = 0

    async def __aenter__(self) -> LocalServer:
        if self.tls:
            import trustme

            ca = trustme.CA()
            self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost", "127.0.0.1").configure_cert(self._ssl)
            self._ssl.set_alpn_protocols(["http/1.1"])
            self._tmpdir = tempfile.TemporaryDirectory(prefix="aiopool-demo-")
            self.ca_path = os.path.join(self._tmpdir.name, "ca.pem")
            ca.cert_pem.write_to_path(self.ca_path)
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            if self._ssl is not None:
                await writer.start_tls(self._ssl)
                self.handshakes += 1
            while await self._serve_one(reader, writer):
                pass
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # client went away or sent garbage: just drop the connection
        except asyncio.CancelledError:
            pass  # server shutdown; re-raising makes Python 3.11's streams log a traceback
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return False  # clean close between requests
        if len(head) > MAX_HEAD:
            return False
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            method, target, version = request_line.split(" ")
        except ValueError:
            await self._respond(writer, 400, b"bad request line\n", keep_alive=False)
            return False
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                await self._respond(writer, 400, b"bad header\n", keep_alive=False)
                return False
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:  # chunked uploads are not needed here
            await self._respond(writer, 501, b"chunked bodies unsupported\n", keep_alive=False)
            return False
        length = int(headers.get("content-length", "0") or "0")
        if length:
            await reader.readexactly(length)
        self.requests += 1
        connection = headers.get("connection", "").lower()
        keep_alive = (version == "HTTP/1.1" and "close" not in connection) or (
            version == "HTTP/1.0" and "keep-alive" in connection
        )
        path = target.split("?", 1)[0]
        if path.startswith(DOWNLOAD_PREFIX):
            size = path.removeprefix(DOWNLOAD_PREFIX)
            if not size.isdigit() or int(size) > MAX_DOWNLOAD:
                await self._respond(writer, 404, b"not found\n", keep_alive)
            else:
                await self._download(writer, int(size), keep_alive, head_only=method == "HEAD")
            return keep_alive
        body = PATHS.get(path)
        if body is None:
            await self._respond(writer, 404, b"not found\n", keep_alive, head_only=method == "HEAD")
        else:
            await self._respond(writer, 200, body, keep_alive, head_only=method == "HEAD")
        return keep_alive

    @staticmethod
    async def _download(
        writer: asyncio.StreamWriter, size: int, keep_alive: bool, *, head_only: bool
    ) -> None:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {size}\r\n"
            f"X-Content-SHA256: {download_sha256(size)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode("latin-1")
        writer.write(head)
        if not head_only:
            for chunk in download_chunks(size):
                writer.write(chunk)
                await writer.drain()  # flow control: a slow reader slows the server
        await writer.drain()

    @staticmethod
    async def _respond(
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        keep_alive: bool,
        *,
        head_only: bool = False,
    ) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 501: "Not Implemented"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode("latin-1")
        writer.write(head if head_only else head + body)
        await writer.drain()


async def _serve_forever(port: int, tls: bool) -> None:
    async with LocalServer(tls=tls, port=port) as server:
        line = server.url if server.ca_path is None else f"{server.url} {server.ca_path}"
        print(line, flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.tls))


if __name__ == "__main__":
    main()
