"""URLs: parsed once, validated strictly, and turned into the pieces the wire needs.

Rules kept here:
- only `http` and `https` (anything else is `InvalidURL`, before any socket is opened);
- a host is required; ports are 1..65535; default ports are filled in from the scheme;
- no ASCII control characters or whitespace anywhere (RFC 3986 section 2: they are never valid
  in a URI, and a raw CR/LF in the target is how request smuggling starts);
- non-ASCII host names are IDNA-encoded; non-ASCII in path or query is percent-encoded (UTF-8),
  as browsers and RFC 3987 section 3.1 do;
- userinfo (`http://user:password@host/`) never reaches the wire as part of the URL: the client
  turns it into HTTP Basic credentials and strips it (`without_userinfo()`). `str()` and `repr()`
  mask the password (`http://user:[secure]@host/`, Go's `URL.Redacted`, httpx's repr), so a URL
  in a log line, an f-string or a traceback does not carry it; `unmasked` is the full text, for
  the few places that must rebuild the URL. Error messages quote a URL only through
  `_redacted`, which masks a password even where it made the URL unparseable (an unencoded
  `/`, `?` or `#` in it ends the authority early);
- a URL is at most `MAX_URL_LENGTH` (64 KiB) characters, as given and once normalized
  (percent-encoding can multiply non-ASCII text by 9): `InvalidURL` past it, before any parsing.
  RFC 9110 section 4.1 asks for at least 8000 octets; servers stop at 8 KiB (nginx's
  `large_client_header_buffers`, Apache's `LimitRequestLine` 8190) to 16 KiB (IIS, Node.js's
  whole head, Cloudflare, AWS ALB), so 64 KiB refuses nothing a common server would answer. The
  browsers' larger limits (Chrome 2 MiB, Firefox 1 MiB) exist for `data:` URLs, which an HTTP
  client never sends. Beyond the server limits, a long URL is only a way to make a client
  hold memory (issue: 10 hops of 90 KB Locations, per request);
- parsed URLs are cached (services call the same few URLs over and over), but only short ones
  (`_CACHEABLE`, 2 KiB, as given and normalized), at most `_CACHE_ENTRIES` (512) of them: the
  cache holds at most ~6 MiB whatever the traffic. The standard library's own `urlsplit` cache
  is bypassed for the same reason (`urljoin` fills it too, so `join` uses `_join`, urljoin's
  algorithm over the uncached split): a URL parsed here is not kept alive by anyone else.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import SplitResult, quote, unquote, urlencode, urlsplit, urlunsplit

from ._exceptions import InvalidURL

if TYPE_CHECKING:
    from ._proxy import Proxy

__all__ = ("MAX_URL_LENGTH", "URL", "Origin", "QueryParams")

DEFAULT_PORTS = {"http": 80, "https": 443}

# See the module docstring: four times the largest request line a common server accepts.
MAX_URL_LENGTH = 64 * 1024
# Parse cache bounds: real URLs are far below 2 KiB (2083 characters was Internet Explorer's
# limit, and what sites kept to for decades). 512 entries of at most 2 KiB key, 2 KiB text
# and 2 KiB target: ~6 MiB in the worst case, a few hundred KiB in practice.
_CACHEABLE = 2 * 1024
_CACHE_ENTRIES = 512
# The standard library caches `urlsplit` (128 entries, no size bound, since Python 3.11): a
# long URL parsed through it stays alive there after the request. Its uncached function is
# `__wrapped__` (a plain call where there is no cache).
_urlsplit: Callable[[str], SplitResult] = getattr(urlsplit, "__wrapped__", urlsplit)

# Control characters (C0 and DEL) and space are never legal in a URL on the wire.
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
# Characters left alone when percent-encoding path and query (RFC 3986 reserved + unreserved + %).
_SAFE = "!#$%&'()*+,/:;=?@[]~"

QueryValue = str | int | float | bool | None
QueryParams = (
    Mapping[str, QueryValue | Sequence[QueryValue]] | Sequence[tuple[str, QueryValue]] | str
)


class Origin(NamedTuple):
    """Where a connection goes: the part of a URL a socket is made for, and the route to it.

    `proxy` is part of the key (docs/design.md invariant 1): a socket made through one proxy is
    never handed to a request for another proxy, other proxy credentials, or a direct
    connection.
    `str()` reads "http://example.org:80 via http://proxy:3128", never with credentials.
    """

    scheme: str
    host: str
    port: int
    proxy: Proxy | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}://{host}:{self.port}"
        return text if self.proxy is None else f"{text} via {self.proxy}"

    @property
    def authority(self) -> bytes:
        """host[:port] as in a Host header or an absolute URL (default port left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS.get(self.scheme):
            return host.encode("ascii")
        return f"{host}:{self.port}".encode("ascii")


class URL:
    """An absolute http(s) URL, immutable and validated.

    Raises `InvalidURL` for anything that could not safely be sent, and for a URL longer than
    `MAX_URL_LENGTH` characters. `str()` masks a password (`http://user:[secure]@host/`);
    `unmasked` is the full text.
    """

    __slots__ = ("_str", "_userinfo", "host_header", "origin", "target")

    origin: Origin
    target: bytes  # the request-target: path plus query, percent-encoded ASCII
    host_header: bytes  # value for the Host header (port omitted when default)
    _str: str
    _userinfo: str  # "user:password" as written (percent-encoded), "" when absent

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise InvalidURL(f"URL must be a str, not {type(url).__name__}")
        self.origin, self.target, self.host_header, self._str, self._userinfo = _parse(url)

    @property
    def unmasked(self) -> str:
        """The URL's full text, password included (`str()` masks it).

        For code that must rebuild the URL (a base URL extended by a path, a copy with a
        fragment); never for a message, a log line or anything a user sees.
        """
        return self._str

    @property
    def scheme(self) -> str:
        return self.origin.scheme

    @property
    def host(self) -> str:
        return self.origin.host

    @property
    def port(self) -> int:
        return self.origin.port

    @property
    def path(self) -> str:
        return self.target.decode("ascii").partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.decode("ascii").partition("?")[2]

    @property
    def fragment(self) -> str:
        return self._str.partition("#")[2]

    @property
    def username(self) -> str:
        """The user name from the URL's userinfo, percent-decoded ("" when there is none)."""
        return unquote(self._userinfo.partition(":")[0])

    @property
    def password(self) -> str:
        """The password from the URL's userinfo, percent-decoded ("" when there is none)."""
        return unquote(self._userinfo.partition(":")[2])

    @property
    def has_userinfo(self) -> bool:
        return bool(self._userinfo)

    def without_userinfo(self) -> URL:
        """This URL with any `user:password@` removed (itself when it has none)."""
        if not self._userinfo:
            return self
        scheme, _, rest = self._str.partition("://")
        return URL(f"{scheme}://{rest.partition('@')[2]}")

    def join(self, url: str) -> URL:
        """Resolve `url`, absolute or relative, against this URL (RFC 3986 section 5.2).

        `"/b"` keeps the scheme and authority, `"//host/b"` keeps the scheme, `"b"` and `"../b"`
        are merged with this path, `"?q"` replaces the query; a fragment comes from `url`
        only (section 5.2.2: the base's fragment is never inherited by the reference).
        Raises `InvalidURL` if the result is not a valid http(s) URL.
        """
        if not isinstance(url, str):
            raise InvalidURL(f"URL must be a str, not {type(url).__name__}")
        _check_length(url)
        # The control-character check runs on `url` itself: urljoin would strip some of them.
        if _FORBIDDEN.search(url):
            raise InvalidURL(f"URL contains whitespace or control characters: {_redacted(url)!r}")
        if url.startswith("//") and url[2:3] in ("", "/", "?", "#"):
            # An empty authority: RFC 3986 gives "http://" (no host), urljoin the base.
            raise InvalidURL(f"URL has no host: {_redacted(url)!r}")
        try:
            joined = _join(self._str, url)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise InvalidURL(f"invalid URL {_redacted(url)!r}: {_reason(exc, url)}") from None
        return URL(joined)

    def copy_merge_params(self, params: QueryParams) -> URL:
        """Return a new URL with `params` appended to the query string."""
        extra = params if isinstance(params, str) else urlencode(_flatten(params), doseq=False)
        if not extra:
            return self
        head, hash_, fragment = self._str.partition("#")
        joiner = "&" if "?" in head else "?"
        return URL(head + joiner + extra + hash_ + fragment)

    def __str__(self) -> str:
        """The URL's text with any password masked as `[secure]` (Go's `URL.Redacted`): what
        an f-string, a log line or an error message may show. `unmasked` has it all."""
        if ":" not in self._userinfo:  # no password (a user name alone is shown, as Go does)
            return self._str
        scheme, _, rest = self._str.partition("://")
        user = self._userinfo.partition(":")[0]
        return f"{scheme}://{user}:[secure]@{rest.partition('@')[2]}"

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, URL):
            return self._str == other._str
        if isinstance(other, str):
            return self._str == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._str)


def _flatten(params: Mapping[str, object] | Sequence[tuple[str, object]]) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    out: list[tuple[str, str]] = []
    for key, value in items:
        values = value if isinstance(value, list | tuple) else (value,)
        for v in values:
            if v is None:
                continue
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            out.append((key, text))
    return out


def _join(base: str, url: str) -> str:
    """`urllib.parse.urljoin(base, url)` for http(s) bases, step for step, over the uncached
    `_urlsplit`: urljoin parses both through the standard library's cache, which would keep
    every Location of a redirect chain alive (up to 128 of them, 64 KiB each). Raises
    `ValueError` as urlsplit does.
    """
    if not url:
        return base
    b = _urlsplit(base)
    scheme, netloc, path, query, fragment = _urlsplit(url)
    if (scheme or b.scheme) != b.scheme:  # another scheme: the reference as it is
        return url
    scheme = b.scheme
    path, params = _split_params(path)
    if netloc:
        return _unparse(scheme, netloc, path, params, query, fragment)
    if not path and not params:
        path, params = _split_params(b.path)
        return _unparse(scheme, b.netloc, path, params, query or b.query, fragment)
    base_parts = _split_params(b.path)[0].split("/")
    if base_parts[-1] != "":
        del base_parts[-1]  # the last segment is replaced, not extended (RFC 3986 5.2.3)
    if path.startswith("/"):
        segments = path.split("/")
    else:
        segments = base_parts + path.split("/")
        segments[1:-1] = [s for s in segments[1:-1] if s]
    resolved: list[str] = []
    for segment in segments:  # remove_dot_segments (RFC 3986 5.2.4), as urljoin does it
        if segment == "..":
            if resolved:
                resolved.pop()
        elif segment != ".":
            resolved.append(segment)
    if segments[-1] in (".", ".."):
        resolved.append("")
    return _unparse(scheme, b.netloc, "/".join(resolved) or "/", params, query, fragment)


def _split_params(path: str) -> tuple[str, str]:
    """urlparse's `;params` of the last segment (RFC 2396), which urljoin handles apart."""
    i = path.find(";", path.rfind("/") + 1)
    return (path, "") if i < 0 else (path[:i], path[i + 1 :])


def _unparse(scheme: str, netloc: str, path: str, params: str, query: str, frag: str) -> str:
    return urlunsplit((scheme, netloc, f"{path};{params}" if params else path, query, frag))


def _check_length(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        # The URL itself is not quoted: 64 KiB of it in a message is the problem again.
        raise InvalidURL(
            f"URL is {len(url):,} characters long, over the limit of {MAX_URL_LENGTH:,} "
            f"(no common server accepts one this long): {_redacted(url)[:80]!r}..."
        )


def _redacted(url: str) -> str:
    """`url` for an error message: a password in its userinfo replaced by `[secure]`.

    Also when the password holds an unencoded `/`, `?` or `#`: parsers (urlsplit, WHATWG) end
    the authority there, so `http://alice:s3/cret@host/` reads as host `alice`, port `s3`. When
    the authority has no `@` but a later part has one, and the authority's port is not a
    number, everything up to the last `@` is taken as userinfo: a message may hide too much
    of a broken URL, never a password.
    """
    scheme, sep, rest = url.partition("//")
    if not sep or "@" not in rest:
        return url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        tail = rest[len(authority) :]
    else:
        port = authority.rpartition(":")[2]
        if ":" not in authority or authority.endswith("]") or port.isdigit():
            return url  # a host and port as they should be: the "@" is in the path or query
        userinfo, _, host = rest.rpartition("@")
        tail = ""
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:[secure]@{host}" if colon else f"{user}@{host}"
    return scheme + sep + shown + tail


def _reason(exc: ValueError, url: str) -> str:
    """What urlsplit's ValueError says, without quoting a piece of the URL: its texts quote
    the port ("Port could not be cast to integer value as 's3'", the start of a password when
    an unencoded "/" ended the authority early) or the whole netloc (the NFKC check)."""
    text = str(exc)
    if text.startswith("Port could not be cast"):
        return "the port is not a number"
    if text.startswith("Port out of range"):
        return "the port is out of range 0-65535"
    if "NFKC" in text:
        return "the authority has characters that change under NFKC normalization"
    if "@" in url and _redacted(url) != url:
        return "it cannot be parsed"  # the text may quote the masked part
    return text


# What a URL is parsed into: origin, target, Host header, full text, userinfo.
_Parsed = tuple[Origin, bytes, bytes, str, str]
# Insertion-ordered: the first key is the oldest, evicted first (FIFO: a URL still in use
# comes back at the cost of one parse).
_cache: dict[str, _Parsed] = {}


def _parse(url: str) -> _Parsed:
    """`url` parsed, from the cache when it is there. Raises `InvalidURL`."""
    parsed = _cache.get(url)
    if parsed is not None:
        return parsed
    parsed = _parse_uncached(url)
    if len(url) <= _CACHEABLE and len(parsed[3]) <= _CACHEABLE:
        if len(_cache) >= _CACHE_ENTRIES:
            # Defensive: another thread may evict the same entry at the same moment.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del _cache[next(iter(_cache))]
        _cache[url] = parsed
    return parsed


def _parse_uncached(url: str) -> _Parsed:
    _check_length(url)
    if _FORBIDDEN.search(url):
        raise InvalidURL(f"URL contains whitespace or control characters: {_redacted(url)!r}")
    try:
        parts = _urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {_redacted(url)!r}: {_reason(exc, url)}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        if not scheme:
            raise InvalidURL(
                f"URL has no scheme (expected http:// or https://): {_redacted(url)!r}"
            )
        raise InvalidURL(
            f"unsupported URL scheme {scheme!r} (only http and https): {_redacted(url)!r}"
        )
    host = parts.hostname
    if not host:
        raise InvalidURL(f"URL has no host: {_redacted(url)!r}")
    if port is None:
        port = DEFAULT_PORTS[scheme]
    elif port == 0:
        raise InvalidURL(f"port 0 is not valid: {_redacted(url)!r}")
    if ":" not in host:  # not an IPv6 literal
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise InvalidURL(f"invalid host name {host!r}: {exc}") from None
    path = quote(parts.path or "/", safe=_SAFE)
    if not path.startswith("/"):
        raise InvalidURL(f"URL path must be absolute: {_redacted(url)!r}")
    target = path + ("?" + quote(parts.query, safe=_SAFE) if parts.query else "")
    host_text = f"[{host}]" if ":" in host else host
    host_header = host_text if port == DEFAULT_PORTS[scheme] else f"{host_text}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    at = "@" if userinfo else ""
    normal = f"{scheme}://{userinfo}{at}{host_header}{target}"
    if parts.fragment:
        normal += "#" + parts.fragment
    if len(normal) > MAX_URL_LENGTH:  # percent-encoding made it longer than the limit
        _check_length(normal)
    origin = Origin(scheme, host, port)
    return origin, target.encode("ascii"), host_header.encode("ascii"), normal, userinfo
