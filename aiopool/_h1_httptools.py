"""The llhttp codec (httptools: the parser Node.js and uvicorn use): the fast path.

Selected automatically when `httptools` is installed (`pip install aiopool[speedups]`); h11
(`_h1_h11`) stays the always-available reference, and both pass the same behaviour tests.

Requests are written by hand: `Request` has already validated method, target and headers;
what is checked here is the framing (Content-Length, Transfer-Encoding), as h11 does.

What llhttp does not do for a client, this module does:
- it cannot know a response answers HEAD, so after a HEAD response's head the message ends here
  and the parser is replaced (RFC 9110 section 9.3.2: no body, whatever Content-Length says);
- it has no "finish at EOF" call in httptools, so a body delimited by the connection closing
  (no Content-Length, not chunked) is ended here at EOF, and a short Content-Length body at EOF
  is a RemoteProtocolError;
- the response head is capped in bytes and fields (`HeadLimits`), as with h11;
- Transfer-Encoding together with Content-Length is refused (RFC 9112 section 6.3), as with h11;
- any byte after the end of a response makes the socket unfit for reuse.
"""

from __future__ import annotations

from collections import deque

import httptools

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
from ._headers import Headers, content_length

__all__ = ("HttptoolsCodec",)

_NO_BODY_STATUS = frozenset({204, 304})
_UNFRAMED = "request body without Content-Length or Transfer-Encoding: chunked"


class HttptoolsCodec:
    """The `Codec` of an `httptools.HttpResponseParser` (llhttp); also its callback object."""

    name = "httptools"

    __slots__ = (
        "_body",
        "_complete",
        "_dirty",
        "_framing_error",
        "_has_chunked",
        "_has_coding",
        "_has_length",
        "_head_bytes",
        "_head_done",
        "_head_request",
        "_head_taken",
        "_headers",
        "_in_line",
        "_interim",
        "_keep_alive",
        "_last_body",
        "_length",
        "_limits",
        "_line_bytes",
        "_max_headers",
        "_out_chunked",
        "_out_length",
        "_out_sent",
        "_parser",
        "_peer_closed",
        "_reason",
        "_request_close",
        "_status",
        "_tail",
        "_until_eof",
        "_version",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self._limits = limits
        self._parser: httptools.HttpResponseParser | None = None
        self._max_headers = limits.max_count  # (looked up for every field)
        self._dirty = False
        self._head_request = False
        self._request_close = False
        self._out_length: int | None = None
        self._out_chunked = False
        self._out_sent = 0
        self._reset_response()

    def _reset_response(self) -> None:
        self._status = 0
        self._reason = b""
        self._version = "HTTP/1.1"
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False  # llhttp parsed the final head
        self._head_taken = False  # ... and `next_event` returned it
        self._head_bytes = 0
        self._interim = 0  # 1xx heads parsed and not yet returned by `next_event`
        self._body: deque[bytes] = deque()
        self._complete = False
        self._peer_closed = False  # EOF was fed
        self._keep_alive = True
        self._until_eof = False
        self._has_length = False
        self._has_chunked = False
        self._has_coding = False
        self._length = b""  # the (last) Content-Length value
        self._framing_error: str | None = None
        self._last_body = b""  # the latest body piece (to place the end of a sized body)
        self._tail = b""  # the last bytes fed before the latest read
        # Whether llhttp may be inside a chunk-size line or a trailer line (of a chunked
        # body), and that line's bytes so far: llhttp streams past chunk extensions without a
        # bound, so we count them (see `_count_line`).
        self._in_line = False
        self._line_bytes = 0

    # Requests ----------------------------------------------------------------------------------

    def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> bytes:
        self._head_request = method == "HEAD"
        length: int | None = None
        chunked = False
        self._request_close = False
        for name, value in headers:
            # Only three names matter for framing; their lengths rule out almost every other
            # header before any lower-casing ("connection" 10, "content-length" 14,
            # "transfer-encoding" 17).
            size = len(name)
            if size != 10 and size != 14 and size != 17:
                continue
            # (`check_framing` held these to its rules when the request was built; what is
            # re-checked here is what a change to its headers since could break: the framing
            # written is then still unambiguous, as h11 makes it.)
            lowered = name.lower()
            if lowered == b"content-length":
                if length is not None:
                    raise LocalProtocolError("more than one Content-Length header field")
                length = content_length(value)  # digits only: int() would take "+3", " 3"
            elif lowered == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise LocalProtocolError(f"Transfer-Encoding {value!r} refused")
                chunked = True
            elif lowered == b"connection" and b"close" in value.lower():
                self._request_close = True
        if chunked and length is not None:
            raise LocalProtocolError(
                "Content-Length together with Transfer-Encoding refused (RFC 9112 section 6.2)"
            )
        self._out_length = length
        self._out_chunked = chunked
        self._out_sent = 0
        parts = [
            b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target),
            *[b"%s: %s\r\n" % header for header in headers],
            b"\r\n",
        ]
        if body is None:
            return b"".join(parts)  # the body follows, through `body` and `end`
        # The whole request in one join (the hot path).
        if chunked:
            parts.append(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
        elif (length or 0) == len(body):
            parts.append(body)
        elif length is None:
            raise LocalProtocolError(_UNFRAMED)
        else:
            raise LocalProtocolError(
                f"Content-Length {length} does not match a body of {len(body)} bytes"
            )
        return b"".join(parts)

    def body(self, data: bytes) -> bytes:
        if not data:
            return b""  # (a chunk of size 0 would end a chunked body)
        self._out_sent += len(data)
        if self._out_chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        length = self._out_length
        if length is None:
            # Without Content-Length or chunked, a request has no body (RFC 9112 section 6.3):
            # these bytes would be read as the next request. h11 refuses them too.
            raise LocalProtocolError(_UNFRAMED)
        if self._out_sent > length:
            raise LocalProtocolError(f"request body longer than Content-Length {length}")
        return data

    def end(self) -> bytes:
        if self._out_chunked:
            return b"0\r\n\r\n"
        length = self._out_length
        if length is not None and self._out_sent != length:
            raise LocalProtocolError(
                f"request body of {self._out_sent} bytes shorter than Content-Length {length}"
            )
        return b""

    # Responses ---------------------------------------------------------------------------------

    def next_event(self) -> Event:
        if self._head_taken:
            body = self._body
            if body:
                if len(body) == 1:
                    return body.popleft()
                data = b"".join(body)
                body.clear()
                return data
            if self._complete:
                return END
            if self._peer_closed:
                raise self._incomplete()
            return NEED_DATA
        if self._interim:
            self._interim -= 1
            return INTERIM
        if not self._head_done:
            if self._peer_closed:
                raise self._incomplete()
            return NEED_DATA
        self._head_taken = True
        return ResponseHead(
            self._status,
            self._reason.decode("latin-1"),
            # What the fields said of the body's coding and length, so the response need not
            # look through them again (per request, that pass was measurable).
            Headers._from_raw(
                self._headers, unencoded_length=None if self._has_coding else self._length
            ),
            self._version,
        )

    def finish(self) -> bool:
        reusable = self._keep_alive and not self._request_close and not self._dirty
        # Reset now, not at the next request: an idle socket holds no response's headers.
        self._reset_response()
        return reusable

    def feed(self, data: bytes) -> None:
        if not data:
            self._eof()
            return
        if self._complete:
            self._dirty = True  # bytes after the response: never reuse this socket
            return
        parser = self._parser
        if parser is None:
            parser = self._parser = httptools.HttpResponseParser(self)
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops at a 101 Switching Protocols that upgrades the connection, with an
            # exception outside HttpParserError. We never ask for an upgrade: the socket now
            # speaks another protocol, so the exchange fails (h11 refuses it too).
            raise RemoteProtocolError(
                f"{MALFORMED}: 101 Switching Protocols, but no upgrade was asked for"
            ) from None
        except httptools.HttpParserError as exc:
            # llhttp goes on parsing whatever follows a complete response in the same read (or
            # a HEAD response's head, whose announced body it expects): failing on those bytes
            # must not fail the response, or the outcome would hang on read boundaries (h11
            # keeps the response either way). They make the socket unfit for reuse.
            ended = self._complete or (self._head_done and self._head_request)
            if not ended or self._framing_error is not None:
                reason = self._framing_error or str(exc) or type(exc).__name__
                raise RemoteProtocolError(f"{MALFORMED}: {reason}") from None
            self._dirty = True
        if self._framing_error is not None:
            raise RemoteProtocolError(f"{MALFORMED}: {self._framing_error}")
        if self._complete:
            # The response ended in this read. llhttp skips CR and LF after a message without a
            # callback (any other byte begins a message, which on_message_begin sees), so look
            # for them here: stray line ends are bytes nobody asked for, as h11 holds too.
            # (Most responses are settled by the first two tests, without building `end`: a read
            # that does not end in CR or LF, or a sized body that ends the read.)
            if not self._dirty and data[-1:] in _CR_LF:
                sized = self._has_length and not self._has_chunked and bool(self._last_body)
                body_end = self._last_body[-16:]
                if not (sized and data.endswith(body_end)) and _line_ends_follow(
                    self._tail + data[-16:], body_end, sized
                ):
                    self._dirty = True
        else:  # (once it is complete, the tail is not needed: the next response starts anew)
            self._tail = data[-8:] if len(data) >= 8 else (self._tail + data)[-8:]
            if self._in_line:
                self._count_line(data)
        if not self._head_done and self._head_bytes > self._limits.max_bytes:
            # (Counted from the first byte of the response, interim 1xx heads included.)
            raise RemoteProtocolError(f"{MALFORMED}: {head_too_large(self._limits)}")
        if self._head_done and self._head_request and not self._complete:
            # llhttp would wait for a HEAD response's announced body: end it here, and start
            # the next response on a fresh parser.
            self._complete = True
            self._parser = None
            if self._body:
                self._body.clear()
                self._dirty = True

    def _eof(self) -> None:
        """The server closed the socket (httptools has no call for it). A body delimited by
        the close ends here; anything else incomplete fails at the next `next_event`, as h11
        reports it."""
        self._peer_closed = True
        if self._head_done and self._until_eof:
            self._complete = True
            self._keep_alive = False

    def _incomplete(self) -> RemoteProtocolError:
        if not self._head_done:
            return RemoteProtocolError("server closed the connection in the response head")
        return RemoteProtocolError(
            f"{MALFORMED}: peer closed connection without sending the complete message body"
        )

    def _count_line(self, data: bytes) -> None:
        """After a read that left llhttp inside a chunked body's chunk-size line (with its
        extensions) or trailer line: refuse that line once it passes the head's byte bound, as
        h11 does (its buffer is bounded by the same number), with a message that says where.

        The line's bytes in `data` are those after its last LF: a chunk-size line and a trailer
        line contain none, and the LF before them ends the previous line or the chunk data's
        CRLF (`_in_line` is False while chunk data streams, so data bytes are never counted).
        """
        end = data.rfind(b"\n")
        if end < 0:
            self._line_bytes += len(data)
        else:
            self._line_bytes = len(data) - end - 1
        if self._line_bytes > self._limits.max_bytes:
            self._framing_error = chunk_header_too_large(self._limits)
            raise RemoteProtocolError(f"{MALFORMED}: {self._framing_error}")

    # llhttp callbacks (called from inside feed_data) --------------------------------------------

    # Once the final response is complete, llhttp goes on parsing whatever follows in the same
    # read as a new message: those callbacks belong to nobody's request. They are ignored and the
    # socket is marked dirty (never reused), so a second, unsolicited response can neither leak
    # into this body nor be handed to the next request.

    def on_message_begin(self) -> None:
        if self._complete:
            self._dirty = True

    def on_status(self, reason: bytes) -> None:
        if not self._complete:
            self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, llhttp reports a chunked body's trailer fields here too. They must not
        # land in `_headers`: the response already adopted that list as its headers (no copy),
        # so they would appear in it mid-body. Dropped, as h11 drops them (RFC 9110 section
        # 6.5.1: trailers are not to be merged into the header section blindly).
        if not self._complete and not self._head_done:
            lowered = name.lower()
            headers = self._headers
            headers.append((lowered, value))
            if len(headers) > self._max_headers:
                self._framing_error = too_many_headers(len(headers), self._limits)
                raise RemoteProtocolError(self._framing_error)
            if lowered == b"content-length":
                self._has_length = True
                self._length = value
            elif lowered == b"transfer-encoding":
                self._has_chunked = True
            elif lowered == b"content-encoding":
                self._has_coding = True

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 100:
            # llhttp takes any three digits; "000" or "099" is no status code (RFC 9110
            # section 15: 100 and up), and h11 refuses it too.
            self._framing_error = f"invalid status code {status:03d}"
            raise RemoteProtocolError(self._framing_error)
        if 100 <= status < 200:
            # 100 Continue, 103 Early Hints: not the final response; llhttp goes on to the next.
            # (The connection counts them: `Signal.INTERIM` events.)
            self._interim += 1
            self._headers = []
            self._reason = b""
            self._has_length = self._has_chunked = self._has_coding = False
            self._length = b""
            return
        limits = self._limits
        if (
            self._head_bytes > limits.max_bytes
            and head_size(self._reason, self._headers) > limits.max_bytes
        ):
            # The check in `feed` sees only heads still incomplete after a read; one read can
            # bring a whole oversized head.
            self._framing_error = head_too_large(limits)
            raise RemoteProtocolError(self._framing_error)
        self._status = status
        self._version = "HTTP/1.0" if parser.get_http_version() == "1.0" else "HTTP/1.1"
        self._keep_alive = parser.should_keep_alive()
        if self._head_request and self._keep_alive is False:
            # llhttp does not know this answers HEAD: with neither Content-Length nor chunked
            # (nginx's gzip answers HEAD so) it expects a body until EOF, hence "not
            # keep-alive". A HEAD response has no body (RFC 9110 section 9.3.2): only the
            # version and Connection decide (RFC 9112 section 9.3; HTTP/1.0 closes, as h11).
            tokens = {
                t.strip().lower()
                for n, v in self._headers
                if n == b"connection"
                for t in v.split(b",")
            }
            self._keep_alive = self._version == "HTTP/1.1" and b"close" not in tokens
        self._head_done = True
        if self._has_length and self._has_chunked:
            # RFC 9112 section 6.3: ambiguous framing, the response-splitting vector.
            self._framing_error = BOTH_FRAMINGS
            raise RemoteProtocolError(self._framing_error)
        self._until_eof = (
            not self._has_length
            and not self._has_chunked
            and status not in _NO_BODY_STATUS
            and not self._head_request
        )
        # A chunked body starts with a chunk-size line. (With another coding llhttp reads to
        # EOF: its first body byte calls on_body, which ends this.)
        self._in_line = self._has_chunked and not self._head_request

    def on_chunk_header(self) -> None:
        # The size line ended: chunk data follows (on_body), or for the last chunk, trailers.
        self._in_line = True
        self._line_bytes = 0

    def on_chunk_complete(self) -> None:
        # The CRLF after the chunk data: the next chunk-size line begins.
        self._in_line = True
        self._line_bytes = 0

    def on_body(self, body: bytes) -> None:
        if self._head_request:
            # A HEAD response has no body (RFC 9110 section 9.3.2), whatever Content-Length
            # says; llhttp cannot know the request was HEAD and reads that many of whatever
            # bytes follow in the same read as "body". They are bytes nobody asked for: never
            # a body, and never a socket to reuse (`feed` ends the response after its head).
            self._dirty = True
        elif not self._complete:
            self._body.append(body)
            self._last_body = body
            self._in_line = False

    def on_message_complete(self) -> None:
        if self._head_done:
            self._complete = True


_CR_LF = (b"\r", b"\n")


def _line_ends_follow(end: bytes, body_end: bytes, sized: bool) -> bool:
    """Whether CR/LF bytes follow a response that ended within the bytes ending in `end`.

    A body sized by Content-Length ends with its last piece (`body_end`, its last bytes), so
    anything after it shows as `end` not ending with them (a miss needs a last piece made only
    of CR and LF). A head, or a chunked body, ends with exactly CRLF CRLF after some other byte.
    """
    if not end.endswith((b"\r", b"\n")):
        return False
    if sized:
        return not end.endswith(body_end)
    return len(end) - len(end.rstrip(b"\r\n")) != 4
