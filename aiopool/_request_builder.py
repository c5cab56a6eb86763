"""Building a `Request` from what the caller passed and what the client adds to every request.

The client's part is prepared once, at construction: its default headers (validated, with
`User-Agent`, `Accept` and the `Accept-Encoding` we can decode), its base URL and its Basic
credentials. Per request, only the caller's own headers are validated (RFC 9110 grammar, so CR,
LF and NUL never reach the wire) and framing headers are added.

The client owns framing. A caller may set `Host` (once), a `Content-Length` that is true (equal
to a bytes body; on a streamed body, the exact number of bytes it will yield) and
`Transfer-Encoding: chunked` (the client then chunks the body itself); anything else among
those fields is refused with `LocalProtocolError` before a socket is leased (`check_framing`).
Client-wide default headers may set `Host`, never a body's framing.
"""

from __future__ import annotations

import json as jsonlib
import re
from typing import Any

from ._auth import AuthTypes, basic_auth_header
from ._bodies import BodyContent, StreamBody, body_from
from ._decoders import ACCEPT_ENCODING
from ._exceptions import InvalidURL, LocalProtocolError
from ._headers import FRAMING_FIELDS, Headers, HeaderTypes, check_framing, validate_header
from ._models import Request
from ._multipart import DataTypes, FilesTypes, MultipartBody, urlencoded
from ._urls import URL, QueryParams
from ._version import __version__

__all__ = ("UNSET", "RequestBuilder")

# Marks a keyword the caller did not pass, where None means something (`json=None`, `auth=None`).
UNSET: Any = object()

_USER_AGENT = f"aiopool/{__version__}".encode("ascii")
# RFC 9110 section 8.6: a user agent SHOULD send Content-Length when the method defines a
# meaning for content even if there is none (some servers answer 411 otherwise).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PROXY_AUTHORIZATION = b"proxy-authorization"
# With `base_url`, a URL is absolute when it starts with a scheme (RFC 3986 section 3.1) and
# "//": http(s) URLs always have an authority, and API paths such as "items:batchGet" (a
# colon in the first segment, which RFC 3986 would read as a scheme) still merge.
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


class RequestBuilder:
    """One client's request defaults, and `build()` to make each request from them."""

    __slots__ = (
        "_auth_header",
        "_default_authorization",
        "_default_headers",
        "_default_host",
        "_proxied",
        "base_url",
    )

    def __init__(
        self,
        *,
        headers: HeaderTypes | None,
        base_url: str | URL | None,
        auth: AuthTypes | None,
        proxied: bool,
    ) -> None:
        self._proxied = proxied
        self._default_headers = _default_headers(Headers(headers) if headers else None)
        if not proxied:
            # With no proxy a Proxy-Authorization is for nobody: `route` would strip it from
            # every request. Stripped here once (and the caller's in `build`), so the client
            # skips `route` and its scan of every request's headers.
            self._default_headers = [
                h for h in self._default_headers if h[0] != _PROXY_AUTHORIZATION
            ]
        self.base_url = _base_url(base_url) if base_url is not None else None
        # Encoded once: the header is the same on every request.
        self._auth_header = basic_auth_header(auth) if auth is not None else None
        self._default_authorization = any(h[0] == b"authorization" for h in self._default_headers)
        # A default Host replaces the URL's on every request (unless the request sets its own).
        self._default_host = any(h[0] == b"host" for h in self._default_headers)

    def build(
        self,
        method: str,
        url: str | URL,
        params: QueryParams | None,
        headers: HeaderTypes | None,
        content: BodyContent | None,
        json: Any,
        auth: AuthTypes | None = UNSET,
        data: DataTypes | None = None,
        files: FilesTypes | None = None,
    ) -> Request:
        """The request to send. Raises `InvalidURL`, `LocalProtocolError` (an illegal header or
        method, or part header) and `TypeError` (content, data or files of the wrong type, a
        text-mode file, or more than one of `content`, `json` and `data`/`files`)."""
        if isinstance(url, str):
            base = self.base_url
            if base is not None and not _HAS_SCHEME.match(url):
                # httpx's merge: the base path, then the relative one without its leading "/".
                url = URL(base.unmasked + url.lstrip("/"))  # (credentials included)
            else:
                url = URL(url)
        elif not isinstance(url, URL):
            raise InvalidURL(f"URL must be a str or aiopool.URL, not {type(url).__name__}")
        if auth is not UNSET:
            authorization = basic_auth_header(auth) if auth is not None else None
        else:
            authorization = self._auth_header
        if url.has_userinfo:
            # Credentials in the URL become Basic auth (unless `auth=` was given for this
            # request) and leave the URL, so no repr, log line or Location join carries them.
            if auth is UNSET:
                authorization = basic_auth_header((url.username, url.password))
            url = url.without_userinfo()
        if params:
            url = url.copy_merge_params(params)
        extra: list[tuple[bytes, bytes]]
        body: BodyContent | StreamBody | None
        if data is not None or files is not None:
            if content is not None or json is not UNSET:
                raise TypeError("pass one of content=, json= and data=/files=, not several")
            if files is not None:
                form = MultipartBody(data, files)
                body, extra = form, [(b"content-type", form.content_type)]
            else:
                assert data is not None
                body = urlencoded(data)
                extra = [(b"content-type", b"application/x-www-form-urlencoded")]
        elif json is not UNSET:
            if content is not None:
                raise TypeError("pass either content= or json=, not both")
            body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
            extra = [(b"content-type", b"application/json")]
        else:
            body, extra = content, []
        if isinstance(body, str):
            body = body.encode("utf-8")
            extra.append((b"content-type", b"text/plain; charset=utf-8"))
        method = method.upper()
        raw: list[tuple[bytes, bytes]] = [] if self._default_host else [(b"host", url.host_header)]
        defaults = self._default_headers
        if authorization is not None:
            # Below the request's own headers, above the client's default ones.
            extra.append((b"authorization", authorization))
            if self._default_authorization:
                defaults = [h for h in defaults if h[0] != b"authorization"]
        # The body's length when it is known now (0: none), None for a streamed one whose
        # length is not (then chunked). A seekable file and a multipart body of such parts
        # know theirs, and are framed with Content-Length.
        size: int | None
        if body is None:
            size = 0
        elif isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
            size = len(body)
        else:
            body = body_from(body)  # (a file object becomes a `FileBody`; TypeError)
            size = body.size if isinstance(body, StreamBody) else None
        if headers:
            user = Headers(headers).raw
            names = set()
            for name, value in user:
                validate_header(name, value)
                names.add(name.lower())
            if not names.isdisjoint(FRAMING_FIELDS):
                check_framing(user, size)
            if _PROXY_AUTHORIZATION in names and not self._proxied:
                user = [h for h in user if h[0].lower() != _PROXY_AUTHORIZATION]  # see __init__
            raw.extend(h for h in defaults if h[0] not in names)
            raw.extend(h for h in extra if h[0] not in names)
            if b"host" in names and not self._default_host:
                raw.pop(0)
            raw.extend(user)
            framed = b"content-length" in names or b"transfer-encoding" in names
        else:
            framed = False
            raw.extend(defaults)
            raw.extend(extra)
        if not framed:
            if size is None:
                raw.append((b"transfer-encoding", b"chunked"))
            elif body is not None or method in _BODY_METHODS:
                raw.append((b"content-length", str(size).encode()))
        # Defaults were validated at construction, user headers above, the rest we built.
        return Request(method, url, Headers._from_raw(raw), body, headers_validated=True)


def _default_headers(extra: Headers | None) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [
        (b"user-agent", _USER_AGENT),
        (b"accept", b"*/*"),
        # Every coding we can decode (br and zstd when their extras are installed); a user's
        # own Accept-Encoding replaces it, and whatever arrives is decoded all the same.
        (b"accept-encoding", ACCEPT_ENCODING),
    ]
    if extra is not None:
        for name, value in extra.raw:
            validate_header(name, value)
            if name.lower() in (b"content-length", b"transfer-encoding"):
                raise LocalProtocolError(
                    f"{name.decode()} cannot be a client-wide default: it frames one "
                    "request's body (the client sets it per request)"
                )
        check_framing(extra.raw, None)  # (Host: once, and an authority)
        names = {n.lower() for n, _ in extra.raw}
        headers = [h for h in headers if h[0] not in names] + [(n.lower(), v) for n, v in extra.raw]
    return headers


def _base_url(base_url: str | URL) -> URL:
    """The base URL with a trailing "/", so that relative paths extend it (httpx's rule)."""
    url = base_url if isinstance(base_url, URL) else URL(base_url)
    if url.query or url.fragment:
        raise ValueError("base_url cannot have a query or a fragment: it prefixes paths")
    text = url.unmasked  # (str() would mask a password)
    return url if text.endswith("/") else URL(text + "/")
