"""HTTP/2: many concurrent streams on one socket (docs/design.md invariant 5), over an engine.

Rules kept here:
- one reader task per socket (owned by the pool, not by any request) feeds the h2 state machine
  and wakes only the stream an event is for; a stream's task waits on its own future alone;
- capacity is the peer's SETTINGS_MAX_CONCURRENT_STREAMS (100 if it states none, as curl) minus
  the streams reserved or open; the pool reserves a stream synchronously when it hands the
  connection out, so no request can ever hit h2's
  "too many streams" error; if the peer lowers its limit between reservation and send, the
  request goes back to the pool without a byte sent (`TransportError.unprocessed`);
- receive windows are large (16 MiB per stream, 16 MiB for the connection) and credited as the
  application consumes data, so a fast download never stalls on WINDOW_UPDATE round trips while
  a slow consumer still bounds what the server may push at us;
- uploads wait for window updates on their stream's own future, never by polling;
- GOAWAY: no new streams; streams above `last_stream_id` fail as `unprocessed` (the client retries
  them on another socket); streams at or below finish. REFUSED_STREAM is `unprocessed` too. The
  socket's end after a GOAWAY, clean or not, is the GOAWAY's ("goaway"), not an error;
- closing a response early, a read timeout, or cancelling its task sends RST_STREAM(CANCEL),
  credits the connection window for what was buffered, and frees the slot; the socket stays up.
  One reset per stream, none once its response ended, and none in answer to frames that cross
  ours (see `_h2engine`): servers count client resets against rapid-reset limits;
- a socket that dies fails every open stream at once with a typed error; none waits for a
  timeout;
- floods are bounded (see "HTTP/2 floods" in SECURITY.md): the answers a server's frames oblige
  us to send (PING and SETTINGS ACKs, ...) may not pile up unsent past `MAX_QUEUED_ANSWERS`, and
  the reader stops reading while they wait over the write buffer's high-water mark; frames that
  bring nothing (empty DATA, PRIORITY, unknown types) may not follow one another past
  `MAX_IDLE_FRAMES`; either ends the socket with GOAWAY(ENHANCE_YOUR_CALM). A read timeout runs
  from the last byte of progress: a frame that brings nothing does not restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any

from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from ._backend import READ_STALLED, expire
from ._config import DEFAULT_HEAD_LIMITS, MAX_INTERIM_RESPONSES, HeadLimits
from ._connection import ConnState, ResponseHead, too_many_headers, too_many_interim
from ._deadline import head_within
from ._exceptions import (
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TransportError,
    WriteError,
    WriteTimeout,
    in_phase,
    seconds,
)
from ._expect import AUTO_EXPECT
from ._h2engine import H2Engine, select_engine
from ._headers import Headers
from ._http2_stream import H2Body, Stream, reason_phrase, wake

if TYPE_CHECKING:
    from ._backend import NetworkStream
    from ._config import Timeout
    from ._connection import ConnectionOwner
    from ._models import Request
    from ._urls import Origin

__all__ = ("HTTP2Connection",)

_CODES = frozenset(int(code) for code in ErrorCodes)
# An upload waiting for the peer's WINDOW_UPDATE: the socket is fine, the peer's window shut.
_WINDOW_SHUT = "the server opened no flow-control window for {} (the write timeout)"

# Receive windows. RFC 9113's defaults (64 KiB) cap a download at 64 KiB per round trip; Go's
# transport uses 4 MiB per stream and 1 GiB per connection. 16 MiB for both keeps a 10 MB
# download to one window while bounding what a stream may buffer.
STREAM_WINDOW = 16 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
# When the server's SETTINGS state no SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113 section 6.5.2
# leaves the limit unbounded, but a server's resources are not (node states none, then resets
# streams with ENHANCE_YOUR_CALM once a socket carries ~1,000 and its session memory runs
# out). We stop at 100, as curl does (CURLMOPT_MAX_CONCURRENT_STREAMS) and as most servers
# state (Apache, nginx 128, h2o, Go 250 are near it); RFC 9113 asks servers to allow at least
# 100. (Go's client would go to 1,000.) More requests open more sockets.
UNSTATED_MAX_STREAMS = 100
# A stated limit is taken as stated, up to Go's bound (defaultMaxConcurrentStreams).
MAX_STREAMS = 1000
# Answers a server's frames oblige us to send (PING and SETTINGS ACKs, and the RST_STREAM or
# WINDOW_UPDATE frames h2 queues on its own) that may wait in our write buffer, not yet taken by
# the kernel. A server that floods PINGs or SETTINGS and reads nothing (CVE-2019-9512,
# CVE-2019-9515) otherwise makes them pile up without end: 1M PINGs left ~9 MiB unsent.
# nghttp2 (under curl, Apache, node) holds a peer with more than 1,000 ACKs in its outbound queue
# to be misbehaving and ends the session (`max_outbound_ack`); Go's server allows 10,000 queued
# control frames (`maxQueuedControlFrames`), and Go's client blocks its read loop on each write.
# nghttp2's 1,000 answers are at most 17 KB, under the transport's 64 KiB high-water mark, so a
# flood is named before back-pressure parks the reader; a well-behaved server has a few PINGs
# or SETTINGS outstanding at a time.
MAX_QUEUED_ANSWERS = 1000
# Frames in a row that bring no response byte and ask nothing of us: DATA frames without data
# (nor END_STREAM), PRIORITY frames, frames of unknown types (CVE-2019-9518, "empty frames
# flood"). Netty ends a connection after 10 consecutive empty DATA frames (since 2019, by
# default; its builders' `decoderEnforceMaxConsecutiveEmptyDataFrames`). A client has less to
# fear than a server (one server, not thousands of peers) and a read timeout already ends a
# stream that makes no progress, so we allow more before calling it a flood: 100. The count
# restarts with any response head, body byte or stream end.
MAX_IDLE_FRAMES = 100
# After our GOAWAY(ENHANCE_YOUR_CALM), how long the socket stays open (reading and discarding)
# before it is aborted, so that the GOAWAY has a chance to reach a peer that starts reading
# again: closing with unread input makes the kernel send an RST and drop what we sent. Go's
# server waits as long after a GOAWAY with an error (`goAwayTimeout`, 1 s).
GOAWAY_LINGER = 1.0
# RFC 9113 section 8.2.2: connection-specific header fields must not be sent over HTTP/2.
_CONNECTION_HEADERS = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _Hostile(RemoteProtocolError):
    """The server flooded us: ends the socket with GOAWAY(ENHANCE_YOUR_CALM) (RFC 9113
    section 5.4.1). Raised inside the reader; streams get a plain `RemoteProtocolError`."""


def _count_frames(data: bytes) -> int:
    """How many frames `data` (whole frames, as `data_to_send()` gives them) holds."""
    count = offset = 0
    end = len(data)
    while offset < end:
        offset += 9 + int.from_bytes(data[offset : offset + 3])
        count += 1
    return count


def _nothing_unsent() -> int:
    return 0


class HTTP2Connection:
    """One socket speaking HTTP/2 through an engine's connection state machine (`_h2engine`)."""

    http_version = "HTTP/2"
    multiplexed = True

    def __init__(
        self,
        stream: NetworkStream,
        origin: Origin,
        owner: ConnectionOwner,
        *,
        conn_id: int,
        ping_interval: float | None = None,
        ping_timeout: float = 15.0,
        engine: H2Engine | None = None,
        limits: HeadLimits = DEFAULT_HEAD_LIMITS,
    ) -> None:
        self.id = conn_id
        self._limits = limits
        self.origin = origin
        self.state = ConnState.ACTIVE
        self._ping = (ping_interval, ping_timeout)
        self.closed = False
        self.requests = 0
        self.idle_since = 0.0
        self.reserved = 0  # streams promised to requests (opened or about to be)
        self.draining = False  # GOAWAY received or sent: no new streams
        self.goaway_received = False  # ... and the socket's end is expected: not an error
        self._settings_received = False
        self._max_streams = UNSTATED_MAX_STREAMS  # until the peer states its own
        self._stream = stream
        # (Streams that cannot say what is unsent, test doubles and dialers' own, are taken
        # to write synchronously: no answer ever waits.)
        self._unsent = getattr(stream, "write_buffer_size", _nothing_unsent)
        self._written = 0  # bytes handed to the stream, ever
        # Requests opened in this event-loop turn, their HEADERS not yet encoded (a request
        # cancelled meanwhile costs the server nothing: no HEADERS, no RST_STREAM), then those
        # whose HEADERS wait in the engine's buffer; and the handle of the flush that sends
        # them at the end of the turn (`_flush_soon`).
        self._queued: list[tuple[Stream, Request, list[tuple[bytes, bytes]], bool]] = []
        self._unflushed: list[tuple[Stream, Request, bool]] = []
        self._next_stream_id = 1
        self._flush_handle: asyncio.Handle | None = None
        # The reader's answers still in our write buffer: (end offset in `_written`, frames,
        # bytes) per write, oldest first; `_answers_queued` counts their frames.
        self._answers: deque[tuple[int, int, int]] = deque()
        self._answers_queued = 0
        self._idle_frames = 0  # frames in a row that brought nothing (`MAX_IDLE_FRAMES`)
        self._owner = owner
        self._streams: dict[int, Stream] = {}
        self._loop = asyncio.get_running_loop()
        self._reader: asyncio.Task[None] | None = None
        engine = engine or select_engine("auto")
        self._engine = engine
        config = engine.config_class(
            client_side=True,
            header_encoding=None,
            # Request headers were validated (RFC 9110 grammar, no CR/LF/NUL, no surrounding
            # whitespace) before a stream was reserved, and are lower-cased in
            # `_request_headers`; h2 checking them again costs a fifth of a small request.
            # Inbound validation stays on: the server is not trusted.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._h2 = engine.connection_class(config)
        self._dispatch_table = {
            engine.events.DataReceived: self._on_data,
            engine.events.ResponseReceived: self._on_response,
            engine.events.InformationalResponseReceived: self._on_informational,
            engine.events.StreamEnded: self._on_stream_ended,
            engine.events.StreamReset: self._on_stream_reset,
            engine.events.WindowUpdated: self._on_window_updated,
            engine.events.RemoteSettingsChanged: self._on_settings,
            engine.events.ConnectionTerminated: self._on_goaway,
            engine.events.PushedStreamReceived: self._on_push,
            engine.events.PriorityUpdated: self._on_idle_frame,
            engine.events.UnknownFrameReceived: self._on_idle_frame,
        }

    def __repr__(self) -> str:
        return (
            f"<HTTP2Connection #{self.id} [{self.state.value}, {self.origin}, "
            f"{len(self._streams)} streams]>"
        )

    # Lifecycle ---------------------------------------------------------------------------------

    async def start(self, timeout: float | None) -> asyncio.Task[None]:
        """Send our preface, wait for the server's SETTINGS, start (and return) the reader task.

        Clients may send requests before the server's preface arrives (RFC 9113 section 3.4),
        but then a first burst cannot know the server's stream limit, and servers such as
        hypercorn answer streams over a limit they announced (but we had not seen) with a
        connection error rather than REFUSED_STREAM. Waiting costs nothing over TLS (servers
        send SETTINGS right after the handshake) and half a round trip on h2c; the pool hands
        the socket out only after this returns. Raises `ConnectTimeout` or `ConnectError`.
        """
        self._send_preface()
        deadline = None if timeout is None else self._loop.time() + timeout
        while not self._settings_received:
            remaining = None if deadline is None else max(0.0, deadline - self._loop.time())
            try:
                data = await self._stream.read(remaining)
            except ReadTimeout:
                raise ConnectTimeout(
                    f"no HTTP/2 SETTINGS from {self.origin} within the connect timeout "
                    f"({seconds(timeout)})"
                ) from None
            except TransportError as exc:
                raise ConnectError(f"HTTP/2 preface from {self.origin} failed: {exc}") from exc
            if not data:
                raise ConnectError(f"{self.origin} closed the connection in the HTTP/2 preface")
            try:
                events = self._h2.receive_data(data)
            except self._engine.protocol_error as exc:
                raise ConnectError(
                    f"{self.origin} did not answer with an HTTP/2 preface: {exc}"
                ) from exc
            for event in events:
                self._dispatch(event)
            self._flush()
        if self.draining:
            # (An nginx worker shutting down for a reload answers a connection it accepted
            # late this way.) No request was sent on it: the caller may dial again.
            refused = ConnectError(f"{self.origin} sent GOAWAY in its HTTP/2 preface")
            refused.unprocessed = True
            raise refused
        self._reader = self._loop.create_task(self._read_loop())
        return self._reader

    def _send_preface(self) -> None:
        conn = self._h2
        conn.initiate_connection()
        conn.update_settings(
            {
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: self._limits.max_bytes,
            }
        )
        # h2 applies our advertised limit only once the peer acknowledges the SETTINGS; until
        # then its decoder would allow its own default. Hold the peer to our limit from the first
        # frame (hpack's OversizedHeaderListError surfaces as a protocol error: the socket dies).
        conn.decoder.max_header_list_size = self._limits.max_bytes
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self._flush()

    def capacity(self) -> int:
        """How many more streams this socket can take now (0 while draining or closed)."""
        if self.closed or self.draining:
            return 0
        return self._max_streams - self.reserved

    @property
    def open_streams(self) -> int:
        return self.reserved

    def reserve(self) -> None:
        # Counted when promised rather than when sent: of the streams handed out together on a
        # new socket, only the first is its "opened" request, the rest are reuse (`ConnInfo`).
        self.reserved += 1
        self.requests += 1

    def unreserve(self) -> None:
        self.reserved -= 1
        self.requests -= 1

    def is_reusable(self) -> bool:
        return not self.closed and not self.draining

    @property
    def implementation(self) -> str:
        return self._engine.name

    def stale_failure(self, was_idle: bool) -> bool:
        # The socket died, not just this stream; and either it was taken idle (the keep-alive
        # race) or the server ended it with a GOAWAY (Apache answers a storm of resets so), not
        # a busy socket that merely dropped. (What the server never processed it says itself:
        # `TransportError.unprocessed`.)
        return self.closed and (was_idle or self.goaway_received)

    def arm_idle_watch(self) -> None:
        pass  # the reader task sees everything; nothing to arm

    def disarm_idle_watch(self) -> None:
        pass

    def close(self) -> None:
        """Say GOAWAY and close the socket. Idempotent; does not touch the pool."""
        if self.closed:
            return
        self.closed = True
        try:
            self._h2.close_connection()
            self._stream.write_nowait(self._h2.data_to_send())
        except (self._engine.protocol_error, TransportError):
            pass  # already broken: just close
        self._stream.close()
        self._fail_streams(ReadError("the connection was closed"))
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()

    def shut_down(self) -> None:
        # (Before close(): each stream keeps the first error it is given.)
        self._fail_streams(ClientClosed("the client was closed while this request was in flight"))
        self.close()

    async def wait_closed(self, timeout: float) -> None:
        await self._stream.wait_closed(timeout)

    @property
    def network_stream(self) -> NetworkStream:
        return self._stream

    def _die(self, exc: TransportError) -> None:
        """The socket failed or the peer broke the protocol: fail everything, leave the pool.

        After the peer's GOAWAY this is how the socket was announced to end (servers close
        right after it, over TLS often without close_notify): the close reason is "goaway"
        however the end shows. Streams above its `last_stream_id` already failed as
        `unprocessed` (the first error a stream is given is the one it keeps)."""
        if not self.closed:
            self.closed = True
            self._stream.abort()
        self._fail_streams(exc)
        self._owner.discard(self, "goaway" if self.goaway_received else "error")

    def _fail_streams(self, exc: TransportError | ClientClosed) -> None:
        for stream in list(self._streams.values()):
            if stream.error is None and not stream.ended:
                stream.error = exc
            wake(stream)

    # Sending -----------------------------------------------------------------------------------

    async def send(self, request: Request, timeout: Timeout) -> tuple[ResponseHead, H2Body]:
        """Open a stream for `request` (on a slot the pool reserved) and await the response head.

        Raises like `HTTP11Connection.send`; errors with `unprocessed=True` mean the server never
        saw the request (GOAWAY, REFUSED_STREAM, a lowered stream limit) and it may be retried.
        Cancellation or a timeout resets the stream only; the socket stays in service.
        """
        conn = self._h2
        if (
            self.closed
            or self.draining
            # (our own count: h2's `open_outbound_streams` walks every stream on each call)
            or len(self._streams) >= conn.remote_settings.max_concurrent_streams
        ):
            self._release_slot()
            exc = RemoteProtocolError("HTTP/2 connection cannot take a new stream now")
            exc.unprocessed = True
            raise exc
        # (Ids are ours to give: a stream opened and cancelled within one loop turn is never
        # sent, and the next one skips its id, as RFC 9113 section 5.1.1 allows.)
        stream_id = max(conn.get_next_available_stream_id(), self._next_stream_id)
        self._next_stream_id = stream_id + 2
        stream = Stream(stream_id, timeout.read)
        tracer = stream.tracer = request._tracer
        self._streams[stream_id] = stream
        phase = "writing the request"
        try:
            content = request.content
            end = content is None or (isinstance(content, bytes) and not content)
            headers, asked = self._request_headers(request)
            self._queued.append((stream, request, headers, end))
            if end:
                # No body: the HEADERS leave with every other stream's opened in this turn of
                # the event loop, one TLS record and one send for all of them (`_flush`).
                self._flush_soon()
            else:
                try:
                    self._flush()
                except TransportError as exc:
                    exc.unprocessed = True  # (see `_fail_unflushed`)
                    raise
            try:
                if not end:
                    wait = request._expect_wait if asked else None
                    if wait is not None and not await self._await_continue(stream, wait, timeout):
                        stream.withheld = True  # reset once the response is read
                    else:
                        await self._send_body(stream, request, timeout)
                    await self._stream.drain(timeout.write)
            except BaseException as exc:
                if tracer is not None:
                    tracer("wrote_request", self.origin, self.id, error=exc, body_withheld=False)
                raise
            if tracer is not None and not end:
                withheld = stream.withheld
                tracer("wrote_request", self.origin, self.id, error=None, body_withheld=withheld)
            phase = "waiting for the response head"
            limit = timeout.response_header
            if limit is None:
                await self._await_head(stream)
            else:
                await head_within(self._await_head(stream), limit)
        except BaseException as exc:
            in_phase(exc, phase)
            self._abort_stream(stream)
            raise
        assert stream.headers is not None  # (`_await_head` returns once they came)
        head = ResponseHead(
            stream.status,
            reason_phrase(stream.status),  # HTTP/2 has no reason phrase; give the standard one
            Headers._from_raw(stream.headers),
            "HTTP/2",
        )
        return head, H2Body(self, stream)

    async def _await_head(self, stream: Stream) -> None:
        deadline, interim = None, -1
        while stream.headers is None:
            if stream.interim != interim and stream.read_timeout is not None:
                # (The read timeout runs from the last response byte: a 1xx is one.)
                interim, deadline = stream.interim, self._loop.time() + stream.read_timeout
            await self._wait(stream, stream.read_timeout, deadline=deadline)

    async def _await_continue(self, stream: Stream, wait: float, timeout: Timeout) -> bool:
        """After HEADERS with `Expect: 100-continue`: may the body follow? As
        `HTTP11Connection._await_continue`: True on `100 Continue` or after `wait` seconds of
        silence, False if the final response came first (the body is then never sent)."""
        if stream.tracer is not None:
            stream.tracer("wait_100_continue", self.origin, self.id, stream_id=stream.id)
        await self._stream.drain(timeout.write)  # (the clock starts once HEADERS are out)
        loop = self._loop
        deadline = loop.time() + wait
        while not stream.continued:
            if stream.headers is not None or stream.ended:
                # (Before the error test: RFC 9113 section 8.1 lets a server follow its
                # complete response with RST_STREAM(NO_ERROR) to stop our body.)
                return False
            if stream.error is not None:
                raise stream.error
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True  # silence: send the body anyway
            waiter = stream.waiter = loop.create_future()
            handle = loop.call_later(remaining, wake, stream)
            try:
                await waiter
            finally:
                stream.waiter = None
                handle.cancel()
        return True

    def _request_headers(self, request: Request) -> tuple[list[tuple[bytes, bytes]], bool]:
        """The HEADERS fields, and whether they carry an `Expect: 100-continue` to wait on.

        The automatic expectation (`AUTO_EXPECT`) is left out: over HTTP/2 it is asked only
        when the caller asks (see `_expect`)."""
        url = request.url
        asked = True
        headers = [
            (b":method", request.method.encode("ascii")),
            (b":scheme", url.scheme.encode("ascii")),
            (b":authority", url.host_header),
            (b":path", url.target),
        ]
        for field in request.headers.raw:
            if field is AUTO_EXPECT:
                asked = False
                continue
            name, value = field
            lowered = name.lower()
            if lowered in _CONNECTION_HEADERS:
                if lowered == b"host":
                    headers[2] = (b":authority", value)
                continue
            if lowered == b"te" and value.lower() != b"trailers":
                continue
            headers.append((lowered, value))
        return headers, asked

    async def _send_body(self, stream: Stream, request: Request, timeout: Timeout) -> None:
        content = request.content
        conn = self._h2
        stream.sending = True
        try:
            if isinstance(content, bytes):
                await self._send_data(stream, content, timeout)
            else:
                async for chunk in request.body_chunks():
                    if stream.withheld:
                        break
                    await self._send_data(stream, chunk, timeout)
            if not stream.withheld:
                conn.end_stream(stream.id)
                self._flush()
        finally:
            stream.sending = False

    async def _send_data(self, stream: Stream, data: bytes, timeout: Timeout) -> None:
        conn = self._h2
        view = memoryview(data)
        deadline = None  # (a WINDOW_UPDATE that opens nothing for us does not restart the wait)
        while view:
            if stream.withheld:
                return  # the server has its answer and asked for no more (see _on_stream_reset)
            if stream.error is not None:
                raise stream.error
            window = min(
                conn.local_flow_control_window(stream.id),
                conn.max_outbound_frame_size,
                len(view),
            )
            if window <= 0:
                # The peer's window is shut: wait for its WINDOW_UPDATE (or SETTINGS) on this
                # stream's own future; other streams carry on meanwhile.
                if deadline is None and timeout.write is not None:
                    deadline = self._loop.time() + timeout.write
                await self._wait(stream, timeout.write, WriteTimeout, _WINDOW_SHUT, deadline)
                continue
            deadline = None
            conn.send_data(stream.id, view[:window].tobytes())
            view = view[window:]
            self._flush()
            await self._stream.drain(timeout.write)

    def _flush(self) -> None:
        """Write what the engine queued. Raises `TransportError` if the socket is gone; the
        requests whose HEADERS were in it then fail as unprocessed (`_unflushed`)."""
        if self._queued:
            self._open_queued()
        data = self._h2.data_to_send()
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            self._stream.write_nowait(data)
        except TransportError as exc:
            self._fail_unflushed(exc)
            raise
        self._written += len(data)
        if self._unflushed:
            self._wrote_headers()

    def _open_queued(self) -> None:
        """Encode the HEADERS of the streams opened since the last flush, in id order, but for
        those cancelled or failed meanwhile. Sending HEADERS and RST_STREAM together is the
        "rapid reset" pattern (CVE-2023-44487) that servers answer by closing the connection
        (Apache's mod_http2 does, seen in cancellation storms); we send neither."""
        queued, self._queued = self._queued, []
        conn = self._h2
        for stream, request, headers, end in queued:
            if stream.released or stream.error is not None:
                continue
            try:
                conn.send_headers(stream.id, headers, end_stream=end)
            except self._engine.protocol_error as exc:  # (we sent GOAWAY: nothing may open)
                error = RemoteProtocolError(f"HTTP/2 stream could not be opened: {exc}")
                error.unprocessed = True
                stream.error = error
                wake(stream)
                continue
            stream.opened = True
            self._unflushed.append((stream, request, end))

    def _flush_soon(self) -> None:
        """Flush at the end of this event-loop turn: what many tasks queue in one turn (new
        streams' HEADERS, window credits) leaves in one TLS record and one send."""
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_queued)

    def _flush_queued(self) -> None:
        self._flush_handle = None
        if self.closed:
            self._queued.clear()  # (their streams were failed with the socket)
            self._unflushed.clear()
            return
        # (On a write error each request whose HEADERS were in it was failed by
        # `_fail_unflushed`; the reader meets the socket's end and fails the rest.)
        with contextlib.suppress(TransportError):
            self._flush()

    def _wrote_headers(self) -> None:
        """The requests in `_unflushed` are on their way: they may no longer be replayed
        unless they are idempotent (`Request._written`); tell their tracers."""
        written, self._unflushed = self._unflushed, []
        origin, conn_id = self.origin, self.id
        for stream, request, headers_only in written:
            request._written = True
            tracer = stream.tracer
            if tracer is not None:
                tracer(
                    "wrote_headers",
                    origin,
                    conn_id,
                    method=request.method,
                    target=request.url.target.decode("latin-1"),
                    stream_id=stream.id,
                )
                if headers_only:
                    tracer("wrote_request", origin, conn_id, error=None, body_withheld=False)

    def _fail_unflushed(self, exc: TransportError) -> None:
        """The socket closed under us (the server retired it; the reader has yet to see the
        EOF): not a byte of these requests left, so they may be sent elsewhere, and no other
        request should come here meanwhile."""
        failed, self._unflushed = self._unflushed, []
        self.draining = True
        for stream, _, _ in failed:
            if stream.error is None and not stream.ended:
                error = type(exc)(str(exc))
                error.unprocessed = True
                stream.error = error
                wake(stream)

    def _answer(self) -> bool:
        """Send what the frames just read oblige us to send. True if some of it waits unsent
        in our write buffer (the reader then waits for it to drain: back-pressure).

        Raises `_Hostile` once more than `MAX_QUEUED_ANSWERS` answers wait unsent."""
        data = self._h2.data_to_send()
        if not data:
            return False
        self._write(data)
        unsent = self._unsent()
        answers = self._answers
        if not unsent:  # (the kernel took everything: the common case)
            if answers:
                answers.clear()
                self._answers_queued = 0
            return False
        frames = _count_frames(data)
        answers.append((self._written, frames, len(data)))
        self._answers_queued += frames
        sent = self._written - unsent
        while answers and answers[0][0] <= sent:
            self._answers_queued -= answers.popleft()[1]
        # The oldest write may be partly sent: count its frames in proportion.
        end, count, size = answers[0]
        waiting = self._answers_queued - count + -(-count * min(size, end - sent) // size)
        if waiting > MAX_QUEUED_ANSWERS:
            raise _Hostile(
                f"flooded control frames: {waiting} answers to its frames wait unsent "
                f"(more than {MAX_QUEUED_ANSWERS}) while it reads none of them"
            )
        return True

    async def _await_answers_sent(self, timeout: float) -> None:
        """Back-pressure: read nothing more until the answers queued drain below the write
        buffer's low-water mark (`drain` returns at once unless it is over its high-water
        mark). Go's client read loop likewise blocks on its writes. Raises `WriteError` if
        the server takes none of our bytes for `timeout` (`http2_ping_timeout`)."""
        try:
            await self._stream.drain(timeout)
        except WriteTimeout:
            raise WriteError(
                f"the HTTP/2 server took none of our answers to its frames within "
                f"{seconds(timeout)}"
            ) from None

    # Receiving ---------------------------------------------------------------------------------

    async def _wait(
        self,
        stream: Stream,
        timeout: float | None,
        timeout_exc: type[TransportError] = ReadTimeout,
        stalled: str = READ_STALLED,
        deadline: float | None = None,
    ) -> None:
        """Wait for the reader to wake `stream`; past `timeout` (or `deadline`, when the caller
        keeps one across wakes that brought nothing) raise `timeout_exc`."""
        if stream.error is not None:
            raise stream.error
        loop = self._loop
        waiter = stream.waiter = loop.create_future()
        if timeout is None:
            handle = None
        elif deadline is None:
            handle = loop.call_later(timeout, expire, waiter, timeout_exc, stalled, timeout)
        else:
            handle = loop.call_at(deadline, expire, waiter, timeout_exc, stalled, timeout)
        try:
            await waiter
        finally:
            stream.waiter = None
            if handle is not None:
                handle.cancel()
        if stream.error is not None:
            raise stream.error

    async def _receive_chunk(self, stream: Stream) -> bytes:
        body = stream.body
        deadline = None
        while not body:
            if stream.ended:
                self._finish_stream(stream)
                return b""
            # The read timeout means "no body byte arrived": it runs from the first wait, and a
            # wake that brought no byte does not restart it.
            timeout = stream.read_timeout
            if deadline is None and timeout is not None:
                deadline = self._loop.time() + timeout
            await self._wait(stream, timeout, deadline=deadline)
        # Hand over everything buffered at once (a fast download arrives as dozens of 8-16 KiB
        # DATA frames per socket read) and credit the window once for all of it.
        chunk = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        credit, stream.unacked = stream.unacked, 0
        if credit and not self.closed:
            try:
                self._h2.acknowledge_received_data(credit, stream.id)
            except self._engine.protocol_error:
                pass  # the stream is already gone; nothing left to credit
            else:
                self._flush_soon()
        return chunk

    def _finish_stream(self, stream: Stream) -> None:
        """The response ended and was consumed: the slot goes back to the pool."""
        self._streams.pop(stream.id, None)
        if stream.withheld and not stream.released and not self.closed:
            # Our half is still open, its body never sent: RST_STREAM(CANCEL) ends the
            # exchange (RFC 9113 section 8.1; the server may have sent its own NO_ERROR reset).
            try:
                self._h2.reset_stream(stream.id, ErrorCodes.CANCEL)
                self._flush()
            except self._engine.stream_closed_error:
                pass
            except TransportError:
                pass  # the socket is closed: see `_abort_stream`
            except self._engine.protocol_error as exc:
                self._die(RemoteProtocolError(f"HTTP/2 connection failed: {exc}"))
        if not stream.released:
            stream.released = True
            self._release_slot()

    def _abort_stream(self, stream: Stream) -> None:
        """Early close, error or cancellation: RST_STREAM(CANCEL) unless already ended."""
        if stream.released:
            return
        self._streams.pop(stream.id, None)
        if not stream.opened:  # (never sent: `_open_queued` skips it)
            stream.released = True
            self._release_slot()
            return
        if not self.closed:
            try:
                if stream.unacked:
                    self._h2.acknowledge_received_data(stream.unacked, stream.id)
                    stream.unacked = 0
                if not stream.ended or stream.sending or stream.withheld:
                    self._h2.reset_stream(stream.id, ErrorCodes.CANCEL)
                self._flush()
            except self._engine.stream_closed_error:
                pass  # the peer closed or reset it first
            except TransportError:
                # The socket is closed for writing: the server may have closed it right after
                # the last bytes of the other streams, bytes the reader has yet to parse.
                # Failing those streams here would lose responses that arrived whole; the
                # reader fails, at EOF, only the ones that did not end.
                pass
            except self._engine.protocol_error as exc:
                self._die(RemoteProtocolError(f"HTTP/2 connection failed: {exc}"))
        stream.released = True
        self._release_slot()

    def _release_slot(self) -> None:
        self.reserved -= 1
        self._owner.release(self)

    # The reader --------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        stream = self._stream
        conn = self._h2
        ping_interval, ping_timeout = self._ping
        awaiting_pong = False
        try:
            while True:
                try:
                    data = await stream.read(ping_timeout if awaiting_pong else ping_interval)
                except ReadTimeout:
                    # Go's ReadIdleTimeout/PingTimeout: silence for `ping_interval`, then a PING;
                    # no answer (nor any other frame) within `ping_timeout` means the peer is gone.
                    if awaiting_pong:
                        raise ReadError(
                            f"HTTP/2 peer did not answer a PING within {ping_timeout}s"
                        ) from None
                    awaiting_pong = True
                    conn.ping(b"aiopool!")
                    self._flush()
                    continue
                awaiting_pong = False
                if not data:
                    raise ReadError("server closed the HTTP/2 connection")
                try:
                    events = conn.receive_data(data)
                except self._engine.protocol_error as exc:
                    raise RemoteProtocolError(f"HTTP/2 protocol error from server: {exc}") from exc
                for event in events:
                    self._dispatch(event)
                if self.closed:
                    return  # (a GOAWAY with an error code: see `_on_goaway`)
                if self._answer():
                    await self._await_answers_sent(ping_timeout)
                if self.draining and not self._streams:
                    self.close()
                    self._owner.discard(self, "goaway")
                    return
        except asyncio.CancelledError:
            raise
        except _Hostile as exc:
            await self._enhance_your_calm(str(exc))
        except TransportError as exc:
            self._die(exc)
        except Exception as exc:  # Defensive: a bug here must fail streams, not hang them
            self._die(RemoteProtocolError(f"HTTP/2 connection failed: {exc!r}"))

    async def _enhance_your_calm(self, why: str) -> None:
        """The server flooded us: GOAWAY(ENHANCE_YOUR_CALM), fail every stream with
        `RemoteProtocolError`, leave the pool; then read and discard for `GOAWAY_LINGER` so the
        GOAWAY may reach the server, and abort the socket."""
        self.closed = True
        stream = self._stream
        try:
            self._h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
        except (self._engine.protocol_error, TransportError):
            pass  # already broken: nothing to say it on
        self._fail_streams(
            RemoteProtocolError(
                f"HTTP/2 server {why}; the connection was closed with GOAWAY(ENHANCE_YOUR_CALM)"
            )
        )
        self._owner.discard(self, "error")
        loop = self._loop
        deadline = loop.time() + GOAWAY_LINGER
        try:
            while (remaining := deadline - loop.time()) > 0:
                if not await stream.read(remaining):
                    break  # the server closed: nothing left to wait for
        except TransportError:
            pass  # (a read timeout: the linger is over; or the socket died)
        finally:
            stream.abort()

    # Events from the h2 engine, each to its own handler (one dict lookup per event). Events
    # not listed (PingAckReceived, SettingsAcknowledged, ...) need nothing from us.

    def _dispatch(self, event: Any) -> None:
        handler = self._dispatch_table.get(type(event))
        if handler is not None:
            handler(event)

    def _on_data(self, event: Any) -> None:
        data = event.data
        if not data and event.stream_ended is None:
            self._on_idle_frame(event)  # (the stream is not woken: nothing arrived for it)
        s = self._streams.get(event.stream_id or 0)
        size = event.flow_controlled_length or 0
        if s is None:
            if size:  # a stream we already left: credit the connection window anyway
                self._h2.acknowledge_received_data(size, event.stream_id or 0)
            return
        s.unacked += size
        if data:
            self._idle_frames = 0
            s.body.append(data)
            wake(s)

    def _on_idle_frame(self, event: Any) -> None:
        """A frame that brought nothing and asks nothing of us (see `MAX_IDLE_FRAMES`).
        Raises `_Hostile` past the limit."""
        self._idle_frames += 1
        if self._idle_frames > MAX_IDLE_FRAMES:
            raise _Hostile(
                f"sent {self._idle_frames} frames in a row that carried nothing "
                f"(empty DATA, PRIORITY or unknown frames; the limit is {MAX_IDLE_FRAMES})"
            )

    def _on_response(self, event: Any) -> None:
        s = self._streams.get(event.stream_id or 0)
        if s is None:
            return
        raw_status = b""
        plain: list[tuple[bytes, bytes]] = []
        for name, value in event.headers or ():
            if name == b":status":
                raw_status = value
            elif not name.startswith(b":"):
                plain.append((name, value))
        # RFC 9110 section 15: a status code is three digits, at least 100 (600-999 are
        # "processed as a 5xx", so accepted, as h11 does); h2 checks that :status is present
        # but not its form. `int()` alone took "2_00" and "+200" as 200 (and accepted 99 or
        # 2000), and raised ValueError on "abc", failing the whole socket. A malformed
        # response is a stream error (RFC 9113 section 8.1.1): this stream only.
        if len(raw_status) != 3 or not raw_status.isdigit() or raw_status < b"100":
            s.error = RemoteProtocolError(
                f"malformed HTTP/2 response: invalid :status {raw_status!r}"
            )
            wake(s)  # (the stream's owner resets it when it sees the error)
            return
        status = int(raw_status)
        self._idle_frames = 0
        if len(plain) > self._limits.max_count:
            s.error = RemoteProtocolError(too_many_headers(len(plain), self._limits))
            wake(s)  # (the stream's owner resets it when it sees the error)
            return
        s.status = status
        s.headers = plain
        if s.tracer is not None and not s.interim:
            s.tracer("got_first_response_byte", self.origin, self.id, stream_id=s.id)
        wake(s)

    def _on_informational(self, event: Any) -> None:
        # 1xx before the final response (RFC 9113 section 8.1): `100 Continue` releases a body
        # held back behind `Expect: 100-continue`; others (103 Early Hints) are skipped.
        s = self._streams.get(event.stream_id or 0)
        if s is None:
            return
        if s.tracer is not None and not s.interim:
            s.tracer("got_first_response_byte", self.origin, self.id, stream_id=s.id)
        s.interim += 1
        if s.interim > MAX_INTERIM_RESPONSES:  # as on HTTP/1.1: no endless 1xx
            s.error = RemoteProtocolError(too_many_interim())
            wake(s)  # (the stream's owner resets it when it sees the error)
            return
        for name, value in event.headers or ():
            if name == b":status":
                if value == b"100" and not s.continued:
                    s.continued = True
                    if s.tracer is not None:
                        s.tracer("got_100_continue", self.origin, self.id, stream_id=s.id)
                    wake(s)
                break

    def _on_stream_ended(self, event: Any) -> None:
        self._idle_frames = 0
        s = self._streams.get(event.stream_id or 0)
        if s is not None:
            s.ended = True
            wake(s)

    def _on_stream_reset(self, event: Any) -> None:
        s = self._streams.get(event.stream_id or 0)
        if s is not None:
            code = ErrorCodes(event.error_code) if event.error_code in _CODES else event.error_code
            if code == ErrorCodes.NO_ERROR and s.ended:
                # RFC 9113 section 8.1: a complete response, then RST_STREAM(NO_ERROR) asks us
                # to stop sending the request body; the response stands. (Our half is closed
                # by the reset: nothing more is sent, nor reset, on this stream.)
                s.withheld = True
                wake(s)
                return
            exc = RemoteProtocolError(f"server reset the HTTP/2 stream ({code!r})")
            if code == ErrorCodes.REFUSED_STREAM:
                exc.unprocessed = True  # RFC 9113 section 8.7: never processed
            s.error = exc
            wake(s)

    def _on_window_updated(self, event: Any) -> None:
        if event.stream_id:
            s = self._streams.get(event.stream_id)
            if s is not None and s.sending:
                wake(s)
        else:
            self._wake_senders()

    def _on_settings(self, event: Any) -> None:
        first = not self._settings_received
        self._settings_received = True
        changed = event.changed_settings
        if SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            stated = changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value
            self._max_streams = min(stated, MAX_STREAMS)
        if SettingCodes.INITIAL_WINDOW_SIZE in changed:
            self._wake_senders()
        if not first:  # (the first comes in `start()`, before the pool has the socket)
            self._owner.capacity_changed(self)

    def _on_push(self, event: Any) -> None:  # Defensive: push is disabled in our SETTINGS
        self._h2.reset_stream(event.pushed_stream_id or 0, ErrorCodes.REFUSED_STREAM)

    def _on_goaway(self, event: Any) -> None:
        self.draining = self.goaway_received = True
        last = event.last_stream_id or 0
        code = event.error_code
        for s in list(self._streams.values()):
            if s.id > last:
                exc = RemoteProtocolError(
                    f"server sent GOAWAY (last stream {last}, {code!r}) before stream {s.id}"
                )
                exc.unprocessed = True
                s.error = exc
                wake(s)
        if self._reader is None:
            return  # (in the preface: `start()` refuses the socket)
        if code != ErrorCodes.NO_ERROR:
            # A connection error (RFC 9113 section 5.4.1): the server closes the socket at
            # once, so close it now. Streams at or below `last_stream_id` without their whole
            # response fail; one that got no response byte on a reused socket is then retried
            # by the client if it is safe to replay (docs/design.md invariant 6), as for any socket
            # that died under it. (Apache answers a storm of cancellations this way.)
            self._die(RemoteProtocolError(f"server sent GOAWAY with {code!r}"))
            return
        self._owner.capacity_changed(self)

    def _wake_senders(self) -> None:
        for s in self._streams.values():
            if s.sending:
                wake(s)
