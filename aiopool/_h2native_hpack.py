"""HPACK (RFC 7541) for the native engine: a compiled codec when installed, else hpack.

Header compression was half of a small request's cost over HTTP/2 with the pure-Python hpack
(~60 us to decode a typical 8-field nginx response head, ~15 us to encode a request's). jh2,
which `aiopool[speedups]` installs, ships a compiled HPACK codec that its own connection uses
(`jh2._hazmat`, maintained and released with jh2); it decodes the same head in ~3 us and
encodes in ~2 us. We use it when it is there and hpack (the reference, always installed with
h2) otherwise; both sit behind the two small classes below, and the test suite runs the engine
on each (`tests/test_h2_native.py`).

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
                fields = [(n, v) for n, v, _ in self._decoder.decode(bytes(block), raw=True)]
            else:
                fields = [(n, v) for n, v in self._decoder.decode(block, raw=True)]
        except (_FAST_OVERSIZED, hpack.exceptions.OversizedHeaderListError) as exc:
            raise ProtocolError(f"response header list too large: {exc}") from None
        except self._errors as exc:
            raise ProtocolError(f"HPACK: {exc}", ErrorCode.COMPRESSION_ERROR) from None
        if self._fast:
            size = _FIELD_OVERHEAD * len(fields)
            for n, v in fields:
                size += len(n) + len(v)
            if size > self._limit:
                raise ProtocolError(
                    f"response header list too large: {size} bytes over {self._limit}"
                )
        return fields
