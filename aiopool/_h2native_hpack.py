"""HPACK (RFC 7541) for the native engine: a compiled codec when installed, else hpack.

Header compression was half of a small request's cost over HTTP/2 with the pure-Python hpack
(~60 us to decode a typical 8-field nginx response head, ~15 us to encode a request's). jh2,
which `aiopool[speedups]` installs, ships a compiled HPACK codec that its own connection uses
(`jh2._hazmat`, maintained and released with jh2); it decodes the same head in ~3 us and
encodes in ~2 us. We use it when it is there and hpack (the reference, always installed with
h2) otherwise; both sit behind the two small classes below, and the test suite runs the engine
on each (`tests/test_h2_native.py`).

The compiled decoder is faster than it is strict, so it only ever sees blocks `_scan` passed,
and its output is checked after it: differential fuzzing against hpack found that it panics on
a truncated integer (a `BaseException` out of Rust, not an error), accepts a dynamic table size
update after a field (RFC 7541 section 4.2: "MUST occur at the beginning" of a block) and
Huffman strings whose padding is not the EOS prefix or longer than 7 bits (section 5.2: "MUST
be treated as a decoding error"). `_scan` walks the representations (integers and string
lengths, no Huffman decoding: ~1 us per field) and refuses the first two; the padding is
checked from each decoded string's code length (`_check_padding`). A block that passed both
is remembered (`_CHECKED`): a server's repeated heads cost one set lookup.

Both codecs are held to the same rules:
- the header list's size is counted as RFC 7541 section 4.1 says (name + value + 32 per
  field), here, after decoding; the codec's own limit is set to the same number and only bounds
  the memory a block may expand into while it is decoded (jh2 counts without the 32 bytes);
- fields whose values are credentials are "never indexed" (section 7.1.3): a secret must not
  sit in the dynamic table, where a compression oracle could guess at it;
- any codec error is `ProtocolError(COMPRESSION_ERROR)`, an oversized list `ProtocolError`.
"""

from __future__ import annotations

from typing import Any

import hpack
import hpack.exceptions
from hpack.huffman_constants import REQUEST_CODES_LENGTH

from ._h2native_frames import ErrorCode, ProtocolError

__all__ = ("COMPILED", "HeaderDecoder", "HeaderEncoder")

try:
    from jh2 import _hazmat

    # (The classes checked, not just the module: a jh2 without them must fall back cleanly.)
    _FAST: Any = (_hazmat.Encoder, _hazmat.Decoder, _hazmat.HPACKError)
    _FAST_OVERSIZED: type[Exception] = _hazmat.OversizedHeaderListError
    _FAST_ERRORS: tuple[type[Exception], ...] = (_hazmat.HPACKError,)
except (ImportError, AttributeError):  # pragma: no cover - depends on what is installed
    _FAST = None
    _FAST_OVERSIZED = hpack.exceptions.OversizedHeaderListError
    _FAST_ERRORS = ()

# Whether the compiled codec is in use (tests and `make bench` report it).
COMPILED = _FAST is not None

_SENSITIVE = frozenset({b"authorization", b"proxy-authorization"})
# RFC 7541 section 4.1: each field counts 32 bytes beyond its name and value.
_FIELD_OVERHEAD = 32


# Each octet's Huffman code length in bits (RFC 7541 appendix B), as a translation table.
_CODE_BITS = bytes(REQUEST_CODES_LENGTH[:256])
# A prefix integer of more octets than this is refused (hpack: its values stay below 2^32).
_MAX_INTEGER_OCTETS = 5


def _broken(what: str) -> ProtocolError:
    return ProtocolError(f"HPACK: {what}", ErrorCode.COMPRESSION_ERROR)


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """The prefix integer (section 5.1) at `pos` and the position after it."""
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    end = len(block)
    for shift in range(0, 7 * _MAX_INTEGER_OCTETS, 7):
        if pos >= end:
            raise _broken("truncated integer")
        octet = block[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if not octet & 0x80:
            return value, pos
    raise _broken("integer too long")


def _string(
    block: bytes, pos: int, field: int, part: int, huffman: list[tuple[int, int, int, int]]
) -> int:
    """Skip the string literal (section 5.2) at `pos`; note a Huffman-coded one in `huffman`
    as (field, 0 for its name or 1 for its value, encoded length, last octet)."""
    if pos >= len(block):
        raise _broken("truncated string")
    coded = block[pos] & 0x80
    length, pos = _integer(block, pos, 7)
    end = pos + length
    if end > len(block):
        raise _broken("truncated string")
    if coded and length:
        huffman.append((field, part, length, block[end - 1]))
    return end


def _scan(block: bytes) -> list[tuple[int, int, int, int]]:
    """Check the block's structure; return its Huffman-coded strings (see `_string`)."""
    huffman: list[tuple[int, int, int, int]] = []
    pos, end, field = 0, len(block), 0
    while pos < end:
        octet = block[pos]
        if octet & 0x80:  # indexed field (section 6.1)
            _, pos = _integer(block, pos, 7)
            field += 1
            continue
        if octet & 0x40:  # literal with incremental indexing (6.2.1)
            prefix = 6
        elif octet & 0x20:  # dynamic table size update (6.3)
            if field:
                raise _broken("table size update after a field (RFC 7541 section 4.2)")
            _, pos = _integer(block, pos, 5)
            continue
        else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
            prefix = 4
        index, pos = _integer(block, pos, prefix)
        if not index:
            pos = _string(block, pos, field, 0, huffman)
        pos = _string(block, pos, field, 1, huffman)
        field += 1
    return huffman


# Blocks that passed `_scan` and `_check_padding`: both depend on the block's bytes alone (its
# Huffman strings are literals in it, whatever the table holds), and servers send the same
# blocks again and again (nginx: the same head but for `date`, which changes once a second).
_CHECKED: set[bytes] = set()
_CHECKED_MAX = 1024  # blocks, of at most _CHECKED_BLOCK bytes each: 1 MiB at most
_CHECKED_BLOCK = 1024


def _remember(block: bytes) -> None:
    if len(block) <= _CHECKED_BLOCK:
        if len(_CHECKED) >= _CHECKED_MAX:
            _CHECKED.clear()
        _CHECKED.add(block)


def _check_padding(
    fields: list[tuple[bytes, bytes]], huffman: list[tuple[int, int, int, int]]
) -> None:
    """Each Huffman string ends in fewer than 8 bits of padding, all ones (section 5.2)."""
    for field, part, length, last in huffman:
        bits = sum(fields[field][part].translate(_CODE_BITS))
        padding = 8 * length - bits
        ones = (1 << padding) - 1
        if not 0 <= padding < 8 or last & ones != ones:
            raise _broken("Huffman string padding is not the EOS prefix of 0-7 bits")


class HeaderEncoder:
    """Encodes request header blocks; the dynamic table serves repeated fields."""

    __slots__ = ("_encoder", "_fast")

    def __init__(self, compiled: bool = COMPILED) -> None:
        self._fast = compiled
        self._encoder: Any = _FAST[0]() if compiled else hpack.Encoder()

    @property
    def header_table_size(self) -> int:
        return int(self._encoder.header_table_size)

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._encoder.header_table_size = value

    def encode(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        sensitive = _SENSITIVE
        if self._fast:
            return bytes(
                self._encoder.encode([(n, v, n in sensitive) for n, v in headers], huffman=True)
            )
        return bytes(
            self._encoder.encode(
                [
                    hpack.NeverIndexedHeaderTuple(n, v) if n in sensitive else (n, v)
                    for n, v in headers
                ]
            )
        )


class HeaderDecoder:
    """Decodes response header blocks; `max_header_list_size` bounds each list (section 4.1)."""

    __slots__ = ("_decoder", "_errors", "_fast", "_limit")

    def __init__(self, compiled: bool = COMPILED) -> None:
        self._fast = compiled
        self._decoder: Any = _FAST[1]() if compiled else hpack.Decoder()
        self._limit: int = self._decoder.max_header_list_size
        self._errors: tuple[type[Exception], ...] = (
            (*_FAST_ERRORS, ValueError, IndexError)
            if compiled
            else (hpack.exceptions.HPACKError, IndexError, ValueError)
        )

    @property
    def max_header_list_size(self) -> int:
        return self._limit

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        self._limit = value
        self._decoder.max_header_list_size = value

    def decode(self, block: memoryview) -> list[tuple[bytes, bytes]]:
        """The block's fields as (name, value) bytes pairs.

        Raises `ProtocolError` (COMPRESSION_ERROR) for a block the codec refuses, and
        `ProtocolError` (PROTOCOL_ERROR) for a list over `max_header_list_size`."""
        try:
            if self._fast:
                data = bytes(block)
                seen = data in _CHECKED
                huffman = None if seen else _scan(data)
                fields = [(n, v) for n, v, _ in self._decoder.decode(data, raw=True)]
            else:
                fields = [(n, v) for n, v in self._decoder.decode(block, raw=True)]
        except (_FAST_OVERSIZED, hpack.exceptions.OversizedHeaderListError) as exc:
            raise ProtocolError(f"response header list too large: {exc}") from None
        except self._errors as exc:
            raise _broken(str(exc)) from None
        except BaseException as exc:
            # (A panic in the compiled codec is a BaseException; `_scan` refuses the inputs
            # known to cause one. Any other panic is still the peer's broken block.)
            if type(exc).__name__ != "PanicException":
                raise
            raise _broken("the compiled decoder refused the block") from None
        if self._fast:
            if huffman is not None:
                _check_padding(fields, huffman)
                _remember(data)
            size = _FIELD_OVERHEAD * len(fields)
            for n, v in fields:
                size += len(n) + len(v)
            if size > self._limit:
                raise ProtocolError(
                    f"response header list too large: {size} bytes over {self._limit}"
                )
        return fields
