"""The Content-Encoding decoders on their own: every chunk boundary, every way to end badly,
and the bounds that make a decompression bomb cheap to refuse."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterable

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from aiopool import DecodingError, Headers
from aiopool._decoders import (
    ACCEPT_ENCODING,
    DECODE_STEP,
    MAX_CODINGS,
    MAX_RATIO,
    RATIO_FLOOR,
    ContentDecoder,
    decoder_for,
)
from tests.rig.encodings import bomb, encode, text

SMALL = text(300)
# brotli stops growing its output buffer once it reaches the limit, so one step may overshoot
# it by one growth (about half a step); zlib and zstandard never exceed it.
STEP_BOUND = DECODE_STEP * 2
CODINGS = ["gzip", "deflate", "deflate-raw", "br", "zstd"]


def decoder(value: str) -> ContentDecoder:
    found = decoder_for(Headers({"content-encoding": value}))
    assert found is not None
    return found


def decode(value: str, chunks: Iterable[bytes]) -> bytes:
    """Feed `chunks` one by one, check every step's size, return the whole output."""
    dec = decoder(value)
    out = []
    for chunk in chunks:
        for piece in dec.feed(chunk):
            assert 0 < len(piece) <= STEP_BOUND
            out.append(piece)
    out.extend(dec.finish())
    return b"".join(out)


def split_at(data: bytes, cut: int) -> list[bytes]:
    return [data[:cut], data[cut:]]


@pytest.mark.parametrize("coding", CODINGS)
def test_every_chunk_boundary(coding: str) -> None:
    header, body = encode(SMALL, [coding])
    for cut in range(len(body) + 1):
        assert decode(header, split_at(body, cut)) == SMALL, cut


@pytest.mark.parametrize("coding", CODINGS)
def test_one_byte_at_a_time(coding: str) -> None:
    data = text(200_000)
    header, body = encode(data, [coding])
    assert decode(header, [body[i : i + 1] for i in range(len(body))]) == data


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_body_decodes_to_nothing(coding: str) -> None:
    # HEAD, 204, 304 and empty 200s carry Content-Encoding with no bytes at all.
    header, _ = encode(b"", [coding])
    assert decode(header, []) == b""
    assert decode(header, [b""]) == b""


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_content_encoded(coding: str) -> None:
    header, body = encode(b"", [coding])
    assert body  # a real (if tiny) stream
    assert decode(header, [body]) == b""


@pytest.mark.parametrize("coding", CODINGS)
def test_truncated_at_every_point(coding: str) -> None:
    header, body = encode(SMALL, [coding])
    for end in range(1, len(body)):
        with pytest.raises(DecodingError, match=r"truncated|corrupt"):
            decode(header, [body[:end]])


# Raw deflate has no checksum: garbled bytes can decode to garbage without any error (the
# same holds for br, but not for the middle of this body, and for zstd without a checksum).
@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_corrupt(coding: str) -> None:
    header, body = encode(text(100_000), [coding], "corrupt")
    with pytest.raises(DecodingError):
        decode(header, [body])


@pytest.mark.parametrize("coding", ["deflate", "deflate-raw", "br", "zstd"])
def test_bytes_after_the_end(coding: str) -> None:
    header, body = encode(SMALL, [coding])
    with pytest.raises(DecodingError):
        decode(header, [body + b"trailing junk"])


def test_gzip_members_concatenated() -> None:
    # RFC 1952 section 2.2: a gzip file is a series of members (Go and zlib read them all).
    body = gzip.compress(b"first ") + gzip.compress(b"") + gzip.compress(b"second")
    for cut in range(len(body) + 1):
        assert decode("gzip", split_at(body, cut)) == b"first second"


def test_gzip_junk_after_the_end() -> None:
    with pytest.raises(DecodingError, match="corrupt gzip"):
        decode("gzip", [gzip.compress(SMALL) + b"junk"])


def test_zstd_frames_concatenated_and_skippable() -> None:
    compress = zstandard.ZstdCompressor().compress
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
    body = compress(b"one ") + skippable + compress(b"two")
    for cut in range(len(body) + 1):
        assert decode("zstd", split_at(body, cut)) == b"one two"
    # Cut inside the skippable frame: the stream ended inside a frame.
    end = len(compress(b"one ")) + 6
    with pytest.raises(DecodingError, match="truncated zstd"):
        decode("zstd", [body[:end]])


def test_zstd_window_above_rfc_9659_refused() -> None:
    # A frame whose header asks for a 128 MiB window (descriptor: exponent 27 - 10), holding
    # one RLE block of 10 bytes. RFC 9659 caps the coding's window at 8 MB.
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0, (27 - 10) << 3])
    block = (10 << 3 | 1 << 1 | 1).to_bytes(3, "little") + b"z"
    with pytest.raises(DecodingError, match="corrupt zstd"):
        decode("zstd", [header + block])
    # The same frame with an 8 MiB window decodes.
    header = header[:-1] + bytes([(23 - 10) << 3])
    assert decode("zstd", [header + block]) == b"z" * 10


def test_deflate_accepts_zlib_and_raw() -> None:
    assert decode("deflate", [zlib.compress(SMALL)]) == SMALL
    _, raw = encode(SMALL, ["deflate-raw"])
    assert decode("deflate", [raw]) == SMALL


def test_deflate_one_byte_is_truncated() -> None:
    with pytest.raises(DecodingError, match="truncated deflate"):
        decode("deflate", [zlib.compress(SMALL)[:1]])


@pytest.mark.parametrize(
    "codings", [["gzip", "br"], ["br", "gzip"], ["zstd", "deflate", "gzip"], ["gzip", "gzip"]]
)
def test_stacked_codings_undone_in_reverse(codings: list[str]) -> None:
    data = text(100_000)
    header, body = encode(data, codings)
    assert decode(header, [body[i : i + 777] for i in range(0, len(body), 777)]) == data


def test_names_are_case_insensitive_and_identity_is_skipped() -> None:
    data = gzip.compress(SMALL)
    assert decode("GZip", [data]) == SMALL
    assert decode("identity, x-gzip", [data]) == SMALL  # RFC 9110 section 8.4.1.3
    headers = Headers([("Content-Encoding", "gzip"), ("Content-Encoding", "identity")])
    found = decoder_for(headers)
    assert found is not None
    assert b"".join([*found.feed(data), *found.finish()]) == SMALL


def test_no_decoder_when_nothing_to_undo() -> None:
    assert decoder_for(Headers()) is None
    assert decoder_for(Headers({"content-encoding": "identity"})) is None
    assert decoder_for(Headers({"content-encoding": "x-unknown"})) is None
    assert decoder_for(Headers({"content-encoding": " , "})) is None


def test_unknown_coding_stops_decoding_there() -> None:
    # "x-unknown, gzip": gzip was applied last, so it is undone; x-unknown is left as it is.
    assert decode("x-unknown, gzip", [gzip.compress(b"still encoded")]) == b"still encoded"
    # "gzip, x-unknown": the outer coding is unknown: nothing can be undone.
    assert decoder_for(Headers({"content-encoding": "gzip, x-unknown"})) is None


def test_too_many_codings() -> None:
    assert decoder_for(Headers({"content-encoding": ", ".join(["gzip"] * MAX_CODINGS)}))
    with pytest.raises(DecodingError, match="6 codings"):
        decoder_for(Headers({"content-encoding": ", ".join(["gzip"] * (MAX_CODINGS + 1))}))


def test_accept_encoding_lists_what_we_decode() -> None:
    assert ACCEPT_ENCODING == b"gzip, deflate, br, zstd"


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_bomb_refused_after_the_floor(coding: str) -> None:
    """1 GiB of zeros: refused once past RATIO_FLOOR, having produced about that much."""
    dec = decoder(coding)
    produced: list[int] = []

    def pull() -> None:
        for chunk in bomb(coding, 1024**3):
            for piece in dec.feed(chunk):
                assert len(piece) <= STEP_BOUND
                produced.append(len(piece))

    with pytest.raises(DecodingError, match="decompression bomb"):
        pull()
    assert RATIO_FLOOR - STEP_BOUND < sum(produced) <= RATIO_FLOOR


def test_bomb_in_one_chunk_is_decoded_lazily() -> None:
    """The whole 1 GiB gzip bomb (1 MB) as one chunk: each step is bounded and nothing is
    decoded beyond what is pulled."""
    body = b"".join(bomb("gzip", 1024**3))
    dec = decoder("gzip")
    pieces = dec.feed(body)
    first = [next(pieces) for _ in range(3)]
    assert all(len(p) == DECODE_STEP for p in first)
    assert dec._decoded == 3 * DECODE_STEP  # nothing decoded ahead of what was pulled


def test_stacked_bomb() -> None:
    # gzip inside gzip: 1 GiB in ~6 KB, far past any single layer's ratio.
    inner = b"".join(bomb("gzip", 1024**3))
    body = gzip.compress(inner, 9)
    assert len(body) < 100_000
    with pytest.raises(DecodingError, match="decompression bomb"):
        decode("gzip, gzip", [body])


def test_ratio_allowed_below_the_floor_and_at_the_limit() -> None:
    # Very repetitive but small: over the ratio, under the floor.
    zeros = bytes(RATIO_FLOOR)
    assert decode("gzip", [gzip.compress(zeros)]) == zeros
    # Ordinary text far past the floor: ~3x, never near the ratio.
    data = text(RATIO_FLOOR + 1_000_000)
    assert decode("gzip", [gzip.compress(data, 1)]) == data
    assert MAX_RATIO * len(gzip.compress(data, 1)) > len(data)


def test_brotli_without_output_limit_is_not_offered() -> None:
    # The bound depends on brotli >= 1.2 (CVE-2025-6176); the test environment has it.
    assert tuple(int(p) for p in brotli.__version__.split(".")[:2]) >= (1, 2)


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=5000),
    codings=st.lists(st.sampled_from(CODINGS), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=8),
)
def test_any_data_any_chunking(data: bytes, codings: list[str], cuts: list[int]) -> None:
    header, body = encode(data, codings)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert decode(header, chunks) == data


def test_ratio_bound_is_configurable() -> None:
    bomb_64m = b"".join(bomb("gzip", 64 * 1024 * 1024))  # ~1030x: one layer of gzip's most
    headers = Headers({"content-encoding": "gzip"})
    for ratio in (None, 2000):
        found = decoder_for(headers, max_ratio=ratio)
        assert found is not None
        assert sum(len(p) for p in [*found.feed(bomb_64m), *found.finish()]) == 64 * 1024**2
    found = decoder_for(headers, max_ratio=1000)
    assert found is not None
    with pytest.raises(DecodingError, match="1000 times"):
        for _ in found.feed(bomb_64m):
            pass


@settings(max_examples=300, deadline=None)
@given(
    coding=st.sampled_from([*CODINGS, "gzip,br", "zstd,deflate"]),
    data=st.binary(max_size=3000),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(["flip", "drop", "insert"])),
        min_size=1,
        max_size=4,
    ),
    junk=st.binary(min_size=1, max_size=8),
    chunk=st.integers(min_value=1, max_value=500),
)
def test_hostile_bytes_raise_only_decoding_error(
    coding: str, data: bytes, edits: list[tuple[int, str]], junk: bytes, chunk: int
) -> None:
    """Garbled input decodes to something or raises DecodingError: never a zlib, brotli or
    zstandard exception, never anything else."""
    header, body = encode(data, coding.split(","))
    mutated = bytearray(body)
    for position, edit in edits:
        at = position % (len(mutated) + 1)
        if edit == "flip" and at < len(mutated):
            mutated[at] ^= junk[0] or 0xFF
        elif edit == "drop":
            del mutated[at : at + len(junk)]
        else:
            mutated[at:at] = junk
    pieces = [bytes(mutated[i : i + chunk]) for i in range(0, len(mutated), chunk)]
    with contextlib.suppress(DecodingError):
        decode(header, pieces)
