"""Response bodies in every Content-Encoding, for the decoding tests.

Built here once and served by the fault server (HTTP/1.1) and the hypercorn app (HTTP/2), so
both speak the same table. Query parameters (all optional):

* ``/encoded?coding=C&size=N&damage=D&chunks=K`` -- ``text(N)`` (N default 100_000) encoded
  by the comma-separated codings C (default gzip), applied left to right as Content-Encoding
  lists them. ``deflate`` is zlib-wrapped; ``deflate-raw`` is raw deflate, sent as
  ``deflate``; ``x-unknown`` is a coding no client knows (the bytes unchanged).
  ``damage=corrupt`` garbles 16 bytes in the middle, ``damage=truncate`` drops the last
  quarter (both with a correct Content-Length), ``damage=empty`` sends no body at all.
  ``chunks=K`` sends the body in K pieces (chunked on HTTP/1.1) instead of with a
  Content-Length.
* ``/bomb?coding=C&size=N`` -- N (1 GiB) zero bytes in coding C (gzip, br or zstd), streamed
  chunked and generated as it is sent (never held whole): about 1 MB of gzip, a few KB of
  br, 32 KB of zstd.
* ``/endless?coding=C&chunk=B&delay=S`` -- a body that never ends: ``B`` (64 KiB) bytes of
  ``text()`` at a time, in coding C (default identity), S (0) seconds apart (fault server
  only), until the client goes away.
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Callable, Iterator

import brotli
import zstandard

__all__ = ["bomb", "encode", "endless", "text"]

_MIB = 1024 * 1024


def _words() -> bytes:
    rng = random.Random(0xE7C)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    words = [bytes(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(500)]
    # Text-like: compresses about 3x, so a decoder's output differs from its input in size
    # and every byte of it matters.
    return b" ".join(rng.choice(words) for _ in range(60_000))


_TEXT = _words()


def text(size: int) -> bytes:
    """``size`` bytes of deterministic, text-like (compressible) content."""
    return (_TEXT * (size // len(_TEXT) + 1))[:size]


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # deterministic: the header carries no time


def _brotli(data: bytes) -> bytes:
    # Quality 5, not brotli's default 11: a tenth of the CPU for a megabyte, same format.
    out: bytes = brotli.compress(data, quality=5)
    return out


_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gzip,
    "deflate": zlib.compress,
    "deflate-raw": _raw_deflate,
    "br": _brotli,
    # With a checksum, so that garbled data is always detected (as with gzip's CRC).
    "zstd": zstandard.ZstdCompressor(write_checksum=True).compress,
    "identity": bytes,
    # A coding nobody knows (the bytes are left as they are): clients must pass it through.
    "x-unknown": bytes,
}


def encode(data: bytes, codings: list[str], damage: str | None = None) -> tuple[str, bytes]:
    """``(Content-Encoding value, body)`` for ``data`` with ``codings`` applied in order."""
    for coding in codings:
        try:
            data = _ENCODERS[coding](data)
        except KeyError:
            raise ValueError(f"unknown coding {coding!r}") from None
    if damage == "corrupt":
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0x55 for b in data[mid : mid + 16]) + data[mid + 16 :]
    elif damage == "truncate":
        data = data[: len(data) * 3 // 4]
    elif damage == "empty":
        data = b""
    elif damage is not None:
        raise ValueError(f"damage must be corrupt, truncate or empty, not {damage!r}")
    header = ", ".join("deflate" if c == "deflate-raw" else c for c in codings)
    return header, data


def bomb(coding: str, size: int) -> Iterator[bytes]:
    """``size`` zero bytes in ``coding``, produced a piece at a time."""
    zeros = bytes(_MIB)
    blocks, rest = divmod(size, _MIB)
    pieces = [zeros] * blocks + ([bytes(rest)] if rest else [])
    if coding == "gzip":
        # Each 1 MiB block ends with a full flush, so after the first every block compresses
        # to the same ~1 KB: computed once, sent 1023 times. The trailer is honest too.
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        same: dict[int, bytes] = {}
        for index, piece in enumerate(pieces):
            if index > 0 and len(piece) in same:
                yield same[len(piece)]
                continue
            out = compressor.compress(piece) + compressor.flush(zlib.Z_FULL_FLUSH)
            if index > 0:
                same[len(piece)] = out
            yield out
        crc = 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
        # The deflate end block, then CRC-32 and ISIZE (RFC 1952 section 2.3.1).
        yield b"\x03\x00" + crc.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    elif coding == "br":
        brotli_compressor = brotli.Compressor(quality=5)
        for piece in pieces:
            # Flushed per MiB so the bomb goes out as it is made, not all at the end.
            if out := brotli_compressor.process(piece) + brotli_compressor.flush():
                yield out
        yield brotli_compressor.finish()
    elif coding == "zstd":
        # One frame of RLE blocks (RFC 8878 section 3.1.1.2): 4 bytes per 128 KiB of zeros.
        # Frame header: magic, a descriptor with no content size, an 8 MiB window.
        yield (0xFD2FB528).to_bytes(4, "little") + bytes([0, (23 - 10) << 3])
        block = 128 * 1024
        count, tail = divmod(size, block)
        sizes = [block] * count + ([tail] if tail else [])
        for index, length in enumerate(sizes):
            last = index == len(sizes) - 1
            yield (length << 3 | 1 << 1 | last).to_bytes(3, "little") + b"\x00"
    else:
        raise ValueError(f"no bomb in {coding!r}")


def endless(coding: str, chunk: int) -> Iterator[bytes]:
    """``text()`` forever, ``chunk`` bytes at a time, in ``coding`` (identity or gzip)."""
    piece = text(chunk)
    if coding == "identity":
        while True:
            yield piece
    if coding != "gzip":
        raise ValueError(f"no endless body in {coding!r}")
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    while True:
        if out := compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH):
            yield out
