"""A fault-injecting HTTP/1.1 server for exercising the client against misbehaving peers.

The server runs its own event loop in a daemon thread. That is deliberate: pytest-asyncio gives
every test a fresh loop, and a server living on one of those loops would die with its test. A
thread-owned loop lets a single session-scoped instance serve every test, whichever loop the test
runs on, and keeps the server's timing independent of a client that blocks its own loop.

Requests are parsed by hand rather than with h11 so the server can be made to do things a
conforming implementation refuses to do (malformed heads, truncated bodies, resets). The path
selects the behaviour and query parameters tune it; see ``FaultServer`` for the full table.

Every connection gets a 1-based id that is unique for the lifetime of the server (it is *not*
rewound by ``reset()``, so an id seen before a reset can never be confused with a new connection).
Normal responses carry ``X-Conn-Id`` and ``X-Request-No`` so tests can tell whether the client
reused a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
import logging
import random
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import trustme

from . import encodings
from ._service import Service

__all__ = [
    "BlackholeServer",
    "FaultServer",
    "pattern",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
# Largest request head the server buffers; beyond it the request is answered with 431.
_HEAD_LIMIT = 256 * 1024
# How long start() waits for the listener and stop() for the server thread.
_THREAD_JOIN_TIMEOUT = 10.0
# Longest a graceful close may take before the connection is aborted. A TLS close waits for the
# peer's close_notify, which a client that leaked its socket never sends; without a bound,
# open_connections() would stay high long after the server closed.
_CLOSE_GRACE = 1.0
# Pause between flushing the last bytes and resetting, so the bytes reach the peer's receive
# queue before the RST does (loopback delivers immediately, but the peer must still be scheduled).
_PRE_RESET_PAUSE = 0.05

# The body of the streamed endpoints (/chunked, /slow, /big) repeats a random block whose length
# is a prime, so no write size, chunk size or buffer size of the client lines up with it: a
# duplicated, dropped or reordered piece of the stream changes the bytes, not just the length.
_PATTERN_PERIOD = 65_521
_PATTERN_BLOCK = random.Random(0xA10).randbytes(_PATTERN_PERIOD)
_PATTERN_WINDOW = _PATTERN_BLOCK * 3  # serves most slices without building a new buffer
_BIG_WRITE = 64 * 1024

_RESPONSE_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def pattern(n: int, offset: int = 0) -> bytes:
    """Return ``n`` bytes of the body pattern starting at byte ``offset`` of the stream.

    ``/chunked``, ``/slow`` and ``/big`` send ``pattern(N)``; compare a received body with it.
    """
    start = offset % _PATTERN_PERIOD
    if start + n <= len(_PATTERN_WINDOW):
        return _PATTERN_WINDOW[start : start + n]
    return (_PATTERN_BLOCK * ((start + n) // _PATTERN_PERIOD + 1))[start : start + n]


def server_ssl_context(ca: trustme.CA, *, alpn: Iterable[str] = ("http/1.1",)) -> ssl.SSLContext:
    """A server-side context with a leaf from ``ca`` valid for ``localhost`` and ``127.0.0.1``.

    ALPN defaults to ``http/1.1`` only: this server speaks nothing else, and a client offering
    ``h2`` must see it declined.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(list(alpn))
    return context


class _BadRequest(Exception):
    """The request cannot be served; answer with ``status`` and close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    path: str
    query: dict[str, str]

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        if self.version == "HTTP/1.0":
            # HTTP/1.0 keep-alive is an opt-in extension this server does not implement.
            return False
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        return "close" not in tokens

    def int_param(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        return default if raw is None else _parse_int(raw, name)

    def float_param(self, name: str, default: float) -> float:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _BadRequest(400, f"{name} must be a number, got {raw!r}") from None
        if not 0 <= value < 3600:
            raise _BadRequest(400, f"{name} out of range: {raw!r}")
        return value


def _parse_int(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise _BadRequest(400, f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _BadRequest(400, "line too long") from None


@dataclass
class _Connection:
    id: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: int = 0
    # Set by /drop-next and /reset-next: what to do to the next request instead of answering.
    next_request: Literal["drop", "reset"] | None = None
    # Set by /close-idle and /408-idle: what to do if the client stays idle for that long.
    idle_action: tuple[Literal["close", "408"], float] | None = None
    # Set once the connection has been reset, so the final close does not try to be graceful.
    reset: bool = False


_Handler = Callable[[_Connection, _Request, str], Awaitable[bool]]


class _ThreadedServer(Service):
    """Owns the server thread, its event loop and the connection counters.

    The server runs its own accept loop instead of ``loop.create_server``: in Python 3.11 a
    connection accepted just before ``Server.close()`` trips an assertion inside asyncio and
    leaks its transport, and a listener-level TLS layer would hide connections that are still
    in their handshake. Subclasses implement ``_handle(conn_id, sock)`` for one accepted socket;
    the handler task is cancelled by ``stop()``, and the socket is closed after it in any case.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._accepted = 0
        self._open = 0
        self._next_conn_id = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._port: int | None = None
        self._handlers: dict[asyncio.Task[None], socket.socket] = {}
        self.errors: list[BaseException] = []
        """Unexpected exceptions inside the server (bugs in the rig, not client misbehaviour)."""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind 127.0.0.1 on a free port and return once the server is listening."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._ready.clear()
        self._startup_error = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"{type(self).__name__}-loop", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=_THREAD_JOIN_TIMEOUT):
            raise RuntimeError(f"{type(self).__name__} did not start listening in time")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from self._startup_error

    def stop(self) -> None:
        """Close the listener and every live connection, then join the server thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            # The loop may already have finished (e.g. startup failed); nothing to signal then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=_THREAD_JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"{type(self).__name__} thread did not stop")
        self._thread = self._loop = self._stopping = None
        self._port = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, or ``https://localhost:PORT`` when serving TLS.

        The TLS certificate is also valid for 127.0.0.1, so ``https://127.0.0.1:PORT`` works too.
        """
        if self._ssl_context is not None:
            return f"https://localhost:{self.port}"
        return f"http://{_HOST}:{self.port}"

    # -- counters -------------------------------------------------------------------------

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since the last ``reset()`` (counted before any TLS)."""
        with self._lock:
            return self._accepted

    def open_connections(self) -> int:
        """Server-side connections currently open (not affected by ``reset()``)."""
        with self._lock:
            return self._open

    def reset(self) -> None:
        """Zero ``connections_accepted`` and clear ``errors`` (and what subclasses record);
        connection ids keep counting."""
        with self._lock:
            self._accepted = 0
            self.errors.clear()
        self._reset_records()

    def _reset_records(self) -> None:
        """Clear what a subclass records per test (called by ``reset()``)."""

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value.

        This blocks the calling thread. From a coroutine use ``wait_for_async``: blocking the
        test's loop would also stop the client from closing its sockets (asyncio closes a
        transport in a later loop iteration), so a predicate about closed connections would
        never become true.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(0.005)
        return True

    async def wait_for_async(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """``wait_for`` for coroutines: polls without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            await asyncio.sleep(0.005)
        return True

    def _connection_opened(self) -> int:
        with self._lock:
            self._accepted += 1
            self._open += 1
            self._next_conn_id += 1
            return self._next_conn_id

    def _connection_closed(self) -> None:
        with self._lock:
            self._open -= 1

    def _record_error(self, exc: BaseException) -> None:
        logger.error("%s: unexpected error", type(self).__name__, exc_info=exc)
        with self._lock:
            self.errors.append(exc)

    # -- server thread --------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            # asyncio.run also cancels and awaits any task still alive at the end, so no
            # "Task was destroyed but it is pending" can escape from this thread.
            asyncio.run(self._main())
        except BaseException as exc:
            if self._ready.is_set():
                self._record_error(exc)
            else:
                self._startup_error = exc
                self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        self._stopping = asyncio.Event()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind((_HOST, 0))
            listener.listen(128)
            listener.setblocking(False)
            # A reader callback rather than loop.sock_accept(): cancelling a pending sock_accept
            # can drop a socket it has just accepted, and each accepted socket must be owned by
            # a handler at once so that stop() can close it.
            loop.add_reader(listener.fileno(), self._on_acceptable, listener)
            try:
                self._port = listener.getsockname()[1]
                self._ready.set()
                await self._stopping.wait()
            finally:
                loop.remove_reader(listener.fileno())
        # Connections still in the listen backlog are reset by the kernel with the listener.
        await self._close_connections()

    def _on_acceptable(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):  # bounded so that a flood of connections cannot starve the loop
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors, say. The listener would stay readable and spin the loop,
                # so stop watching it for a moment.
                self._record_error(exc)
                loop.remove_reader(listener.fileno())
                loop.call_later(0.05, self._resume_accepting, listener)
                return
            sock.setblocking(False)
            conn_id = self._connection_opened()
            task = loop.create_task(self._handle(conn_id, sock))
            self._handlers[task] = sock
            task.add_done_callback(self._handler_done)

    def _resume_accepting(self, listener: socket.socket) -> None:
        assert self._stopping is not None
        if listener.fileno() != -1 and not self._stopping.is_set():
            asyncio.get_running_loop().add_reader(listener.fileno(), self._on_acceptable, listener)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        # Usually the handler's transport has closed the socket already (closing again is a
        # no-op); not so if stop() cancelled the task before it ever ran.
        self._handlers.pop(task).close()
        self._connection_closed()

    async def _close_connections(self) -> None:
        tasks = list(self._handlers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Transports close their sockets in a callback of the next loop iteration; run those
        # now so nothing is left for the garbage collector to warn about.
        for _ in range(3):
            await asyncio.sleep(0)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError | EOFError):
            # A peer vanishing is the whole point of this server; not worth a log line.
            return
        if isinstance(exc, BaseException):
            self._record_error(exc)
        else:
            logger.error("%s: %s", type(self).__name__, context.get("message"))

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        raise NotImplementedError


async def close_writer(writer: asyncio.StreamWriter, *, abort: bool) -> None:
    """Close `writer` (with an RST if `abort`), aborting it if the close takes too long."""
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    try:
        # A backstop: ssl_shutdown_timeout should already bound a TLS close.
        async with asyncio.timeout(_CLOSE_GRACE * 2):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except OSError:
        pass


class FaultServer(_ThreadedServer):
    """HTTP/1.1 server whose behaviour is chosen by the request path.

    Keep-alive is the default; a request ``Connection: close`` (or an HTTP/1.0 request) closes
    after the response. Any method is accepted; HEAD gets the head only. ``Expect:
    100-continue`` is answered with ``100 Continue`` before the body is read. Unless noted,
    responses carry ``X-Conn-Id`` and ``X-Request-No`` and the connection stays open.

    ===================================  =====================================================
    path                                 behaviour
    ===================================  =====================================================
    /echo?id=X                           200 JSON {id, method, path, headers, body, conn,
                                         request_no}; body is decoded as latin-1
    /bytes/N                             N bytes ``b"x" * N``, Content-Length
    /status/N                            status N with a small body (none for 204/304); for a
                                         1xx other than 101 that interim response, then 200
    /chunked/N?chunks=K&trailer=1        ``pattern(N)`` in K chunks (default 4), chunked;
                                         ``trailer=1`` adds an ``X-Trailer: done`` trailer
    /empty                               200, Content-Length: 0
    /nocontent                           204
    /eof/N                               200, no length, N bytes ``b"x"``, then close
    /http10/N                            ``HTTP/1.0 200 OK``, Content-Length N, then close
    /close/N                             ``Connection: close``, N bytes ``b"x"``, then close
    /close-idle?after=S                  200; closes if no request starts within S s (0.05)
    /408-idle?after=S                    200; after S s idle (0.05) sends 408 and closes
    /drop-next                           200; the next request is read, then FIN, no response
    /reset-next                          as /drop-next but closed with RST
    /truncated?declared=D&sent=S         Content-Length D (1000), S (500) bytes, then close
    /malformed-status                    ``HTTP/1.1 abc OK``, then close
    /garbage                             non-HTTP bytes, then close
    /bad-header                          a header line without a colon, then close
    /bad-chunk                           chunked with an invalid chunk-size line, then close
    /conflicting-length?kind=te|cl       Content-Length with Transfer-Encoding: chunked (te,
                                         default), or two different Content-Lengths (cl)
    /oversized-headers?size=N            a response head over N bytes (200_000), then close
    /encoded, /bomb, /endless            bodies with a Content-Encoding, see ``rig.encodings``;
                                         /encoded also takes ``status=N`` (200)
    /slow?chunks=K&delay=S&size=B        head at once, then K (5) pieces of B (10) bytes, each
                                         after a pause of S (0.1) s; correct Content-Length
    /stall?sent=S                        Content-Length 1_000_000, S (10) bytes, then silence
                                         until the client closes
    /stall-headers                       reads the request, never answers
    /reset-mid-body?sent=S               Content-Length 1_000_000, S (1024) bytes, then RST
    /big/N                               ``pattern(N)`` in 64 KiB writes, awaiting drain
    /delay?s=S&id=X                      waits S (1.0) s, then answers like /echo
    /headers-many?n=N                    N (100) distinct ``X-Many-i`` headers
    /interim?n=N                         N (3) ``103 Early Hints`` heads, then a 200
    /flaky?key=K&fails=F&status=S        the first F (1) requests with key K answer status S
      &retry_after=R&reset=1             (503), with ``Retry-After: R`` if given (``date:N``:
                                         an HTTP-date N s from now), or with ``reset=1`` are
                                         read and then closed with RST; later ones 200 "ok"
    /hop/N?delay=S                       waits S (0.1) s, then 302 to /hop/N-1 (same query);
                                         /hop/0 answers 200
    /trickle-head?lines=N&delay=S        the status line, then N (20) header lines each after
                                         a pause of S (0.1) s, then the end of the head
    /upload                              reads the body (``100 Continue`` first if asked);
                                         200, body ``b"<count> <sha256 hex>"``, header
                                         ``X-Expect`` with the request's Expect (or "-")
    /expect-silent                       as /upload, but never answers ``Expect`` with a 100
    /expect-reject/N                     status N at once, before reading any body, without
                                         ``Connection: close``; then counts the bytes the
                                         client still sends until it closes, into
                                         ``bytes_after_reject[conn_id]``
    anything else                        404
    ===================================  =====================================================

    Bad knobs (``/bytes/abc``) get a 400. Malformed requests get a 400 and a close.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context)
        self._routes: dict[str, tuple[_Handler, bool]] = {
            # name -> (handler, whether the path has a /N argument)
            "echo": (self._echo, False),
            "bytes": (self._bytes, True),
            "status": (self._status, True),
            "chunked": (self._chunked, True),
            "empty": (self._empty, False),
            "nocontent": (self._nocontent, False),
            "eof": (self._eof, True),
            "http10": (self._http10, True),
            "close": (self._close, True),
            "close-idle": (self._close_idle, False),
            "408-idle": (self._408_idle, False),
            "drop-next": (self._drop_next, False),
            "reset-next": (self._reset_next, False),
            "truncated": (self._truncated, False),
            "malformed-status": (self._malformed_status, False),
            "garbage": (self._garbage, False),
            "bad-header": (self._bad_header, False),
            "bad-chunk": (self._bad_chunk, False),
            "conflicting-length": (self._conflicting_length, False),
            "oversized-headers": (self._oversized_headers, False),
            "slow": (self._slow, False),
            "stall": (self._stall, False),
            "stall-headers": (self._stall_headers, False),
            "reset-mid-body": (self._reset_mid_body, False),
            "big": (self._big, True),
            "delay": (self._delay, False),
            "headers-many": (self._headers_many, False),
            "encoded": (self._encoded, False),
            "bomb": (self._bomb, False),
            "endless": (self._endless, False),
            "interim": (self._interim, False),
            "flaky": (self._flaky, False),
            "hop": (self._hop, True),
            "trickle-head": (self._trickle_head, False),
            "upload": (self._upload, False),
            "expect-silent": (self._upload, False),
            "expect-reject": (self._expect_reject, True),
        }
        # /expect-reject: conn id -> body bytes received after the early final response.
        self.bytes_after_reject: dict[int, int] = {}
        # Every request read whole, answered or not (a dropped one too): "METHOD target", in
        # arrival order. What proves a request was (or was not) sent twice.
        self.requests_seen: list[str] = []
        # /flaky: requests seen per key.
        self.flaky_counts: dict[str, int] = {}

    def _reset_records(self) -> None:
        self.requests_seen.clear()
        self.flaky_counts.clear()

    # -- connection handling --------------------------------------------------------------

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_HEAD_LIMIT)
        conn: _Connection | None = None
        try:
            if self._ssl_context is None:
                transport, protocol = await loop.connect_accepted_socket(
                    lambda: asyncio.StreamReaderProtocol(reader), sock
                )
            else:
                # TLS is set up here, per connection, so a handshake that fails or hangs still
                # belongs to a counted connection whose task stop() can cancel.
                transport, protocol = await loop.connect_accepted_socket(
                    lambda: asyncio.StreamReaderProtocol(reader),
                    sock,
                    ssl=self._ssl_context,
                    # asyncio waits 30 s for the peer's close_notify by default; a client that
                    # leaked its socket never sends one.
                    ssl_shutdown_timeout=_CLOSE_GRACE,
                )
            conn = _Connection(
                conn_id, reader, asyncio.StreamWriter(transport, protocol, reader, loop)
            )
            await self._serve(conn)
        except (OSError, EOFError):
            # The client went away or failed the TLS handshake: normal for this server.
            pass
        except Exception as exc:
            self._record_error(exc)
        finally:
            if conn is not None:
                await self._close_writer(conn)

    async def _close_writer(self, conn: _Connection) -> None:
        assert self._stopping is not None
        await close_writer(conn.writer, abort=conn.reset or self._stopping.is_set())

    def _reset(self, conn: _Connection) -> None:
        """Close the connection with an RST instead of a FIN."""
        sock = conn.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.reset = True
        # abort() rather than close(): over TLS, close() would first send close_notify.
        conn.writer.transport.abort()

    async def _serve(self, conn: _Connection) -> None:
        while True:
            try:
                head = await self._read_head(conn)
                if head is None:
                    return
                conn.requests += 1
                request = await self._read_request(conn, head)
                self.requests_seen.append(f"{request.method} {request.target}")
            except _BadRequest as exc:
                body = f"{exc.detail}\n".encode()
                await self._write_raw(
                    conn,
                    self._head(conn, exc.status, [("Content-Length", str(len(body)))], close=True)
                    + body,
                )
                return
            pending, conn.next_request = conn.next_request, None
            if pending == "reset":
                self._reset(conn)
                return
            if pending == "drop":
                return
            try:
                keep_alive = await self._dispatch(conn, request)
            except _BadRequest as exc:
                keep_alive = await self._send(
                    conn, request, exc.status, f"{exc.detail}\n".encode(), close=True
                )
            if not keep_alive:
                return

    async def _read_head(self, conn: _Connection) -> bytes | None:
        """Read the next request head, or return None when the connection is finished."""
        reader = conn.reader
        prefix = b""
        if conn.idle_action is not None:
            action, after = conn.idle_action
            conn.idle_action = None
            try:
                async with asyncio.timeout(after):
                    # Cancelling read() while it waits consumes nothing, so this only decides
                    # whether a request *started* within the idle window.
                    prefix = await reader.read(1)
            except TimeoutError:
                if action == "408":
                    await self._write_raw(conn, _RESPONSE_408)
                return None
            if not prefix:
                return None
        while True:
            try:
                head = prefix + await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return None  # client closed between (or in the middle of) request heads
            except asyncio.LimitOverrunError:
                raise _BadRequest(431, "request head too large") from None
            # RFC 9112 section 2.2: ignore empty lines received before a request line.
            head = head.lstrip(b"\r\n")
            if head:
                return head
            prefix = b""

    async def _read_request(self, conn: _Connection, head: bytes) -> _Request:
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not _TOKEN_RE.fullmatch(parts[0]) or not parts[1]:
            raise _BadRequest(400, f"bad request line {lines[0]!r}")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(505, f"unsupported version {version!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _TOKEN_RE.fullmatch(name):
                raise _BadRequest(400, f"bad header line {line!r}")
            headers.append((name, value.strip(" \t")))
        split = urlsplit(target)
        request = _Request(
            method=method,
            target=target,
            version=version,
            headers=headers,
            body=b"",
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
        )
        if not request.path.startswith("/expect-reject/"):  # that one answers before the body
            request.body = await self._read_body(conn, request)
        return request

    async def _read_body(self, conn: _Connection, request: _Request) -> bytes:
        encodings = [v for k, v in request.headers if k.lower() == "transfer-encoding"]
        lengths = [v for k, v in request.headers if k.lower() == "content-length"]
        if encodings and lengths:
            raise _BadRequest(400, "both Transfer-Encoding and Content-Length")
        if encodings:
            codings = [c.strip().lower() for v in encodings for c in v.split(",")]
            if codings != ["chunked"]:
                raise _BadRequest(501, f"unsupported transfer coding {codings!r}")
            await self._maybe_continue(conn, request)
            return await self._read_chunked(conn.reader)
        if lengths:
            values = {v.strip() for v in ",".join(lengths).split(",")}
            if len(values) != 1:
                raise _BadRequest(400, f"conflicting Content-Length {lengths!r}")
            length = _parse_int(values.pop(), "Content-Length")
            if length:
                await self._maybe_continue(conn, request)
            return await conn.reader.readexactly(length)
        return b""

    async def _maybe_continue(self, conn: _Connection, request: _Request) -> None:
        expect = (request.header("expect") or "").lower()
        if request.path == "/expect-silent":
            return  # the server that ignores expectations: the client must not wait forever
        if expect == "100-continue" and request.version == "HTTP/1.1":
            await self._write_raw(conn, b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = await _read_line(reader)
            size_field = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE_RE.fullmatch(size_field):
                raise _BadRequest(400, f"bad chunk size line {line!r}")
            size = int(size_field, 16)
            if size == 0:
                break
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequest(400, "chunk data not followed by CRLF")
        while await _read_line(reader) != b"\r\n":
            pass  # trailer fields: accepted and ignored
        return b"".join(chunks)

    async def _dispatch(self, conn: _Connection, request: _Request) -> bool:
        name, _, arg = request.path.removeprefix("/").partition("/")
        route = self._routes.get(name)
        if route is None or route[1] != bool(arg):
            return await self._send(conn, request, 404, b"not found\n")
        handler, _ = route
        return await handler(conn, request, arg)

    # -- writing --------------------------------------------------------------------------

    def _head(
        self,
        conn: _Connection,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        *,
        close: bool = False,
        version: str = "HTTP/1.1",
        reason: str | None = None,
    ) -> bytes:
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = "Unknown"
        lines = [
            f"{version} {status} {reason}",
            f"X-Conn-Id: {conn.id}",
            f"X-Request-No: {conn.requests}",
        ]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write_raw(self, conn: _Connection, data: bytes) -> None:
        conn.writer.write(data)
        await conn.writer.drain()

    async def _send(
        self,
        conn: _Connection,
        request: _Request,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> bool:
        """Send a complete response; return whether the connection stays open."""
        keep_alive = request.keep_alive and not close
        all_headers = list(headers)
        bodiless = status in (204, 304) or 100 <= status < 200
        if not bodiless:
            all_headers.append(("Content-Length", str(len(body))))
        data = self._head(conn, status, all_headers, close=not keep_alive)
        if not bodiless and request.method != "HEAD":
            data += body
        await self._write_raw(conn, data)
        return keep_alive

    async def _send_head(
        self, conn: _Connection, request: _Request, headers: Iterable[tuple[str, str]]
    ) -> bool:
        """Send a 200 head for a streamed body; return whether a body should follow."""
        await self._write_raw(conn, self._head(conn, 200, headers, close=not request.keep_alive))
        return request.method != "HEAD"

    async def _wait_for_eof(self, conn: _Connection) -> None:
        while await conn.reader.read(65536):
            pass  # discard whatever the client still sends

    # -- endpoints (each returns whether the connection stays open) -----------------------

    async def _echo(self, conn: _Connection, request: _Request, arg: str) -> bool:
        payload = {
            "id": request.query.get("id"),
            "method": request.method,
            "path": request.target,
            "headers": [[name, value] for name, value in request.headers],
            "body": request.body.decode("latin-1"),
            "conn": conn.id,
            "request_no": conn.requests,
        }
        body = json.dumps(payload).encode()
        return await self._send(conn, request, 200, body, [("Content-Type", "application/json")])

    async def _bytes(self, conn: _Connection, request: _Request, arg: str) -> bool:
        return await self._send(conn, request, 200, b"x" * _parse_int(arg, "N"))

    async def _status(self, conn: _Connection, request: _Request, arg: str) -> bool:
        status = _parse_int(arg, "status")
        if not 100 <= status <= 599 or status == 101:
            raise _BadRequest(400, f"cannot send status {status}")
        if status < 200:
            await self._write_raw(conn, self._head(conn, status))
            return await self._send(conn, request, 200, b"ok\n")
        return await self._send(conn, request, status, f"status {status}\n".encode())

    async def _chunked(self, conn: _Connection, request: _Request, arg: str) -> bool:
        total = _parse_int(arg, "N")
        count = max(request.int_param("chunks", 4), 1)
        if not await self._send_head(conn, request, [("Transfer-Encoding", "chunked")]):
            return request.keep_alive
        base, extra = divmod(total, count)
        offset = 0
        for index in range(count):
            size = base + (1 if index < extra else 0)
            if size == 0:
                continue  # a zero-size chunk would end the body early
            data = pattern(size, offset)
            offset += size
            await self._write_raw(conn, f"{size:x}\r\n".encode() + data + b"\r\n")
        trailer = b"X-Trailer: done\r\n" if request.query.get("trailer") == "1" else b""
        await self._write_raw(conn, b"0\r\n" + trailer + b"\r\n")
        return request.keep_alive

    async def _empty(self, conn: _Connection, request: _Request, arg: str) -> bool:
        return await self._send(conn, request, 200)

    async def _nocontent(self, conn: _Connection, request: _Request, arg: str) -> bool:
        return await self._send(conn, request, 204)

    async def _eof(self, conn: _Connection, request: _Request, arg: str) -> bool:
        size = _parse_int(arg, "N")
        # No Connection: close on purpose: the close alone must delimit the body.
        data = self._head(conn, 200)
        if request.method != "HEAD":
            data += b"x" * size
        await self._write_raw(conn, data)
        return False

    async def _http10(self, conn: _Connection, request: _Request, arg: str) -> bool:
        size = _parse_int(arg, "N")
        data = self._head(conn, 200, [("Content-Length", str(size))], version="HTTP/1.0")
        if request.method != "HEAD":
            data += b"x" * size
        await self._write_raw(conn, data)
        return False

    async def _close(self, conn: _Connection, request: _Request, arg: str) -> bool:
        return await self._send(conn, request, 200, b"x" * _parse_int(arg, "N"), close=True)

    async def _close_idle(self, conn: _Connection, request: _Request, arg: str) -> bool:
        conn.idle_action = ("close", request.float_param("after", 0.05))
        return await self._send(conn, request, 200, b"ok\n")

    async def _408_idle(self, conn: _Connection, request: _Request, arg: str) -> bool:
        conn.idle_action = ("408", request.float_param("after", 0.05))
        return await self._send(conn, request, 200, b"ok\n")

    async def _drop_next(self, conn: _Connection, request: _Request, arg: str) -> bool:
        conn.next_request = "drop"
        return await self._send(conn, request, 200, b"ok\n")

    async def _reset_next(self, conn: _Connection, request: _Request, arg: str) -> bool:
        conn.next_request = "reset"
        return await self._send(conn, request, 200, b"ok\n")

    async def _truncated(self, conn: _Connection, request: _Request, arg: str) -> bool:
        declared = request.int_param("declared", 1000)
        sent = min(request.int_param("sent", 500), declared)
        # No Connection: close: the client must notice the short body from the early close.
        await self._write_raw(
            conn, self._head(conn, 200, [("Content-Length", str(declared))]) + b"x" * sent
        )
        return False

    async def _malformed_status(self, conn: _Connection, request: _Request, arg: str) -> bool:
        await self._write_raw(conn, b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok")
        return False

    async def _garbage(self, conn: _Connection, request: _Request, arg: str) -> bool:
        # Starts with a NUL so no lenient parser can mistake it for a status line.
        noise = random.Random(conn.id).randbytes(512)
        await self._write_raw(conn, b"\x00\xffNOT-HTTP\r\n" + noise)
        return False

    async def _bad_header(self, conn: _Connection, request: _Request, arg: str) -> bool:
        await self._write_raw(
            conn,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nThis-Line-Has-No-Colon\r\n\r\nok",
        )
        return False

    async def _bad_chunk(self, conn: _Connection, request: _Request, arg: str) -> bool:
        await self._write_raw(
            conn,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\nzz-not-hex\r\nworld\r\n0\r\n\r\n",
        )
        return False

    async def _conflicting_length(self, conn: _Connection, request: _Request, arg: str) -> bool:
        kind = request.query.get("kind", "te")
        if kind == "te":
            data = (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n"
            )
        elif kind == "cl":
            data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        else:
            raise _BadRequest(400, f"kind must be te or cl, got {kind!r}")
        await self._write_raw(conn, data)
        return False

    async def _oversized_headers(self, conn: _Connection, request: _Request, arg: str) -> bool:
        limit = request.int_param("size", 200_000)
        filler = "a" * 1000
        headers = [
            (f"X-Filler-{index}", filler) for index in range(limit // (len(filler) + 16) + 1)
        ]
        headers.append(("Content-Length", "0"))
        head = self._head(conn, 200, headers)
        assert len(head) > limit
        await self._write_raw(conn, head)
        return False

    async def _slow(self, conn: _Connection, request: _Request, arg: str) -> bool:
        count = request.int_param("chunks", 5)
        delay = request.float_param("delay", 0.1)
        size = request.int_param("size", 10)
        if not await self._send_head(conn, request, [("Content-Length", str(count * size))]):
            return request.keep_alive
        for index in range(count):
            await asyncio.sleep(delay)
            await self._write_raw(conn, pattern(size, index * size))
        return request.keep_alive

    async def _stall(self, conn: _Connection, request: _Request, arg: str) -> bool:
        sent = request.int_param("sent", 10)
        await self._write_raw(
            conn, self._head(conn, 200, [("Content-Length", "1000000")]) + b"x" * sent
        )
        await self._wait_for_eof(conn)
        return False

    async def _stall_headers(self, conn: _Connection, request: _Request, arg: str) -> bool:
        await self._wait_for_eof(conn)
        return False

    async def _reset_mid_body(self, conn: _Connection, request: _Request, arg: str) -> bool:
        sent = request.int_param("sent", 1024)
        await self._write_raw(
            conn, self._head(conn, 200, [("Content-Length", "1000000")]) + b"x" * sent
        )
        await asyncio.sleep(_PRE_RESET_PAUSE)
        self._reset(conn)
        return False

    async def _big(self, conn: _Connection, request: _Request, arg: str) -> bool:
        total = _parse_int(arg, "N")
        if not await self._send_head(conn, request, [("Content-Length", str(total))]):
            return request.keep_alive
        for offset in range(0, total, _BIG_WRITE):
            # drain() after every write is what makes a slow reader push back on the server.
            await self._write_raw(conn, pattern(min(_BIG_WRITE, total - offset), offset))
        return request.keep_alive

    async def _delay(self, conn: _Connection, request: _Request, arg: str) -> bool:
        await asyncio.sleep(request.float_param("s", 1.0))
        return await self._echo(conn, request, arg)

    async def _headers_many(self, conn: _Connection, request: _Request, arg: str) -> bool:
        count = request.int_param("n", 100)
        headers = [(f"X-Many-{index}", f"value-{index}") for index in range(count)]
        return await self._send(conn, request, 200, b"ok\n", headers)

    async def _interim(self, conn: _Connection, request: _Request, arg: str) -> bool:
        hint = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        await self._write_raw(conn, hint * request.int_param("n", 3))
        return await self._send(conn, request, 200, b"ok\n", [])

    async def _flaky(self, conn: _Connection, request: _Request, arg: str) -> bool:
        key = request.query.get("key", "")
        seen = self.flaky_counts[key] = self.flaky_counts.get(key, 0) + 1
        if seen > request.int_param("fails", 1):
            return await self._send(conn, request, 200, b"ok\n")
        if request.query.get("reset") == "1":
            self._reset(conn)
            return False
        headers = []
        retry_after = request.query.get("retry_after")
        if retry_after is not None:
            if retry_after.startswith("date:"):
                when = time.time() + float(retry_after.removeprefix("date:"))
                retry_after = email.utils.formatdate(when, usegmt=True)
            headers.append(("Retry-After", retry_after))
        status = request.int_param("status", 503)
        return await self._send(conn, request, status, f"status {status}\n".encode(), headers)

    async def _hop(self, conn: _Connection, request: _Request, arg: str) -> bool:
        left = _parse_int(arg, "N")
        delay = request.float_param("delay", 0.1)
        await asyncio.sleep(delay)
        if left == 0:
            return await self._send(conn, request, 200, b"arrived\n")
        location = f"/hop/{left - 1}?delay={delay}"
        return await self._send(conn, request, 302, b"", [("Location", location)])

    async def _trickle_head(self, conn: _Connection, request: _Request, arg: str) -> bool:
        delay = request.float_param("delay", 0.1)
        await self._write_raw(conn, b"HTTP/1.1 200 OK\r\n")
        for index in range(request.int_param("lines", 20)):
            await asyncio.sleep(delay)
            await self._write_raw(conn, f"X-Line-{index}: {index}\r\n".encode())
        await self._write_raw(conn, b"Content-Length: 3\r\n\r\nok\n")
        return request.keep_alive

    async def _upload(self, conn: _Connection, request: _Request, arg: str) -> bool:
        digest = hashlib.sha256(request.body).hexdigest()
        body = f"{len(request.body)} {digest}".encode()
        expect = request.header("expect") or "-"
        return await self._send(conn, request, 200, body, [("X-Expect", expect)])

    async def _expect_reject(self, conn: _Connection, request: _Request, arg: str) -> bool:
        status = _parse_int(arg, "status")
        if not 200 <= status <= 599:
            raise _BadRequest(400, f"cannot reject with status {status}")
        # Keep-alive on purpose: closing the socket is the client's job, since the body it
        # announced never came.
        await self._send(conn, request, status, f"rejected: {status}\n".encode())
        received = 0
        while data := await conn.reader.read(65536):
            received += len(data)
        with self._lock:
            self.bytes_after_reject[conn.id] = received
        return False

    # -- Content-Encoding (bodies from rig.encodings) ------------------------------------

    async def _encoded(self, conn: _Connection, request: _Request, arg: str) -> bool:
        codings = [c.strip() for c in request.query.get("coding", "gzip").split(",")]
        data = encodings.text(request.int_param("size", 100_000))
        try:
            header, body = encodings.encode(data, codings, request.query.get("damage"))
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        headers = [("Content-Encoding", header)]
        status = request.int_param("status", 200)
        if "chunks" not in request.query:
            return await self._send(conn, request, status, body, headers)
        count = max(request.int_param("chunks", 1), 1)
        step = -(-len(body) // count) or 1
        pieces = [body[i : i + step] for i in range(0, len(body), step)]
        return await self._send_chunked(conn, request, headers, pieces)

    async def _bomb(self, conn: _Connection, request: _Request, arg: str) -> bool:
        coding = request.query.get("coding", "gzip")
        size = request.int_param("size", 1024**3)
        try:
            pieces = encodings.bomb(coding, size)
        except ValueError as exc:
            raise _BadRequest(400, str(exc)) from None
        return await self._send_chunked(conn, request, [("Content-Encoding", coding)], pieces)

    async def _endless(self, conn: _Connection, request: _Request, arg: str) -> bool:
        coding = request.query.get("coding", "identity")
        pieces = encodings.endless(coding, request.int_param("chunk", 64 * 1024))
        headers = [] if coding == "identity" else [("Content-Encoding", coding)]
        # Ends only when the client goes away (the write fails) or the server stops.
        return await self._send_chunked(
            conn, request, headers, pieces, delay=request.float_param("delay", 0)
        )

    async def _send_chunked(
        self,
        conn: _Connection,
        request: _Request,
        headers: list[tuple[str, str]],
        pieces: Iterable[bytes],
        *,
        delay: float = 0,
    ) -> bool:
        """A 200 with ``pieces`` as a chunked body, each written (and drained) as it comes,
        ``delay`` seconds apart."""
        if not await self._send_head(conn, request, [*headers, ("Transfer-Encoding", "chunked")]):
            return request.keep_alive
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay)
            if piece:
                await self._write_raw(conn, b"%x\r\n%b\r\n" % (len(piece), piece))
        await self._write_raw(conn, b"0\r\n\r\n")
        return request.keep_alive


class BlackholeServer(_ThreadedServer):
    """Accepts TCP connections and never reads or writes a byte until ``stop()``.

    Point a client at ``url`` for response-read timeouts, or at ``https_url`` to hang its TLS
    handshake. (Connect timeouts need an address that never answers a SYN; this is not it.)
    Connections count as open until ``stop()``: a peer's close goes unnoticed by design.
    """

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.port}"

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        # Hold the socket without ever reading it, so the client's bytes sit unread in kernel
        # buffers as with a wedged peer. stop() cancels this; the base class closes the socket.
        await asyncio.get_running_loop().create_future()
