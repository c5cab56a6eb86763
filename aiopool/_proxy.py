"""Which proxy a request goes through: proxy URLs, the environment, NO_PROXY, the route.

The rules kept here:
- a proxy is `http://`, `https://` (TLS to the proxy), `socks5://` (we resolve the target's name)
  or `socks5h://` (the proxy resolves it); a URL without a scheme is `http://` (curl and Go do
  the same for environment values); default ports as Go: 80, 443, and 1080 for SOCKS;
- credentials in the proxy URL (percent-decoded) are sent only to the proxy: as
  `Proxy-Authorization: Basic` (RFC 9110 section 11.7.1, RFC 7617) on every forwarded request
  and on CONNECT, or in the SOCKS5 username/password exchange (RFC 1929). They never appear in
  `str()`, `repr()`, pool stats or exception messages;
- a `Proxy-Authorization` header the caller set is removed from any request that does not go
  to an HTTP proxy as a forwarded request (direct, tunnelled or SOCKS): it would otherwise
  reach the origin server. On a forwarded request it is kept, unless the proxy URL carries
  credentials, which then replace it (the header is added on the wire by `_h1_connection`).

Environment (`trust_env=True`, the default, as in httpx and Go's `ProxyFromEnvironment`):
`http_proxy`, `https_proxy`, `all_proxy` and `no_proxy`, each also in upper case; the lower-case
name wins when both are set (curl's rule). Upper-case `HTTP_PROXY` is ignored when
`REQUEST_METHOD` is set: in a CGI program it comes from the request's `Proxy:` header ("httpoxy",
CVE-2016-5385; Go and curl refuse it the same way). Loopback targets (`localhost`, names under
`.localhost` (RFC 6761 section 6.3), 127.0.0.0/8, ::1) never use an environment proxy, as in Go;
an explicit `proxy=` applies to every request, and then the environment is not read at all (as
httpx does).

A proxy chosen per URL (Go's `Transport.Proxy func(*Request) (*url.URL, error)`):
- `proxy=callable`: called with each request's `URL` (every redirect hop), returns a proxy URL
  or None for a direct connection. Its exceptions reach the caller as they are (as a
  middleware's), since they are the caller's own code; a return that is not a str or None is a
  `TypeError`, a bad URL `InvalidURL`. Parsed proxies are memoised by their text.
- `proxy={pattern: url_or_None, ...}`: httpx's mount patterns, the most specific match wins:
  `"all://"`, `"http://"`, `"https://"`, then a host (`"all://example.org"`, which matches the
  name only), every name under a domain (`"all://*.example.org"`), or a host and port
  (`"https://example.org:8443"`). Specificity: a port beats a host beats a domain beats a
  scheme alone; a named scheme beats `all`. No match: direct. The environment is not read.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Callable, Mapping
from importlib.util import find_spec
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import unquote, urlsplit

from ._exceptions import InvalidURL
from ._tls import LazySSLContext, VerifyTypes
from ._urls import URL, Origin, _reason, _redacted

if TYPE_CHECKING:
    from ._models import Request

__all__ = (
    "NoProxy",
    "Proxy",
    "ProxyRoutes",
    "ProxyTypes",
    "forward_form",
    "forwarding",
    "proxy_tls_context",
    "route",
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080}
_SOCKS = frozenset({"socks5", "socks5h"})
_PROXY_AUTHORIZATION = b"proxy-authorization"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Proxy:
    """A parsed proxy URL. Equal proxies (credentials included) share pooled sockets.

    Raises `InvalidURL` for an unsupported scheme, a missing host or a bad port, and
    `ImportError` for a SOCKS proxy when `socksio` (the `aiopool[socks]` extra) is missing.
    """

    __slots__ = ("_identity", "authorization", "host", "password", "port", "scheme", "username")

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None
    authorization: bytes | None  # the Proxy-Authorization value, for HTTP proxies with userinfo

    def __init__(self, url: str) -> None:
        if not isinstance(url, str):
            raise TypeError(f"proxy must be a str URL or None, not {type(url).__name__}")
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        shown = _redacted(text)  # (also when a password's unencoded "/" broke the URL)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise InvalidURL(f"invalid proxy URL {shown!r}: {_reason(exc, text)}") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise InvalidURL(
                f"unsupported proxy scheme {scheme!r} in {shown!r} (http, https, socks5 or socks5h)"
            )
        if not parts.hostname:
            raise InvalidURL(f"proxy URL has no host: {shown!r}")
        if port == 0:
            raise InvalidURL(f"port 0 is not valid: {shown!r}")
        if scheme in _SOCKS and find_spec("socksio") is None:
            raise ImportError(f"{scheme}:// proxies need socksio: pip install aiopool[socks]")
        self.scheme = scheme
        self.host = parts.hostname
        self.port = port if port is not None else _DEFAULT_PORTS[scheme]
        self.username = unquote(parts.username) if parts.username is not None else None
        self.password = unquote(parts.password) if parts.password is not None else None
        self.authorization = None
        if self.username is not None and scheme not in _SOCKS:
            # RFC 7617 section 2: user-id ":" password, base64; UTF-8 as browsers send it.
            pair = f"{self.username}:{self.password or ''}".encode()
            self.authorization = b"Basic " + base64.b64encode(pair)
        self._identity = (scheme, self.host, self.port, self.username, self.password)

    @property
    def forwards(self) -> bool:
        """Whether plain-HTTP requests are forwarded to it (HTTP proxies) rather than tunnelled."""
        return self.scheme in ("http", "https")

    @property
    def is_socks(self) -> bool:
        return self.scheme in _SOCKS

    def __str__(self) -> str:
        # Never the credentials: this string ends up in stats keys, logs and exceptions.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __repr__(self) -> str:
        secret = " (with credentials)" if self.username is not None else ""
        return f"Proxy({str(self)!r}){secret}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Proxy):
            return self._identity == other._identity
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._identity)


# What `Client(proxy=...)` takes. (A runtime object, not a string: `typing.get_type_hints()` on
# a public signature evaluates it where it is used.)
ProxyTypes: TypeAlias = str | Mapping[str, str | None] | Callable[[URL], str | None] | Proxy | None


class NoProxy:
    """A parsed NO_PROXY list: which targets bypass the environment's proxies.

    Entries are comma-separated: `*` (everything); a host name, which also matches every name
    under it, with or without a leading `.` or `*.` (`example.org` and `.example.org` both match
    `example.org` and `a.example.org`, as curl and Python's urllib do; Go's `.example.org`
    leaves out the bare name); an IP address (`10.1.2.3`, `::1` or `[::1]`); a CIDR block
    (`10.0.0.0/8`, `fd00::/8`). Any entry but `*` and a block may end in `:port` to match only
    that port. Case is ignored; empty and unparseable entries are ignored.
    """

    __slots__ = ("_all", "_domains", "_ips", "_networks")

    def __init__(self, value: str) -> None:
        self._all = False
        self._domains: list[tuple[str, int | None]] = []
        self._ips: list[tuple[IPAddress, int | None]] = []
        self._networks: list[IPNetwork] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self._all = True
                continue
            if "/" in entry:
                with contextlib.suppress(ValueError):  # not a block: ignored, as curl does
                    self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            host, port = _split_host_port(entry)
            ip = _ip(host)
            if ip is not None:
                self._ips.append((ip, port))
                continue
            name = host.removeprefix("*").lstrip(".").rstrip(".")
            if name:
                self._domains.append((name, port))

    def matches(self, host: str, port: int) -> bool:
        """Whether a request to `host`:`port` should bypass the proxy."""
        if self._all:
            return True
        ip = _ip(host)
        if ip is not None:
            if any(ip in net for net in self._networks):
                return True
            return any(ip == want and p in (None, port) for want, p in self._ips)
        name = host.lower().rstrip(".")
        for domain, p in self._domains:
            if p is not None and p != port:
                continue
            if name == domain or name.endswith("." + domain):
                return True
        return False


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    else:  # a name, IPv4, or a bare IPv6 address (whose colons are not a port)
        return entry, None
    return host, int(port_text) if port_text.isdigit() else None


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


def _getenv(environ: Mapping[str, str], name: str, *, cgi: bool = False) -> str | None:
    # Lower case first (curl's order). An empty value counts as unset.
    value = environ.get(name.lower())
    if not value and not (cgi and name == "HTTP_PROXY"):
        value = environ.get(name.upper())
    return value or None


class ProxyRoutes:
    """How a client picks a proxy per target origin; decided once per origin and remembered.

    Built at client construction from `proxy=` or from the environment (read once, then: a
    change to the environment later does not affect an existing client, as in Go).
    """

    __slots__ = (
        "_cache",
        "_chooser",
        "_chosen",
        "_environment",
        "_http",
        "_https",
        "_no_proxy",
        "_patterns",
    )

    # Bounds the per-origin memo: a crawler visiting millions of hosts must not grow it forever.
    _CACHE_SIZE = 1024

    def __init__(
        self,
        *,
        http: Proxy | None,
        https: Proxy | None,
        no_proxy: NoProxy | None = None,
        environment: bool = False,
        chooser: Callable[[URL], str | None] | None = None,
        patterns: list[_Pattern] | None = None,
    ) -> None:
        self._http = http
        self._https = https
        self._no_proxy = no_proxy
        self._environment = environment
        self._chooser = chooser
        self._chosen: dict[str, Proxy] = {}  # a chooser's answers, parsed (bounded)
        self._patterns = patterns
        self._cache: dict[Origin, Origin] = {}

    @classmethod
    def build(cls, proxy: ProxyTypes, trust_env: bool) -> ProxyRoutes | None:
        """Routes for `Client(proxy=..., trust_env=...)`; None when no request is proxied.

        Raises `InvalidURL` for a bad proxy URL or mapping key, `TypeError` for a `proxy` of
        another type, `ImportError` for SOCKS without socksio.
        """
        if proxy is not None:
            if callable(proxy):
                return cls(http=None, https=None, chooser=proxy)
            if isinstance(proxy, Mapping):
                return cls(http=None, https=None, patterns=_patterns(proxy))
            chosen = proxy if isinstance(proxy, Proxy) else Proxy(proxy)
            return cls(http=chosen, https=chosen)
        if trust_env:
            return cls.from_environ(os.environ)
        return None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyRoutes | None:
        """Routes from `*_proxy` variables (see the module docstring); None when none is set.

        Raises `InvalidURL` for a variable that is not a usable proxy URL (naming the variable),
        and `ImportError` for a SOCKS proxy without socksio.
        """
        cgi = bool(environ.get("REQUEST_METHOD"))
        fallback = _getenv(environ, "ALL_PROXY")
        http_url = _getenv(environ, "HTTP_PROXY", cgi=cgi) or fallback
        https_url = _getenv(environ, "HTTPS_PROXY") or fallback
        if http_url is None and https_url is None:
            return None
        no_proxy = _getenv(environ, "NO_PROXY")
        return cls(
            http=_env_proxy(http_url, "http_proxy"),
            https=_env_proxy(https_url, "https_proxy"),
            no_proxy=NoProxy(no_proxy) if no_proxy else None,
            environment=True,
        )

    def select(self, origin: Origin) -> Proxy | None:
        """The proxy for requests to `origin`, or None to connect directly."""
        if self._patterns is not None:
            return _match(self._patterns, origin)
        proxy = self._https if origin.scheme == "https" else self._http
        if proxy is None or not self._environment:
            return proxy
        if _is_loopback(origin.host):
            return None
        if self._no_proxy is not None and self._no_proxy.matches(origin.host, origin.port):
            return None
        return proxy

    def route(self, origin: Origin, url: URL | None = None) -> Origin:
        """`origin` as the pool key: with the chosen proxy, if any (memoised per origin,
        except for a chooser, which is asked for every request `url`)."""
        if self._chooser is not None:
            assert url is not None
            proxy = self._choose(url)
            return origin if proxy is None else origin._replace(proxy=proxy)
        routed = self._cache.get(origin)
        if routed is None:
            proxy = self.select(origin)
            routed = origin if proxy is None else origin._replace(proxy=proxy)
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()
            self._cache[origin] = routed
        return routed

    def _choose(self, url: URL) -> Proxy | None:
        answer = self._chooser(url)  # type: ignore[misc]  # (checked by the caller)
        if answer is None:
            return None
        if not isinstance(answer, str):
            raise TypeError(
                f"the proxy= callable must return a proxy URL (str) or None, not "
                f"{type(answer).__name__}"
            )
        proxy = self._chosen.get(answer)
        if proxy is None:
            proxy = Proxy(answer)  # (InvalidURL, without the credentials, for a bad one)
            if len(self._chosen) >= self._CACHE_SIZE:
                self._chosen.clear()
            self._chosen[answer] = proxy
        return proxy


# A mapping entry: (specificity, scheme or None for all, host, is a domain, port, proxy).
_Pattern = tuple[tuple[int, int], str | None, str | None, bool, int | None, Proxy | None]


def _patterns(mapping: Mapping[str, str | None]) -> list[_Pattern]:
    """Parse `proxy={pattern: url}`. Raises `InvalidURL` for a bad pattern or proxy URL."""
    patterns: list[_Pattern] = []
    for key, value in mapping.items():
        if not isinstance(key, str) or "://" not in key:
            raise InvalidURL(
                f"proxy mapping key {key!r} is not a pattern such as 'https://', "
                "'all://example.org' or 'all://*.example.org'"
            )
        scheme, _, rest = key.partition("://")
        scheme = scheme.lower()
        if scheme not in ("http", "https", "all"):
            raise InvalidURL(f"proxy mapping key {key!r}: scheme must be http, https or all")
        rest = rest.rstrip("/").lower()
        host: str | None = None
        port: int | None = None
        domain = False
        if rest:
            host, port = _split_host_port(rest)
            has_port = rest.count(":") == 1 or (rest.startswith("[") and "]:" in rest)
            if has_port and port is None:
                raise InvalidURL(f"proxy mapping key {key!r}: bad port")
            if host.startswith("*."):
                host, domain = host[2:], True
            if not host or "*" in host:
                raise InvalidURL(f"proxy mapping key {key!r}: bad host")
        rank = 3 if port is not None else 2 if host and not domain else 1 if domain else 0
        specificity = (rank, 0 if scheme == "all" else 1)
        if value is not None and not isinstance(value, str):
            raise TypeError(f"proxy mapping values must be URLs (str) or None, not {value!r}")
        proxy = Proxy(value) if value is not None else None
        named = None if scheme == "all" else scheme
        patterns.append((specificity, named, host, domain, port, proxy))
    patterns.sort(key=lambda p: p[0], reverse=True)  # most specific first
    return patterns


def _match(patterns: list[_Pattern], origin: Origin) -> Proxy | None:
    host = origin.host.lower().rstrip(".")
    for _, scheme, want, domain, port, proxy in patterns:
        if scheme is not None and scheme != origin.scheme:
            continue
        if port is not None and port != origin.port:
            continue
        if want is not None:
            if domain:
                if not host.endswith("." + want):
                    continue
            elif host != want.strip("[]"):
                continue
        return proxy
    return None


def proxy_tls_context(
    verify: VerifyTypes, trust_env: bool = False
) -> Callable[[], ssl.SSLContext] | None:
    """The TLS context for https:// proxies: verified as origins are, ALPN http/1.1 only (we
    speak HTTP/1.1 to proxies). None means "the origins' context": a caller's own SSLContext is
    one object, and setting ALPN on it for the proxy would change it for origins too; it is
    used as is, and a proxy that picks h2 from its ALPN list is refused (`_tunnel`).
    """
    if isinstance(verify, ssl.SSLContext):
        return None
    return LazySSLContext(verify, alpn=["http/1.1"], trust_env=trust_env)


def _env_proxy(url: str | None, name: str) -> Proxy | None:
    if url is None:
        return None
    try:
        return Proxy(url)
    except InvalidURL as exc:
        raise InvalidURL(f"{name} (from the environment): {exc}") from None


def route(routes: ProxyRoutes | None, request: Request) -> Origin:
    """The pool key for `request`; strips a `Proxy-Authorization` the origin must not see.

    Called once per request sent (each redirect hop is a new request and is routed anew) by a
    client that has proxies; one without strips the header as it builds each request and uses
    the request's origin as it is.
    """
    origin = request.url.origin
    if routes is not None:
        origin = routes.route(origin, request.url)
        if forwarding(origin) is not None:
            return origin
    for name, _ in request.headers.raw:
        # Length first: no lower-casing for the (usual) requests without the header.
        if len(name) == 19 and name.lower() == _PROXY_AUTHORIZATION:
            kept = [h for h in request.headers.raw if h[0].lower() != _PROXY_AUTHORIZATION]
            request.headers = type(request.headers)._from_raw(kept)
            break
    return origin


def forwarding(origin: Origin) -> Proxy | None:
    """The HTTP proxy requests to `origin` are forwarded to (absolute-form), if any."""
    proxy = origin.proxy
    if proxy is not None and origin.scheme == "http" and proxy.forwards:
        return proxy
    return None


def forward_form(
    origin: Origin, target: bytes, raw: list[tuple[bytes, bytes]]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The request-target and headers of a request forwarded to an HTTP proxy.

    RFC 9112 section 3.2.2: to a proxy, the target is in absolute-form. The proxy URL's
    credentials go in `Proxy-Authorization`, replacing one the caller set.
    """
    proxy = origin.proxy
    assert proxy is not None
    absolute = b"http://" + origin.authority + target
    if proxy.authorization is None:
        return absolute, raw
    headers = [h for h in raw if h[0].lower() != _PROXY_AUTHORIZATION]
    headers.append((b"proxy-authorization", proxy.authorization))
    return absolute, headers
