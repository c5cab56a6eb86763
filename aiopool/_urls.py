"""URLs: parsed once, validated strictly, and turned into the pieces the wire needs.

Rules kept here:
- only `http` and `https` (anything else is `InvalidURL`, before any socket is opened);
- a host is required; ports are 1..65535; default ports are filled in from the scheme;
- no ASCII control characters or whitespace anywhere (RFC 3986 section 2: they are never valid
  in a URI, and a raw CR/LF in the target is how request smuggling starts);
- non-ASCII host names are IDNA-encoded; non-ASCII in path or query is percent-encoded (UTF-8),
  as browsers and RFC 3987 section 3.1 do;
- userinfo (`http://user:password@host/`) never reaches the wire as part of the URL: the client
  turns it into HTTP Basic credentials and strips it (`without_userinfo()`), and `repr()` masks
  the password, so a URL in a log line or a traceback does not carry it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit

from ._exceptions import InvalidURL

if TYPE_CHECKING:
    from ._proxy import Proxy

__all__ = ("URL", "Origin", "QueryParams")

DEFAULT_PORTS = {"http": 80, "https": 443}

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

    `proxy` is part of the key (DESIGN invariant 1): a socket made through one proxy is never
    handed to a request for another proxy, other proxy credentials, or a direct connection.
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

    Raises `InvalidURL` for anything that could not safely be sent.
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
        # The control-character check runs on `url` itself: urljoin would strip some of them.
        if _FORBIDDEN.search(url):
            raise InvalidURL(f"URL contains whitespace or control characters: {_redacted(url)!r}")
        if url.startswith("//") and url[2:3] in ("", "/", "?", "#"):
            # An empty authority: RFC 3986 gives "http://" (no host), urljoin the base.
            raise InvalidURL(f"URL has no host: {_redacted(url)!r}")
        try:
            joined = urljoin(self._str, url)
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise InvalidURL(f"invalid URL {_redacted(url)!r}: {exc}") from None
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
        return self._str

    def __repr__(self) -> str:
        text = self._str
        if ":" in self._userinfo:  # never show a password (httpx masks it the same way)
            scheme, _, rest = text.partition("://")
            user = self._userinfo.partition(":")[0]
            text = f"{scheme}://{user}:[secure]@{rest.partition('@')[2]}"
        return f"URL({text!r})"

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


def _redacted(url: str) -> str:
    """`url` for an error message: a password in its userinfo replaced by `[secure]`."""
    scheme, sep, rest = url.partition("//")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not sep or "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:[secure]@{host}" if colon else f"{user}@{host}"
    return scheme + sep + shown + rest[len(authority) :]


@functools.lru_cache(maxsize=512)
def _parse(url: str) -> tuple[Origin, bytes, bytes, str, str]:
    # Cached: services call the same few URLs over and over, and urlsplit is not free.
    if _FORBIDDEN.search(url):
        raise InvalidURL(f"URL contains whitespace or control characters: {_redacted(url)!r}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL {_redacted(url)!r}: {exc}") from None
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
    origin = Origin(scheme, host, port)
    return origin, target.encode("ascii"), host_header.encode("ascii"), normal, userinfo
