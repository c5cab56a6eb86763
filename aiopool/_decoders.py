"""Content-Encoding decoding (RFC 9110 section 8.4), with decompression-bomb bounds.

A response body is decoded as it arrives. The rules kept here:

- **Bounded steps.** No decoder turns one received chunk into one big allocation: each step
  produces at most `DECODE_STEP` bytes (zlib's `max_length`/`unconsumed_tail`, brotli >= 1.2's
  `output_buffer_limit`, zstandard's `read1`), and the steps are generated lazily, so whoever
  pulls them can stop after any one. A gzip bomb costs what has been pulled, never the whole.
- **A ratio bound.** Past `RATIO_FLOOR` decoded bytes, a body may not decode to more than
  `MAX_RATIO` times the bytes received (`DecodingError`). This bounds the streaming case too,
  where no size cap applies.
- **Strictness.** Corrupt data, a stream cut short, or bytes after the end of a stream raise
  `DecodingError`. A body of zero bytes decodes to zero bytes whatever its header says (HEAD,
  204, 304, and empty responses carry Content-Encoding too).
- **Unknown codings pass through.** Codings are undone from the last applied (the last listed)
  inward, while we know them; at the first unknown one we stop and deliver the rest as it is,
  as httpx and urllib3 do: the caller can still see `Content-Encoding` and decode it, where an
  exception would have made the body unreachable.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import IO, Protocol, cast

from ._exceptions import DecodingError
from ._headers import Headers

__all__ = (
    "ACCEPT_ENCODING",
    "DECODE_STEP",
    "MAX_CODINGS",
    "MAX_RATIO",
    "RATIO_FLOOR",
    "ContentDecoder",
    "decoder_for",
    "decoder_from",
)

# The most output one decoding step may produce. 64 KiB (asyncio streams' default buffer
# limit): big enough that a step's overhead is small next to its copying, small enough that
# one step of a bomb is nothing.
DECODE_STEP = 64 * 1024

# More codings than this in one Content-Encoding is an attack, not a configuration: real
# responses apply one, rarely two. urllib3 2.6 (CVE-2025-66418: an unbounded chain let a
# server burn CPU and memory) and undici cap the chain at 5 too.
MAX_CODINGS = 5

# Past RATIO_FLOOR decoded bytes, decoding more than MAX_RATIO bytes per byte received is
# treated as a bomb. Precedents: Apache httpd's DeflateInflateRatioLimit is 200, Envoy's
# decompressor max_inflate_ratio 100, Apache POI's zip-bomb check 100 past 100 KiB, Tor 25
# past 64 KiB. Text and JSON compress 3-20x with gzip; only padding-like content nears 200x
# (and, with br and zstd, long verbatim repeats), and one layer of gzip cannot exceed ~1032x.
# The floor is generous (a small, very repetitive response is not a bomb) yet far below what
# a bomb is for: its cost is capped near 16 MiB of output. MAX_RATIO is the default of
# `Client(max_decompression_ratio=)`, for content known to be more repetitive than that.
MAX_RATIO = 200
RATIO_FLOOR = 16 * 1024 * 1024

# RFC 9659 section 3: a zstd content coding's window is at most 8 MB, so a decoder needs no
# more memory than that; zstandard would otherwise allow 128 MiB windows (a memory bomb in a
# frame header).
_ZSTD_MAX_WINDOW = 8 * 1024 * 1024


class _Decoder(Protocol):
    """One content coding. `decode` and `finish` yield output in steps of <= DECODE_STEP."""

    def decode(self, data: bytes) -> Iterator[bytes]: ...

    def finish(self) -> Iterator[bytes]:
        """The rest of the output; raises `DecodingError` if the input stopped mid-stream."""
        ...


class _ZlibDecoder:
    """gzip (RFC 1952, one or more members, as Go and zlib's gzread accept), zlib (RFC 1950)
    or raw deflate (RFC 1951), by `wbits`."""

    __slots__ = ("_d", "_name", "_seen", "_wbits")

    def __init__(self, name: str, wbits: int) -> None:
        self._name = name
        self._wbits = wbits
        self._d = zlib.decompressobj(wbits)
        self._seen = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            self._seen = True
        while True:
            d = self._d
            if d.eof:
                if not data:
                    return
                if self._wbits != _GZIP:
                    raise DecodingError(f"data after the end of the {self._name} stream")
                # Another gzip member; anything else fails its header check just below.
                d = self._d = zlib.decompressobj(self._wbits)
            try:
                out = d.decompress(data, DECODE_STEP)
            except zlib.error as exc:
                raise DecodingError(f"corrupt {self._name} data: {exc}") from None
            if out:
                yield out
            data = d.unused_data if d.eof else d.unconsumed_tail
            # A full step may leave output inside zlib with no input left: ask again.
            if not data and len(out) < DECODE_STEP:
                return

    def finish(self) -> Iterator[bytes]:
        if self._seen and not self._d.eof:
            raise DecodingError(f"truncated {self._name} data: the stream ended before its end")
        return iter(())


_GZIP = 16 + zlib.MAX_WBITS  # gzip header and trailer
_ZLIB = zlib.MAX_WBITS  # zlib header and trailer
_RAW = -zlib.MAX_WBITS  # neither


class _DeflateDecoder:
    """`deflate` is zlib-wrapped by RFC 9110 section 8.4.1.2, but servers have sent raw deflate
    since IIS did: like browsers, curl and httpx we accept both, told apart by whether the first
    two bytes are a valid zlib header (RFC 1950 section 2.2: CM 8, CINFO <= 7, FCHECK)."""

    __slots__ = ("_head", "_inner")

    def __init__(self) -> None:
        self._head = b""
        self._inner: _ZlibDecoder | None = None

    def decode(self, data: bytes) -> Iterator[bytes]:
        inner = self._inner
        if inner is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return iter(())
            cmf, flg = data[0], data[1]
            wrapped = cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf << 8 | flg) % 31 == 0
            inner = self._inner = _ZlibDecoder("deflate", _ZLIB if wrapped else _RAW)
            self._head = b""
        return inner.decode(data)

    def finish(self) -> Iterator[bytes]:
        if self._inner is None:
            if self._head:
                raise DecodingError("truncated deflate data: one byte")
            return iter(())
        return self._inner.finish()


class _BrotliDecoder:
    """br (RFC 7932), bounded by brotli >= 1.2's `output_buffer_limit` (the fix for
    CVE-2025-6176; older releases can only decode a chunk all at once, so we do not use them)."""

    __slots__ = ("_d", "_seen")

    def __init__(self) -> None:
        self._d = brotli.Decompressor()
        self._seen = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        if data:
            if d.is_finished():
                raise DecodingError("data after the end of the br stream")
            self._seen = True
        try:
            out = d.process(data, output_buffer_limit=DECODE_STEP)
            # brotli keeps input (and output past the limit) inside; until it can accept more
            # input it must be called with none, and it has more to give while it gives.
            while out or not d.can_accept_more_data():
                if out:
                    yield out
                out = d.process(b"", output_buffer_limit=DECODE_STEP)
        except brotli.error as exc:
            raise DecodingError(f"corrupt br data: {exc}") from None

    def finish(self) -> Iterator[bytes]:
        if self._seen and not self._d.is_finished():
            raise DecodingError("truncated br data: the stream ended before its end")
        return iter(())


class _Starved(Exception):
    """Raised into zstandard's reader when the input received so far is used up."""


class _ZstdInput:
    """The source zstandard's pull-based reader reads from: what the network gave us so far.

    zstandard has no push API with an output bound (`decompressobj` returns everything a chunk
    decodes to), but its reader's `read1` yields one bounded step and reads its source only
    when it has used up its input and produced nothing; so when we have nothing yet, `read`
    raises `_Starved` out of `read1` with no output lost, and the next `read1` resumes.
    """

    __slots__ = ("data", "eof")

    def __init__(self) -> None:
        self.data = b""
        self.eof = False

    def read(self, size: int) -> bytes:
        data = self.data
        if not data:
            if self.eof:
                return b""
            raise _Starved
        if len(data) > size:
            self.data = data[size:]
            return data[:size]
        self.data = b""
        return data


class _ZstdFrames:
    """Follows the frame structure (RFC 8878 section 3.1) by its headers alone, to tell what
    zstandard's reader does not: whether the input ended between frames or inside one."""

    __slots__ = ("_buf", "_checksum", "_need", "_skip", "_state")

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4  # bytes of the next header field
        self._buf = b""
        self._skip = 0  # payload bytes to pass over before it
        self._checksum = False

    @property
    def between_frames(self) -> bool:
        return self._state == "magic" and not self._buf and not self._skip

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and self._state != "lost":
            if self._skip:
                taken = min(self._skip, end - pos)
                self._skip -= taken
                pos += taken
                continue
            taken = min(self._need - len(self._buf), end - pos)
            self._buf += data[pos : pos + taken]
            pos += taken
            if len(self._buf) == self._need:
                field, self._buf = self._buf, b""
                self._field(int.from_bytes(field, "little"))

    def _field(self, value: int) -> None:
        state = self._state
        if state == "magic":
            if value == 0xFD2FB528:
                self._state, self._need = "descriptor", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame
                self._state, self._need = "skippable", 4
            else:
                self._state = "lost"  # zstandard reports the bad magic itself
        elif state == "descriptor":
            single_segment = value >> 5 & 1
            self._checksum = bool(value >> 2 & 1)
            rest = (1 - single_segment) + (0, 1, 2, 4)[value & 3]
            rest += (single_segment, 2, 4, 8)[value >> 6]
            self._state, self._need = ("header", rest) if rest else ("block", 3)
        elif state == "header":
            self._state, self._need = "block", 3
        elif state == "block":
            block_type = value >> 1 & 3
            self._skip = 1 if block_type == 1 else value >> 3  # RLE blocks carry one byte
            if not value & 1:
                self._state, self._need = "block", 3
            elif self._checksum:
                self._state, self._need = "checksum", 4
            else:
                self._state, self._need = "magic", 4
        elif state == "skippable":
            self._skip = value
            self._state, self._need = "magic", 4
        else:  # "checksum"
            self._state, self._need = "magic", 4


class _ZstdDecoder:
    """zstd (RFC 8878), one or more frames, windows up to 8 MB (RFC 9659)."""

    __slots__ = ("_frames", "_input", "_reader")

    def __init__(self) -> None:
        self._input = _ZstdInput()
        self._frames = _ZstdFrames()
        dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
        # (Typed as a file; it reads any object with `read(size)`.)
        source = cast("IO[bytes]", self._input)
        self._reader = dctx.stream_reader(
            source, read_size=DECODE_STEP, read_across_frames=True, closefd=False
        )

    def decode(self, data: bytes) -> Iterator[bytes]:
        self._frames.feed(data)
        self._input.data += data
        return self._steps()

    def _steps(self) -> Iterator[bytes]:
        read1 = self._reader.read1
        while True:
            try:
                out = read1(DECODE_STEP)
            except _Starved:
                return
            except zstandard.ZstdError as exc:
                raise DecodingError(f"corrupt zstd data: {exc}") from None
            if not out:
                return
            yield out

    def finish(self) -> Iterator[bytes]:
        self._input.eof = True
        yield from self._steps()
        if not self._frames.between_frames:
            raise DecodingError("truncated zstd data: the stream ended inside a frame")


_Factory = Callable[[], _Decoder]
_DECODERS: dict[str, _Factory] = {
    "gzip": lambda: _ZlibDecoder("gzip", _GZIP),
    # RFC 9110 section 8.4.1.3: "x-gzip" is to be treated as "gzip".
    "x-gzip": lambda: _ZlibDecoder("gzip", _GZIP),
    "deflate": _DeflateDecoder,
}

try:
    import brotli
except ImportError:  # Defensive: the brotli extra is optional
    pass
else:
    try:
        brotli.Decompressor().process(b"", output_buffer_limit=1)
    except TypeError:  # Defensive: brotli < 1.2 cannot bound its output; leave br undecoded
        pass
    else:
        _DECODERS["br"] = _BrotliDecoder

try:
    import zstandard
except ImportError:  # Defensive: the zstd extra is optional
    pass
else:
    _DECODERS["zstd"] = _ZstdDecoder

# What we ask for by default: everything we can decode, computed once.
ACCEPT_ENCODING = ", ".join(c for c in ("gzip", "deflate", "br", "zstd") if c in _DECODERS).encode()


class ContentDecoder:
    """Decodes one response body: its codings undone in reverse order, within the bounds.

    `feed(chunk)` and then `finish()` yield the decoded body in steps of at most DECODE_STEP
    bytes. Both raise `DecodingError` for corrupt or truncated data and for a body decoding to
    more than `max_ratio` times its size past RATIO_FLOOR (None: no ratio bound).
    """

    __slots__ = ("_chain", "_decoded", "_max_ratio", "_received", "codings")

    def __init__(self, chain: list[_Decoder], codings: str, max_ratio: float | None) -> None:
        self._chain = chain  # outermost (last applied) first
        self.codings = codings
        self._max_ratio = max_ratio
        self._received = 0
        self._decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._received += len(data)
        return self._bounded(self._through(0, data))

    def finish(self) -> Iterator[bytes]:
        return self._bounded(self._finish())

    def _through(self, level: int, data: bytes) -> Iterator[bytes]:
        if level == len(self._chain):
            yield data
            return
        for piece in self._chain[level].decode(data):
            yield from self._through(level + 1, piece)

    def _finish(self) -> Iterator[bytes]:
        # The outermost coding ends first; what it still held goes through the inner ones.
        for level, decoder in enumerate(self._chain):
            for piece in decoder.finish():
                yield from self._through(level + 1, piece)

    def _bounded(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        ratio = self._max_ratio
        if ratio is None:
            yield from pieces
            return
        for piece in pieces:
            self._decoded += len(piece)
            if self._decoded > RATIO_FLOOR and self._decoded > ratio * self._received:
                raise DecodingError(
                    f"{self.codings!r} content decoded to more than {ratio:g} times its size "
                    f"({self._decoded} bytes from {self._received}): refusing a likely "
                    "decompression bomb (the client's max_decompression_ratio)"
                )
            yield piece


def decoder_for(headers: Headers, max_ratio: float | None = MAX_RATIO) -> ContentDecoder | None:
    """The decoder for a response with these headers, or None if its body is used as it is.

    Raises `DecodingError` for a chain of more than MAX_CODINGS codings.
    """
    values = [v for n, v in headers.raw if n.lower() == b"content-encoding"]
    return decoder_from(values, max_ratio) if values else None


def decoder_from(values: list[bytes], max_ratio: float | None) -> ContentDecoder | None:
    """The decoder for these Content-Encoding field values (`decoder_for`)."""
    codings = [
        c for v in values for c in (t.strip().lower() for t in v.decode("latin-1").split(",")) if c
    ]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > MAX_CODINGS:
        raise DecodingError(
            f"Content-Encoding lists {len(codings)} codings; more than {MAX_CODINGS} is refused"
        )
    chain: list[_Decoder] = []
    for coding in reversed(codings):
        factory = _DECODERS.get(coding)
        if factory is None:
            break  # unknown: deliver the rest still encoded (see the module docstring)
        chain.append(factory())
    if not chain:
        return None
    return ContentDecoder(chain, ", ".join(codings), max_ratio)
