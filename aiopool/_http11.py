"""HTTP/1.1 over h11: one request at a time on one socket.

The rules this module keeps (docs/design.md invariant 4, "return only when clean"):
- the socket goes back to the pool only when h11 says both sides are DONE, i.e. the request was
  sent whole, the response body was read to its end, and neither side said `Connection: close`
  (nor is the response HTTP/1.0 without keep-alive, nor a read-until-EOF body);
- anything else (an error, a cancellation, an unread body past the drain bound) closes it;
- the connection reports the outcome to its owner (`ConnectionOwner`) synchronously, so the lease
  is released on every path, even inside a cancelled task.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import h11

from ._config import (
    DEFAULT_HEAD_LIMITS,
    DRAIN_MAX_BYTES,
    DRAIN_TIMEOUT,
    MAX_INTERIM_RESPONSES,
    HeadLimits,
    Timeout,
)
from ._deadline import head_within
from ._exceptions import (
    ClientClosed,
    LocalProtocolError,
    NetworkError,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
    in_phase,
)
from ._expect import interim_verdict
from ._headers import Headers
from ._proxy import forward_form, forwarding
from ._trace import Tracer

if TYPE_CHECKING:
    from ._backend import NetworkStream
    from ._models import BodyStream, Request
    from ._urls import Origin

__all__ = ("ConnState", "Connection", "ConnectionOwner", "HTTP11Connection", "ResponseHead")


class ConnState(enum.Enum):
    """Where a connection stands in its pool. Only the pool changes it.

    (Whether the socket itself is closed is the connection's own `closed` flag: a connection
    closes itself on errors and then tells the pool, which moves it to CLOSED exactly once.)
    """

    ACTIVE = "active"  # leased to a request (or reserved for a waiter)
    IDLE = "idle"  # clean, in the pool's idle stack, waiting for reuse
    CLOSED = "closed"  # gone from the pool's books; never handed out again


class ConnectionOwner(Protocol):
    """What a connection tells the pool (synchronously) when a request is done with it."""

    def release(self, conn: Connection) -> None:
        """A request is done with `conn` cleanly (for HTTP/2: one stream ended)."""
        ...

    def discard(self, conn: Connection, reason: str = "error") -> None:
        """`conn` is closed or broken (`reason`: why, for the `conn_closed` trace event)."""
        ...

    def capacity_changed(self, conn: Connection) -> None:
        """An HTTP/2 peer changed how many streams `conn` may carry."""
        ...


class Connection(Protocol):
    """What the pool needs of a connection, HTTP/1.1 or (multiplexed) HTTP/2."""

    id: int
    origin: Origin
    state: ConnState
    closed: bool
    http_version: str
    multiplexed: bool
    goaway_received: bool  # HTTP/2: the peer sent GOAWAY (always False for HTTP/1.1)
    requests: int  # requests started on it
    idle_since: float
    got_response_bytes: bool

    def is_reusable(self) -> bool: ...

    def capacity(self) -> int:
        """Further requests it can take at once now (HTTP/2 streams; 0 for HTTP/1.1)."""
        ...

    def reserve(self) -> None:
        """Promise one of `capacity()` to a request (synchronous, by the pool)."""
        ...

    def unreserve(self) -> None:
        """Take back a promise no request will use (its task was cancelled)."""
        ...

    @property
    def open_streams(self) -> int: ...

    def close(self) -> None: ...

    def shut_down(self) -> None:
        """Close for the client's `aclose()`: requests on it fail with `ClientClosed`."""
        ...

    async def wait_closed(self, timeout: float) -> None: ...

    @property
    def network_stream(self) -> NetworkStream:
        """The socket under the connection (what the pool waits on once it closes)."""
        ...

    async def send(self, request: Request, timeout: Timeout) -> tuple[ResponseHead, BodyStream]:
        """Send `request`, return the response head and its body stream (see HTTP11Connection)."""
        ...

    def arm_idle_watch(self) -> None:
        """While idle: report data, EOF or a close from the server to the pool at once."""
        ...

    def disarm_idle_watch(self) -> None: ...


class ResponseHead:
    """Status line and headers, before the body."""

    __slots__ = ("headers", "http_version", "reason", "status_code")

    def __init__(self, status_code: int, reason: str, headers: Headers, http_version: str) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.http_version = http_version


class HTTP11Connection:
    """One socket speaking HTTP/1.1 through an `h11.Connection`."""

    http_version = "HTTP/1.1"
    multiplexed = False
    goaway_received = False

    __slots__ = (
        "_forward",
        "_h11",
        "_head_reads",
        "_limits",
        "_owner",
        "_shut",
        "_stream",
        "_tracer",
        "closed",
        "got_response_bytes",
        "id",
        "idle_since",
        "on_idle_event",
        "origin",
        "requests",
        "state",
    )

    def __init__(
        self,
        stream: NetworkStream,
        origin: Origin,
        owner: ConnectionOwner,
        *,
        conn_id: int,
        limits: HeadLimits = DEFAULT_HEAD_LIMITS,
    ) -> None:
        self.id = conn_id
        self._limits = limits
        self._shut = False  # closed by the client's aclose(), not by a failure
        self.origin = origin
        self.state = ConnState.ACTIVE
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        # Whether any byte of the current response arrived: a failure before the first byte on a
        # reused socket is the "server closed the keep-alive socket as we wrote" race, retried.
        self.got_response_bytes = False
        self._stream = stream
        self._owner = owner
        self.on_idle_event: Callable[[], None] | None = None  # set by the pool
        self._tracer: Tracer | None = None  # the current request's, if anyone listens
        # Requests forwarded to an HTTP proxy go in its form: absolute target, its credentials.
        self._forward = forwarding(origin) is not None
        self._setup_protocol()

    def _setup_protocol(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._limits.max_bytes)
        # The bytes read for the response head(s), kept until the final head is checked line
        # by line (`_check_head_lines`): h11 parses leniently what llhttp refuses.
        self._head_reads: list[bytes] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self.id} [{self.state.value}, {self.origin}]>"

    # Pool-facing -------------------------------------------------------------------------------

    def is_reusable(self) -> bool:
        return not self.closed and self._between_requests() and self._stream.is_idle_clean()

    def _between_requests(self) -> bool:
        return self._h11.our_state is h11.IDLE

    def capacity(self) -> int:
        return 0  # one request at a time: leased whole, never shared

    def reserve(self) -> None:
        raise AssertionError("HTTP/1.1 connections are leased, not reserved")  # Defensive

    def unreserve(self) -> None:
        raise AssertionError("HTTP/1.1 connections are leased, not reserved")  # Defensive

    @property
    def open_streams(self) -> int:
        return 0

    def arm_idle_watch(self) -> None:
        self._stream.set_idle_callback(self.on_idle_event)

    def disarm_idle_watch(self) -> None:
        self._stream.set_idle_callback(None)

    def close(self) -> None:
        """Close the socket now. Idempotent; does not touch the pool."""
        self.closed = True
        self._stream.close()

    def shut_down(self) -> None:
        self._shut = True
        self.close()

    def _raise_if_shut(self, exc: BaseException) -> None:
        """A request whose socket `aclose()` closed sees `ClientClosed`, not the "server
        disconnected" that the closed socket itself suggests."""
        if self._shut and isinstance(exc, TransportError):
            raise ClientClosed("the client was closed while this request was in flight") from exc

    async def wait_closed(self, timeout: float) -> None:
        """After `close()`: wait up to `timeout` for the socket to finish closing, then abort."""
        await self._stream.wait_closed(timeout)

    @property
    def network_stream(self) -> NetworkStream:
        return self._stream

    def _fail(self) -> None:
        """Abort the socket and tell the owner; for every error and cancellation path."""
        if not self.closed:
            self.closed = True
            self._stream.abort()
        self._owner.discard(self)

    # Request-facing ----------------------------------------------------------------------------

    async def send(self, request: Request, timeout: Timeout) -> tuple[ResponseHead, HTTP11Body]:
        """Send `request` and read the response head.

        Raises `LocalProtocolError` (nothing sent), `WriteError`/`WriteTimeout`,
        `ReadError`/`ReadTimeout`, `RemoteProtocolError`. On any exception, or cancellation,
        the connection is closed and discarded from the pool before this returns.
        """
        self.requests += 1
        self.got_response_bytes = False
        tracer = self._tracer = request._tracer
        phase = "writing the request"
        try:
            try:
                body_sent = await self._send_request(request, timeout)
            except BaseException as exc:
                if tracer is not None:
                    tracer("wrote_request", self.origin, self.id, error=exc, body_withheld=False)
                raise
            if tracer is not None:
                withheld = not body_sent
                tracer("wrote_request", self.origin, self.id, error=None, body_withheld=withheld)
            phase = "waiting for the response head"
            limit = timeout.response_header
            if limit is None:
                head = await self._receive_head(timeout)
            else:
                head = await head_within(self._receive_head(timeout), limit)
        except BaseException as exc:
            in_phase(exc, phase)
            self._fail()
            self._raise_if_shut(exc)
            raise
        return head, HTTP11Body(self, timeout.read)

    async def _send_request(self, request: Request, timeout: Timeout) -> bool:
        """Write `request`; False if its body was withheld (see `_await_continue`)."""
        conn = self._h11
        stream = self._stream
        target, headers = request.url.target, request.headers.raw
        if self._forward:
            target, headers = forward_form(self.origin, target, headers)
        try:
            data = conn.send(
                # `_parsed=True` skips h11's re-validation: `Request` already checked the
                # method and every header against the same RFC 9110 grammar, and `URL` the
                # target, before a socket was leased. (A third of h11's send cost.)
                h11.Request(
                    method=request.method.encode("ascii"),
                    target=target,
                    headers=headers,
                    http_version=b"1.1",
                    _parsed=True,
                )
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        assert data is not None
        content = request.content
        expect_wait = request._expect_wait
        if expect_wait is None and (content is None or isinstance(content, bytes)):
            try:
                if content:
                    data += conn.send(h11.Data(data=content)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError as exc:
                # A Content-Length the body contradicts, set on a `Request` after it was built
                # (`check_framing` refuses it before that): still ours, and nothing was written.
                raise LocalProtocolError(str(exc)) from exc
            stream.write_nowait(data)
            request._written = True  # (not before: a socket found closed took nothing)
            if self._tracer is not None:
                self._trace_wrote_headers(request)
            await stream.drain(timeout.write)
            return True
        stream.write_nowait(data)
        request._written = True
        if self._tracer is not None:
            self._trace_wrote_headers(request)
        if expect_wait is not None:
            await stream.drain(timeout.write)
            if not await self._await_continue(expect_wait):
                return False  # h11 stays in SEND_BODY: the socket closes after the response
            if content is None or isinstance(content, bytes):
                try:
                    data = (conn.send(h11.Data(data=content)) or b"") if content else b""
                    data += conn.send(h11.EndOfMessage()) or b""
                except h11.LocalProtocolError as exc:  # (as above)
                    raise LocalProtocolError(str(exc)) from exc
                stream.write_nowait(data)
                await stream.drain(timeout.write)
                return True
        async for chunk in request.body_chunks():
            try:
                out = conn.send(h11.Data(data=chunk))
            except h11.LocalProtocolError as exc:  # e.g. more bytes than Content-Length
                raise LocalProtocolError(str(exc)) from exc
            stream.write_nowait(out or b"")
            await stream.drain(timeout.write)
        try:
            out = conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:  # e.g. fewer bytes than Content-Length promised
            raise LocalProtocolError(str(exc)) from exc
        stream.write_nowait(out or b"")
        await stream.drain(timeout.write)
        return True

    def _trace_wrote_headers(self, request: Request) -> None:
        assert self._tracer is not None
        self._tracer(
            "wrote_headers",
            self.origin,
            self.id,
            method=request.method,
            target=request.url.target.decode("latin-1"),
        )

    async def _await_continue(self, wait: float) -> bool:
        """After a head with `Expect: 100-continue` went out: may the body follow?

        True once the server says `100 Continue`, or after `wait` seconds without an answer
        (RFC 9110 section 10.1.1: a client need not wait indefinitely, and many servers never
        answer an expectation); False if a final response (417, 401, 413...) starts first: the
        body is then never sent, and the socket, its request incomplete, closes after that
        response. Bytes read here go to the parser (`_take`); `_receive_head` parses them as
        usual. Raises as `_read_more`, and the parser's `RemoteProtocolError`.
        """
        tracer = self._tracer
        if tracer is not None:
            tracer("wait_100_continue", self.origin, self.id)
        loop_time = asyncio.get_running_loop().time
        deadline = loop_time() + wait
        seen = b""
        while True:
            remaining = deadline - loop_time()
            if remaining <= 0:
                return True
            try:
                data = await self._read_more(remaining)
            except ReadTimeout:
                return True  # silence: send the body anyway
            self._take(data)
            if not data:
                return False  # EOF mid-head: `_receive_head` says what went wrong
            verdict, seen = interim_verdict(seen + data)
            if verdict is not None:
                if verdict and tracer is not None:
                    tracer("got_100_continue", self.origin, self.id)
                if not verdict:
                    self._body_withheld()
                return verdict

    def _take(self, data: bytes) -> None:
        """Hand bytes read ahead of `_receive_head` to the parser."""
        self._head_reads.append(data)
        self._h11.receive_data(data)

    def _body_withheld(self) -> None:
        """The request's body will not be sent: the socket must not be reused (h11 knows: our
        side never reaches DONE)."""

    async def _receive_head(self, timeout: Timeout) -> ResponseHead:
        conn = self._h11
        limits = self._limits
        interim = 0
        received = 0  # bytes read while waiting for this head
        reads = self._head_reads
        checked = 0  # where the next head starts in the bytes of `reads`
        while True:
            event = self._parse_next()
            if event is h11.NEED_DATA:
                data = await self._read_more(timeout.read)
                received += len(data)
                reads.append(data)
                conn.receive_data(data)
                continue
            if type(event) is h11.Response or type(event) is h11.InformationalResponse:
                checked = _check_head_lines(reads, checked)
            if type(event) is h11.Response:
                reads.clear()
                raw = list(event.headers)
                if len(raw) > limits.max_count:
                    raise RemoteProtocolError(too_many_headers(len(raw), limits))
                # h11 caps a head only while it is incomplete: one read can bring a whole
                # oversized head. Measured only when that was possible (off the hot path).
                if received > limits.max_bytes and head_size(event.reason, raw) > limits.max_bytes:
                    raise RemoteProtocolError(f"{_MALFORMED}: {head_too_large(limits)}")
                _refuse_ambiguous_framing(raw)
                return ResponseHead(
                    event.status_code,
                    event.reason.decode("latin-1"),
                    Headers._from_raw(raw),
                    "HTTP/1.1" if event.http_version == b"1.1" else "HTTP/1.0",
                )
            if type(event) is h11.InformationalResponse:
                # 100 Continue, 103 Early Hints: not the final response (each one's size is
                # capped by h11; the count is ours to cap).
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise RemoteProtocolError(too_many_interim())
                continue
            raise RemoteProtocolError(f"unexpected {type(event).__name__} before a response")

    def _parse_next(self, in_body: bool = False) -> Any:
        """h11's next event (or NEED_DATA), its protocol errors made ours (`in_body`: the
        response head was received)."""
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:  # h11's max_incomplete_event_size
                if in_body:
                    # In a body only a chunked one buffers (a chunk-size line with its
                    # extensions, or the trailer section): not the head, whatever h11 says.
                    message = chunk_header_too_large(self._limits)
                else:
                    message = head_too_large(self._limits)
                raise RemoteProtocolError(f"{_MALFORMED}: {message}") from exc
            raise RemoteProtocolError(_describe(exc, self.got_response_bytes)) from exc

    async def _next_event(self, read_timeout: float | None) -> Any:
        while True:
            event = self._parse_next(True)
            if event is not h11.NEED_DATA:
                return event
            self._h11.receive_data(await self._read_more(read_timeout))

    async def _read_more(self, read_timeout: float | None) -> bytes:
        """Next bytes from the socket (b"" at EOF), mapping a disconnect before the first byte
        of a response to RemoteProtocolError (the stale keep-alive socket signal)."""
        try:
            data = await self._stream.read(read_timeout)
        except NetworkError as exc:
            if not self.got_response_bytes:
                raise RemoteProtocolError(
                    f"server disconnected without sending a response ({exc})"
                ) from exc
            raise
        if data:
            if not self.got_response_bytes:
                self.got_response_bytes = True
                if self._tracer is not None:
                    self._tracer("got_first_response_byte", self.origin, self.id)
        elif not self.got_response_bytes:
            raise RemoteProtocolError("server disconnected without sending a response")
        return data

    # Body-facing -------------------------------------------------------------------------------

    async def _receive_body_chunk(self, read_timeout: float | None) -> bytes:
        """Next body bytes, or b"" at the end (after which the socket has been released)."""
        event = await self._next_event(read_timeout)
        if type(event) is h11.Data:
            return bytes(event.data)
        if type(event) is h11.EndOfMessage:
            self._response_complete()
            return b""
        raise RemoteProtocolError(f"unexpected {type(event).__name__} in a response body")

    def _response_complete(self) -> None:
        conn = self._h11
        # Bytes after the end of the response (h11 keeps them as trailing data) are a second
        # response nobody asked for, or garbage: reusing the socket would hand them to the next
        # request as its response. Never reuse such a socket.
        if (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        ):
            conn.start_next_cycle()
            self._release()
        else:
            # Connection: close (either side), HTTP/1.0, a body delimited by EOF, or a request
            # body withheld after an early final response.
            self.close()
            self._owner.discard(self, "not_reusable")

    def _release(self) -> None:
        """The exchange completed cleanly: the socket goes back to the pool."""
        self._owner.release(self)
        tracer = self._tracer
        if tracer is not None:
            self._tracer = None  # (an idle socket keeps no hooks alive)
            # Go's PutIdleConn: nil when pooled, or handed straight to a waiting request.
            error = None
            if self.state is ConnState.CLOSED:
                error = "not kept: the idle limit was reached, or the client is closing"
            tracer("put_idle_conn", self.origin, self.id, error=error)


class HTTP11Body:
    """The body of the response now on an `HTTP11Connection`; the `BodyStream` for it."""

    __slots__ = ("_conn", "_done", "_read_timeout")

    def __init__(self, conn: HTTP11Connection, read_timeout: float | None) -> None:
        self._conn = conn
        self._read_timeout = read_timeout
        self._done = False

    async def receive(self) -> bytes:
        if self._done:
            return b""
        conn = self._conn
        try:
            chunk = await conn._receive_body_chunk(self._read_timeout)
        except BaseException as exc:
            in_phase(exc, "reading the response body")
            self._done = True
            conn._fail()
            conn._raise_if_shut(exc)
            raise
        if not chunk:
            self._done = True
        return chunk

    async def aclose(self) -> None:
        """Drain up to DRAIN_MAX_BYTES within DRAIN_TIMEOUT and pool the socket, else close it."""
        if self._done:
            return
        conn = self._conn
        loop_time = asyncio.get_running_loop().time
        deadline = loop_time() + DRAIN_TIMEOUT
        drained = 0
        try:
            while True:
                remaining = deadline - loop_time()
                if remaining <= 0 or drained > DRAIN_MAX_BYTES:
                    break
                chunk = await conn._receive_body_chunk(remaining)
                if not chunk:
                    self._done = True
                    return
                drained += len(chunk)
        except (ReadTimeout, TransportError):
            pass  # a stalled or broken body: closing below is the answer, not an error
        except BaseException:
            self._done = True
            conn._fail()
            raise
        self._done = True
        conn._fail()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._conn._fail()


def too_many_headers(count: int, limits: HeadLimits) -> str:
    return (
        f"response has {count} header fields, more than the limit of {limits.max_count} "
        f"(max_response_headers)"
    )


def too_many_interim() -> str:
    return f"server sent more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"


_MALFORMED = "malformed HTTP/1.1 response"


def head_size(reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Bytes of a parsed response head: the status line and fields with their CRLFs."""
    fields = sum(len(name) + len(value) + 4 for name, value in headers)
    return len(reason) + 15 + fields + 2


def head_too_large(limits: HeadLimits) -> str:
    return f"head larger than {limits.max_bytes} bytes (max_response_header_bytes)"


def chunk_header_too_large(limits: HeadLimits) -> str:
    return (
        f"chunk header or trailer larger than {limits.max_bytes} bytes (max_response_header_bytes)"
    )


# h11's own end-of-head test: a blank line, CRLF or bare LF.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _check_head_lines(reads: list[bytes], start: int) -> int:
    """Refuse a response head (the one starting at `start` in the bytes of `reads`, which h11
    has just parsed) whose lines end in a bare LF or that folds a field over lines (obs-fold);
    where the next head starts.

    RFC 9112 section 2.2 lets a recipient accept a bare LF, and section 5.2 has a user agent
    unfold obs-fold; llhttp (httptools, Node.js) refuses both, and so do we, on both parsers:
    two parsers that end a line, a field or a head at different bytes are how responses get
    split differently by a client and a proxy (Node's CVE-2023-30589 was llhttp accepting a
    bare CR line end). Servers have sent CRLF for decades; none we know of needs either.
    Raises `RemoteProtocolError`.
    """
    data = reads[0] if len(reads) == 1 else b"".join(reads)
    match = _BLANK_LINE.search(data, start)
    if match is None:  # Defensive: h11 found this head with the same test
        return start
    head = data[start : match.end()]
    if head.count(b"\n") != head.count(b"\r\n"):
        raise RemoteProtocolError(f"{_MALFORMED}: a line in the head ends in a bare LF, not CRLF")
    if b"\n " in head or b"\n\t" in head:
        raise RemoteProtocolError(
            f"{_MALFORMED}: a header field is folded over lines (obs-fold, RFC 9112 section 5.2)"
        )
    return match.end()


def _refuse_ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> None:
    """RFC 9112 section 6.3: a response with both Transfer-Encoding and Content-Length "ought to
    be handled as an error"; it is the classic response-splitting vector, so we refuse it (h11
    lets Transfer-Encoding win). Two different Content-Length values h11 refuses itself."""
    te = cl = False
    for name, _ in headers:
        if name == b"transfer-encoding":
            te = True
        elif name == b"content-length":
            cl = True
    if te and cl:
        raise RemoteProtocolError(
            "malformed HTTP/1.1 response: both Transfer-Encoding and Content-Length"
        )


def _describe(exc: h11.RemoteProtocolError, got_bytes: bool) -> str:
    text = str(exc) or "invalid HTTP/1.1 from server"
    if not got_bytes:
        return f"server disconnected without sending a response ({text})"
    return f"malformed HTTP/1.1 response: {text}"
