"""Strategies for HTTP/1.1 responses: well-formed, mutated, and random bytes.

A well-formed response is generated as a `ResponseSpec` (interim 1xx responses, status line,
headers, a body framed by Content-Length, chunked coding or the connection closing) and
serialised; a mutated case then edits the spec's framing (duplicated or conflicting framing
headers, impossible lengths, bad chunk sizes, bytes trailing the response) and/or the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from .fields import RESERVED_FIELDS, TOKEN_LOWER, header_values
from .mutations import Mutation, apply, mutations, split, splits

__all__ = ("Expected", "H11Case", "mutated_cases", "random_cases", "valid_cases")

_TOKEN = TOKEN_LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

header_names = st.text(_TOKEN, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in RESERVED_FIELDS
)
headers = st.lists(st.tuples(header_names, header_values), max_size=6)
reasons = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8),
    min_size=1,
    max_size=3,
).map(" ".join)


@dataclass(frozen=True)
class Expected:
    """What the client must make of an unmutated response."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reusable: bool | None  # None: parsers may differ (HTTP/1.0 keep-alive)
    version: str  # "HTTP/1.1" or "HTTP/1.0"


@dataclass(frozen=True)
class ResponseSpec:
    version: str  # "1.1" or "1.0"
    interim: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes  # what a GET would carry (a HEAD response carries none)
    framing: str  # "length", "chunked", "eof" or "none"
    chunk_sizes: tuple[int, ...] = ()
    chunk_ext: bool = False
    upper_hex: bool = False
    trailers: tuple[tuple[str, str], ...] = ()
    connection: str | None = None  # "close" or "keep-alive"
    head: bool = False
    extra_headers: tuple[tuple[str, str], ...] = ()  # mutations: framing headers added
    size_lines: tuple[tuple[int, bytes], ...] = ()  # mutations: (chunk index, size line)
    trailing: bytes = b""  # mutations: bytes after the end of the response

    @property
    def keep_alive(self) -> bool:
        if self.connection == "close" or self.framing == "eof":
            return False
        return self.version == "1.1" or self.connection == "keep-alive"

    def framing_headers(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.framing == "length":
            out.append(("Content-Length", str(len(self.body))))
        elif self.framing == "chunked":
            out.append(("Transfer-Encoding", "chunked"))
        if self.connection is not None:
            out.append(("Connection", self.connection))
        return out

    def serialize(self) -> bytes:
        parts: list[bytes] = []
        for status, fields in self.interim:
            parts.append(b"HTTP/1.1 %d Continue\r\n" % status)
            parts.extend(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in fields)
            parts.append(b"\r\n")
        parts.append(
            b"HTTP/%s %03d %s\r\n" % (self.version.encode(), self.status, self.reason.encode())
        )
        for name, value in [*self.headers, *self.framing_headers(), *self.extra_headers]:
            parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        parts.append(b"\r\n")
        if not self.head:
            parts.append(self._body())
        parts.append(self.trailing)
        return b"".join(parts)

    def _body(self) -> bytes:
        if self.framing != "chunked":
            return self.body if self.framing != "none" else b""
        overrides = dict(self.size_lines)
        out: list[bytes] = []
        start = 0
        for index, size in enumerate((*self.chunk_sizes, 0)):
            line = (b"%X" if self.upper_hex else b"%x") % size
            if self.chunk_ext:
                line += b";ext=%d" % index
            out.append(overrides.get(index, line) + b"\r\n")
            if size:
                out.append(self.body[start : start + size] + b"\r\n")
                start += size
        out.extend(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in self.trailers)
        out.append(b"\r\n")
        return b"".join(out)

    def expected(self) -> Expected:
        return Expected(
            status=self.status,
            reason=self.reason,
            headers=self.headers,
            body=b"" if self.head or self.framing == "none" else self.body,
            reusable=None if self.version == "1.0" and self.keep_alive else self.keep_alive,
            version=f"HTTP/{self.version}",
        )


@dataclass(frozen=True)
class H11Case:
    """What the server answers to one request, and what the request is."""

    method: str
    data: bytes
    points: tuple[int, ...] = ()
    keep_open: bool = False  # wait for the next request indefinitely (else linger, then close)
    close_after: bool = False  # close right after writing
    expect: Expected | None = None  # unmutated: exact expectations
    trailing: bool = False  # a complete response followed by bytes: the socket must not be reused
    stream: bool = False  # read one chunk through client.stream(), then leave the block
    label: str = field(default="", compare=False)

    def chunks(self) -> list[bytes]:
        return split(self.data, self.points)


@st.composite
def _chunk_sizes(draw: st.DrawFn, total: int) -> tuple[int, ...]:
    sizes: list[int] = []
    left = total
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    return tuple(sizes)


@st.composite
def response_specs(draw: st.DrawFn, head: bool) -> ResponseSpec:
    version = draw(st.sampled_from(["1.1", "1.1", "1.1", "1.0"]))
    interim: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()
    if version == "1.1":
        interim = tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from([100, 102, 103]), headers.map(tuple)), max_size=2
                )
            )
        )
    status = draw(st.integers(200, 599))
    body = draw(st.binary(max_size=600))
    if status in (204, 304):
        framing = "none"
        body = b""
    elif version == "1.0":
        framing = draw(st.sampled_from(["length", "eof"]))
    else:
        framing = draw(st.sampled_from(["length", "chunked", "eof"]))
    if head and framing == "eof":
        framing = "length"  # a HEAD response ends with its head: EOF delimits nothing
    connection = draw(st.sampled_from([None, None, "close", "keep-alive"]))
    chunked = framing == "chunked"
    return ResponseSpec(
        version=version,
        interim=interim,
        status=status,
        reason=draw(reasons),
        headers=tuple(draw(headers)),
        body=body,
        framing=framing,
        chunk_sizes=draw(_chunk_sizes(len(body))) if chunked else (),
        chunk_ext=chunked and draw(st.booleans()),
        upper_hex=chunked and draw(st.booleans()),
        trailers=tuple(draw(headers)) if chunked and draw(st.booleans()) else (),
        connection=connection,
        head=head,
    )


methods = st.sampled_from(["GET", "GET", "GET", "HEAD"])


@st.composite
def valid_cases(draw: st.DrawFn) -> H11Case:
    """Well-formed responses, split into random writes: parsed exactly, reused when allowed."""
    method = draw(methods)
    spec = draw(response_specs(head=method == "HEAD"))
    return H11Case(
        method=method,
        data=spec.serialize(),
        points=draw(splits),
        keep_open=spec.keep_alive,
        close_after=not spec.keep_alive,
        expect=spec.expected(),
        label="valid",
    )


# Framing headers that are duplicated, conflicting, impossible or ambiguous.
_BAD_LENGTHS = [
    "-1",
    "99999999999999999999",
    "18446744073709551616",
    "1e3",
    " 5",
    "+5",
    "0x5",
    "",
    "5, 5",
    "5,6",
    "abc",
    "0",
    "1",
    "100000",
]
_BAD_TE = [
    "chunked",
    "gzip",
    "chunked, gzip",
    "gzip, chunked",
    "identity",
    "chunked, chunked",
    "xchunked",
    "Chunked",
    "chunked;q=1",
    "",
]
_BAD_CONNECTION = ["close", "keep-alive", "upgrade", "Close, keep-alive", "", "close, close"]
framing_headers = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["Content-Length", "content-length"]), st.sampled_from(_BAD_LENGTHS)
        ),
        st.tuples(st.just("Transfer-Encoding"), st.sampled_from(_BAD_TE)),
        st.tuples(st.just("Connection"), st.sampled_from(_BAD_CONNECTION)),
        st.tuples(st.just("Upgrade"), st.just("h2c")),
    ),
    min_size=1,
    max_size=3,
)
_BAD_SIZES = [
    b"-1",
    b"ffffffffffffffffffffffff",
    b"zz",
    b"1 1",
    b" a",
    b"0x10",
    b"",
    b"1;",
    b"+1",
    b"7fffffffffffffff",
    b"\x00",
]


@st.composite
def mutated_cases(draw: st.DrawFn) -> H11Case:
    """A well-formed response, then its framing and/or bytes broken."""
    method = draw(methods)
    spec = draw(response_specs(head=method == "HEAD"))
    kinds = draw(
        st.sets(st.sampled_from(["framing", "chunk", "trailing", "bytes", "status"]), min_size=1)
    )
    edits: tuple[Mutation, ...] = ()
    changes: dict[str, object] = {}
    if "framing" in kinds:
        changes["extra_headers"] = tuple(draw(framing_headers))
    if "chunk" in kinds and spec.framing == "chunked":
        changes["size_lines"] = tuple(
            draw(
                st.lists(
                    st.tuples(st.integers(0, len(spec.chunk_sizes)), st.sampled_from(_BAD_SIZES)),
                    min_size=1,
                    max_size=2,
                )
            )
        )
    if "trailing" in kinds:
        changes["trailing"] = draw(
            st.one_of(
                st.binary(min_size=1, max_size=40),
                st.sampled_from(
                    [b"\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"\x00", b"x"]
                ),
            )
        )
    if "status" in kinds:
        # Statuses with rules of their own: no body (1xx, 204, 304), an upgrade, none at all.
        changes["status"] = draw(st.sampled_from([0, 99, 100, 101, 103, 204, 304, 600, 999]))
    if "bytes" in kinds:
        edits = draw(mutations())
    spec = ResponseSpec(**{**spec.__dict__, **changes})
    # Known-trailing: the only change is bytes after a complete, reusable response.
    trailing = kinds == {"trailing"} and spec.keep_alive
    return H11Case(
        method=method,
        data=apply(spec.serialize(), edits),
        points=draw(splits),
        close_after=draw(st.booleans()),
        trailing=trailing,
        stream=draw(st.booleans()),
        label="+".join(sorted(kinds)),
    )


_PREFIXES = [
    b"",
    b"HTTP/1.1 ",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: ",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
]


@st.composite
def random_cases(draw: st.DrawFn) -> H11Case:
    """Random bytes, often after a plausible prefix so they reach deeper into the parser."""
    data = draw(st.sampled_from(_PREFIXES)) + draw(st.binary(max_size=400))
    return H11Case(
        method=draw(methods),
        data=data,
        points=draw(splits),
        close_after=draw(st.booleans()),
        stream=draw(st.booleans()),
        label="random",
    )
