"""The native HTTP/2 engine's checks of received field sections (RFC 9113 sections 8.2, 8.3).

As h2 (the reference engine) checks them, so that both refuse the same responses; a
malformed field is a `ProtocolError`. :status's own form is `HTTP2Connection`'s to judge
(a stream error), as for every engine.
"""

from __future__ import annotations

import re

from ._h2native_frames import ProtocolError

__all__ = ("check_fields", "content_length")

# Section 8.2.1: a field name is lower-case, no controls, no colon; section 8.2.2: no
# connection-specific fields; section 8.2.1: values without NUL, CR, LF or outer whitespace.
_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_VALUE = re.compile(rb"(?:[^\x00\r\n\t ](?:[^\x00\r\n]*[^\x00\r\n\t ])?)?")
# Fields that passed (name and value): a server repeats most of its fields on every response,
# so each is checked once (at most 4,096 remembered, values of up to 128 bytes).
_GOOD: set[tuple[bytes, bytes]] = set()
_GOOD_MAX = 4096
_GOOD_VALUE = 128
_CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def check_fields(headers: list[tuple[bytes, bytes]], response: bool) -> bytes:
    """Check a response head (`response`) or trailers; return :status (b"" for trailers; its
    form is `HTTP2Connection`'s to judge, a stream error).

    Raises `ProtocolError` as h2 does for malformed fields (RFC 9113 sections 8.2, 8.3)."""
    status: bytes | None = None
    regular = False
    name_ok = _NAME.fullmatch
    value_ok = _VALUE.fullmatch
    good = _GOOD
    for field in headers:
        name, value = field
        if name[:1] == b":":
            if not response or regular or name != b":status" or status is not None:
                raise ProtocolError(f"pseudo-header {name!r} not allowed here")
            status = value
            if value_ok(value) is None:
                raise ProtocolError(f"malformed value of {name!r}")
            continue
        regular = True
        if field in good:
            continue
        if name_ok(name) is None:
            raise ProtocolError(f"malformed field name {name!r}")
        if value and value_ok(value) is None:
            raise ProtocolError(f"malformed value of {name!r}")
        if name in _CONNECTION_FIELDS or (name == b"te" and value.lower() != b"trailers"):
            raise ProtocolError(f"connection-specific field {name!r}")
        if len(value) <= _GOOD_VALUE:
            if len(good) >= _GOOD_MAX:
                good.clear()
            good.add(field)
    if status is None:
        if response:
            raise ProtocolError("response without :status")
        return b""
    return status


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """content-length, if stated (all copies alike). Raises `ProtocolError` if malformed."""
    found: int | None = None
    for name, value in headers:
        if name == b"content-length":
            if (
                not value.isdigit()
                or not value.isascii()
                or (found is not None and int(value) != found)
            ):
                raise ProtocolError(f"invalid content-length {value!r}")
            found = int(value)
    return found
