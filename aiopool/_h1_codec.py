"""The HTTP/1.1 codec interface: wire format only, under one connection lifecycle.

`HTTP11Connection` (`_h1_connection`) owns the socket and everything that happens on it:
writing, the `Expect: 100-continue` wait, reading, draining, releasing or discarding, the idle
watch, trace events. A codec only turns a request into bytes and bytes into response events,
and says at the end of an exchange whether the framing allows another. Two implementations
pass the same behaviour tests: h11 (`_h1_h11`, the pure-Python reference, always installed)
and llhttp through httptools (`_h1_httptools`, the fast path of the speedups extra).

A codec raises `LocalProtocolError` for a request it will not frame (instead of returning the
bytes that would break the framing, so they never reach the socket) and `RemoteProtocolError`
for a response it will not parse; never its library's own exceptions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Protocol, TypeAlias

from ._config import HeadLimits
from ._connection import ResponseHead

__all__ = (
    "BOTH_FRAMINGS",
    "END",
    "INTERIM",
    "MALFORMED",
    "NEED_DATA",
    "Codec",
    "CodecFactory",
    "Event",
    "Signal",
    "chunk_header_too_large",
    "head_size",
    "head_too_large",
)


class Signal(enum.Enum):
    """The events of a response that carry no data."""

    NEED_DATA = "need_data"  # feed more bytes (or EOF) before the next event
    INTERIM = "interim"  # a 1xx head (100 Continue, 103 Early Hints): not the final response
    END = "end"  # the response is complete (after its head, and its body if any)


# The members as module constants: on CPython 3.11 reading `Signal.END` costs several times a
# global's lookup, and the connection compares events with them several times a request.
NEED_DATA = Signal.NEED_DATA
INTERIM = Signal.INTERIM
END = Signal.END

# What `Codec.next_event` returns: a signal, the final response head, or body bytes (never
# empty).
Event: TypeAlias = Signal | ResponseHead | bytes


class Codec(Protocol):
    """One socket's HTTP/1.1 wire format, one exchange at a time."""

    name: str  # the `http1_parser` option that selects it: "h11" or "httptools"

    # Requests: each method returns the bytes to write; the connection writes them.

    def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> bytes:
        """The request line and header section; with `body` (in memory, b"" for none) the
        whole request in one piece, else (None) the body follows through `body` and `end`.
        Raises `LocalProtocolError` for framing (Content-Length, Transfer-Encoding) it will
        not write, or that `body` contradicts."""
        ...

    def body(self, data: bytes) -> bytes:
        """A piece of the request body, framed. Raises `LocalProtocolError` past the
        announced Content-Length."""
        ...

    def end(self) -> bytes:
        """The end of the request body. Raises `LocalProtocolError` short of the announced
        Content-Length."""
        ...

    # Responses.

    def feed(self, data: bytes) -> None:
        """Bytes read from the socket (b"" at EOF). Raises `RemoteProtocolError`."""
        ...

    def next_event(self) -> Event:
        """The next event of the response parsed from the bytes fed. Raises
        `RemoteProtocolError`."""
        ...

    def finish(self) -> bool:
        """After `Signal.END`: whether the framing lets the socket carry another exchange
        (both sides kept the connection alive, the request was sent whole, and no byte
        followed the response); the codec is then ready for the next request."""
        ...


# How a connection makes its codec (a codec class): called with the head bounds.
CodecFactory: TypeAlias = Callable[[HeadLimits], Codec]


MALFORMED = "malformed HTTP/1.1 response"


def head_size(reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Bytes of a parsed response head: the status line and fields with their CRLFs."""
    fields = sum(len(name) + len(value) + 4 for name, value in headers)
    return len(reason) + 15 + fields + 2


def head_too_large(limits: HeadLimits) -> str:
    return f"head larger than {limits.max_bytes} bytes (max_response_header_bytes)"


def chunk_header_too_large(limits: HeadLimits) -> str:
    return (
        f"chunk header or trailer larger than {limits.max_bytes} bytes (max_response_header_bytes)"
    )


BOTH_FRAMINGS = "both Transfer-Encoding and Content-Length"
