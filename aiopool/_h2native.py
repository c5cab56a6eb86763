"""The native HTTP/2 engine: a client-only connection with h2's API, as `HTTP2Connection` uses it.

Rules kept here:
- a stream's legal moves are one table (`_NEXT`, RFC 9113 section 5.1, the states a client
  sees once it has sent HEADERS); receiving is allowed in OPEN and HALF_CLOSED_LOCAL, sending
  in OPEN and HALF_CLOSED_REMOTE. A closed stream is forgotten, its way of closing kept in a
  bounded record: frames on a stream closed by a reset are ignored (section 5.1: no answer, so
  a cancellation costs one RST_STREAM, as in Go and curl); so is DATA after a clean end
  (section 6.1 makes it a stream error, on a stream already closed: h2 keeps the connection,
  Go ignores the frame; either way its flow control is credited), while HEADERS after a clean
  end is a connection error STREAM_CLOSED, as in h2;
- every error the peer causes is a `ProtocolError` raised from `receive_data`, after a GOAWAY
  naming it is queued; stream errors become `StreamReset` events for that stream only where
  h2 (the reference engine) makes them so, so that both engines decide alike;
- header blocks are validated as h2 does (section 8.2, 8.3): field names lower-case tokens,
  values free of NUL/CR/LF and surrounding whitespace, no connection-specific fields, only
  :status as pseudo-header and before every other field, none in trailers, content-length
  matched against the DATA received (section 8.1.1, none expected for HEAD, 204 and 304);
- flow control: the peer's settings start at RFC 9113's defaults (section 6.5.2); our receive
  windows are credited in batches of a quarter window, so a download costs few WINDOW_UPDATEs;
- our SETTINGS_MAX_FRAME_SIZE is 1 MiB (Go's client default): servers that honour it send
  fewer, larger DATA frames; we enforce it from the start (a peer may apply it before its ACK);
- push is disabled in our first SETTINGS; a PUSH_PROMISE is a connection error (section 8.4).
"""

from __future__ import annotations

from typing import Any

from . import _h2native_events as ev
from ._h2native_fields import check_fields, content_length
from ._h2native_frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER,
    MAX_WINDOW,
    PREFACE,
    ErrorCode,
    Flag,
    FrameType,
    ProtocolError,
    Setting,
    StreamClosedError,
    check_priority,
    check_size,
    check_stream_id,
    header_fragment,
    oversized,
    parse_goaway,
    parse_settings,
    parse_u32,
    unpad,
    write_frame,
    write_goaway,
    write_headers,
    write_settings,
    write_u32,
)
from ._h2native_hpack import HeaderDecoder, HeaderEncoder

__all__ = ("NativeConfig", "NativeConnection")

# Advertised in our first SETTINGS (Go's client: 1 MiB); tests may lower it to compare engines.
MAX_INBOUND_FRAME_SIZE = 1 << 20
# A header block's compressed bytes, and its CONTINUATION frames, are bounded: a block that
# never ends must not grow without limit (the 2024 "CONTINUATION flood", CVE-2024-27316).
MAX_BLOCK_BYTES = 256 * 1024
MAX_CONTINUATIONS = 4096
# (Empty DATA frames, PRIORITY and unknown frames carry nothing: a flood of them, CVE-2019-9518,
# is counted by the connection for every engine alike, `_http2.MAX_IDLE_FRAMES`; this engine
# reports each one as an event for that.)
# Closed streams remembered (to tell a frame after our reset from one after a clean end).
_CLOSED_MEMORY = 1024
# The peer's HPACK table size we use at most, whatever it allows (our encoder's memory).
_MAX_ENCODER_TABLE = 64 * 1024
_UNBOUNDED = 2**32 + 1  # h2's "no MAX_CONCURRENT_STREAMS stated"

# Stream states (section 5.1) and the table of moves. END_STREAM sent or received, or a reset,
# are the only moves a client makes after opening; a missing key is a move the state forbids.
OPEN, HALF_CLOSED_LOCAL, HALF_CLOSED_REMOTE, CLOSED = range(4)
SEND_END, RECV_END = range(2)
_NEXT = {
    (OPEN, SEND_END): HALF_CLOSED_LOCAL,
    (OPEN, RECV_END): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_LOCAL, RECV_END): CLOSED,
    (HALF_CLOSED_REMOTE, SEND_END): CLOSED,
}
_CAN_RECEIVE = (OPEN, HALF_CLOSED_LOCAL)
_CAN_SEND = (OPEN, HALF_CLOSED_REMOTE)
# The response's phases: awaiting its head (1xx may come first), its body, after trailers.
HEAD, BODY, TRAILERS = range(3)


class NativeConfig:
    """Accepts h2's `H2Configuration` arguments; the native engine is always client-side,
    checks what it receives and trusts what `HTTP2Connection` already validated to send."""

    def __init__(self, client_side: bool = True, **_: Any) -> None:
        if not client_side:
            raise ValueError("the native HTTP/2 engine is client-side only")


class PeerSettings:
    """The peer's settings in force (RFC 9113 section 6.5.2 defaults until it says otherwise)."""

    __slots__ = (
        "header_table_size",
        "initial_window_size",
        "max_concurrent_streams",
        "max_frame_size",
        "max_header_list_size",
    )

    def __init__(self) -> None:
        self.header_table_size = 4096
        self.initial_window_size = 65_535
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.max_concurrent_streams = _UNBOUNDED
        self.max_header_list_size: int | None = None


_SETTING_ATTRIBUTE = {
    Setting.HEADER_TABLE_SIZE: "header_table_size",
    Setting.INITIAL_WINDOW_SIZE: "initial_window_size",
    Setting.MAX_FRAME_SIZE: "max_frame_size",
    Setting.MAX_CONCURRENT_STREAMS: "max_concurrent_streams",
    Setting.MAX_HEADER_LIST_SIZE: "max_header_list_size",
}


class _Stream:
    __slots__ = (
        "expected",
        "head",
        "id",
        "phase",
        "received",
        "recv_window",
        "send_window",
        "state",
        "unacked",
    )

    def __init__(self, stream_id: int, state: int, send: int, recv: int, head: bool) -> None:
        self.id = stream_id
        self.state = state
        self.send_window = send
        self.recv_window = recv
        self.unacked = 0  # consumed but not yet credited back
        self.phase = HEAD
        self.head = head  # a HEAD request: its response has no content
        self.expected: int | None = None  # content-length
        self.received = 0


class NativeConnection:
    """A client HTTP/2 connection with the part of h2's `H2Connection` API aiopool uses.

    `receive_data` returns events (`_h2native_events`) and raises `ProtocolError` for any
    connection error; stream methods raise `StreamClosedError` for a stream that is gone."""

    def __init__(self, config: NativeConfig | None = None) -> None:
        self.encoder = HeaderEncoder()
        self.decoder = HeaderDecoder()
        self.remote_settings = PeerSettings()
        self.max_outbound_frame_size = DEFAULT_MAX_FRAME_SIZE
        self._streams: dict[int, _Stream] = {}
        self._closed: dict[int, bool] = {}  # stream id -> closed by a reset
        self._next_id = 1
        self._out = bytearray()
        self._in = bytearray()
        self._send_window = 65_535  # the connection's, granted by the peer
        self._recv_window = 65_535  # the connection's, granted by us
        self._recv_max = 65_535
        self._unacked = 0
        self._local_window = 65_535  # our SETTINGS_INITIAL_WINDOW_SIZE
        self._max_inbound = DEFAULT_MAX_FRAME_SIZE
        self._pending_settings: list[dict[int, int]] = []
        self._block: tuple[int, int, list[bytes], int] | None = None  # sid, flags, parts, count
        self._joins: list[ev.DataReceived] = []  # DATA events of this read still in parts
        self._gone = False  # we sent GOAWAY
        self._handlers = {
            FrameType.DATA: self._on_data,
            FrameType.HEADERS: self._on_headers,
            FrameType.PRIORITY: self._on_priority,
            FrameType.RST_STREAM: self._on_rst_stream,
            FrameType.SETTINGS: self._on_settings,
            FrameType.PUSH_PROMISE: self._on_push_promise,
            FrameType.PING: self._on_ping,
            FrameType.GOAWAY: self._on_goaway,
            FrameType.WINDOW_UPDATE: self._on_window_update,
            FrameType.CONTINUATION: self._on_continuation,
        }

    # Sending -----------------------------------------------------------------------------------

    def initiate_connection(self) -> None:
        """Queue the preface and our first SETTINGS (push off, our larger frame size)."""
        self._out += PREFACE
        self.update_settings(
            {Setting.ENABLE_PUSH: 0, Setting.MAX_FRAME_SIZE: MAX_INBOUND_FRAME_SIZE}
        )

    def update_settings(self, settings: dict[int, int]) -> None:
        """Queue a SETTINGS frame. Limits we lower would apply at the peer's ACK; the ones we
        raise (frame size, stream window) are honoured at once."""
        settings = {int(code): value for code, value in settings.items()}
        self._pending_settings.append(settings)
        if Setting.MAX_FRAME_SIZE in settings:
            self._max_inbound = max(self._max_inbound, settings[Setting.MAX_FRAME_SIZE])
        if Setting.INITIAL_WINDOW_SIZE in settings:
            delta = settings[Setting.INITIAL_WINDOW_SIZE] - self._local_window
            self._local_window += delta
            for s in self._streams.values():
                s.recv_window += delta
        write_settings(self._out, settings)

    def increment_flow_control_window(self, increment: int, stream_id: int | None = None) -> None:
        """Open the connection's receive window by `increment` (WINDOW_UPDATE on stream 0)."""
        self._recv_window += increment
        self._recv_max += increment
        write_u32(self._out, FrameType.WINDOW_UPDATE, 0, increment)

    def get_next_available_stream_id(self) -> int:
        """The id `send_headers` opens next. Raises `ProtocolError` once ids run out."""
        if self._next_id > MAX_WINDOW:
            raise ProtocolError("no stream ids left on this connection")
        return self._next_id

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        """Open `stream_id` with a request's HEADERS (and CONTINUATIONs). Raises `ProtocolError`
        for an id not above the last one, or once we sent GOAWAY."""
        if self._gone or stream_id < self._next_id or not stream_id & 1:
            raise ProtocolError(f"cannot open stream {stream_id}")
        self._next_id = stream_id + 2
        head = any(name == b":method" and value == b"HEAD" for name, value in headers[:4])
        s = _Stream(
            stream_id,
            HALF_CLOSED_LOCAL if end_stream else OPEN,
            self.remote_settings.initial_window_size,
            self._local_window,
            head,
        )
        self._streams[stream_id] = s
        block = self.encoder.encode(headers)
        write_headers(self._out, stream_id, block, end_stream, self.max_outbound_frame_size)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How much DATA the peer lets us send on `stream_id` now. Raises `StreamClosedError`."""
        s = self._sendable(stream_id)
        return min(s.send_window, self._send_window)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """One DATA frame. Raises `ProtocolError` beyond the window or the peer's frame size."""
        s = self._sendable(stream_id)
        size = len(data)
        if size > min(s.send_window, self._send_window) or size > self.max_outbound_frame_size:
            raise ProtocolError(f"DATA of {size} bytes exceeds the peer's window or frame size")
        s.send_window -= size
        self._send_window -= size
        write_frame(
            self._out, FrameType.DATA, Flag.END_STREAM if end_stream else 0, stream_id, data
        )
        if end_stream:
            self._move(s, SEND_END)

    def end_stream(self, stream_id: int) -> None:
        """An empty DATA frame with END_STREAM. Raises `StreamClosedError`."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: int = ErrorCode.NO_ERROR) -> None:
        """RST_STREAM. Raises `StreamClosedError` if the stream is already closed."""
        s = self._streams.get(stream_id)
        if s is None:
            raise StreamClosedError(stream_id)
        write_u32(self._out, FrameType.RST_STREAM, stream_id, int(error_code))
        self._close(s, reset=True)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        """Credit consumed DATA back to the peer, in batches of a quarter window."""
        self._unacked += acknowledged_size
        if self._unacked >= self._recv_max >> 2:
            write_u32(self._out, FrameType.WINDOW_UPDATE, 0, self._unacked)
            self._recv_window += self._unacked
            self._unacked = 0
        s = self._streams.get(stream_id)
        if s is not None and s.state in _CAN_RECEIVE:
            s.unacked += acknowledged_size
            if s.unacked >= self._local_window >> 2:
                write_u32(self._out, FrameType.WINDOW_UPDATE, stream_id, s.unacked)
                s.recv_window += s.unacked
                s.unacked = 0

    def ping(self, opaque_data: bytes) -> None:
        write_frame(self._out, FrameType.PING, 0, 0, opaque_data)

    def close_connection(self, error_code: int = ErrorCode.NO_ERROR) -> None:
        """Queue GOAWAY; no stream may be opened afterwards."""
        self._gone = True
        write_goaway(self._out, 0, int(error_code))

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    def _sendable(self, stream_id: int) -> _Stream:
        s = self._streams.get(stream_id)
        if s is None or s.state not in _CAN_SEND:
            raise StreamClosedError(stream_id)
        return s

    def _move(self, s: _Stream, move: int) -> None:
        state = _NEXT.get((s.state, move))
        if state is None:  # Defensive: callers check the state first
            raise ProtocolError(f"stream {s.id}: move {move} not allowed in state {s.state}")
        if state == CLOSED:
            self._close(s, reset=False)
        else:
            s.state = state

    def _close(self, s: _Stream, reset: bool) -> None:
        s.state = CLOSED
        del self._streams[s.id]
        closed = self._closed
        closed[s.id] = reset
        if len(closed) > _CLOSED_MEMORY:
            del closed[next(iter(closed))]

    # Receiving ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Any]:
        """Parse what arrived; return its events. Raises `ProtocolError` for a connection
        error (a GOAWAY naming it is queued first)."""
        events: list[Any] = []
        view = memoryview(data)
        try:
            if self._in:
                view = self._finish_partial(view, events)
            used = self._parse(view, events)
            if self._joins:
                self._join_data()
        except ProtocolError as exc:
            self._joins.clear()
            self._gone = True
            # (last_stream_id names the peer's streams we processed: a server opens none here.)
            write_goaway(self._out, 0, exc.error_code)
            raise
        if used < len(view):  # a partial frame: kept (one frame at most) for the next read
            self._in = bytearray(view[used:])
        return events

    def _finish_partial(self, view: memoryview, events: list[Any]) -> memoryview:
        """Complete the frame a previous read left partial with the start of `view`, handle
        it, and return the rest of `view`. (Only that frame is copied: joining the whole read
        to the partial frame copied every byte of a download once more.)"""
        partial = self._in
        if len(partial) < 9:
            take = min(9 - len(partial), len(view))
            partial += view[:take]
            view = view[take:]
            if len(partial) < 9:
                return view
        size = 9 + ((partial[0] << 16) | (partial[1] << 8) | partial[2])
        need = size - len(partial)
        if need > len(view):
            self._parse(memoryview(partial), events)  # (refuses an oversized frame now)
            partial += view
            return view[len(view) :]
        frame = memoryview(bytes(partial) + view[:need])
        self._in = bytearray()
        self._parse(frame, events)
        return view[need:]

    def _parse(self, data: memoryview, events: list[Any]) -> int:
        """Handle the whole frames at the start of `data`; return the bytes they took.

        The checks of `split_frames`, inline: DATA, the bulk of what arrives, goes straight
        to its handler, without a tuple or a lookup per frame."""
        end = len(data)
        pos = 0
        unpack = FRAME_HEADER.unpack_from
        max_size = self._max_inbound
        handlers = self._handlers
        on_data = self._on_data
        while end - pos >= 9:
            high, low, ftype, flags, sid = unpack(data, pos)
            length = (high << 16) | low
            if length > max_size:
                raise oversized(length, max_size)
            sid &= 0x7FFFFFFF  # section 4.1: the reserved bit is ignored on receipt
            start = pos + 9
            if ftype == FrameType.DATA and sid:
                if end - start < length:
                    break
                pos = start + length
                if self._block is not None:
                    raise ProtocolError("a header block was interrupted (RFC 9113 section 6.10)")
                on_data(flags, sid, data[start:pos], events)
                if not flags and length:
                    pos = self._data_run(data, pos, sid, events)
                continue
            check_stream_id(ftype, sid)
            if end - start < length:
                break
            pos = start + length
            check_size(ftype, length)
            if self._block is not None and ftype != FrameType.CONTINUATION:
                raise ProtocolError("a header block was interrupted (RFC 9113 section 6.10)")
            handler = handlers.get(ftype)
            if handler is not None:
                handler(flags, sid, data[start:pos], events)
            else:  # an extension frame we do not know: ignored (RFC 9113 section 5.5)
                events.append(ev.UnknownFrameReceived(ftype))
        return pos

    def _data_run(self, data: memoryview, pos: int, sid: int, events: list[Any]) -> int:
        """After a DATA frame of `sid` without flags: take the frames that follow it in `data`
        while they are whole DATA frames of the same stream, without flags and not empty, as
        one (their windows and content-length checked once for all); return where the run
        ended. Anything else (padding, END_STREAM, an empty frame, another stream, a partial
        or oversized frame) is left to `_parse`, which checks it as usual."""
        event = events[-1] if events else None
        if type(event) is not ev.DataReceived or event.parts is None or event.stream_id != sid:
            return pos  # (the frame was ignored: a closed stream)
        parts = event.parts
        unpack = FRAME_HEADER.unpack_from
        max_size = self._max_inbound
        end = len(data)
        run = 0
        while end - pos >= 9:
            high, low, ftype, flags, other = unpack(data, pos)
            length = (high << 16) | low
            start = pos + 9
            if (
                ftype
                or flags
                or not length
                or other & 0x7FFFFFFF != sid
                or length > max_size
                or end - start < length
            ):
                break
            pos = start + length
            parts.append(data[start:pos])
            run += length
        if run:
            self._recv_window -= run
            if self._recv_window < 0:
                raise ProtocolError(
                    "DATA beyond the connection window", ErrorCode.FLOW_CONTROL_ERROR
                )
            s = self._streams[sid]
            s.recv_window -= run
            if s.recv_window < 0:
                raise ProtocolError("DATA beyond the stream window", ErrorCode.FLOW_CONTROL_ERROR)
            s.received += run
            if s.expected is not None and s.received > s.expected:
                raise ProtocolError(
                    f"stream {sid}: {s.received} bytes of content against content-length "
                    f"{s.expected}"
                )
            event.flow_controlled_length += run
        return pos

    def _join_data(self) -> None:
        """Give each DATA event of this read its content as one bytes object."""
        for event in self._joins:
            parts = event.parts
            assert parts is not None
            event.data = parts[0].tobytes() if len(parts) == 1 else b"".join(parts)
            event.parts = None
        self._joins.clear()

    def _stream_for(self, sid: int, what: str) -> _Stream | None:
        """The open stream `sid`, or None if it closed and `what` may be ignored on it.

        Raises `ProtocolError` for a stream never opened (section 5.1, "idle": even ids are the
        server's, which push being off leaves it none of) or for HEADERS after a clean end."""
        s = self._streams.get(sid)
        if s is not None:
            return s
        if not sid & 1 or sid >= self._next_id:
            raise ProtocolError(f"{what} on stream {sid}, which was never opened")
        # (DATA after a clean end falls through, ignored: section 6.1 names a stream error for
        # it, and the stream is closed already; a connection error would fail the response it
        # followed and every other stream, where h2 and Go fail none.)
        if self._closed.get(sid) is False and what == "HEADERS":
            raise ProtocolError(f"{what} on closed stream {sid}", ErrorCode.STREAM_CLOSED)
        return None

    def _reset_closed(self, s: _Stream, events: list[Any]) -> None:
        """DATA or HEADERS after the peer's END_STREAM: a stream error STREAM_CLOSED."""
        write_u32(self._out, FrameType.RST_STREAM, s.id, ErrorCode.STREAM_CLOSED)
        self._close(s, reset=True)
        events.append(ev.StreamReset(s.id, ErrorCode.STREAM_CLOSED, remote_reset=False))

    def _on_data(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        flow = len(payload)  # (padding included: section 6.9.1)
        self._recv_window -= flow
        if self._recv_window < 0:
            raise ProtocolError("DATA beyond the connection window", ErrorCode.FLOW_CONTROL_ERROR)
        # (The common case inline: an unpadded frame on an open stream.)
        data = unpad(flags, payload) if flags & Flag.PADDED else payload
        end = flags & Flag.END_STREAM
        s = self._streams.get(sid) or self._stream_for(sid, "DATA")
        if s is None or s.state not in _CAN_RECEIVE:
            if flow:  # nobody reads it: the connection window is credited at once
                self.acknowledge_received_data(flow, 0)
            elif s is None and not end:
                # An empty frame on a closed stream carries nothing: reported, so that the
                # connection counts it with the others (`_http2.MAX_IDLE_FRAMES`). (Frames with
                # content are what was in flight when we reset: a download's worth is normal.)
                events.append(ev.DataReceived(sid, b"", 0))
            if s is not None:
                self._reset_closed(s, events)
            return
        if s.phase != BODY:
            raise ProtocolError(f"DATA on stream {sid} before its response head")
        s.recv_window -= flow
        if s.recv_window < 0:
            raise ProtocolError("DATA beyond the stream window", ErrorCode.FLOW_CONTROL_ERROR)
        size = len(data)
        s.received += size
        if s.expected is not None and (
            s.received > s.expected or (end and s.received != s.expected)
        ):
            raise ProtocolError(
                f"stream {sid}: {s.received} bytes of content against content-length {s.expected}"
            )
        last = events[-1] if events else None
        if (
            size
            and type(last) is ev.DataReceived
            and last.stream_id == sid
            and last.parts is not None
        ):
            # The next frame of the same stream in this read: one event for both (downloads
            # arrive as 8-16 KiB frames, dozens per read), joined once (`_join_data`).
            event = last
            event.flow_controlled_length += flow
            last.parts.append(data)
        elif size:
            event = ev.DataReceived(sid, b"", flow)
            event.parts = [data]
            events.append(event)
            self._joins.append(event)
        else:  # (an empty frame stays an event of its own: the connection counts those)
            event = ev.DataReceived(sid, b"", flow)
            events.append(event)
        if end:
            event.stream_ended = ended = ev.StreamEnded(sid)
            events.append(ended)
            self._move(s, RECV_END)

    def _on_headers(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        fragment = header_fragment(flags, payload, sid)
        if flags & Flag.END_HEADERS:
            self._header_block(sid, flags, fragment, events)
        else:
            self._block = (sid, flags, [bytes(fragment)], 0)

    def _on_continuation(
        self, flags: int, sid: int, payload: memoryview, events: list[Any]
    ) -> None:
        block = self._block
        if block is None or block[0] != sid:
            raise ProtocolError(f"CONTINUATION on stream {sid} without a header block before it")
        _, first_flags, parts, count = block
        parts.append(bytes(payload))
        if count + 1 > MAX_CONTINUATIONS or sum(map(len, parts)) > MAX_BLOCK_BYTES:
            raise ProtocolError("a header block too long", ErrorCode.ENHANCE_YOUR_CALM)
        if flags & Flag.END_HEADERS:
            self._block = None
            self._header_block(sid, first_flags, memoryview(b"".join(parts)), events)
        else:
            self._block = (sid, first_flags, parts, count + 1)

    def _header_block(self, sid: int, flags: int, block: memoryview, events: list[Any]) -> None:
        s = self._stream_for(sid, "HEADERS")
        # (Decoded whatever the stream: the HPACK table is the connection's, section 4.3.)
        headers = self.decoder.decode(block)
        if s is None:
            return
        if s.state not in _CAN_RECEIVE:
            self._reset_closed(s, events)
            return
        end = flags & Flag.END_STREAM
        if s.phase == HEAD:
            status = check_fields(headers, response=True)
            if status[:1] == b"1":
                if end:
                    raise ProtocolError("END_STREAM on an informational response")
                events.append(ev.InformationalResponseReceived(sid, headers))
                return
            s.phase = BODY
            if s.head or status in (b"204", b"304"):
                s.expected = 0 if s.head else None
            else:
                s.expected = content_length(headers)
            event: ev.ResponseReceived | ev.TrailersReceived = ev.ResponseReceived(sid, headers)
        else:
            if not end:
                raise ProtocolError("trailers without END_STREAM")
            check_fields(headers, response=False)
            s.phase = TRAILERS
            event = ev.TrailersReceived(sid, headers)
        events.append(event)
        if end:
            if s.expected and s.received != s.expected:
                raise ProtocolError(f"stream {sid} ended short of its content-length")
            event.stream_ended = ended = ev.StreamEnded(sid)
            events.append(ended)
            self._move(s, RECV_END)

    def _on_priority(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        check_priority(payload, sid)  # and otherwise ignored (section 5.3.2), but reported: a
        events.append(ev.PriorityUpdated(sid))  # flood of them is counted by the connection

    def _on_rst_stream(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        # Section 6.4 makes RST_STREAM on an idle stream a connection error; h2 (the reference)
        # ignores it, as we do: ending every stream for a frame that changes nothing helps no one.
        s = self._streams.get(sid)
        if s is not None:
            self._close(s, reset=True)
            events.append(ev.StreamReset(sid, parse_u32(payload)))

    def _on_settings(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        pairs = parse_settings(flags, payload)
        if flags & Flag.ACK:
            if self._pending_settings:
                self._pending_settings.pop(0)
            events.append(ev.SettingsAcknowledged())
            return
        peer = self.remote_settings
        changed: dict[int, ev.ChangedSetting] = {}
        for code, value in pairs:
            name = _SETTING_ATTRIBUTE.get(code)
            if name is None:
                continue  # ENABLE_PUSH (a server's means nothing) and unknown codes (6.5.2)
            old = getattr(peer, name)
            if code == Setting.INITIAL_WINDOW_SIZE:
                delta = value - peer.initial_window_size
                for s in self._streams.values():
                    s.send_window += delta
                    if s.send_window > MAX_WINDOW:
                        raise ProtocolError(
                            "a stream window above 2^31-1", ErrorCode.FLOW_CONTROL_ERROR
                        )
            elif code == Setting.MAX_FRAME_SIZE:
                self.max_outbound_frame_size = value
            elif code == Setting.HEADER_TABLE_SIZE:
                self.encoder.header_table_size = min(value, _MAX_ENCODER_TABLE)
            setattr(peer, name, value)
            changed[code] = ev.ChangedSetting(code, old, value)
        write_frame(self._out, FrameType.SETTINGS, Flag.ACK, 0, b"")
        events.append(ev.RemoteSettingsChanged(changed))

    def _on_push_promise(
        self, flags: int, sid: int, payload: memoryview, events: list[Any]
    ) -> None:
        raise ProtocolError("PUSH_PROMISE although push is disabled (RFC 9113 section 8.4)")

    def _on_ping(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        if flags & Flag.ACK:
            events.append(ev.PingAckReceived(bytes(payload)))
        else:
            write_frame(self._out, FrameType.PING, Flag.ACK, 0, bytes(payload))
            events.append(ev.PingReceived(bytes(payload)))

    def _on_goaway(self, flags: int, sid: int, payload: memoryview, events: list[Any]) -> None:
        last, code, debug = parse_goaway(payload)
        events.append(ev.ConnectionTerminated(code, last, debug))

    def _on_window_update(
        self, flags: int, sid: int, payload: memoryview, events: list[Any]
    ) -> None:
        increment = parse_u32(payload) & 0x7FFFFFFF
        if not increment:
            # Section 6.9: a stream error on a stream; a connection error here, as in h2 (the
            # reference engine), so that both end such a peer's connection alike.
            raise ProtocolError("WINDOW_UPDATE of 0")
        if not sid:
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolError("connection window above 2^31-1", ErrorCode.FLOW_CONTROL_ERROR)
            events.append(ev.WindowUpdated(0, increment))
            return
        s = self._stream_for(sid, "WINDOW_UPDATE")
        if s is None:
            return
        s.send_window += increment
        if s.send_window > MAX_WINDOW:  # a stream error (section 6.9.1)
            write_u32(self._out, FrameType.RST_STREAM, sid, ErrorCode.FLOW_CONTROL_ERROR)
            self._close(s, reset=True)
            events.append(ev.StreamReset(sid, ErrorCode.FLOW_CONTROL_ERROR, remote_reset=False))
            return
        events.append(ev.WindowUpdated(sid, increment))
