"""Following redirects, and the cookie jar's part in every exchange.

The client's `_exchange` calls these around its `_send` (which keeps its own per-hop retries:
a stale socket, an unprocessed HTTP/2 stream): `add_jar_cookie` adds the jar's `Cookie` header
for each URL, `store_cookies` stores every response's Set-Cookie (redirect hops included), and
`follow` follows 301, 302, 303, 307 and 308. (No coroutine of its own here for the first hop:
every request passes through it, and a redirect is the exception.)

The rules, with where they come from:

- 301, 302 and 303 become GET without a body (HEAD stays HEAD), and the headers that described
  the body go (WHATWG Fetch "HTTP-redirect fetch" step 12; Go turns every method but GET and
  HEAD into GET for these three, golang/go#18570). 307 and 308 resend method and body
  (RFC 9110 sections 15.4.8, 15.4.9); a body given as an async iterable was consumed by the
  first send, so that raises `RedirectBodyNotReplayable` rather than sending an empty body.
- `Location` is resolved against the current URL (RFC 3986 section 5.2, `URL.join`); a
  Location without a fragment inherits the current one (RFC 9110 section 10.2.2). A redirect
  without Location (or an empty one) is returned as it is, as Go and httpx do. One that is not
  a valid http(s) URL raises `InvalidRedirect`: following it is impossible and returning a 3xx
  as if it were the answer would hide that (Go and aiohttp raise too). Raw Location bytes are
  read as UTF-8 when they are valid UTF-8, else as latin-1 (requests does the same, for
  servers that send unencoded UTF-8 paths). A Location longer than `MAX_URL_LENGTH` (64 KiB,
  see `_urls`) raises `InvalidRedirect` before it is parsed: no server answers a URL that long,
  and ten hops of them per request were a way to make the client hold memory.
- Credentials are for the origin the user asked for. `Authorization`, `Cookie` and
  `Proxy-Authorization` as the user's request carried them go only to that origin (or to its
  https upgrade on default ports, as httpx allows); on a hop anywhere else they are dropped,
  cookies the user set without a domain are withheld, and the jar's own cookies are chosen for
  the hop's URL by their domain and path. Coming back to the user's origin brings them back
  (Go compares each hop with the first request the same way). Userinfo in a Location is
  ignored: a server does not get to choose credentials for us to send.
- Each redirect response is read before the next hop, so its socket goes back to the pool;
  at most `MAX_REDIRECT_BODY` bytes of it are kept (Go reads 2 KiB, then closes): a longer
  body is drained within the pool's bounds or its socket closed, and that history entry has no
  `content`. More than `max_redirects` redirects raise `TooManyRedirects`.
- A redirect policy (`follow_redirects=fn`, Go's `Client.CheckRedirect`) is asked before each
  hop, once the next request is built (method, URL and headers as they would be sent) and the
  redirect response released: `fn(request, history)`, `history` the redirect responses so far,
  oldest first, the one being followed last. True follows it; False stops, and the redirect
  response is the answer (Go's `ErrUseLastResponse`); an exception propagates as it is (Go
  wraps it in a `url.Error`; here it is the caller's own exception, unchanged). The function
  may be a coroutine function.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from ._bodies import StreamBody
from ._cookies import Cookies
from ._exceptions import (
    DecodingError,
    InvalidRedirect,
    InvalidURL,
    RedirectBodyNotReplayable,
    ResponseTooLarge,
    TooManyRedirects,
)
from ._headers import Headers
from ._models import BufferedBody, Request, Response
from ._urls import MAX_URL_LENGTH, URL, Origin

__all__ = (
    "MAX_REDIRECT_BODY",
    "REDIRECT_STATUSES",
    "FollowRedirects",
    "RedirectPolicy",
    "add_jar_cookie",
    "follow",
    "store_cookies",
)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Redirect bodies are short "moved" pages (nginx's are ~170 bytes); 64 KiB keeps any real one
# while bounding what a hostile chain of `max_redirects` hops can make us hold.
MAX_REDIRECT_BODY = 64 * 1024

_SENSITIVE = frozenset({b"authorization", b"cookie", b"proxy-authorization"})
# Content-Length and Transfer-Encoding describe the body we no longer send, and an Expect:
# 100-continue must not go without one (RFC 9110 section 10.1.1); the rest are Fetch's
# "request-body-header names".
_BODY_HEADERS = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"content-type",
        b"content-encoding",
        b"content-language",
        b"content-location",
    }
)

Send = Callable[[Request], Awaitable[Response]]
# `follow_redirects=fn`: `fn(next_request, history) -> bool` (or an awaitable of one).
RedirectPolicy: TypeAlias = Callable[[Request, list[Response]], bool | Awaitable[bool]]
FollowRedirects: TypeAlias = bool | RedirectPolicy
# What `_location` returns for several different Location values (no real one holds a NUL).
_AMBIGUOUS = "\x00ambiguous"


async def follow(
    send: Send,
    response: Response,
    cookies: Cookies,
    max_redirects: int,
    jar_cookie: tuple[bytes, bytes] | None,
    policy: RedirectPolicy | None = None,
) -> Response:
    """Follow the redirects from `response` (a redirect, its Set-Cookie stored) with `send`;
    return the first response that is not one to follow, unread.

    Every redirect response is read and released before the next hop, on every path. Raises
    what `send` raises, `TooManyRedirects`, `InvalidRedirect`, `RedirectBodyNotReplayable`,
    and `LocalProtocolError` for a cookie that cannot be sent. `jar_cookie`: the header
    `add_jar_cookie` gave the first request (the jar chooses again for every hop). `policy`:
    asked before each hop (see above); raises what it raises.
    """
    first = response.request
    origin = first.url.origin
    # The sensitive headers the user's request carried (not the jar's Cookie: the jar chooses
    # again for every hop).
    credentials = [
        h for h in first.headers.raw if h[0].lower() in _SENSITIVE and h is not jar_cookie
    ]
    history: list[Response] = []
    while True:
        location = _location(response)
        if location is None:  # not a redirect we can follow: the answer as it is
            response.history = history
            return response
        entry = await _release(response)  # from here on, nothing of it is left open
        entry.history = history[:]
        if location is _AMBIGUOUS:
            # Which one did the server mean? Guessing could send us anywhere.
            raise InvalidRedirect(
                f"{entry.status_code} redirect with several different Location headers",
                response=entry,
                history=history,
            )
        if len(history) >= max_redirects:
            raise TooManyRedirects(
                f"more than {max_redirects} redirects in a row (the last from {entry.url})",
                response=entry,
                history=history,
            )
        target = _target(entry, location, history)
        allowed = _same_site(origin, target.origin)
        request = _next_request(entry, target, credentials if allowed else [], history)
        add_jar_cookie(request, cookies, cross_origin_hop=not allowed)
        if policy is not None:
            verdict = policy(request, [*history, entry])
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                return entry  # Go's ErrUseLastResponse: the redirect is the answer
        history.append(entry)
        response = await send(request)
        store_cookies(response, cookies)
        if response.status_code not in REDIRECT_STATUSES:
            response.history = history
            return response


def _location(response: Response) -> str | None:
    """The raw Location of a redirect, decoded; None when absent or empty, `_AMBIGUOUS` when
    the server sent several different ones."""
    values = {v for n, v in response.headers.raw if n.lower() == b"location"}
    if len(values) > 1:
        return _AMBIGUOUS
    if not values:
        return None
    raw = values.pop()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text or None


async def _release(response: Response) -> Response:
    """Read a redirect's body (bounded) so its socket goes back to the pool; return what goes
    into the history: the response with its body, or, past the bound, without it.

    The bound is on the bytes as received, and the body is decoded only afterwards, from
    memory: a redirect body that is too long, a compression bomb or a broken Content-Encoding
    costs the history entry its `content`, never the request.
    """
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_REDIRECT_BODY:
        await response.aclose()  # drained within the pool's bounds, or closed
        return response
    chunks: list[bytes] = []
    size = 0
    raw = response.aiter_raw()
    async with contextlib.aclosing(raw):
        async for chunk in raw:
            size += len(chunk)
            if size > MAX_REDIRECT_BODY:
                # Go's rule for long redirect bodies: close the socket (an h2 stream is reset)
                # rather than drain. (Closing the iterator alone leaves the connection to its
                # response, as a `break` out of any body iteration does.)
                response._abort()
                break
            chunks.append(chunk)
        else:
            entry = Response(
                response.status_code,
                reason=response.reason,
                headers=response.headers,
                http_version=response.http_version,
                request=response.request,
                conn_info=response.conn_info,
                stream=BufferedBody(b"".join(chunks)),
                max_response_size=MAX_REDIRECT_BODY,
            )
            with contextlib.suppress(DecodingError, ResponseTooLarge):
                await entry.aread()  # from memory: no await really waits
            return entry
    return response


def _target(response: Response, location: str, history: list[Response]) -> URL:
    current = response.request.url
    if len(location) > MAX_URL_LENGTH:
        raise InvalidRedirect(
            f"cannot follow the {response.status_code} redirect from {current}: its Location "
            f"is {len(location):,} characters long, over the limit of {MAX_URL_LENGTH:,}",
            response=response,
            history=history,
        )
    try:
        target = current.join(location).without_userinfo()
        if not target.fragment and current.fragment:  # RFC 9110 section 10.2.2
            target = URL(f"{target.unmasked}#{current.fragment}")
    except InvalidURL as exc:
        raise InvalidRedirect(
            f"cannot follow the {response.status_code} redirect from {current}: {exc}",
            response=response,
            history=history,
        ) from None
    return target


def _same_site(origin: Origin, target: Origin) -> bool:
    """Whether the user's credentials for `origin` may go to `target`: the same origin, or its
    upgrade from http to https with both on default ports (httpx's rule)."""
    if (origin.scheme, origin.host, origin.port) == (target.scheme, target.host, target.port):
        return True
    return (
        origin.scheme == "http"
        and target.scheme == "https"
        and origin.host == target.host
        and origin.port == 80
        and target.port == 443
    )


def _next_request(
    response: Response,
    target: URL,
    credentials: list[tuple[bytes, bytes]],
    history: list[Response],
) -> Request:
    previous = response.request
    method, content = previous.method, previous.content
    status = response.status_code
    drop_body = status in (301, 302, 303)
    if drop_body:
        content = None
        if method != "HEAD":
            method = "GET"
    elif (
        content is not None
        and not isinstance(content, bytes)
        and not (isinstance(content, StreamBody) and content.replayable)
    ):
        # A seekable file (or a multipart body of bytes and such files) is sent again from
        # its starting offset; an async iterable or a pipe can be read only once.
        raise RedirectBodyNotReplayable(
            f"the {status} redirect to {target} needs the request body again, but it was "
            "one-shot (an async iterable or an unseekable file), which can be sent only once; "
            "pass bytes or a seekable file to allow this",
            response=response,
            history=history,
        )
    same_host = previous.url.origin[:3] == target.origin[:3]
    raw: list[tuple[bytes, bytes]] = []
    for name, value in previous.headers.raw:
        lower = name.lower()
        if lower in _SENSITIVE or (drop_body and lower in _BODY_HEADERS):
            continue
        if lower == b"host" and not same_host:
            value = target.host_header
        raw.append((name, value))
    raw.extend(credentials)
    return Request(method, target, Headers._from_raw(raw), content, headers_validated=True)


def add_jar_cookie(
    request: Request, cookies: Cookies, *, cross_origin_hop: bool
) -> tuple[bytes, bytes] | None:
    """Append the jar's `Cookie` for the request's URL, unless the request has one already
    (a user-set Cookie header wins). Returns the header it appended, if any."""
    if cookies.surely_empty:  # the common case costs nothing more
        return None
    raw = request.headers.raw
    for name, _ in raw:
        if len(name) == 6 and name.lower() == b"cookie":  # (length first: nearly free)
            return None
    value = cookies.header_for(request.url, cross_origin_hop=cross_origin_hop)
    if value is None:
        return None
    header = (b"cookie", value)
    request.headers = Headers._from_raw([*raw, header])
    return header


def store_cookies(response: Response, cookies: Cookies) -> None:
    """Put `response`'s Set-Cookie fields into the jar; on failure its socket is closed."""
    for name, _ in response.headers.raw:
        if name == b"set-cookie":  # response header names arrive lower-cased
            try:
                cookies.extract(response.headers, response.url)
            except BaseException:
                response._abort()
                raise
            return
