"""Strategies for HTTP/2 answers: frame sequences, well-formed, mutated, and random bytes.

A case is a list of `Frame`s addressed to "the request's stream" (resolved when the server
knows the stream id), rendered with hyperframe, header blocks encoded by hpack. A well-formed
answer is HEADERS (maybe split into CONTINUATIONs, maybe after interim 1xx HEADERS), DATA frames
(maybe padded), maybe trailers, with harmless frames interleaved (PING, WINDOW_UPDATE, PRIORITY,
SETTINGS, unknown extension types, which RFC 9113 section 5.5 says to ignore). Mutations then
rewrite frame types, flags, lengths and stream ids, drop, duplicate or oversize frames, swap
header blocks for bad HPACK, and edit the rendered bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    ExtensionFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hyperframe.frame import Frame as HFrame
from hypothesis import strategies as st

from .fields import RESERVED_FIELDS, TOKEN_LOWER, header_values
from .mutations import Mutation, apply, mutations, split, splits

__all__ = ("Expected", "Frame", "H2Case", "mutated_cases", "random_cases", "valid_cases")

OWN = -1  # stream id placeholder: the stream the request went out on
_MAX_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE the client keeps (RFC 9113 default)

header_names = st.text(TOKEN_LOWER, min_size=1, max_size=12).filter(
    lambda n: n not in RESERVED_FIELDS
)
headers = st.lists(st.tuples(header_names, header_values), max_size=6).map(tuple)


@dataclass(frozen=True)
class Frame:
    """One frame to send (or, for a header block cut in `cut` pieces, HEADERS and its
    CONTINUATIONs). `block` is HPACK-encoded at render time by the one encoder of the answer,
    so the client's dynamic table agrees with it; `raw`, when set, is the payload instead.
    `stream` is a stream id, or OWN."""

    kind: str
    stream: int = OWN
    flags: frozenset[str] = frozenset()
    block: tuple[tuple[str, str], ...] = ()
    data: bytes = b""
    pad: int | None = None
    number: int = 0  # window increment, RST_STREAM error code, GOAWAY last stream id, type...
    code: int = 0  # GOAWAY error code; the flags byte of an extension-path frame
    raw: bytes | None = None
    cut: int = 1

    def render(self, own: int, encoder: hpack.Encoder) -> list[bytes]:
        sid = own if self.stream == OWN else self.stream
        payload = self.data
        if self.raw is not None:
            payload = self.raw
        elif self.kind in ("HEADERS", "CONTINUATION"):
            payload = encoder.encode(list(self.block))
        if self.kind == "HEADERS" and self.cut > 1 and len(payload) > 1:
            frames = self._cut(payload)
        else:
            frames = [self._frame(payload)]
        # hyperframe refuses to build a frame on the wrong stream; the stream id is patched in
        # afterwards, so the fuzzer can send exactly that.
        out = []
        for frame in frames:
            data = bytes(frame.serialize())
            out.append(data[:5] + (sid & 0xFFFFFFFF).to_bytes(4, "big") + data[9:])
        return out

    def _frame(self, payload: bytes) -> HFrame:
        flags = set(self.flags)
        frame: HFrame
        if self.kind == "HEADERS":
            frame = HeadersFrame(1, payload, flags=flags)
        elif self.kind == "CONTINUATION":
            frame = ContinuationFrame(1, payload, flags=flags)
        elif self.kind == "DATA":
            frame = DataFrame(1, payload, flags=flags)
        elif self.kind == "PING":
            frame = PingFrame(0, (payload + bytes(8))[:8], flags=flags)
        elif self.kind == "WINDOW_UPDATE":
            frame = WindowUpdateFrame(0, self.number)
        elif self.kind == "PRIORITY":
            frame = PriorityFrame(1, depends_on=0, stream_weight=15)
        elif self.kind == "SETTINGS":
            frame = SettingsFrame(0, settings={3: 100, 4: 65_535}, flags=flags)
        elif self.kind == "RST_STREAM":
            frame = RstStreamFrame(1, self.number)
        elif self.kind == "GOAWAY":
            frame = GoAwayFrame(0, last_stream_id=self.number, error_code=self.code)
        else:  # an extension frame type (RFC 9113 section 5.5: ignored)
            frame = ExtensionFrame(self.number or 0x20, 0, flag_byte=self.code, body=payload)
            # hyperframe's ExtensionFrame.serialize() writes `body_len`, which only parsing
            # sets: without this the length field says 0 and the body reads as a next frame.
            frame.body_len = len(payload)
        if self.pad is not None and isinstance(frame, DataFrame | HeadersFrame):
            frame.flags.add("PADDED")
            frame.pad_length = self.pad
        return frame

    def _cut(self, block: bytes) -> list[HFrame]:
        step = max(1, -(-len(block) // self.cut))
        pieces = [block[i : i + step] for i in range(0, len(block), step)]
        end_headers = "END_HEADERS" in self.flags
        frames: list[HFrame] = [HeadersFrame(1, pieces[0], flags=set(self.flags) - {"END_HEADERS"})]
        for i, piece in enumerate(pieces[1:], start=2):
            last = i == len(pieces) and end_headers
            frames.append(ContinuationFrame(1, piece, flags={"END_HEADERS"} if last else set()))
        return frames


@dataclass(frozen=True)
class Expected:
    """What the client must make of an unmutated answer."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class FrameEdit:
    """A frame-level mutation of the rendered frame list (index modulo its length)."""

    kind: str  # "type", "flags", "length", "stream", "drop", "duplicate", "swap", "oversize"
    index: int
    value: int = 0

    def __call__(self, frames: list[bytes]) -> list[bytes]:
        if not frames:
            return frames
        i = self.index % len(frames)
        frame = frames[i]
        out = list(frames)
        if self.kind == "type":
            out[i] = frame[:3] + bytes([self.value & 0xFF]) + frame[4:]
        elif self.kind == "flags":
            out[i] = frame[:4] + bytes([self.value & 0xFF]) + frame[5:]
        elif self.kind == "length":
            out[i] = struct.pack(">I", self.value & 0xFFFFFF)[1:] + frame[3:]
        elif self.kind == "stream":
            out[i] = frame[:5] + struct.pack(">I", self.value & 0xFFFFFFFF) + frame[9:]
        elif self.kind == "drop":
            del out[i]
        elif self.kind == "duplicate":
            out.insert(i, frame)
        elif self.kind == "swap":
            j = self.value % len(frames)
            out[i], out[j] = out[j], out[i]
        elif self.kind == "oversize":  # more payload than SETTINGS_MAX_FRAME_SIZE allows
            body = frame[9:] + bytes(_MAX_FRAME + 1 + self.value % 64)
            out[i] = struct.pack(">I", len(body))[1:] + frame[3:9] + body
        else:
            raise AssertionError(f"unknown frame edit {self.kind!r}")
        return out


@dataclass(frozen=True)
class H2Case:
    """What the server answers to the request's stream, and how the request reads it."""

    frames: tuple[Frame, ...]
    edits: tuple[FrameEdit, ...] = ()
    byte_edits: tuple[Mutation, ...] = ()
    raw: bytes | None = None  # random bytes instead of frames
    points: tuple[int, ...] = ()
    keep_open: bool = False  # wait for more streams indefinitely (else linger, then close)
    expect: Expected | None = None
    stream: bool = False  # read one chunk through client.stream(), then leave the block
    concurrent: bool = False  # another stream is open on the socket while the answer arrives
    body: bytes = b""  # a request body to upload (POST) while the answer arrives
    label: str = field(default="", compare=False)

    def chunks(self, own: int) -> list[bytes]:
        """The answer for a request on stream `own`, cut into writes."""
        if self.raw is not None:
            data = self.raw
        else:
            encoder = hpack.Encoder()
            rendered = [piece for frame in self.frames for piece in frame.render(own, encoder)]
            for edit in self.edits:
                rendered = edit(rendered)
            data = apply(b"".join(rendered), self.byte_edits)
        return split(data, self.points)


_benign = st.one_of(
    st.builds(Frame, st.just("PING"), st.just(0), data=st.binary(min_size=8, max_size=8)),
    st.builds(
        Frame, st.just("WINDOW_UPDATE"), st.sampled_from([0, OWN]), number=st.integers(1, 1 << 20)
    ),
    st.builds(Frame, st.just("PRIORITY"), st.just(OWN)),
    st.builds(Frame, st.just("SETTINGS"), st.just(0)),
    st.builds(
        Frame,
        st.just("EXTENSION"),
        st.sampled_from([0, OWN]),
        data=st.binary(max_size=20),
        # (0x20 and up: h2 parses 0x0A, ALTSVC, and refuses an empty one)
        number=st.integers(0x20, 0xFF),
    ),
)


def _data_frames(body: bytes, sizes: list[int], pads: list[int | None], end: bool) -> list[Frame]:
    pieces: list[bytes] = []
    offset = 0
    for size in sizes:
        if offset >= len(body):
            break
        pieces.append(body[offset : offset + size])
        offset += size
    if offset < len(body):
        pieces.append(body[offset:])
    if not pieces and end:
        pieces.append(b"")
    frames = []
    for i, piece in enumerate(pieces):
        last = end and i == len(pieces) - 1
        frames.append(
            Frame(
                "DATA",
                flags=frozenset({"END_STREAM"}) if last else frozenset(),
                data=piece,
                pad=pads[i % len(pads)] if pads else None,
            )
        )
    return frames


@st.composite
def valid_sequences(draw: st.DrawFn) -> tuple[tuple[Frame, ...], Expected]:
    status = draw(st.integers(200, 599))
    fields = draw(headers)
    body = draw(st.binary(max_size=3000))
    frames: list[Frame] = [
        Frame("HEADERS", flags=frozenset({"END_HEADERS"}), block=((":status", str(interim)),))
        for interim in draw(st.lists(st.sampled_from([100, 103]), max_size=2))
    ]
    trailers = draw(st.one_of(st.none(), headers))
    head_ends = not body and trailers is None and draw(st.booleans())
    frames.append(
        Frame(
            "HEADERS",
            flags=frozenset({"END_HEADERS", "END_STREAM"} if head_ends else {"END_HEADERS"}),
            block=((":status", str(status)), *fields),
            cut=draw(st.integers(1, 3)),
        )
    )
    if not head_ends:
        sizes = draw(st.lists(st.integers(1, _MAX_FRAME - 256), max_size=4))
        pads = draw(st.lists(st.one_of(st.none(), st.integers(0, 20)), max_size=3))
        frames += _data_frames(body, sizes, pads, end=trailers is None)
        if draw(st.booleans()) and trailers is None and frames[-1].data:
            # The stream may also end on an empty DATA frame after the last one with data.
            frames[-1] = replace(frames[-1], flags=frozenset())
            frames.append(Frame("DATA", flags=frozenset({"END_STREAM"})))
    if trailers is not None:
        frames.append(
            Frame("HEADERS", flags=frozenset({"END_HEADERS", "END_STREAM"}), block=trailers)
        )
    # Interleave harmless frames, never inside a header block (RFC 9113 section 6.10).
    for frame in draw(st.lists(_benign, max_size=3)):
        frames.insert(draw(st.integers(0, len(frames))), frame)
    return tuple(frames), Expected(status, fields, body)


# Request bodies: mostly none; some small; some larger than the server's initial 64 KiB
# window, so the upload waits for WINDOW_UPDATEs while (or after) the answer arrives.
uploads = st.one_of(
    st.just(b""), st.just(b""), st.binary(min_size=1, max_size=2_000), st.just(bytes(70_000))
)


@st.composite
def valid_cases(draw: st.DrawFn) -> H2Case:
    """Well-formed answers: parsed exactly, and the socket carries the next request."""
    frames, expected = draw(valid_sequences())
    return H2Case(
        frames,
        points=draw(splits),
        keep_open=True,
        expect=expected,
        concurrent=draw(st.booleans()),
        body=draw(uploads),
        label="valid",
    )


# Header lists h2 must refuse (RFC 9113 section 8.2/8.3), or that look almost right.
_BAD_FIELDS: list[tuple[tuple[str, str], ...]] = [
    ((":status", "abc"),),
    ((":status", "2000"),),
    ((":status", "99"),),
    ((":status", "+200"),),
    ((":status", " 200"),),
    ((":status", "2_00"),),
    ((":status", ""),),
    ((":status", "200"), (":status", "200")),
    (("x", "1"), (":status", "200")),
    ((":status", "200"), ("Upper", "x")),
    ((":status", "200"), ("connection", "close")),
    ((":status", "200"), ("te", "gzip")),
    ((":status", "200"), ("x", "a\r\nb")),
    ((":status", "200"), ("x", " padded ")),
    ((":status", "200"), ("bad name", "x")),
    ((":status", "200"), (":path", "/")),
    ((":status", "200"), ("content-length", "5")),
    ((":status", "200"), ("content-length", "-1")),
    ((":status", "200"), ("content-length", "abc")),
    ((":status", "200"), ("content-length", "1"), ("content-length", "2")),
    (("x", "1"),),
    (),
]
# HPACK blocks that are not valid HPACK (RFC 7541).
_BAD_BLOCKS = [
    b"\xff\xff\xff\xff\xff\x0f",  # an index that overflows
    b"\xbf",  # dynamic index 63 in an empty table
    b"\x80",  # index 0
    b"\x3f\xe1\x1f",  # table size update above the limit
    b"\x88\x3f\xe1\x1f",  # size update after a field
    b"\x00\x81\xff\x81\xff",  # Huffman padding longer than 7 bits / EOS
    b"\x00\x7f",  # a name length past the end
    b"\x40\x05:stat",  # truncated literal
    b"\x88\x00",  # field then truncated
    b"",
]


def _bad_frames() -> st.SearchStrategy[Frame]:
    streams = st.sampled_from([OWN, 0, 2, 3, 5, 0x7FFFFFFF])
    return st.one_of(
        st.builds(Frame, st.just("RST_STREAM"), streams, number=st.integers(0, 0x10)),
        st.builds(
            Frame,
            st.just("GOAWAY"),
            st.just(0),
            number=st.sampled_from([0, 1, 3]),
            code=st.sampled_from([0, 1, 2, 0xB]),
        ),
        st.builds(Frame, st.just("DATA"), streams, data=st.binary(max_size=30)),
        st.builds(
            Frame,
            st.just("HEADERS"),
            streams,
            flags=st.sampled_from([frozenset({"END_HEADERS"}), frozenset()]),
            block=st.just(((":status", "200"),)),
        ),
        st.builds(Frame, st.just("CONTINUATION"), streams, raw=st.binary(max_size=10)),
        st.builds(
            Frame, st.just("WINDOW_UPDATE"), streams, number=st.sampled_from([0, 1, 0x7FFFFFFF])
        ),
        st.builds(Frame, st.just("PING"), streams, data=st.binary(max_size=8)),
        st.builds(Frame, st.just("PRIORITY"), st.sampled_from([OWN, 0])),
        st.builds(Frame, st.just("SETTINGS"), streams),
        # PUSH_PROMISE (type 5): push is disabled in the client's SETTINGS.
        st.builds(
            Frame, st.just("EXTENSION"), streams, data=st.binary(max_size=20), number=st.just(5)
        ),
    )


_frame_edits = st.builds(
    FrameEdit,
    st.sampled_from(["type", "flags", "length", "stream", "drop", "duplicate", "swap", "oversize"]),
    st.integers(0, 64),
    st.one_of(
        st.integers(0, 0xFF),
        st.sampled_from([0, 1, 2, 3, 0x4000, 0x4001, 0xFFFFFF, 0x7FFFFFFF, 0x80000001]),
    ),
)


@st.composite
def mutated_cases(draw: st.DrawFn) -> H2Case:
    """A well-formed answer, then its frames, header blocks and/or bytes broken."""
    frames_, _ = draw(valid_sequences())
    frames = list(frames_)
    kinds = draw(
        st.sets(st.sampled_from(["frames", "insert", "fields", "hpack", "bytes"]), min_size=1)
    )
    heads = [i for i, f in enumerate(frames) if f.kind == "HEADERS"]
    if "fields" in kinds:
        i = draw(st.sampled_from(heads))
        frames[i] = replace(frames[i], block=draw(st.sampled_from(_BAD_FIELDS)))
    if "hpack" in kinds:
        i = draw(st.sampled_from(heads))
        bad = draw(st.one_of(st.sampled_from(_BAD_BLOCKS), st.binary(max_size=24)))
        frames[i] = replace(frames[i], raw=bad, cut=1)
    if "insert" in kinds:
        for frame in draw(st.lists(_bad_frames(), min_size=1, max_size=3)):
            frames.insert(draw(st.integers(0, len(frames))), frame)
    edits = tuple(draw(st.lists(_frame_edits, min_size=1, max_size=3))) if "frames" in kinds else ()
    byte_edits = draw(mutations()) if "bytes" in kinds else ()
    return H2Case(
        tuple(frames),
        edits=edits,
        byte_edits=byte_edits,
        points=draw(splits),
        stream=draw(st.booleans()),
        concurrent=draw(st.booleans()),
        body=draw(uploads),
        label="+".join(sorted(kinds)),
    )


@st.composite
def random_cases(draw: st.DrawFn) -> H2Case:
    """Random bytes after the handshake, sometimes behind a plausible frame header."""
    prefix = draw(
        st.sampled_from(
            [b"", b"\x00\x00\x10\x01\x04\x00\x00\x00\x01", b"\x00\x00\x10\x00\x01\x00\x00\x00\x01"]
        )
    )
    return H2Case(
        (), raw=prefix + draw(st.binary(max_size=300)), points=draw(splits), label="random"
    )
