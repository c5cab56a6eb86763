"""hypercorn serving a tiny ASGI app: a real, independent HTTP/2 server written in Python.

``H2ScriptServer`` and the client under test both sit on h2; hypercorn also uses h2, but its
own framing, flow-control and connection management, so agreement with it is evidence the
client interoperates rather than merely mirrors the rig. nginx (``Nginx.https_url``) is the
non-Python counterpart.

hypercorn runs in its own thread and loop, like the other rig servers, so one session-scoped
instance serves tests on every pytest-asyncio loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope
from starlette.types import ASGIApp

from . import encodings
from ._service import Service
from .fault_server import pattern

__all__ = ["HypercornServer", "RigApp"]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_THREAD_JOIN_TIMEOUT = 10.0
# How long hypercorn lets open connections finish at stop() before it cancels them.
_GRACEFUL_TIMEOUT = 1.0
# Idle connections stay open this long: longer than any test, so a test that sees a fresh
# connection knows the client opened it, not that the server timed the old one out.
_KEEP_ALIVE_TIMEOUT = 300.0
# How long after the graceful period stop() waits before it cuts the remaining connections.
_CUT_AFTER = 0.5


class RigApp:
    """The ASGI application. Routes, like ``H2ScriptServer``'s:

    * ``/echo?id=X`` -- 200, body X, header ``x-id: X``
    * ``/bytes/N?seed=S`` -- 200, ``pattern(N, S)``
    * ``/slow?chunks=K&delay=S`` -- 200, K (5) pieces of 10 bytes each after S (0.1) s,
      ``pattern(10 * K)`` in all
    * ``/upload`` -- 200, body ``b"<count> <sha256 hex>"`` of the request body
    * ``/inspect`` -- 200, JSON ``{method, path, query, headers: [[name, value]...], body}``
      of the request as received (latin-1 text)
    * ``/redirect?status=S&to=L`` -- status S (302) with ``Location: L`` (none if ``to`` is
      absent); ``to2=M`` adds a second Location; every ``cookie=C`` adds ``Set-Cookie: C``;
      ``body=N`` sends ``pattern(N)`` as the body (N zero bytes with ``zeros=1``), with
      Content-Length unless ``chunked=1``; ``gzip=1`` sends it gzipped (Content-Encoding),
      ``gzip=broken`` labels it gzip without compressing it
    * ``/chain/N?status=S&mode=M`` -- N > 0: status S (302) to ``/chain/N-1`` (same query),
      by an absolute (``mode=abs``), absolute-path (``path``, the default) or relative
      (``rel``) Location; N = 0: as ``/inspect``
    * ``/loop`` -- 302 to itself, forever
    * ``/set-cookie?cookie=C...`` -- 200, a ``Set-Cookie: C`` per ``cookie``, body ``set``
    * ``/basic-auth?user=U&password=P`` -- 200 ``ok`` if the request carries those Basic
      credentials (UTF-8), else 401 with ``WWW-Authenticate: Basic realm="rig"``
    * ``/encoded``, ``/bomb``, ``/endless`` -- bodies with a Content-Encoding, as the fault
      server serves them (see ``rig.encodings``); ``/endless`` stops after 1 GiB here, or
      when the client resets the stream
    * anything else -- 404

    Every response carries ``x-http-version`` (``2`` for HTTP/2) from the ASGI scope.

    ``RigApp(handler, startup=..., shutdown=...)`` serves another ASGI app's HTTP requests
    instead (``rig.starlette_app``), with the same bookkeeping, awaiting ``startup`` and
    ``shutdown`` at the lifespan events.
    """

    def __init__(
        self,
        handler: ASGIApp | None = None,
        *,
        startup: Callable[[], Awaitable[None]] | None = None,
        shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._running: set[asyncio.Task[object]] = set()
        self._handler = handler
        self._startup = startup
        self._shutdown = shutdown

    def abort_requests(self) -> None:
        """Cancel every request in progress (hypercorn then resets its stream).

        hypercorn 0.18 cannot shut down while a request is still running: once its graceful
        period ends it cancels the connection's task group, and the request's final
        ``send(None)`` then fails with "TaskGroup is shutting down" and leaks a never-awaited
        coroutine. Ending the requests first leaves it only idle connections to close.
        """
        for task in self._running:
            task.cancel()

    @property
    def requests_running(self) -> int:
        return len(self._running)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            # Answered so hypercorn does not log a "lifespan unsupported" warning at startup.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if self._startup is not None:
                        await self._startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self._shutdown is not None:
                        await self._shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            if self._handler is not None:
                await self._handler(scope, receive, send)  # type: ignore[arg-type]
            else:
                await _serve(scope, receive, send)
        finally:
            self._running.discard(task)


async def _serve(scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    query = dict(pairs)
    path = scope["path"]
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message["type"] == "http.request":
            body += message["body"]
            if not message["more_body"]:
                break
    try:
        if path == "/echo":
            value = query.get("id", "")
            await _respond(scope, send, 200, value.encode("latin-1"), [(b"x-id", value.encode())])
        elif path.startswith("/bytes/"):
            count = int(path.removeprefix("/bytes/"))
            await _respond(scope, send, 200, pattern(count, int(query.get("seed", "0"))))
        elif path == "/slow":
            await _slow(
                scope, send, int(query.get("chunks", "5")), float(query.get("delay", "0.1"))
            )
        elif path == "/late":
            # The head only after S seconds (for the response-head timeout over HTTP/2).
            await asyncio.sleep(float(query.get("s", "1")))
            await _respond(scope, send, 200, b"late\n")
        elif path == "/upload":
            digest = hashlib.sha256(body).hexdigest()
            await _respond(scope, send, 200, f"{len(body)} {digest}".encode())
        elif path == "/inspect" or path == "/chain/0":
            await _inspect(scope, send, bytes(body))
        elif path == "/redirect":
            await _redirect(scope, send, pairs)
        elif path.startswith("/chain/"):
            await _chain(scope, send, int(path.removeprefix("/chain/")), query)
        elif path == "/loop":
            await _respond(scope, send, 302, b"", [(b"location", b"/loop")])
        elif path == "/set-cookie":
            cookies = [(b"set-cookie", v.encode("latin-1")) for k, v in pairs if k == "cookie"]
            await _respond(scope, send, 200, b"set", cookies)
        elif path == "/basic-auth":
            await _basic_auth(scope, send, query)
        elif path in ("/encoded", "/bomb", "/endless"):
            await _encoded(scope, receive, send, path, query)
        else:
            await _respond(scope, send, 404, b"not found\n")
    except ValueError as exc:
        await _respond(scope, send, 400, f"{exc}\n".encode())


def _head(scope: HTTPScope, length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-length", str(length).encode()),
        (b"x-http-version", scope["http_version"].encode()),
    ]


async def _respond(
    scope: HTTPScope,
    send: ASGISendCallable,
    status: int,
    body: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = _head(scope, len(body)) + (extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _inspect(scope: HTTPScope, send: ASGISendCallable, body: bytes) -> None:
    payload = {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    content = json.dumps(payload).encode()
    await _respond(scope, send, 200, content, [(b"content-type", b"application/json")])


async def _redirect(scope: HTTPScope, send: ASGISendCallable, pairs: list[tuple[str, str]]) -> None:
    query = dict(pairs)
    status = int(query.get("status", "302"))
    extra = [(b"location", query[key].encode()) for key in ("to", "to2") if key in query]
    extra += [(b"set-cookie", v.encode("latin-1")) for k, v in pairs if k == "cookie"]
    size = int(query.get("body", "0"))
    body = bytes(size) if query.get("zeros") == "1" else pattern(size)
    if query.get("gzip") in ("1", "broken"):
        body = gzip.compress(body) if query["gzip"] == "1" else body
        extra.append((b"content-encoding", b"gzip"))
    if query.get("chunked") != "1":
        await _respond(scope, send, status, body, extra)
        return
    # No Content-Length: HTTP/1.1 sends it chunked, HTTP/2 as DATA frames until END_STREAM.
    headers = [(b"x-http-version", scope["http_version"].encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for start in range(0, len(body), 16384):
        piece = body[start : start + 16384]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _chain(scope: HTTPScope, send: ASGISendCallable, n: int, query: dict[str, str]) -> None:
    if n < 0:
        raise ValueError("the chain length must not be negative")
    status = int(query.get("status", "302"))
    mode = query.get("mode", "path")
    qs = scope["query_string"].decode("latin-1")
    suffix = f"{n - 1}" + (f"?{qs}" if qs else "")
    if mode == "abs":
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        location = f"{scope['scheme']}://{host}/chain/{suffix}"
    elif mode == "rel":
        location = suffix  # relative to /chain/N: replaces the last segment
    else:
        location = f"/chain/{suffix}"
    await _respond(scope, send, status, b"moved\n", [(b"location", location.encode())])


async def _basic_auth(scope: HTTPScope, send: ASGISendCallable, query: dict[str, str]) -> None:
    expected = "Basic " + base64.b64encode(
        f"{query.get('user', '')}:{query.get('password', '')}".encode()
    ).decode("ascii")
    received = [v.decode("latin-1") for n, v in scope["headers"] if n == b"authorization"]
    if received == [expected]:
        await _respond(scope, send, 200, b"ok")
    else:
        challenge = [(b"www-authenticate", b'Basic realm="rig", charset="UTF-8"')]
        await _respond(scope, send, 401, b"unauthorized\n", challenge)


async def _encoded(
    scope: HTTPScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
    path: str,
    query: dict[str, str],
) -> None:
    coding = query.get("coding", "identity" if path == "/endless" else "gzip")
    pieces: Iterable[bytes]
    if path == "/encoded":
        data = encodings.text(int(query.get("size", "100000")))
        codings = [c.strip() for c in coding.split(",")]
        header, body = encodings.encode(data, codings, query.get("damage"))
        status = int(query.get("status", "200"))
        if "chunks" not in query:
            await _respond(scope, send, status, body, [(b"content-encoding", header.encode())])
            return
        step = -(-len(body) // max(int(query["chunks"]), 1)) or 1
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
    elif path == "/bomb":
        header = coding
        pieces = encodings.bomb(coding, int(query.get("size", str(1024**3))))
    else:
        header = coding
        chunk = int(query.get("chunk", str(64 * 1024)))
        pieces = itertools.islice(encodings.endless(coding, chunk), 1024**3 // chunk)
    headers = [(b"x-http-version", scope["http_version"].encode())]
    if header != "identity":
        headers.append((b"content-encoding", header.encode()))
    # Sending to a stream the client has reset returns at once without error, so without this
    # the loop would spin (compressing) to its end, holding the server's only thread.
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for piece in pieces:
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)  # let the watcher hear of a disconnect
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()


async def _slow(scope: HTTPScope, send: ASGISendCallable, chunks: int, delay: float) -> None:
    if chunks < 0 or not 0 <= delay < 3600:
        raise ValueError("chunks and delay must not be negative")
    body = pattern(10 * chunks)
    headers = _head(scope, len(body))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for index in range(chunks):
        await asyncio.sleep(delay)
        piece = body[index * 10 : index * 10 + 10]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _TrackingListener(socket.socket):
    """A listening socket that remembers the connections it accepts.

    asyncio accepts by calling ``accept()`` on the very socket hypercorn was given, so this is
    the one place to learn about connections without reaching into hypercorn. ``stop()`` uses
    it to cut connections hypercorn cannot close by itself: a TLS close waits up to 30 s for
    the peer's close_notify.
    """

    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.lock = threading.Lock()
        self.total = 0
        self.accepted: list[socket.socket] = []

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        with self.lock:
            self.total += 1
            # Closed ones are dropped here so the list stays as short as the open set.
            self.accepted = [s for s in self.accepted if s.fileno() != -1] + [conn]
        return conn, address

    def open_connections(self) -> list[socket.socket]:
        with self.lock:
            return [s for s in self.accepted if s.fileno() != -1]


def _cut(connections: list[socket.socket]) -> None:
    for conn in connections:
        with contextlib.suppress(OSError):  # closed meanwhile
            conn.shutdown(socket.SHUT_RDWR)


class _BoundConfig(Config):
    """A Config that serves a socket bound beforehand.

    hypercorn binds what ``bind`` names itself, and with port 0 nobody could learn the port;
    binding first and handing the socket over avoids both that and a pick-then-bind race.
    """

    def __init__(self, listener: socket.socket, on_serving: threading.Event) -> None:
        super().__init__()
        self._listener = listener
        self._on_serving = on_serving

    def create_sockets(self) -> Sockets:
        # Called right before hypercorn starts serving; the socket already listens, so no
        # connection made from now on is refused.
        self._on_serving.set()
        if self.ssl_enabled:
            return Sockets([self._listener], [], [])
        return Sockets([], [self._listener], [])


class HypercornServer(Service):
    """hypercorn on 127.0.0.1: HTTPS with ALPN ``h2``/``http/1.1`` (a cert from ``ca``), or
    plain HTTP (h2c prior knowledge and HTTP/1.1) with ``tls=False``. Serves ``self.app``, a
    ``RigApp`` (``app``: another one); ``max_concurrent_streams`` is hypercorn's
    SETTINGS_MAX_CONCURRENT_STREAMS."""

    def __init__(
        self,
        ca: trustme.CA | None = None,
        *,
        tls: bool = True,
        max_concurrent_streams: int = 100,
        app: RigApp | None = None,
        uds: str | None = None,
    ) -> None:
        self.ca: trustme.CA = ca if ca is not None else trustme.CA()
        self._tls = tls
        # Listen on this unix domain socket path instead of a loopback port (``port`` is 0).
        self.uds = uds
        self._max_concurrent_streams = max_concurrent_streams
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._listener: _TrackingListener | None = None
        self._accepted_before_reset = 0
        self._port: int | None = None
        self._ready = threading.Event()
        self.app = app if app is not None else RigApp()
        self.errors: list[BaseException] = []
        """Exceptions that ended the server thread (bugs, not client misbehaviour)."""

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("HypercornServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """``https://localhost:PORT`` (the cert is valid for 127.0.0.1 too), or ``http://``."""
        if self._tls:
            return f"https://localhost:{self.port}"
        return f"http://{_HOST}:{self.port}"

    def start(self) -> None:
        """Bind a free port, start hypercorn and return once it serves."""
        if self._thread is not None:
            raise RuntimeError("HypercornServer already started")
        if self.uds is not None:
            listener = _TrackingListener(socket.AF_UNIX)
            listener.bind(self.uds)
            port = 0
        else:
            listener = _TrackingListener()
            listener.bind((_HOST, 0))
            port = listener.getsockname()[1]
        listener.listen(128)
        listener.setblocking(False)
        self._listener, self._port = listener, port
        self._accepted_before_reset = 0
        self._ready.clear()
        self._thread = threading.Thread(target=self._thread_main, name="hypercorn", daemon=True)
        self._thread.start()
        if not self._ready.wait(_THREAD_JOIN_TIMEOUT) or self.errors:
            self.stop()
            raise RuntimeError(f"hypercorn failed to start: {self.errors!r}")

    def stop(self) -> None:
        """Shut hypercorn down (open connections get ``_GRACEFUL_TIMEOUT``) and join it."""
        thread, loop, shutdown = self._thread, self._loop, self._shutdown
        if thread is not None:
            if loop is not None and shutdown is not None:
                # The loop may have finished already, e.g. if hypercorn failed to start.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(shutdown.set)
            thread.join(_GRACEFUL_TIMEOUT + _CUT_AFTER)
            if thread.is_alive() and loop is not None and self._listener is not None:
                # Past hypercorn's graceful period something still waits on a peer (see
                # _TrackingListener); shutting the sockets down ends those waits at once.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_cut, self._listener.open_connections())
            thread.join(_THREAD_JOIN_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError("hypercorn thread did not stop")
        if self._listener is not None:
            # hypercorn closed it already unless it failed before serving; closing twice is
            # harmless for a socket object.
            self._listener.close()
            if self.uds is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.uds)
        self._thread = self._loop = self._shutdown = self._listener = None
        self._port = None

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since the last ``reset()`` (counted before TLS)."""
        if self._listener is None:
            return 0
        with self._listener.lock:
            return self._listener.total - self._accepted_before_reset

    def open_connections(self) -> int:
        """Server-side connections whose socket hypercorn has not closed yet."""
        return 0 if self._listener is None else len(self._listener.open_connections())

    def reset(self) -> None:
        """Zero ``connections_accepted``."""
        if self._listener is not None:
            with self._listener.lock:
                self._accepted_before_reset = self._listener.total

    async def _wait_for_stop(self) -> None:
        assert self._shutdown is not None
        await self._shutdown.wait()
        self.app.abort_requests()
        # Give the cancelled requests a moment to unwind (hypercorn resets their streams)
        # before hypercorn starts its own shutdown; see RigApp.abort_requests.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_GRACEFUL_TIMEOUT):
                while self.app.requests_running:
                    await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            logger.error("hypercorn thread failed", exc_info=exc)
            self.errors.append(exc)
        finally:
            self._ready.set()  # never leave start() waiting for a thread that has ended

    async def _main(self) -> None:
        assert self._listener is not None
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        config = _BoundConfig(self._listener, self._ready)
        config.alpn_protocols = ["h2", "http/1.1"]
        config.keep_alive_timeout = _KEEP_ALIVE_TIMEOUT
        config.h2_max_concurrent_streams = self._max_concurrent_streams
        config.graceful_timeout = _GRACEFUL_TIMEOUT
        config.accesslog = None
        config.errorlog = logger
        tls_dir = Path(tempfile.mkdtemp(prefix="aiopool-hypercorn-"))
        try:
            if self._tls:
                leaf = self.ca.issue_cert("localhost", "127.0.0.1")
                leaf.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
                chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
                (tls_dir / "chain.pem").write_bytes(chain)
                config.certfile = str(tls_dir / "chain.pem")
                config.keyfile = str(tls_dir / "key.pem")
            await serve(self.app, config, shutdown_trigger=self._wait_for_stop, mode="asgi")
        finally:
            shutil.rmtree(tls_dir, ignore_errors=True)
