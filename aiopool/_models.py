"""Request and Response.

A `Response` from `await client.get()` arrives with its body read and its connection already back
in the pool. A streamed one (from `client.stream()`) holds a `BodyStream` until its body is read to
the end or it is closed; closing releases the connection on every path (drained and pooled, or
closed). One garbage-collected while still open emits a `ResourceWarning` naming where it was
opened, and its socket is closed, never pooled (docs/design.md invariant 8).
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import json as jsonlib
import re
import warnings
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from http import HTTPStatus
from typing import Any, Protocol

from ._bodies import StreamBody
from ._config import Timeout
from ._decoders import MAX_RATIO, ContentDecoder, decoder_from
from ._exceptions import (
    HTTPStatusError,
    LocalProtocolError,
    ResponseTooLarge,
    StreamClosed,
    StreamConsumed,
    TransportError,
)
from ._headers import Headers, HeaderTypes, check_framing, content_length, validate_header
from ._stats import ConnInfo
from ._trace import TraceHook, Tracer
from ._urls import URL

__all__ = ("BodyStream", "BufferedBody", "Request", "RequestContent", "Response", "reason_phrase")

RequestContent = bytes | AsyncIterable[bytes]

_METHOD = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 9110 section 9.2.2: idempotent methods may be retried automatically.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# `Response(json=None)` sends JSON null: "not given" needs its own marker.
_NO_JSON: Any = object()
_CHARSET = re.compile(r"charset=\"?([\w.:-]+)\"?", re.IGNORECASE)
# `aiter_lines()` splits at CRLF, LF or a lone CR: the line ends of server-sent events (WHATWG
# HTML "event stream" parsing) and of HTTP itself; NDJSON uses LF. Not str.splitlines()'s set,
# which also splits at VT, FF, NEL, U+2028... inside a JSON string.
_LINE_END = re.compile(r"\r\n|\r|\n")
# `aiter_lines()`'s default bound on one line, in characters. Go's bufio.Scanner (64 KiB) and
# aiohttp's readline (64 KiB) are known to fail on LLM streams whose events carry base64
# images or long tool-call arguments; 4 MiB holds those while bounding what a server that
# never sends a line break can make us hold.
DEFAULT_MAX_LINE_LENGTH = 4 * 1024 * 1024


class Request:
    """One HTTP request: method, URL, headers (validated), an optional body, and the timeout
    its transport applies (None: the transport's own default).

    What middleware and transports receive. The client builds one per hop (adding its default
    headers, cookies, auth and framing); one built by hand, `Request("GET", "https://h/")`, is
    sent as it is by a transport, with the fields every request needs added when missing: `Host`
    (the URL's authority) and the body's framing.
    """

    __slots__ = (
        "_expect_wait",
        "_trace_hook",
        "_tracer",
        "_written",
        "body_started",
        "content",
        "headers",
        "method",
        "timeout",
        "url",
    )

    def __init__(
        self,
        method: str,
        url: URL | str,
        headers: Headers | HeaderTypes | None = None,
        content: RequestContent | None = None,
        *,
        timeout: Timeout | None = None,
        headers_validated: bool = False,
    ) -> None:
        """Raises `LocalProtocolError` for an illegal method or header, or framing fields
        the body contradicts (see `check_framing`; `headers_validated`: the caller, the client,
        already checked each header once, as it was given, and framed the body), and
        `InvalidURL` for a bad URL string. A body without framing fields gets them here:
        `Content-Length` for bytes, `Transfer-Encoding: chunked` for an async iterable."""
        if not _METHOD.fullmatch(method):
            raise LocalProtocolError(f"illegal HTTP method {method!r}")
        if type(url) is not URL:
            url = URL(url) if isinstance(url, str) else url
        if type(headers) is not Headers:
            headers = Headers(headers)  # (a mapping, pairs, or None)
        if not headers_validated:
            for name, value in headers.raw:
                validate_header(name, value)
            if content is None or isinstance(content, bytes):
                declared = check_framing(headers.raw, len(content) if content else 0)
            else:
                declared = check_framing(headers.raw, None)
            headers = _completed(headers, url, content, declared)
        self.method = method
        self.url = url
        self.headers = headers
        self.content = content
        self.timeout = timeout
        # Set once a byte of a streamed (non-replayable) body has been consumed.
        self.body_started = False
        # Set by the client as it sends: who hears this request's trace events (None: nobody
        # listens, nothing is built), and for a body held back behind `Expect: 100-continue`,
        # how long to wait for `100 Continue` before sending it anyway (None: no expectation).
        self._tracer: Tracer | None = None
        self._expect_wait: float | None = None
        # The caller's own hook for this request (`client.get(url, trace=fn)`), which the
        # transport combines with its own into `_tracer`.
        self._trace_hook: TraceHook | None = None
        # Whether a byte of this request reached the socket in the current attempt: set by the
        # connection once its first write is accepted, reset by the client before each attempt.
        self._written = False

    @property
    def idempotent(self) -> bool:
        """Whether sending the request twice has the effect of sending it once.

        RFC 9110 section 9.2.2's idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or
        any request carrying an `Idempotency-Key` or `X-Idempotency-Key` header (the IETF draft
        for POST/PATCH, and what Go's transport honours).
        """
        if self.method in _IDEMPOTENT:
            return True
        headers = self.headers
        return "idempotency-key" in headers or "x-idempotency-key" in headers

    @property
    def rereadable(self) -> bool:
        """Whether the body can be sent again whole: none, bytes, a replayable streamed body
        (a seekable file, a multipart body of such parts: each pass starts from the start), or
        a one-shot streamed body of which no chunk has been taken yet."""
        return not self.body_started or _replayable_body(self.content)

    @property
    def replayable(self) -> bool:
        """Whether the request may be sent again after failing before any response byte.

        Go's rule (net/http `shouldRetryRequest`): when nothing of it was written in this
        attempt, any request whose body can be re-read; once a byte was written (the server
        may have acted on it), only an idempotent one. A POST is never sent twice by the pool.
        (A request the server provably did not process, an HTTP/2 REFUSED_STREAM or a stream
        above a GOAWAY's last_stream_id, needs only `rereadable`.)
        """
        if self.body_started and not _replayable_body(self.content):
            return False
        return not self._written or self.idempotent

    async def body_chunks(self) -> AsyncIterator[bytes]:
        """The non-empty chunks of a streamed (async iterable) body, as bytes.

        The first one marks a one-shot body as no longer replayable; a replayable one (a
        `StreamBody`) starts a new pass from its start on every call. Raises `TypeError` for a chunk
        that is not bytes-like, and `LocalProtocolError` when the request has a Content-Length
        and the body would go past it (raised before the chunk that would, so no byte beyond
        it is sent) or ends short of it: a server would otherwise read the next request's
        bytes as this body, or wait for bytes that never come. The same on every connection
        type: the socket (or HTTP/2 stream) is then closed, never reused.
        """
        content = self.content
        assert content is not None
        assert not isinstance(content, bytes)
        declared = self._declared_length()
        sent = 0
        async for chunk in content:
            self.body_started = True  # a one-shot body can no longer be replayed
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"request body chunks must be bytes, not {type(chunk).__name__}")
            if chunk:
                sent += len(chunk)
                if declared is not None and sent > declared:
                    raise LocalProtocolError(
                        f"request body longer than its Content-Length {declared}"
                    )
                yield bytes(chunk)
        if declared is not None and sent != declared:
            raise LocalProtocolError(
                f"request body of {sent} bytes shorter than its Content-Length {declared}"
            )

    def _declared_length(self) -> int | None:
        """The Content-Length this request's headers give, if any (read when the body is
        sent, so a field changed after construction counts)."""
        declared = None
        for name, value in self.headers.raw:
            if len(name) == 14 and name.lower() == b"content-length":
                declared = content_length(value)
        return declared

    def __repr__(self) -> str:
        # Never a password: the client strips userinfo, but a Request can be built by hand.
        url = self.url.without_userinfo() if self.url.has_userinfo else self.url
        return f"<Request [{self.method} {url}]>"


def _replayable_body(content: object) -> bool:
    return isinstance(content, StreamBody) and content.replayable


def _completed(
    headers: Headers, url: URL, content: RequestContent | None, declared: int | None
) -> Headers:
    """The headers of a request built by hand, with what every request must carry and the
    client's request builder adds: `Host` (RFC 9112 section 3.2: a client MUST send it; over
    HTTP/2 it becomes `:authority`), and for a body without framing fields, `Content-Length`
    (bytes) or `Transfer-Encoding: chunked` (a stream), without which HTTP/1.1 would read
    it as a body of 0 bytes. A copy when anything is added: the caller's object is not
    changed."""
    raw = headers.raw
    names = {name.lower() for name, _ in raw}
    host: list[tuple[bytes, bytes]] = []  # first, as the client sends it
    framing: list[tuple[bytes, bytes]] = []
    if b"host" not in names:
        host.append((b"host", url.host_header))
    if content is not None and declared is None and b"transfer-encoding" not in names:
        if isinstance(content, bytes):
            framing.append((b"content-length", str(len(content)).encode()))
        else:
            framing.append((b"transfer-encoding", b"chunked"))
    if not (host or framing):
        return headers
    return Headers._from_raw([*host, *raw, *framing])


class BodyStream(Protocol):
    """A response body being received on a connection (HTTP/1.1 or HTTP/2)."""

    async def receive(self) -> bytes:
        """The next chunk, or b"" once the body is complete (the connection is then released)."""
        ...

    async def aclose(self) -> None:
        """Finish early: drain within bounds and release, or close the connection."""
        ...

    def abort(self) -> None:
        """Finish early without awaiting: the connection (or h2 stream) is closed, not pooled."""
        ...


class Response:
    """An HTTP response.

    Attributes: `status_code`, `reason`, `headers` (case-insensitive, multi-valued),
    `http_version`, `url`, `request`, `conn_info`, `history` (the redirects that led here,
    oldest first), `elapsed` (a `datetime.timedelta`: from the client sending the request,
    connection lease included, to the response head's arrival, as requests measures; zero
    for a response no client sent). The body: `content`, `text`, `json()` once read;
    `aread()`, `aiter_bytes()`, `aiter_text()`, `aiter_lines()` and `aclose()` for streamed
    responses.

    The body is decoded by its Content-Encoding as it arrives (`content`, `aread()`,
    `aiter_bytes()`); `aiter_raw()` gives the bytes as received. `aread()` buffers at most
    `max_response_size` decoded bytes (None: no cap), raising `ResponseTooLarge` past it.
    """

    def __init__(
        self,
        status_code: int,
        *,
        reason: str | None = None,
        headers: Headers | HeaderTypes | None = None,
        http_version: str = "HTTP/1.1",
        request: Request | None = None,
        conn_info: ConnInfo | None = None,
        stream: BodyStream | None = None,
        content: bytes | str | AsyncIterable[bytes] | None = None,
        text: str | None = None,
        json: Any = _NO_JSON,
        opened_at: str | None = None,
        max_response_size: int | None = None,
        max_decompression_ratio: float | None = MAX_RATIO,
    ) -> None:
        """A response. Transports pass `stream` (the body on its connection) and `conn_info`;
        a response made by hand (for `MockTransport`, or a middleware answering itself) gives
        its body as `content` (bytes, str, or an async iterable of bytes for a streamed one),
        `text` (sent as UTF-8 with `Content-Type: text/plain; charset=utf-8` unless headers set
        one) or `json` (encoded compactly, `Content-Type: application/json`), or none: an empty
        body. A body given whole is read already (`content` works at once), unless the headers
        give a Content-Encoding: then it is the encoded body, decoded when read, as a server's
        would be. `reason` defaults to the standard phrase for the status. Raises `TypeError`
        for more than one body."""
        self.status_code = status_code
        self.reason = reason if reason is not None else reason_phrase(status_code)
        if stream is None or type(headers) is not Headers:
            # Response field names are lower-case, as h11 and h2 deliver them, and the client
            # relies on it (Set-Cookie, Location): the same for a response made by hand.
            headers = _lowered(headers)
        self.headers = headers
        self.http_version = http_version
        self._request = request
        self.conn_info = conn_info if conn_info is not None else _NO_CONNECTION
        body: bytes | None = None
        if stream is None:
            # Made by hand: its body given (or none, an empty one), not on a connection.
            stream, body = self._body_given(content, text, json)
        self._stream = stream
        self._content = body
        self._consumed = body is not None
        self._opened_at = opened_at
        self._max_size = max_response_size
        self._max_ratio = max_decompression_ratio
        # False once `_content` holds a decoded body, whose raw bytes are gone.
        self._raw_kept = True
        # The redirect responses that led here, oldest first (each read, its socket released).
        self.history: list[Response] = []
        # Set by the client: request sent -> head received.
        self.elapsed = _ZERO
        # True for a response handed out by `StreamContext.open()`: no `async with` block will
        # release it, so an iterator closed early (a framework's client went away) closes it.
        self._detached = False

    def _body_given(
        self, content: bytes | str | AsyncIterable[bytes] | None, text: str | None, json: Any
    ) -> tuple[BodyStream | None, bytes | None]:
        given = (content is not None) + (text is not None) + (json is not _NO_JSON)
        if given > 1:
            raise TypeError("pass one of content=, text= and json=, not several")
        if not given:
            return None, b""
        kind: bytes | None = None
        if text is not None:
            content, kind = text.encode("utf-8"), b"text/plain; charset=utf-8"
        elif json is not _NO_JSON:
            data = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False)
            content, kind = data.encode("utf-8"), b"application/json"
        elif isinstance(content, str):
            content, kind = content.encode("utf-8"), b"text/plain; charset=utf-8"
        if kind is not None and "content-type" not in self.headers:
            self.headers = Headers._from_raw([*self.headers.raw, (b"content-type", kind)])
        if isinstance(content, bytes | bytearray | memoryview):
            if "content-encoding" in self.headers:
                # Encoded bytes are what a server sends: read through the decoder like its
                # body (MockTransport promises decoding runs for real), not taken as read.
                return BufferedBody(bytes(content)), None
            return None, bytes(content)
        if isinstance(content, AsyncIterable):
            return _IterableBody(content), None
        raise TypeError(
            f"content must be bytes, str or an async iterable of bytes, "
            f"not {type(content).__name__}"
        )

    @property
    def request(self) -> Request:
        """The request this response answers. Raises `RuntimeError` for a response made by
        hand that no transport has answered a request with yet."""
        request = self._request
        if request is None:
            raise RuntimeError(
                "this Response has no request yet: a transport sets it when the response "
                "answers one (MockTransport does)"
            )
        return request

    @request.setter
    def request(self, request: Request) -> None:
        self._request = request

    @property
    def url(self) -> URL:
        return self.request.url

    @property
    def is_closed(self) -> bool:
        return self._stream is None

    @property
    def content(self) -> bytes:
        """The whole body. Raises `StreamError` on a streamed response not yet `aread()`."""
        if self._content is None:
            raise StreamConsumed(
                "the body of a streamed response is not available as .content; "
                "call `await response.aread()` inside the `client.stream()` block first"
            )
        return self._content

    @property
    def encoding(self) -> str:
        """The charset from Content-Type, else UTF-8 (RFC 8259 for JSON; the web's default)."""
        match = _CHARSET.search(self.headers.get("content-type", ""))
        if match:
            try:
                return codecs.lookup(match.group(1)).name
            except LookupError:
                pass
        return "utf-8"

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    def json(self, **kwargs: Any) -> Any:
        return jsonlib.loads(self.content, **kwargs)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def raise_for_status(self) -> Response:
        """Raise `HTTPStatusError` for a 4xx or 5xx status; return the response otherwise."""
        if self.status_code >= 400:
            kind = "Client error" if self.status_code < 500 else "Server error"
            raise HTTPStatusError(
                f"{kind} '{self.status_code} {self.reason}' for url '{self.url}'",
                request=self.request,
                response=self,
            )
        return self

    async def aread(self) -> bytes:
        """Read the rest of the body, decoded, and return all of it; the connection is then
        released.

        Raises `ResponseTooLarge` past `max_response_size` decoded bytes (at once for a larger
        Content-Length), `DecodingError` for a body its Content-Encoding cannot decode, and the
        `TransportError` family. On an error before the body's end the socket is closed (the h2
        stream reset), never drained; a coding found truncated only once the message arrived
        whole leaves its socket in the pool, where it went back clean.
        """
        if self._content is None:
            stream = self._take_stream()
            limit = self._max_size
            # The same as joining `aiter_bytes()`, without an async generator per response
            # (`await client.get()` comes through here every time).
            chunks: list[bytes] = []
            size = 0
            try:
                decoder = self._decoder(limit)
                if decoder is None:
                    while chunk := await stream.receive():
                        size += len(chunk)
                        if limit is not None and size > limit:
                            raise self._too_large(limit)
                        chunks.append(chunk)
                else:
                    self._raw_kept = False
                    while chunk := await stream.receive():
                        for piece in decoder.feed(chunk):
                            size += len(piece)
                            if limit is not None and size > limit:
                                raise self._too_large(limit)
                            chunks.append(piece)
                    # The body arrived whole and its socket was released; a truncated coding
                    # is found here, with nothing left to close.
                    for piece in decoder.finish():
                        size += len(piece)
                        if limit is not None and size > limit:
                            raise self._too_large(limit)
                        chunks.append(piece)
            except BaseException as exc:
                self._broken(stream, exc)
                raise
            self._stream = None
            self._content = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._content

    async def aiter_bytes(self) -> AsyncGenerator[bytes, None]:
        """Yield the body, decoded, as it arrives; once exhausted, the connection is released.

        Not capped by `max_response_size` (the caller holds what it keeps), but decoding stays
        within the decompression-bomb bound (`DecodingError`).
        """
        if self._content is not None:
            if self._content:
                yield self._content
            return
        stream = self._take_stream()
        try:
            decoder = self._decoder()
            if decoder is None:
                while chunk := await stream.receive():
                    yield chunk
            else:
                while chunk := await stream.receive():
                    for piece in decoder.feed(chunk):
                        yield piece
                for piece in decoder.finish():
                    yield piece
        except GeneratorExit:
            if self._detached and self._stream is stream:
                # A response from `StreamContext.open()` has no block to release it: an
                # iterator closed early (the framework's client disconnected, or the iterator
                # was finalised unfinished) closes the connection, never leaving it leased.
                self._abort()
                raise
            # The caller stopped iterating: `break` out of `async for`, the iterator's
            # `aclose()`, or its finalisation by the event loop's async-generator hook, which
            # runs on a later loop turn: while the `stream()` block's exit is draining the
            # rest of the body, or long after the socket went back to the pool. None of these
            # is a failure of the body, so the connection is not touched here: the response's
            # `aclose()` (the block's exit) drains within bounds and pools, or closes; a
            # response dropped unclosed is closed by `__del__`. (Taken for an error, this
            # aborted the drain whenever the rest of the body was not yet buffered.)
            raise
        except BaseException as exc:
            self._broken(stream, exc)
            raise
        self._stream = None

    async def aiter_raw(self) -> AsyncGenerator[bytes, None]:
        """Yield the body as received, Content-Encoding not undone; then release the connection.

        Raises `StreamConsumed` if the body was already read or iterated (and decoded).
        """
        if self._content is not None:
            if not self._raw_kept:
                raise StreamConsumed("the response body was already read and decoded")
            if self._content:
                yield self._content
            return
        stream = self._take_stream()
        try:
            while chunk := await stream.receive():
                yield chunk
        except GeneratorExit:
            if self._detached and self._stream is stream:
                self._abort()  # see `aiter_bytes`
            raise  # the caller stopped iterating: see `aiter_bytes`
        except BaseException as exc:
            self._broken(stream, exc)
            raise
        self._stream = None

    async def aiter_text(self) -> AsyncGenerator[str, None]:
        """Yield the body as text as it arrives, decoded with the response's charset
        (`encoding`) by an incremental decoder, so a character split across chunks is whole;
        undecodable bytes become U+FFFD. Raises what `aiter_bytes()` raises."""
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        async with contextlib.aclosing(self.aiter_bytes()) as chunks:
            async for chunk in chunks:
                text = decoder.decode(chunk)
                if text:
                    yield text
        text = decoder.decode(b"", final=True)
        if text:
            yield text

    async def aiter_lines(
        self, *, max_line_length: int | None = DEFAULT_MAX_LINE_LENGTH
    ) -> AsyncGenerator[str, None]:
        """Yield the body's lines as they arrive, without their line ends.

        A line ends at CRLF, LF or CR (a CRLF split across chunks is one line end; a last line
        without one is yielded too), as server-sent events and NDJSON streams need. Decoded as
        `aiter_text()`. Raises `ResponseTooLarge` (its `limit`: `max_line_length`) for a line
        longer than `max_line_length` characters (4 Mi; None: unbounded), the connection then
        closed, not drained; and what `aiter_bytes()` raises.
        """
        parts: list[str] = []  # the line being received, not yet ended
        held = 0  # characters in `parts`
        after_cr = False  # the last chunk ended in CR: a LF starting the next one belongs to it
        async with contextlib.aclosing(self.aiter_text()) as texts:
            async for text in texts:
                if after_cr:
                    after_cr = False
                    if text[0] == "\n":
                        text = text[1:]
                start = 0
                for end in _LINE_END.finditer(text):
                    piece = text[start : end.start()]
                    if parts:
                        parts.append(piece)
                        piece, parts, held = "".join(parts), [], 0
                    if max_line_length is not None and len(piece) > max_line_length:
                        raise self._line_too_long(max_line_length)
                    start = end.end()
                    after_cr = start == len(text) and end.group() == "\r"
                    yield piece
                if start < len(text):
                    parts.append(text[start:])
                    held += len(text) - start
                    if max_line_length is not None and held > max_line_length:
                        raise self._line_too_long(max_line_length)
        if parts:
            yield "".join(parts)

    def _line_too_long(self, limit: int) -> ResponseTooLarge:
        self._abort()  # (the rest of the body is not wanted: closed, never drained)
        return ResponseTooLarge(
            f"a line of the response body from {self.url} is longer than "
            f"max_line_length={limit} characters",
            limit=limit,
            request=self.request,
        )

    def _take_stream(self) -> BodyStream:
        """The body stream, for one reading only."""
        if self._consumed:
            raise StreamConsumed("the response body was already iterated")
        stream = self._stream
        if stream is None:
            raise StreamClosed("the response was closed before its body was read")
        self._consumed = True
        return stream

    def _decoder(self, limit: int | None = None) -> ContentDecoder | None:
        """The body's decoder, None for a body delivered as received. With `limit`, such a body
        whose Content-Length is over it (its decoded size, then) is refused here, before a byte
        of it is read (`ResponseTooLarge`). `DecodingError` for too many codings."""
        # A HEAD answer, a 204 and a 304 carry a Content-Encoding and a Content-Length but no
        # body (RFC 9110 sections 6.4.1, 8.6): nothing to decode, and nothing to refuse.
        if self.status_code in (204, 304) or self.request.method == "HEAD":
            return None
        headers = self.headers
        declared = headers._unencoded_length  # the parser's word, when it gave it
        if declared is None:
            # One pass over the raw pairs: `headers.get()` would build the decoded index of
            # every header, for every response (microseconds on the hot path, mostly for
            # nothing).
            codings: list[bytes] = []
            declared = b""
            for name, value in headers.raw:
                size = len(name)
                if size == 16 and name.lower() == b"content-encoding":
                    codings.append(value)
                elif size == 14 and name.lower() == b"content-length":
                    declared = value
            decoder = decoder_from(codings, self._max_ratio) if codings else None
        else:
            decoder = None
        if decoder is None and limit is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(limit, declared=int(declared))
        return decoder

    def _too_large(self, limit: int, *, declared: int | None = None) -> ResponseTooLarge:
        if declared is not None:
            what = f"declares {declared} bytes (Content-Length), over max_response_size={limit}"
        else:
            what = f"is over max_response_size={limit} bytes (counted decoded)"
        return ResponseTooLarge(
            f"the response body from {self.url} {what}: "
            "read it with `client.stream()` and `aiter_bytes()`, or raise max_response_size "
            "(None removes the limit)",
            limit=limit,
            request=self.request,
        )

    def _broken(self, stream: BodyStream, exc: BaseException) -> None:
        """Reading the body failed or was cancelled: close it (never pool) and say for which
        request, if the error is ours."""
        self._stream = None
        stream.abort()
        if isinstance(exc, TransportError) and exc.request is None:
            exc.request = self.request

    async def aclose(self) -> None:
        """Release the connection: drained and pooled if cheap (bounded), otherwise closed."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.aclose()

    def _abort(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.abort()

    def __repr__(self) -> str:
        # requests' and httpx's form; an empty reason phrase (HTTP/1.1 allows one) leaves no
        # dangling space.
        if not self.reason:
            return f"<Response [{self.status_code}]>"
        return f"<Response [{self.status_code} {self.reason}]>"

    def __del__(self) -> None:
        # Leaks are loud (docs/design.md): a streamed response dropped while open is a leak;
        # say where it was made.
        stream = getattr(self, "_stream", None)
        if stream is None or type(stream) is BufferedBody:  # (bytes in memory hold nothing)
            return
        self._stream = None
        where = f", opened at {self._opened_at}" if self._opened_at else ""
        request = getattr(self, "_request", None)
        to = f" to {request.url}" if request is not None else ""
        warnings.warn(
            f"unclosed streamed response {self!r}{to}{where}; "
            "use `async with client.stream(...)` to release its connection",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )
        stream.abort()


class _IterableBody:
    """The `BodyStream` of a hand-made streamed response: an async iterable of bytes."""

    __slots__ = ("_iterator",)

    def __init__(self, content: AsyncIterable[bytes]) -> None:
        self._iterator: AsyncIterator[bytes] | None = aiter(content)

    async def receive(self) -> bytes:
        iterator = self._iterator
        while iterator is not None:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                await self.aclose()
                return b""
            if chunk:
                return bytes(chunk)
        return b""

    async def aclose(self) -> None:
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()

    def abort(self) -> None:
        self._iterator = None


_ZERO = datetime.timedelta(0)


def _lowered(headers: Headers | HeaderTypes | None) -> Headers:
    """`headers` as response headers: names lower-cased (a copy when any was not)."""
    if type(headers) is not Headers:
        headers = Headers(headers)
    raw = headers.raw
    if any(name != name.lower() for name, _ in raw):
        return Headers._from_raw([(name.lower(), value) for name, value in raw])
    return headers


class BufferedBody:
    """A `BodyStream` over a body already in memory: a hand-made response's encoded body given
    as bytes, or a redirect's body read ahead (see `_redirects`), to be decoded as received."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def receive(self) -> bytes:
        data, self._data = self._data, b""
        return data

    async def aclose(self) -> None:
        self._data = b""

    def abort(self) -> None:
        self._data = b""


# The `conn_info` of a response no connection carried (one made by hand).
_NO_CONNECTION = ConnInfo(id=0, reused=False, was_idle=False, idle_time=0.0, http_version="")


def reason_phrase(status: int) -> str:
    """The standard reason phrase for `status` (RFC 9110), "" for an unregistered one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
