"""The native HTTP/2 engine's frame layer: split, check and build frames (RFC 9113 section 4, 6).

Rules kept here:
- frames are cut from one receive buffer without copying: each comes out as
  (type, flags, stream id, payload memoryview), and only DATA payloads handed to the
  application are copied (once per read and stream, to `bytes`);
- every field RFC 9113 constrains is checked before a frame reaches the connection: the length
  against SETTINGS_MAX_FRAME_SIZE and against each type's fixed size, the stream id against
  the types that need one and those that must not have one, the reserved bit (ignored on
  receipt, section 4.1), padding (section 6.1: a pad length not shorter than the payload is a
  PROTOCOL_ERROR), and the SETTINGS values of section 6.5.2 (the length against
  SETTINGS_MAX_FRAME_SIZE and the stream id from the 9-byte header, before the payload
  arrives, so a peer that never sends it is refused at once). What breaks a rule raises
  `ProtocolError` with the error code the RFC names; all such errors end the connection;
- outgoing frames are appended to one buffer that the connection hands to the socket at once.
"""

from __future__ import annotations

import struct

__all__ = (
    "DEFAULT_MAX_FRAME_SIZE",
    "PREFACE",
    "ErrorCode",
    "FrameType",
    "ProtocolError",
    "StreamClosedError",
    "check_size",
    "check_stream_id",
    "oversized",
    "split_frames",
)

# RFC 9113 section 3.4: the client's connection preface.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_MAX_FRAME_SIZE = 16_384  # section 4.2 / 6.5.2
MAX_FRAME_SIZE_LIMIT = 2**24 - 1
MAX_WINDOW = 2**31 - 1  # section 6.9.1

FRAME_HEADER = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, R + stream id
_U32 = struct.Struct(">I")
_SETTING = struct.Struct(">HI")
_GOAWAY = struct.Struct(">II")


class FrameType:
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class Flag:
    END_STREAM = 0x1
    ACK = 0x1
    END_HEADERS = 0x4
    PADDED = 0x8
    PRIORITY = 0x20


class ErrorCode:
    """RFC 9113 section 7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    ENHANCE_YOUR_CALM = 0xB


class Setting:
    """RFC 9113 section 6.5.2."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


class ProtocolError(Exception):
    """The peer broke RFC 9113 (or we were asked to do what it forbids); `error_code` is the
    code a GOAWAY names for it."""

    def __init__(self, message: str, error_code: int = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamClosedError(ProtocolError):
    """An operation on a stream that is closed (or was never opened)."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed", ErrorCode.STREAM_CLOSED)
        self.stream_id = stream_id


# Frames whose stream id must be 0 (connection frames) and those that must not be 0.
_CONNECTION_ONLY = frozenset({FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY})
_STREAM_ONLY = frozenset(
    {
        FrameType.DATA,
        FrameType.HEADERS,
        FrameType.PRIORITY,
        FrameType.RST_STREAM,
        FrameType.PUSH_PROMISE,
        FrameType.CONTINUATION,
    }
)
# Fixed payload sizes (sections 6.3, 6.4, 6.7, 6.9); a wrong one is a FRAME_SIZE_ERROR.
_FIXED_SIZE = {
    FrameType.PRIORITY: 5,
    FrameType.RST_STREAM: 4,
    FrameType.PING: 8,
    FrameType.WINDOW_UPDATE: 4,
}

Frame = tuple[int, int, int, memoryview]


def split_frames(data: memoryview, max_size: int) -> tuple[list[Frame], int]:
    """The whole frames at the start of `data` and how many bytes they took.

    Each frame's generic fields are checked here; a partial frame at the end is left for the
    next call. Raises `ProtocolError` (FRAME_SIZE_ERROR or PROTOCOL_ERROR). (The connection
    parses inline, with the same checks, `NativeConnection._parse`.)
    """
    frames: list[Frame] = []
    end = len(data)
    pos = 0
    unpack = FRAME_HEADER.unpack_from
    while end - pos >= 9:
        high, low, ftype, flags, sid = unpack(data, pos)
        length = (high << 16) | low
        if length > max_size:
            raise oversized(length, max_size)
        sid &= 0x7FFFFFFF  # section 4.1: the reserved bit is ignored on receipt
        check_stream_id(ftype, sid)
        if end - pos - 9 < length:
            break
        check_size(ftype, length)
        start = pos + 9
        pos = start + length
        frames.append((ftype, flags, sid, data[start:pos]))
    return frames, pos


def oversized(length: int, max_size: int) -> ProtocolError:
    """Section 4.2: a frame larger than our SETTINGS_MAX_FRAME_SIZE (known from its header)."""
    return ProtocolError(
        f"frame of {length} bytes exceeds SETTINGS_MAX_FRAME_SIZE {max_size}",
        ErrorCode.FRAME_SIZE_ERROR,
    )


def check_stream_id(ftype: int, sid: int) -> None:
    """A frame's stream id against its type (section 6: some need one, some must not have
    one), checked from the 9-byte header, as h2 does, before the payload is in: a peer that
    never sends it gets its error now, not at the socket's end or a timeout. Unknown types
    are not checked (section 5.5: ignored; the connection checks sequencing).
    Raises `ProtocolError`."""
    if ftype > FrameType.CONTINUATION:
        return
    if sid == 0:
        if ftype in _STREAM_ONLY:
            raise ProtocolError(f"frame type {ftype:#x} on stream 0")
    elif ftype in _CONNECTION_ONLY:
        raise ProtocolError(f"frame type {ftype:#x} on stream {sid}")


def check_size(ftype: int, length: int) -> None:
    """The fixed payload sizes (sections 6.3, 6.4, 6.7, 6.9), checked once the payload is in
    (as h2 does). Raises `ProtocolError` (FRAME_SIZE_ERROR)."""
    fixed = _FIXED_SIZE.get(ftype)
    if fixed is not None and length != fixed:
        raise ProtocolError(
            f"frame type {ftype:#x} of {length} bytes (must be {fixed})",
            ErrorCode.FRAME_SIZE_ERROR,
        )


def unpad(flags: int, payload: memoryview) -> memoryview:
    """The payload of a DATA or HEADERS frame without its padding (section 6.1, 6.2).

    Raises `ProtocolError` if the pad length is not shorter than the payload."""
    if not flags & Flag.PADDED:
        return payload
    if not payload:
        raise ProtocolError("padded frame without a pad length", ErrorCode.FRAME_SIZE_ERROR)
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError("padding as long as the frame payload")
    return payload[1 : len(payload) - pad]


def header_fragment(flags: int, payload: memoryview, stream_id: int) -> memoryview:
    """A HEADERS frame's field block fragment: padding and priority fields removed.

    Raises `ProtocolError` for a padding error, a truncated priority, or a stream that depends
    on itself (section 5.3.1)."""
    payload = unpad(flags, payload)
    if flags & Flag.PRIORITY:
        if len(payload) < 5:
            raise ProtocolError("HEADERS too short for its priority", ErrorCode.FRAME_SIZE_ERROR)
        if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            raise ProtocolError(f"stream {stream_id} depends on itself")
        payload = payload[5:]
    return payload


def check_priority(payload: memoryview, stream_id: int) -> None:
    """PRIORITY is deprecated and ignored (RFC 9113 section 5.3.2), but still checked."""
    if _U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
        raise ProtocolError(f"stream {stream_id} depends on itself")


def parse_settings(flags: int, payload: memoryview) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a SETTINGS frame, values checked (section 6.5).

    Raises `ProtocolError`: FRAME_SIZE_ERROR for a bad length (or an ACK with a payload),
    FLOW_CONTROL_ERROR for INITIAL_WINDOW_SIZE above 2^31-1, PROTOCOL_ERROR otherwise."""
    if flags & Flag.ACK:
        if payload:
            raise ProtocolError("SETTINGS ACK with a payload", ErrorCode.FRAME_SIZE_ERROR)
        return []
    if len(payload) % 6:
        raise ProtocolError("SETTINGS length not a multiple of 6", ErrorCode.FRAME_SIZE_ERROR)
    pairs = [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]
    for code, value in pairs:
        if code == Setting.ENABLE_PUSH and value > 1:
            raise ProtocolError(f"SETTINGS_ENABLE_PUSH of {value}")
        if code == Setting.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise ProtocolError(
                f"SETTINGS_INITIAL_WINDOW_SIZE of {value}", ErrorCode.FLOW_CONTROL_ERROR
            )
        if code == Setting.MAX_FRAME_SIZE and not (
            DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT
        ):
            raise ProtocolError(f"SETTINGS_MAX_FRAME_SIZE of {value}")
    return pairs


def parse_u32(payload: memoryview) -> int:
    """RST_STREAM's error code, or WINDOW_UPDATE's increment (reserved bit cleared)."""
    return int(_U32.unpack_from(payload)[0])


def parse_goaway(payload: memoryview) -> tuple[int, int, bytes]:
    """GOAWAY's last stream id, error code and debug data. Raises `ProtocolError`."""
    if len(payload) < 8:
        raise ProtocolError("GOAWAY shorter than 8 bytes", ErrorCode.FRAME_SIZE_ERROR)
    last, code = _GOAWAY.unpack_from(payload)
    return last & 0x7FFFFFFF, code, bytes(payload[8:])


# Serialising --------------------------------------------------------------------------------


def write_frame(out: bytearray, ftype: int, flags: int, stream_id: int, payload: bytes) -> None:
    """Append one frame to `out` (the caller keeps `payload` within the peer's frame size)."""
    length = len(payload)
    out += FRAME_HEADER.pack(length >> 16, length & 0xFFFF, ftype, flags, stream_id)
    if length:
        out += payload


def write_headers(
    out: bytearray, stream_id: int, block: bytes, end_stream: bool, max_size: int
) -> None:
    """A field block as HEADERS and as many CONTINUATIONs as `max_size` needs (section 6.10:
    nothing may come between them, which holds since they are appended together)."""
    first = block[:max_size]
    rest = block[max_size:]
    flags = Flag.END_STREAM if end_stream else 0
    write_frame(out, FrameType.HEADERS, flags | (0 if rest else Flag.END_HEADERS), stream_id, first)
    while rest:
        piece, rest = rest[:max_size], rest[max_size:]
        flag = 0 if rest else Flag.END_HEADERS
        write_frame(out, FrameType.CONTINUATION, flag, stream_id, piece)


def write_settings(out: bytearray, settings: dict[int, int]) -> None:
    write_frame(
        out,
        FrameType.SETTINGS,
        0,
        0,
        b"".join(_SETTING.pack(code, value) for code, value in settings.items()),
    )


def write_u32(out: bytearray, ftype: int, stream_id: int, value: int) -> None:
    """RST_STREAM (an error code) or WINDOW_UPDATE (an increment)."""
    write_frame(out, ftype, 0, stream_id, _U32.pack(value))


def write_goaway(out: bytearray, last_stream_id: int, error_code: int) -> None:
    write_frame(out, FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, error_code))
