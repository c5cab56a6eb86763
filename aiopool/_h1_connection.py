"""HTTP/1.1: one request at a time on one socket, over a swappable codec.

`HTTP11Connection` owns the socket's lifecycle; its `Codec` (`_h1_codec`: h11 or llhttp) owns
the wire format. The request is written here, in one place, whatever the codec: its head, the
`Expect: 100-continue` wait, its body; so are the replay marks (`Request._written`, and
`got_response_bytes` behind `stale_failure`) and every trace event.

The rules this module keeps (docs/design.md invariant 4, "Return only when clean"):
- the socket goes back to the pool only when the exchange completed and the codec says its
  framing allows another: the request was sent whole, the response body was read to its end,
  and neither side said `Connection: close` (nor is the response HTTP/1.0 without keep-alive,
  nor a read-until-EOF body, nor was any byte sent after it);
- anything else (an error, a cancellation, an unread body past the drain bound) closes it;
- the connection reports the outcome to its owner (`ConnectionOwner`) synchronously, so the lease
  is released on every path, even inside a cancelled task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._config import (
    DEFAULT_HEAD_LIMITS,
    DRAIN_MAX_BYTES,
    DRAIN_TIMEOUT,
    MAX_INTERIM_RESPONSES,
    HeadLimits,
    Timeout,
)
from ._connection import ConnectionOwner, ConnState, ResponseHead, too_many_interim
from ._deadline import head_within
from ._exceptions import (
    ClientClosed,
    NetworkError,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
    in_phase,
)
from ._expect import interim_verdict
from ._h1_codec import END, INTERIM, NEED_DATA, Codec, CodecFactory
from ._h1_h11 import H11Codec
from ._proxy import forward_form, forwarding
from ._trace import Tracer

if TYPE_CHECKING:
    from ._backend import NetworkStream
    from ._models import Request
    from ._urls import Origin

__all__ = ("HTTP11Body", "HTTP11Connection")


class HTTP11Connection:
    """One socket speaking HTTP/1.1, its wire format written and parsed by a `Codec`."""

    http_version = "HTTP/1.1"
    multiplexed = False

    __slots__ = (
        "_codec",
        "_forward",
        "_in_exchange",
        "_owner",
        "_shut",
        "_stream",
        "_tracer",
        "_withheld",
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
        codec: CodecFactory = H11Codec,
    ) -> None:
        self.id = conn_id
        self._codec: Codec = codec(limits)
        self._shut = False  # closed by the client's aclose(), not by a failure
        self.origin = origin
        self.state = ConnState.ACTIVE
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        # Whether any byte of the current response arrived: a failure before the first byte on a
        # reused socket is the "server closed the keep-alive socket as we wrote" race, retried.
        self.got_response_bytes = False
        self._in_exchange = False  # a request was sent and its response has not completed
        self._withheld = False  # the request's body was withheld (`_await_continue`)
        self._stream = stream
        self._owner = owner
        self.on_idle_event: Callable[[], None] | None = None  # set by the pool
        self._tracer: Tracer | None = None  # the current request's, if anyone listens
        # Requests forwarded to an HTTP proxy go in its form: absolute target, its credentials.
        self._forward = forwarding(origin) is not None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} #{self.id} [{self.state.value}, {self.origin}, "
            f"{self._codec.name}]>"
        )

    @property
    def implementation(self) -> str:
        return self._codec.name

    # Pool-facing -------------------------------------------------------------------------------

    def is_reusable(self) -> bool:
        return not self.closed and not self._in_exchange and self._stream.is_idle_clean()

    def capacity(self) -> int:
        return 0  # one request at a time: leased whole, never shared

    def reserve(self) -> None:
        raise AssertionError("HTTP/1.1 connections are leased, not reserved")  # Defensive

    def unreserve(self) -> None:
        raise AssertionError("HTTP/1.1 connections are leased, not reserved")  # Defensive

    @property
    def open_streams(self) -> int:
        return 0

    def stale_failure(self, was_idle: bool) -> bool:
        # Any response byte means the server took the request: not the keep-alive race.
        return not self.got_response_bytes

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
        `ReadError`/`ReadTimeout`, `RemoteProtocolError`, `ClientClosed`. On any exception, or
        cancellation, the connection is closed and discarded from the pool before this returns.
        """
        self.requests += 1
        self.got_response_bytes = False
        self._in_exchange = True
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
            # Only the `Expect` wait reads before the head is awaited: otherwise the codec has
            # nothing to parse yet (a socket is reused only with no byte after its response).
            early = request._expect_wait is not None
            limit = timeout.response_header
            if limit is None:
                head = await self._receive_head(timeout, early)
            else:
                head = await head_within(self._receive_head(timeout, early), limit)
        except BaseException as exc:
            in_phase(exc, phase)
            self._fail()
            self._raise_if_shut(exc)
            raise
        return head, HTTP11Body(self, timeout.read)

    async def _send_request(self, request: Request, timeout: Timeout) -> bool:
        """Write `request`; False if its body was withheld (see `_await_continue`).

        `request._written` is set as soon as any of it reached the socket's buffer (not before:
        a socket found closed took nothing), for the replay rule (`Request.replayable`).
        """
        codec = self._codec
        stream = self._stream
        target, headers = request.url.target, request.headers.raw
        if self._forward:  # to an HTTP proxy: absolute-form target, the proxy's credentials
            target, headers = forward_form(self.origin, target, headers)
        content = request.content
        # The body when it is in memory (b"" for none); None when it streams.
        whole = b"" if content is None else content if isinstance(content, bytes) else None
        expect_wait = request._expect_wait
        if whole is not None and expect_wait is None:
            # The common case: head and body in one write. Framed whole before anything is
            # written, so a body its Content-Length contradicts is refused with nothing sent.
            stream.write_nowait(codec.request(request.method, target, headers, whole))
            request._written = True
            if self._tracer is not None:
                self._trace_wrote_headers(request)
            await stream.drain(timeout.write)
            return True
        stream.write_nowait(codec.request(request.method, target, headers, None))
        request._written = True
        if self._tracer is not None:
            self._trace_wrote_headers(request)
        if expect_wait is not None:
            await stream.drain(timeout.write)
            if not await self._await_continue(expect_wait):
                # The server reads whatever comes next as the promised body: the socket closes
                # after this response, never reused.
                self._withheld = True
                return False
            if whole is not None:
                data = codec.body(whole) if whole else b""
                stream.write_nowait(data + codec.end())
                await stream.drain(timeout.write)
                return True
        async for chunk in request.body_chunks():
            stream.write_nowait(codec.body(chunk))
            await stream.drain(timeout.write)
        stream.write_nowait(codec.end())
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
        response. Bytes read here go to the codec; `_receive_head` parses them as usual.
        Raises as `_read_more`, and the codec's `RemoteProtocolError`.
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
            self._codec.feed(data)
            if not data:
                return False  # EOF mid-head: `_receive_head` says what went wrong
            verdict, seen = interim_verdict(seen + data)
            if verdict is not None:
                if verdict and tracer is not None:
                    tracer("got_100_continue", self.origin, self.id)
                return verdict

    async def _receive_head(self, timeout: Timeout, early: bool) -> ResponseHead:
        """The final response head (`early`: bytes may have been fed already)."""
        codec = self._codec
        interim = 0
        event = codec.next_event() if early else NEED_DATA
        while True:
            if event is NEED_DATA:
                codec.feed(await self._read_more(timeout.read))
            elif event is INTERIM:
                # 100 Continue, 103 Early Hints: not the final response (each one's size is
                # capped by the codec; the count is capped here).
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise RemoteProtocolError(too_many_interim())
            elif type(event) is ResponseHead:
                return event
            else:  # Defensive: every codec returns a head before body events
                raise RemoteProtocolError("response body before a response head")
            event = codec.next_event()

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
        codec = self._codec
        while True:
            event = codec.next_event()
            if type(event) is bytes:
                return event
            if event is NEED_DATA:
                codec.feed(await self._read_more(read_timeout))
            elif event is END:
                self._response_complete()
                return b""
            else:  # Defensive: a codec returns one final head per response
                raise RemoteProtocolError("a second response head in a response body")

    def _response_complete(self) -> None:
        self._in_exchange = False
        # (`finish` first: it readies the codec for the next request.)
        if self._codec.finish() and not self._withheld and self._stream.is_idle_clean():
            self._release()
        else:
            # Connection: close (either side), HTTP/1.0, a body delimited by EOF, bytes after
            # the response, or a request body withheld after an early final response.
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
