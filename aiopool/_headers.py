"""Headers: ordered, multi-valued, case-insensitive; validated before anything is sent.

Names must be RFC 9110 tokens and values must not contain CR, LF or NUL (RFC 9110 section 5.5:
"a recipient of CR, LF, or NUL within a field value MUST either reject the message or replace
each of those characters with SP"); we refuse them on the sending side with
`LocalProtocolError`, because a CR/LF smuggled into a header is a header injection.

The message framing fields a caller may set (`Host`, `Content-Length`, `Transfer-Encoding`) are
held to stricter rules (`check_framing`): the client owns framing, and a field that could make
a server read the message differently from how we send it is refused before a socket is leased.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeAlias

from ._exceptions import LocalProtocolError

__all__ = ("HeaderTypes", "Headers", "check_framing", "content_length", "validate_header")

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 9110 section 5.5 field-value, as h11 enforces it: visible characters separated by single
# runs of SP/HTAB, no leading or trailing whitespace, and no CR, LF, NUL, VT or FF anywhere.
# Checked here, before a connection is leased, so a bad header never costs a socket.
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_INJECTION = re.compile(rb"[\r\n\x00]")
# RFC 9110 section 8.6: Content-Length = 1*DIGIT. No sign, no list ("3, 3"), no whitespace: a
# server that reads "+3" or "3 , 3" differently from a proxy in front of it is a smuggling setup.
# At most 19 digits, so the value fits in a signed 64-bit integer as servers store it (h11 and
# Go's parseContentLength stop there too).
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,19}")
# RFC 9110 section 7.2 / RFC 3986 section 3.2: Host = uri-host [ ":" port ]; an IP literal in
# brackets, or a reg-name / IPv4 address. A Host with "/", "@", "?" or spaces names no authority
# and servers route it differently (RFC 9112 section 3.2: a server answers 400 to one).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.%]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")
# The fields that frame a message; only these get `check_framing`'s pass.
FRAMING_FIELDS = frozenset({b"host", b"content-length", b"transfer-encoding"})


def content_length(value: bytes) -> int:
    """The value of a Content-Length field we are to send; `LocalProtocolError` unless it is
    1*DIGIT (RFC 9110 section 8.6) of at most 19 digits."""
    if not _CONTENT_LENGTH.fullmatch(value):
        raise LocalProtocolError(
            f"invalid Content-Length {value!r}: it must be a plain decimal number of bytes"
        )
    return int(value)


def check_framing(raw: Iterable[tuple[bytes, bytes]], body: int | None) -> int | None:
    """Check the framing fields among `raw` (the request's own, not yet sent); the declared
    Content-Length, if any.

    `body` is the length of a body held as bytes (0 for none), or None for a streamed body,
    whose Content-Length (if given) it must then match byte for byte as it is sent (see
    `Request.body_chunks`). The rules, the client owning framing as Go's and curl's do:
    - `Host`: at most one, naming an authority (uri-host [":" port]);
    - `Content-Length`: at most one, digits only, equal to the body's length when the body is
      known (a body-less request may say only 0);
    - `Transfer-Encoding`: only "chunked" (any case), once, and never with a Content-Length
      (RFC 9112 section 6.2: a sender MUST NOT send both, the classic request-smuggling
      setup). The client then sends the body chunked itself (as curl does for
      `-H "Transfer-Encoding: chunked"`, and Go for `Request.TransferEncoding = ["chunked"]`);
      over HTTP/2 the field is dropped (RFC 9113 section 8.2.2) and DATA frames frame it.
    Raises `LocalProtocolError`.
    """
    hosts = lengths = codings = 0
    declared: int | None = None
    for name, value in raw:
        if len(name) not in (4, 14, 17):  # (length first: almost every other field skips here)
            continue
        lowered = name.lower()
        if lowered == b"host":
            hosts += 1
            if hosts > 1:
                raise LocalProtocolError("more than one Host header field")
            if not _HOST.fullmatch(value):
                raise LocalProtocolError(f"invalid Host {value!r}: it must name host[:port]")
        elif lowered == b"content-length":
            lengths += 1
            if lengths > 1:
                raise LocalProtocolError("more than one Content-Length header field")
            declared = content_length(value)
        elif lowered == b"transfer-encoding":
            codings += 1
            if codings > 1 or value.lower() != b"chunked":
                raise LocalProtocolError(
                    f"Transfer-Encoding {value!r} refused: the client frames bodies itself and "
                    "sends only 'chunked', once"
                )
    if codings and lengths:
        raise LocalProtocolError(
            "Content-Length together with Transfer-Encoding refused (RFC 9112 section 6.2)"
        )
    if declared is not None and body is not None and declared != body:
        raise LocalProtocolError(f"Content-Length {declared} does not match a body of {body} bytes")
    return declared


def validate_header(name: bytes, value: bytes) -> None:
    """Raise `LocalProtocolError` unless (name, value) is safe to put on the wire."""
    if not _TOKEN.fullmatch(name):
        raise LocalProtocolError(f"illegal header name {name!r}")
    if not _FIELD_VALUE.fullmatch(value):
        if _INJECTION.search(value):
            raise LocalProtocolError(f"illegal character (CR, LF or NUL) in header {name!r} value")
        raise LocalProtocolError(
            f"illegal header {name!r} value {value!r}: leading/trailing whitespace or a "
            "control character"
        )


def _to_bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            # Non-latin-1 text is sent as UTF-8, as browsers do for e.g. Content-Disposition.
            return value.encode("utf-8")
    raise TypeError(f"header {what} must be str or bytes, not {type(value).__name__}")


class Headers(Mapping[str, str]):
    """A case-insensitive, multi-valued view of HTTP headers.

    `headers["a"]` joins repeated fields with ", " (RFC 9110 section 5.3); `get_list("a")` returns
    them one by one; `multi_items()` gives every (name, value) pair in received order.
    Response headers keep names lower-cased, as h11 and h2 deliver them.
    """

    __slots__ = ("_index", "_raw", "_unencoded_length")

    def __init__(self, headers: HeaderTypes | None = None) -> None:
        self._raw: list[tuple[bytes, bytes]] = []
        self._index: dict[str, list[str]] | None = None
        # See `_from_raw`: None, "not known, look at the fields".
        self._unencoded_length: bytes | None = None
        if headers is None:
            return
        if isinstance(headers, Headers):
            self._raw = list(headers._raw)
            return
        items: Iterable[tuple[str | bytes, str | bytes]]
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            self._raw.append((_to_bytes(name, "name"), _to_bytes(value, "value")))

    @classmethod
    def _from_raw(
        cls, raw: list[tuple[bytes, bytes]], *, unencoded_length: bytes | None = None
    ) -> Headers:
        """Adopt a list of byte pairs without copying (the parsers' fast path).

        `unencoded_length`, from a parser that saw every field go by: the head has no
        Content-Encoding, and this is its Content-Length value (b"" if none). A response then
        finds out how to read its body without a pass over the fields (see
        `Response._decoder`); any change to the fields forgets it.
        """
        self = cls.__new__(cls)
        self._raw = raw
        self._index = None
        self._unencoded_length = unencoded_length
        return self

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The (name, value) byte pairs, in order."""
        return self._raw

    def _lookup(self) -> dict[str, list[str]]:
        index = self._index
        if index is None:
            index = {}
            for name, value in self._raw:
                index.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            self._index = index
        return index

    def __getitem__(self, key: str) -> str:
        values = self._lookup().get(key.lower())
        if values is None:
            raise KeyError(key)
        return values[0] if len(values) == 1 else ", ".join(values)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup()

    def __iter__(self) -> Iterator[str]:
        return iter(self._lookup())

    def __len__(self) -> int:
        return len(self._lookup())

    def get_list(self, key: str) -> list[str]:
        """Every value of `key`, in order ([] if absent)."""
        return list(self._lookup().get(key.lower(), ()))

    def multi_items(self) -> list[tuple[str, str]]:
        """Every (name, value) pair as text, repeated names included."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self._raw]

    def __setitem__(self, key: str, value: str) -> None:
        """Replace every field named `key` with one field."""
        lowered = key.lower().encode("latin-1")
        self._raw = [(n, v) for n, v in self._raw if n.lower() != lowered]
        self._raw.append((_to_bytes(key, "name"), _to_bytes(value, "value")))
        self._index = self._unencoded_length = None

    def __delitem__(self, key: str) -> None:
        lowered = key.lower().encode("latin-1")
        before = len(self._raw)
        self._raw = [(n, v) for n, v in self._raw if n.lower() != lowered]
        if len(self._raw) == before:
            raise KeyError(key)
        self._index = self._unencoded_length = None

    def add(self, key: str, value: str) -> None:
        """Append a field, keeping any existing ones of the same name."""
        self._raw.append((_to_bytes(key, "name"), _to_bytes(value, "value")))
        self._index = self._unencoded_length = None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return sorted(self._lowered()) == sorted(other._lowered())
        if isinstance(other, Mapping):
            return sorted(self._lowered()) == sorted(Headers(other)._lowered())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _lowered(self) -> list[tuple[bytes, bytes]]:
        return [(n.lower(), v) for n, v in self._raw]

    def __repr__(self) -> str:
        return f"Headers({self.multi_items()!r})"


# Defined after `Headers`, as an object rather than a string: a string alias inside `HeaderTypes
# | None` is a TypeError for `typing.get_type_hints()` (the annotations above are lazy, so they
# may name it before it exists).
HeaderTypes: TypeAlias = (
    Headers
    | Mapping[str, str]
    | Mapping[bytes, bytes]
    | Sequence[tuple[str, str]]
    | Sequence[tuple[bytes, bytes]]
)
