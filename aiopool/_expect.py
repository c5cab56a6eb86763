"""`Expect: 100-continue` (RFC 9110 section 10.1.1): ask before sending a large body.

The client sends the head alone and holds the body back until the server answers `100 Continue`
(send it), a final status such as 417, 401 or 413 (never send it: that is the answer), or
nothing within `expect_continue_timeout` (send it anyway: many servers ignore expectations).
A server that refuses thus costs one round trip instead of a wasted upload. A 417 is returned
like any other answer, as Go does: RFC 9110 says a client SHOULD then repeat the request without
the expectation (curl does), but whether a body may be sent twice is the caller's to decide.

When: whenever the caller sets the header on a request with a body (over either protocol), and
automatically, over HTTP/1.1 only, for a body whose size is known and at least
`expect_continue_threshold`. Not automatically over HTTP/2: nginx, h2o, hypercorn and granian
never answer an expectation with 100 over HTTP/2, so each upload would wait the full timeout,
and a stream is cheap to reset if the server refuses (curl sends none over HTTP/2 either). The
pool picks the protocol after `prepare_expect` ran, so the automatic header is a marked one
(`AUTO_EXPECT`, told apart by identity) that `HTTP2Connection` leaves out. Defaults:
- threshold 1 MiB: curl's (`EXPECT_100_THRESHOLD`); below that, an upload costs less than the
  round trip the question costs. A streamed body of unknown size is not asked about
  automatically (curl does ask): a server that ignores expectations would stall every such
  upload by the full timeout.
- timeout 1 s: Go's `http.DefaultTransport.ExpectContinueTimeout` (curl waits 1 s too).

The connections do the waiting (`_await_continue` in `HTTP11Connection`, whatever its codec,
and in `HTTP2Connection`); this module holds the rules they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Request

__all__ = (
    "AUTO_EXPECT",
    "DEFAULT_EXPECT_CONTINUE_THRESHOLD",
    "DEFAULT_EXPECT_CONTINUE_TIMEOUT",
    "interim_verdict",
    "prepare_expect",
)

DEFAULT_EXPECT_CONTINUE_THRESHOLD = 1024 * 1024
DEFAULT_EXPECT_CONTINUE_TIMEOUT = 1.0

# The header field `prepare_expect` adds on its own, this very tuple: HTTP/2 drops it (and its
# wait) by identity, while an expectation the caller set, an equal but other tuple, is kept.
AUTO_EXPECT = (b"expect", b"100-continue")
# How many response bytes `interim_verdict` looks at before leaving the verdict to the parser
# (which enforces the real head limits): more than any honest run of interim responses.
_MAX_LOOKAHEAD = 64 * 1024


def prepare_expect(request: Request, threshold: int | None, timeout: float) -> None:
    """Decide whether `request` waits for `100 Continue`; add the header if automatic.

    Sets `request._expect_wait` (seconds to wait, or None); an automatic expectation is the
    `AUTO_EXPECT` field, which HTTP/2 leaves out. A request without a body never
    waits (RFC 9110: a client must not send the expectation without content; one the caller
    set anyway is sent as given, and ignored here).
    """
    content = request.content
    if content is None or content == b"":
        return
    raw = request.headers.raw
    size = len(content) if isinstance(content, bytes) else -1  # -1: a stream, length unknown
    for name, value in raw:
        size_of_name = len(name)
        if size_of_name == 6 and name.lower() == b"expect":
            if value.strip().lower() == b"100-continue":
                request._expect_wait = timeout
            return  # the caller's own expectation (or another one): theirs to make
        if size_of_name == 14 and size < 0 and name.lower() == b"content-length":
            size = int(value) if value.isdigit() else -1
    if threshold is not None and size >= threshold:
        # (`raw` is the request's own list; its lookup index is built lazily, not yet.)
        raw.append(AUTO_EXPECT)
        request._expect_wait = timeout


def interim_verdict(data: bytes) -> tuple[bool | None, bytes]:
    """What the response bytes read so far say, while a body waits behind the expectation.

    Returns (True, _) for `100 Continue`, (False, _) for the start of anything else (a final
    response, or bytes that are no status line: the parser will name the error), and (None,
    rest) when more bytes are needed; `rest` is what to call again with, plus what comes next.
    Other interim responses (103 Early Hints) are skipped.
    """
    while True:
        end = data.find(b"\r\n")
        if end < 0:
            return (None if len(data) < _MAX_LOOKAHEAD else False), data
        parts = data[:end].split(b" ", 2)
        code = parts[1] if len(parts) >= 2 and parts[0].startswith(b"HTTP/") else b""
        if len(code) != 3 or not code.isdigit() or code[:1] != b"1":
            return False, data
        if code == b"100":
            return True, data
        stop = data.find(b"\r\n\r\n")
        if stop < 0:
            return (None if len(data) < _MAX_LOOKAHEAD else False), data
        data = data[stop + 4 :]
