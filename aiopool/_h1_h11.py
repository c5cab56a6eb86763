"""The h11 codec: HTTP/1.1 wire format through an `h11.Connection` (the reference codec).

h11 is always installed and is the behaviour the llhttp codec is held to. What this module adds
to h11 for a client:
- h11 parses leniently what llhttp refuses (a bare LF line end, obs-fold): each response head is
  checked line by line before it is used (`_check_head_lines`), so both codecs end a line, a
  field and a head at the same bytes;
- h11 caps a head only while it is incomplete: one read can bring a whole oversized head, which
  is measured here;
- Transfer-Encoding together with Content-Length is refused (h11 lets Transfer-Encoding win);
- bytes after the end of a response (h11's trailing data) make the socket unfit for reuse.
"""

from __future__ import annotations

import re
from typing import Any

import h11

from ._config import HeadLimits
from ._connection import ResponseHead, too_many_headers
from ._exceptions import LocalProtocolError, RemoteProtocolError
from ._h1_codec import (
    BOTH_FRAMINGS,
    END,
    INTERIM,
    MALFORMED,
    NEED_DATA,
    Event,
    chunk_header_too_large,
    head_size,
    head_too_large,
)
from ._headers import Headers

__all__ = ("H11Codec",)


class H11Codec:
    """The `Codec` of an `h11.Connection` (client side)."""

    name = "h11"

    __slots__ = (
        "_checked",
        "_conn",
        "_got_bytes",
        "_head_pending",
        "_limits",
        "_reads",
        "_received",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_bytes)
        self._new_response()

    def _new_response(self) -> None:
        self._head_pending = True  # no final response head parsed yet
        # The bytes read for the response head(s), kept until the final head is checked line by
        # line (`_check_head_lines`), and where the next head starts in them.
        self._reads: list[bytes] = []
        self._checked = 0
        self._received = 0  # bytes fed while waiting for the head
        self._got_bytes = False

    # Requests ----------------------------------------------------------------------------------

    def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> bytes:
        try:
            data = self._conn.send(
                # `_parsed=True` skips h11's re-validation: `Request` already checked the
                # method and every header against the same RFC 9110 grammar, and `URL` the
                # target, before a socket was leased. (A third of h11's send cost.)
                h11.Request(
                    method=method.encode("ascii"),
                    target=target,
                    headers=headers,
                    http_version=b"1.1",
                    _parsed=True,
                )
            )
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(str(exc)) from exc
        assert data is not None
        if body is None:
            return data
        if body:
            data += self.body(body)
        return data + self.end()

    def body(self, data: bytes) -> bytes:
        try:
            return self._conn.send(h11.Data(data=data)) or b""
        except h11.LocalProtocolError as exc:  # e.g. more bytes than Content-Length
            raise LocalProtocolError(str(exc)) from exc

    def end(self) -> bytes:
        try:
            return self._conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:  # e.g. fewer bytes than Content-Length promised
            raise LocalProtocolError(str(exc)) from exc

    # Responses ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._head_pending:
            self._reads.append(data)
            self._received += len(data)
        if data:
            self._got_bytes = True
        self._conn.receive_data(data)

    def next_event(self) -> Event:
        event = self._parse_next()
        kind = type(event)
        if kind is h11.Data:
            return bytes(event.data)
        if event is h11.NEED_DATA:
            return NEED_DATA
        if kind is h11.EndOfMessage:
            return END
        if kind is h11.Response:
            self._check_head_lines()
            return self._final_head(event)
        if kind is h11.InformationalResponse:
            # 100 Continue, 103 Early Hints: not the final response (each one's size is capped
            # by h11; the count is the connection's to cap).
            self._check_head_lines()
            return INTERIM
        where = "before a response" if self._head_pending else "in a response body"
        raise RemoteProtocolError(f"unexpected {kind.__name__} {where}")

    def _final_head(self, event: h11.Response) -> ResponseHead:
        limits = self._limits
        self._head_pending = False
        self._reads.clear()
        raw = list(event.headers)
        if len(raw) > limits.max_count:
            raise RemoteProtocolError(too_many_headers(len(raw), limits))
        # h11 caps a head only while it is incomplete: one read can bring a whole oversized
        # head. Measured only when that was possible (off the hot path).
        if self._received > limits.max_bytes and head_size(event.reason, raw) > limits.max_bytes:
            raise RemoteProtocolError(f"{MALFORMED}: {head_too_large(limits)}")
        _refuse_ambiguous_framing(raw)
        return ResponseHead(
            event.status_code,
            event.reason.decode("latin-1"),
            Headers._from_raw(raw),
            "HTTP/1.1" if event.http_version == b"1.1" else "HTTP/1.0",
        )

    def _parse_next(self) -> Any:
        """h11's next event (or NEED_DATA), its protocol errors made ours."""
        try:
            return self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:  # h11's max_incomplete_event_size
                if self._head_pending:
                    message = head_too_large(self._limits)
                else:
                    # In a body only a chunked one buffers (a chunk-size line with its
                    # extensions, or the trailer section): not the head, whatever h11 says.
                    message = chunk_header_too_large(self._limits)
                raise RemoteProtocolError(f"{MALFORMED}: {message}") from exc
            raise RemoteProtocolError(_describe(exc, self._got_bytes)) from exc

    def _check_head_lines(self) -> None:
        self._checked = _check_head_lines(self._reads, self._checked)

    def finish(self) -> bool:
        conn = self._conn
        # Bytes after the end of the response (h11 keeps them as trailing data) are a second
        # response nobody asked for, or garbage: reusing the socket would hand them to the next
        # request as its response. Connection: close (either side), HTTP/1.0, a body delimited
        # by EOF, or a request body withheld after an early final response leave a side short
        # of DONE.
        if (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        ):
            conn.start_next_cycle()
            self._new_response()
            return True
        return False


# h11's own end-of-head test: a blank line, CRLF or bare LF.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def _check_head_lines(reads: list[bytes], start: int) -> int:
    """Refuse a response head (the one starting at `start` in the bytes of `reads`, which h11
    has just parsed) whose lines end in a bare LF or that folds a field over lines (obs-fold);
    where the next head starts.

    RFC 9112 section 2.2 lets a recipient accept a bare LF, and section 5.2 has a user agent
    unfold obs-fold; llhttp (httptools, Node.js) refuses both, and so do we, on both codecs:
    two parsers that end a line, a field or a head at different bytes are how responses get
    split differently by a client and a proxy (Node's CVE-2023-30589 was llhttp accepting a
    bare CR line end). Servers have sent CRLF for decades; none we know of needs either.
    Raises `RemoteProtocolError`.
    """
    data = reads[0] if len(reads) == 1 else b"".join(reads)
    match = _BLANK_LINE.search(data, start)
    if match is None:  # Defensive: h11 found this head with the same test
        return start
    head = data[start : match.end()]
    if head.count(b"\n") != head.count(b"\r\n"):
        raise RemoteProtocolError(f"{MALFORMED}: a line in the head ends in a bare LF, not CRLF")
    if b"\n " in head or b"\n\t" in head:
        raise RemoteProtocolError(
            f"{MALFORMED}: a header field is folded over lines (obs-fold, RFC 9112 section 5.2)"
        )
    return match.end()


def _refuse_ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> None:
    """RFC 9112 section 6.3: a response with both Transfer-Encoding and Content-Length "ought to
    be handled as an error"; it is the classic response-splitting vector, so we refuse it (h11
    lets Transfer-Encoding win). Two different Content-Length values h11 refuses itself."""
    te = cl = False
    for name, _ in headers:
        if name == b"transfer-encoding":
            te = True
        elif name == b"content-length":
            cl = True
    if te and cl:
        raise RemoteProtocolError(f"{MALFORMED}: {BOTH_FRAMINGS}")


def _describe(exc: h11.RemoteProtocolError, got_bytes: bool) -> str:
    text = str(exc) or "invalid HTTP/1.1 from server"
    if not got_bytes:
        return f"server disconnected without sending a response ({text})"
    return f"{MALFORMED}: {text}"
