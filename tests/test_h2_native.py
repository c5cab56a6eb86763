"""The native HTTP/2 engine's frame layer and connection, byte-exact (RFC 9113).

Behaviour through the client is covered by the HTTP/2 suites, which run on every engine
(tests/conftest.py); these cases pin the frame rules and the engine's own choices (batch
crediting, the larger SETTINGS_MAX_FRAME_SIZE, flood bounds) at the byte level.
"""

from __future__ import annotations

import struct

import hpack
import pytest

from aiopool import _h2native_events as ev
from aiopool import _h2native_hpack
from aiopool._h2native import MAX_INBOUND_FRAME_SIZE, NativeConfig, NativeConnection
from aiopool._h2native_frames import (
    PREFACE,
    ErrorCode,
    ProtocolError,
    StreamClosedError,
    split_frames,
)
from aiopool._h2native_hpack import HeaderDecoder, HeaderEncoder


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(0x4, 0, 0, b"".join(struct.pack(">HI", c, v) for c, v in pairs))


def opened(method: bytes = b"GET") -> tuple[NativeConnection, hpack.Encoder]:
    conn = NativeConnection(NativeConfig(client_side=True))
    conn.initiate_connection()
    conn.receive_data(settings())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(b":method", method), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")],
        end_stream=True,
    )
    conn.data_to_send()
    return conn, hpack.Encoder()


def head(encoder: hpack.Encoder, *fields: tuple[bytes, bytes], status: bytes = b"200") -> bytes:
    return encoder.encode([(b":status", status), *fields])


def test_preface_advertises_no_push_and_a_larger_frame_size() -> None:
    conn = NativeConnection(NativeConfig())
    conn.initiate_connection()
    out = conn.data_to_send()
    assert out.startswith(PREFACE)
    frames, _ = split_frames(memoryview(out[len(PREFACE) :]), 2**24)
    ((ftype, _, _, payload),) = frames
    pairs = dict(struct.iter_unpack(">HI", payload))
    assert ftype == 0x4 and pairs == {0x2: 0, 0x5: MAX_INBOUND_FRAME_SIZE}
    assert MAX_INBOUND_FRAME_SIZE > 16_384


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(0x0, 0, 1, bytes(16_385)), ErrorCode.FRAME_SIZE_ERROR),  # over the limit
        (frame(0x0, 0, 0, b"x"), ErrorCode.PROTOCOL_ERROR),  # DATA on stream 0
        (frame(0x4, 0, 1), ErrorCode.PROTOCOL_ERROR),  # SETTINGS on a stream
        (frame(0x6, 0, 0, bytes(7)), ErrorCode.FRAME_SIZE_ERROR),  # PING of 7 bytes
        (frame(0x8, 0, 0, bytes(3)), ErrorCode.FRAME_SIZE_ERROR),  # WINDOW_UPDATE of 3
        (frame(0x3, 0, 1, bytes(5)), ErrorCode.FRAME_SIZE_ERROR),  # RST_STREAM of 5
        (frame(0x2, 0, 1, bytes(4)), ErrorCode.FRAME_SIZE_ERROR),  # PRIORITY of 4
    ],
)
def test_generic_fields_are_checked(data: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as raised:
        split_frames(memoryview(data), 16_384)
    assert raised.value.error_code == code


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    # Nothing of the payload needs to arrive: the 9-byte header states the length.
    with pytest.raises(ProtocolError, match="SETTINGS_MAX_FRAME_SIZE"):
        split_frames(memoryview(struct.pack(">BHBBI", 1, 0, 0, 0, 1)), 16_384)


def test_partial_frames_wait_and_the_reserved_bit_is_ignored() -> None:
    data = frame(0x6, 0, 0, bytes(8)) + frame(0x0, 0, 0x80000001, b"abc")
    frames, used = split_frames(memoryview(data[:-1]), 16_384)
    assert [f[0] for f in frames] == [0x6] and used == 17
    frames, used = split_frames(memoryview(data), 16_384)
    assert frames[1][2] == 1 and used == len(data)


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        (((0x2, 2),), ErrorCode.PROTOCOL_ERROR),
        (((0x4, 2**31),), ErrorCode.FLOW_CONTROL_ERROR),
        (((0x5, 16_383),), ErrorCode.PROTOCOL_ERROR),
        (((0x5, 2**24),), ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_settings_values_are_checked(pairs: tuple[tuple[int, int], ...], code: int) -> None:
    conn = NativeConnection()
    with pytest.raises(ProtocolError) as raised:
        conn.receive_data(settings(*pairs))
    assert raised.value.error_code == code
    assert conn.data_to_send()[3] == 0x7  # GOAWAY queued


def test_peer_settings_start_at_the_rfc_defaults_and_are_acknowledged() -> None:
    conn = NativeConnection()
    peer = conn.remote_settings
    assert (peer.initial_window_size, peer.header_table_size, peer.max_frame_size) == (
        65_535,
        4_096,
        16_384,
    )
    (event,) = conn.receive_data(settings((0x3, 7), (0x5, 32_768)))
    assert isinstance(event, ev.RemoteSettingsChanged)
    assert event.changed_settings[0x3].new_value == 7
    assert conn.max_outbound_frame_size == 32_768
    assert conn.data_to_send() == frame(0x4, 0x1, 0)


def test_a_response_in_padded_frames_split_by_continuation() -> None:
    conn, enc = opened()
    block = head(enc, (b"content-length", b"3"))
    data = (
        frame(0x1, 0x8, 1, bytes([2]) + block[:1] + bytes(2))  # PADDED, no END_HEADERS
        + frame(0x9, 0x4, 1, block[1:])
        + frame(0x0, 0x9, 1, b"\x01abc\x00")  # PADDED | END_STREAM
    )
    events = conn.receive_data(data[:10]) + conn.receive_data(data[10:])
    kinds = [type(e) for e in events]
    assert kinds == [ev.ResponseReceived, ev.DataReceived, ev.StreamEnded]
    assert events[1].data == b"abc" and events[1].flow_controlled_length == 5


@pytest.mark.parametrize(
    "data",
    [
        frame(0x0, 0x8, 1, b"\x03abc"),  # padding as long as the payload
        frame(0x9, 0x4, 1, b""),  # CONTINUATION with no header block before it
        frame(0x1, 0, 1, b"\x88") + frame(0x6, 0, 0, bytes(8)),  # header block interrupted
        frame(0x5, 0x4, 1, b"\x00\x00\x00\x02\x88"),  # PUSH_PROMISE: push is disabled
        frame(0x1, 0x4, 3, b"\x88"),  # HEADERS on a stream never opened
        frame(0x8, 0, 1, bytes(4)),  # WINDOW_UPDATE of 0
        frame(0x0, 0x1, 1, b"x"),  # DATA before the response head
    ],
)
def test_connection_errors(data: bytes) -> None:
    conn, _ = opened()
    with pytest.raises(ProtocolError):
        conn.receive_data(data)
    assert conn.data_to_send()[3] == 0x7  # GOAWAY queued


def test_content_length_is_held_to_the_data() -> None:
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc, (b"content-length", b"5"))))
    with pytest.raises(ProtocolError, match="content-length"):
        conn.receive_data(frame(0x0, 0x1, 1, b"abc"))


def test_a_run_of_data_frames_is_one_event_checked_as_one() -> None:
    # A download's frames of one read become one event; what each frame would have been
    # checked for is checked on the run: content-length, and both windows.
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc, (b"content-length", b"50"))))
    events = conn.receive_data(b"".join(frame(0x0, 0, 1, b"%d" % i * 10) for i in range(5)))
    assert [(type(e).__name__, e.data, e.flow_controlled_length) for e in events] == [
        ("DataReceived", b"".join(b"%d" % i * 10 for i in range(5)), 50)
    ]
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc, (b"content-length", b"30"))))
    with pytest.raises(ProtocolError, match="50 bytes of content against content-length 30"):
        conn.receive_data(frame(0x0, 0, 1, bytes(10)) * 5)
    conn, enc = opened()  # (the windows: 65,535 until our SETTINGS raise them)
    conn.receive_data(frame(0x1, 0x4, 1, head(enc)))
    with pytest.raises(ProtocolError, match="beyond the connection window") as caught:
        conn.receive_data(frame(0x0, 0, 1, bytes(16_000)) * 5)
    assert caught.value.error_code == ErrorCode.FLOW_CONTROL_ERROR
    conn, enc = opened()
    conn.increment_flow_control_window(1 << 20)  # (the connection's only)
    conn.receive_data(frame(0x1, 0x4, 1, head(enc)))
    with pytest.raises(ProtocolError, match="beyond the stream window") as caught:
        conn.receive_data(frame(0x0, 0, 1, bytes(16_000)) * 5)
    assert caught.value.error_code == ErrorCode.FLOW_CONTROL_ERROR


def test_empty_data_frames_between_full_ones_stay_events_of_their_own() -> None:
    # (Joined into the run, a flood of empty frames behind one byte would go uncounted.)
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc)))
    events = conn.receive_data(
        frame(0x0, 0, 1, b"a") + frame(0x0, 0, 1) * 3 + frame(0x0, 0, 1, b"b") + frame(0x0, 1, 1)
    )
    assert [(type(e).__name__, getattr(e, "data", None)) for e in events] == [
        ("DataReceived", b"a"),
        *[("DataReceived", b"")] * 3,
        ("DataReceived", b"b"),
        ("DataReceived", b""),
        ("StreamEnded", None),
    ]


def test_a_head_response_states_a_length_without_content() -> None:
    conn, enc = opened(b"HEAD")
    events = conn.receive_data(frame(0x1, 0x5, 1, head(enc, (b"content-length", b"5"))))
    assert [type(e) for e in events] == [ev.ResponseReceived, ev.StreamEnded]


def test_frames_after_our_reset_are_ignored_and_credited() -> None:
    conn, enc = opened()
    conn.reset_stream(1, ErrorCode.CANCEL)
    assert conn.data_to_send() == frame(0x3, 0, 1, struct.pack(">I", 8))
    with pytest.raises(StreamClosedError):
        conn.reset_stream(1, ErrorCode.CANCEL)
    late = frame(0x1, 0x4, 1, head(enc)) + frame(0x0, 0, 1, b"x" * 100)
    assert conn.receive_data(late) == []
    assert conn.data_to_send() == b""  # no RST_STREAM in answer (RFC 9113 section 5.1)


def test_data_after_a_clean_end_is_ignored_and_credited() -> None:
    # RFC 9113 section 6.1: a stream error, on a stream already closed (h2 keeps the connection,
    # Go ignores the frame); its flow-controlled length goes back to the connection's window.
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x5, 1, head(enc)))
    conn.data_to_send()
    assert conn.receive_data(frame(0x0, 0, 1, b"x" * 20_000)) == []
    assert conn.data_to_send() == frame(0x8, 0, 0, struct.pack(">I", 20_000))


def test_headers_after_a_clean_end_is_a_connection_error() -> None:
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x5, 1, head(enc)))
    with pytest.raises(ProtocolError) as raised:
        conn.receive_data(frame(0x1, 0x5, 1, head(enc)))
    assert raised.value.error_code == ErrorCode.STREAM_CLOSED


def test_receive_windows_are_credited_in_batches() -> None:
    conn, enc = opened()
    conn.update_settings({0x4: 1 << 24})
    conn.increment_flow_control_window((1 << 24) - 65_535)
    conn.data_to_send()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc)))
    chunk = bytes(1 << 20)
    for _ in range(3):
        conn.receive_data(frame(0x0, 0, 1, chunk))
        conn.acknowledge_received_data(len(chunk), 1)
    assert conn.data_to_send() == b""  # 3 MiB consumed: under a quarter of 16 MiB
    conn.receive_data(frame(0x0, 0, 1, chunk))
    conn.acknowledge_received_data(len(chunk), 1)
    out = conn.data_to_send()
    assert out == frame(0x8, 0, 0, struct.pack(">I", 4 << 20)) + frame(
        0x8, 0, 1, struct.pack(">I", 4 << 20)
    )


def test_frames_that_carry_nothing_are_reported_for_the_connection_to_count() -> None:
    # (The connection bounds a flood of them for every engine: tests/test_h2_floods.py.)
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x4, 1, head(enc)))
    events = conn.receive_data(
        frame(0x0, 0, 1) + frame(0x2, 0, 1, struct.pack(">IB", 0, 16)) + frame(0xFA, 0, 0)
    )
    assert [type(e).__name__ for e in events] == [
        "DataReceived",
        "PriorityUpdated",
        "UnknownFrameReceived",
    ]
    assert events[0].data == b""


def test_empty_data_on_a_closed_stream_is_reported_too() -> None:
    # DATA after a stream's end is ignored; an empty one must still count as a frame that
    # brought nothing, or a flood of them on a finished stream would go uncounted.
    conn, enc = opened()
    conn.receive_data(frame(0x1, 0x5, 1, head(enc)))  # the whole response
    events = conn.receive_data(frame(0x0, 0, 1) * 3 + frame(0x0, 0, 1, b"late"))
    assert [(type(e).__name__, e.data) for e in events] == [("DataReceived", b"")] * 3


def test_uploads_use_the_peer_frame_size_and_windows() -> None:
    conn = NativeConnection()
    conn.initiate_connection()
    conn.receive_data(
        settings((0x5, 65_536), (0x4, 1 << 20)) + frame(0x8, 0, 0, struct.pack(">I", 1 << 20))
    )
    conn.send_headers(
        1, [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/")]
    )
    conn.data_to_send()
    assert conn.local_flow_control_window(1) == 1 << 20  # (the connection's: 65,535 + 1 MiB)
    assert conn.max_outbound_frame_size == 65_536
    conn.send_data(1, bytes(65_536))
    with pytest.raises(ProtocolError):
        conn.send_data(1, bytes(65_537))
    assert len(conn.data_to_send()) == 9 + 65_536


@pytest.mark.parametrize("status", [b"204", b"304"])
def test_a_response_without_content_may_state_a_length(status: bytes) -> None:
    # RFC 9113 section 8.1.1: such a response "MAY have a non-zero content-length header
    # field, even though no content is included in DATA frames" (h2 refuses it).
    conn, enc = opened()
    block = head(enc, (b"content-length", b"5"), status=status)
    events = conn.receive_data(frame(0x1, 0x5, 1, block))
    assert [type(e) for e in events] == [ev.ResponseReceived, ev.StreamEnded]


# HPACK: the compiled codec (jh2's, with aiopool[speedups]) and hpack are held to one set of
# rules (`_h2native_hpack`); each case runs on both.
codecs = pytest.mark.parametrize(
    "compiled",
    [pytest.param(True, id="compiled"), pytest.param(False, id="hpack")]
    if _h2native_hpack.COMPILED
    else [pytest.param(False, id="hpack")],
)
_REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.test"),
    (b":path", b"/a"),
    (b"user-agent", b"aiopool"),
]


@codecs
def test_repeated_request_fields_come_from_the_dynamic_table(compiled: bool) -> None:
    encoder = HeaderEncoder(compiled)
    first, second = encoder.encode(_REQUEST), encoder.encode(_REQUEST)
    assert len(second) < len(first) // 2  # (every field indexed the second time)
    reference = hpack.Decoder()
    assert reference.decode(first, raw=True) == reference.decode(second, raw=True) == _REQUEST


@codecs
def test_credentials_are_never_indexed(compiled: bool) -> None:
    # RFC 7541 section 7.1.3: a secret kept out of the dynamic table cannot be probed through
    # compression ratios; the representation says so to intermediaries too (section 6.2.3).
    encoder = HeaderEncoder(compiled)
    fields = [*_REQUEST, (b"authorization", b"Bearer s3cret"), (b"cookie", b"a=1")]
    decoded = hpack.Decoder().decode(encoder.encode(fields), raw=True)
    assert decoded == fields
    never = [type(f) is hpack.NeverIndexedHeaderTuple for f in decoded]
    assert never == [False] * len(_REQUEST) + [True, False]


@codecs
def test_the_header_list_size_counts_32_bytes_per_field(compiled: bool) -> None:
    # RFC 7541 section 4.1 (and SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 section 6.5.2): the
    # limit we advertise means the same whichever codec decodes.
    fields = [(b"x-%d" % i, b"v") for i in range(10)]  # 10 x (3 + 1 + 32) = 360 bytes
    block = hpack.Encoder().encode(fields)
    decoder = HeaderDecoder(compiled)
    decoder.max_header_list_size = 360
    assert decoder.decode(memoryview(block)) == fields
    decoder = HeaderDecoder(compiled)
    decoder.max_header_list_size = 359
    with pytest.raises(ProtocolError, match="too large") as caught:
        decoder.decode(memoryview(block))
    assert caught.value.error_code == ErrorCode.PROTOCOL_ERROR


@codecs
@pytest.mark.parametrize(
    "block",
    [
        b"\xff\xff\xff\xff\xff\xff\x7f",  # an index past every table, in an overlong integer
        b"\xbe",  # dynamic table entry 62, which is empty
        b"\x40\x85\xff\xff\xff\xff\xff\x00",  # a Huffman string padded with a whole octet
        b"\x3f\xe1\x3f",  # a table size update to 8,192, above SETTINGS_HEADER_TABLE_SIZE
        # What differential fuzzing found jh2's compiled decoder lenient on (or panicking):
        b"\x88\x7f",  # a truncated integer (a Rust panic, a BaseException, in jh2)
        b"\x88\x00\x81",  # a string shorter than its stated length
        b"\x88\x20",  # a table size update after a field (RFC 7541 section 4.2)
        b"\x00\x81\x1f\x81\x18",  # "a" padded with 000, not the EOS prefix (section 5.2)
        b"\x00\x81\x1f\x82\x1f\xff",  # "a" padded with 11 bits of ones (at most 7)
    ],
)
def test_a_broken_block_is_a_compression_error(compiled: bool, block: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        HeaderDecoder(compiled).decode(memoryview(block))
    assert caught.value.error_code == ErrorCode.COMPRESSION_ERROR


@codecs
def test_a_block_seen_before_is_decoded_alike_and_a_broken_one_still_refused(
    compiled: bool,
) -> None:
    # (The compiled path remembers blocks it checked; the table state still applies.)
    decoder = HeaderDecoder(compiled)
    block = hpack.Encoder().encode([(b":status", b"200"), (b"x-a", b"b")])
    assert decoder.decode(memoryview(block)) == decoder.decode(memoryview(block))
    for _ in range(2):
        with pytest.raises(ProtocolError):
            decoder.decode(memoryview(block[:-1]))
    # Blocks only our checks refuse (the compiled codec alone would take them): refused every
    # time, never remembered as checked.
    for lenient in (b"\x88\x20", b"\x00\x81\x1f\x81\x18"):
        for _ in range(2):
            with pytest.raises(ProtocolError):
                decoder.decode(memoryview(lenient))


def test_a_response_split_at_every_byte_reads_the_same() -> None:
    # A server's bytes arrive cut anywhere: inside a frame header, inside a payload, one byte
    # at a time. The frame left partial by a read is completed by the next (`_finish_partial`).
    conn, enc = opened()
    body = bytes(range(256)) * 40
    whole = (
        frame(0x1, 0x4, 1, head(enc, (b"content-length", str(len(body) + 3).encode())))
        + frame(0x0, 0, 1, body[:4000])
        + frame(0x0, 0x8, 1, b"\x02" + body[4000:] + b"\x00\x00")  # padded
        + frame(0x0, 0x1, 1, b"end")
    )

    def read(pieces: list[bytes]) -> bytes:
        conn, _ = opened()
        got = b""
        for piece in pieces:
            for event in conn.receive_data(piece):
                got += getattr(event, "data", b"")
        return got

    expected = body + b"end"
    assert read([whole[i : i + 1] for i in range(len(whole))]) == expected
    for cut in range(1, len(whole), 7):
        assert read([whole[:cut], whole[cut:]]) == expected, cut
    # A frame header over our SETTINGS_MAX_FRAME_SIZE is refused from its 9 bytes, even when
    # they arrive over two reads and no payload follows.
    conn, _ = opened()
    oversized = struct.pack(">BHBBI", 0x7F, 0, 0, 0, 1)
    conn.receive_data(oversized[:4])
    with pytest.raises(ProtocolError, match="SETTINGS_MAX_FRAME_SIZE"):
        conn.receive_data(oversized[4:])
