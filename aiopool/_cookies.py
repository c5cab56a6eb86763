"""Cookies: a client's jar, filled from every response's Set-Cookie and sent per request URL.

The rules are the standard library's (`http.cookiejar`: domain and path matching, Secure,
Expires/Max-Age), with the policy tightened where RFC 6265 and RFC 6265bis are stricter than its
defaults, and the jar bounded and indexed (`_cookie_jar` says how):

- a cookie set without a Domain attribute is host-only (RFC 6265 section 5.3 step 6): it goes
  back to exactly the host that set it, never to its subdomains (`DomainStrictNonDomain`);
- a cookie whose name or value could not be sent back as a legal header is dropped when it
  arrives, so one hostile Set-Cookie cannot make every later request to that host fail;
- a Domain attribute naming a public suffix is refused, Secure cookies come only from https,
  the `__Secure-` and `__Host-` name prefixes are kept to, and the jar holds at most 180
  cookies a site and 3,000 in all, oldest evicted first.

Cookies the *user* sets without a domain (`Client(cookies={"a": "1"})`, `cookies.set("a",
"1")`) are sent to every host the user asks for, as httpx does; they are withheld on a redirect
hop to an origin other than the one the user asked for, like the `Cookie` header the user sets
(see `_redirects`). Give `domain=` to scope them.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from http.cookiejar import Cookie, CookieJar
from typing import TypeAlias

from ._cookie_jar import Jar, valid
from ._exceptions import CookieConflict
from ._headers import Headers, validate_header
from ._urls import URL

__all__ = ("CookieTypes", "Cookies")

# Header values remembered per jar (see `Jar`): a client talks to few URLs at a time.
_MAX_REMEMBERED = 256


class _JarRequest(urllib.request.Request):
    """What `CookieJar` expects to see of a request: urllib's Request, for one URL."""

    def __init__(self, url: URL, *, cross_origin_hop: bool = False) -> None:
        super().__init__(url.unmasked)  # (the URL as it is: str() masks a password)
        self.cross_origin_hop = cross_origin_hop


class _JarResponse:
    """What `CookieJar.extract_cookies` expects of a response: `info().get_all(name)`."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def info(self) -> _JarResponse:
        return self

    def get_all(self, name: str, default: list[str]) -> list[str]:
        return self._headers.get_list(name) or default


class Cookies(MutableMapping[str, str]):
    """A client's cookies: a mutable mapping of name to value over an `http.cookiejar.CookieJar`.

    `cookies["name"]` and `get(name)` look a cookie up by name (`domain=`/`path=` narrow it);
    several cookies of one name for different domains or paths raise `CookieConflict`.
    `set(name, value, domain=, path=)` adds one: without `domain` it is sent to every host (see
    the module docstring). `delete` and `clear` remove them; iterating gives the names; `jar` is
    the underlying `CookieJar` for anything else. `repr()` shows names and domains, never values.
    """

    __slots__ = ("jar",)

    def __init__(self, cookies: CookieTypes | None = None) -> None:
        if isinstance(cookies, CookieJar):
            self.jar = cookies
            return
        self.jar = Jar()
        if isinstance(cookies, Cookies):
            for cookie in cookies.jar:
                self.jar.set_cookie(cookie)
        elif cookies is not None:
            items: Iterable[tuple[str, str]]
            items = cookies.items() if isinstance(cookies, Mapping) else cookies
            for name, value in items:
                self.set(name, value)

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        """Add or replace a cookie. Raises `ValueError` for a name that is not an RFC 6265
        token or a value with a control character or a semicolon."""
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError("cookie names and values must be str")
        if not valid(name, value):
            raise ValueError(f"illegal cookie {name!r}: not a token, or a bad character in value")
        cookie = Cookie(
            version=0,
            name=name,
            value=value,
            port=None,
            port_specified=False,
            domain=domain,
            domain_specified=bool(domain),
            domain_initial_dot=domain.startswith("."),
            path=path,
            path_specified=bool(path),
            secure=False,
            expires=None,
            discard=True,
            comment=None,
            comment_url=None,
            rest={},
        )
        self.jar.set_cookie(cookie)

    def get(  # type: ignore[override]
        self,
        name: str,
        default: str | None = None,
        domain: str | None = None,
        path: str | None = None,
    ) -> str | None:
        """The value of cookie `name` (narrowed by `domain` and `path`), else `default`.
        Raises `CookieConflict` if several cookies of that name match with different values."""
        value: str | None = None
        for cookie in self._matching(name, domain, path):
            if value is not None and cookie.value != value:
                raise CookieConflict(
                    f"several cookies named {name!r} (for different domains or paths); "
                    "pass domain= and path= to choose one"
                )
            value = cookie.value
        return default if value is None else value

    def delete(self, name: str, domain: str | None = None, path: str | None = None) -> None:
        """Remove every cookie named `name` (narrowed by `domain` and `path`)."""
        for cookie in list(self._matching(name, domain, path)):
            self.jar.clear(cookie.domain, cookie.path, cookie.name)

    def clear(self, domain: str | None = None, path: str | None = None) -> None:
        """Remove all cookies, or those of one domain (and path)."""
        if domain is None:
            self.jar.clear()
        else:
            self.jar.clear(domain, path)

    def _matching(self, name: str, domain: str | None, path: str | None) -> Iterator[Cookie]:
        for cookie in self.jar:
            if (
                cookie.name == name
                and (domain is None or cookie.domain == domain)
                and (path is None or cookie.path == path)
            ):
                yield cookie

    # The mapping protocol, by name.

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        if self.get(name) is None:
            raise KeyError(name)
        self.delete(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(dict.fromkeys(cookie.name for cookie in self.jar)))

    def __len__(self) -> int:
        # The number of names, as iteration gives them (one name may have several cookies).
        return len({cookie.name for cookie in self.jar})

    def __repr__(self) -> str:
        # Values are often session credentials: names and domains only.
        shown = ", ".join(f"{c.name} for {c.domain or '*'}{c.path}" for c in self.jar)
        return f"<Cookies [{shown}]>"

    # What the client uses.

    @property
    def surely_empty(self) -> bool:
        """True when the jar holds no cookie, found without iterating it (every request asks:
        most clients never see one). False may still mean empty."""
        # CookieJar keeps {domain: {path: {name: Cookie}}}; a jar of another make says False.
        return not getattr(self.jar, "_cookies", True)

    def header_for(self, url: URL, *, cross_origin_hop: bool = False) -> bytes | None:
        """The `Cookie` header value to send to `url`, or None when no cookie applies.

        `cross_origin_hop`: the request is a redirect hop to an origin other than the one the
        user asked for, so cookies the user set without a domain are withheld. Raises
        `LocalProtocolError` for a cookie that cannot be sent (put into `jar` by hand).
        """
        if self.surely_empty:
            return None
        jar = self.jar
        if not isinstance(jar, Jar):
            return _header(jar, url, cross_origin_hop)
        key = (url.origin, url.target.partition(b"?")[0], cross_origin_hop)
        if time.time() < jar.remembered_until:
            try:
                return jar.remembered[key]
            except KeyError:
                pass
        else:
            jar.sweep_expired()  # something expired: drop it, forget what was remembered
        value = _header(jar, url, cross_origin_hop)
        if len(jar.remembered) >= _MAX_REMEMBERED:
            jar.remembered.clear()
        jar.remembered[key] = value
        return value

    def extract(self, headers: Headers, url: URL) -> None:
        """Store the cookies a response to `url` set, by the jar's rules."""
        self.jar.extract_cookies(_JarResponse(headers), _JarRequest(url))  # type: ignore[arg-type]


# After `Cookies`, as an object rather than a string (see `HeaderTypes`): annotations resolve.
CookieTypes: TypeAlias = Cookies | CookieJar | Mapping[str, str] | Sequence[tuple[str, str]]


def _header(jar: CookieJar, url: URL, cross_origin_hop: bool) -> bytes | None:
    request = _JarRequest(url, cross_origin_hop=cross_origin_hop)
    jar.add_cookie_header(request)
    value = request.get_header("Cookie")
    if value is None:
        return None
    try:
        header = value.encode("latin-1")
    except UnicodeEncodeError:  # a value set by hand: sent as UTF-8, as `Headers` does
        header = value.encode("utf-8")
    # Checked once, here, not per request: what is remembered was checked. Cookies arriving
    # are filtered (`Policy.set_ok`); this catches one put straight into the jar.
    validate_header(b"cookie", header)
    return header
