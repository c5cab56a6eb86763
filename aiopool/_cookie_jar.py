"""The client's cookie jar: the standard library's `CookieJar`, bounded, indexed, and held to
RFC 6265bis (draft-ietf-httpbis-rfc6265bis) where a hostile server could abuse its defaults.

`http.cookiejar` parses Set-Cookie and does the domain, path, Secure and expiry matching. On its
own it keeps every cookie a server sends, scans the whole jar for every request, accepts a
Domain attribute naming a public suffix it does not happen to know (`github.io`), and knows
neither the name prefixes nor the Secure rules of RFC 6265bis. Here:

- **Bounds** (section 6.1 asks for at least 4,096 bytes a cookie, 50 a domain and 3,000 in all;
  Chrome keeps 180 a registrable domain and ~3,300 in all, Firefox 180 and 3,000): a cookie whose
  name and value exceed 4,096 bytes, or one attribute 1,024 bytes, is dropped (section 5.6);
  attributes RFC 6265bis does not define are not kept. At most `MAX_COOKIES_PER_SITE` cookies
  per site (registrable domain, "eTLD+1": every subdomain of `example.com` counts together, so
  wildcard DNS does not multiply the bound) and `MAX_COOKIES` in all; past either the oldest
  goes first, a cookie without Secure before any Secure one (section 5.7's eviction order, so
  plain http cannot flush the Secure cookies out).
- **An index**: a request looks only at the domains its host can match (its own and its parent
  domains), never at the rest of the jar, and expired cookies are swept when the first of them
  expires, not on every request. Sending cookies costs the same for 3,000 cookies of other
  sites as for none.
- **Public suffixes**, by the Public Suffix List that the `publicsuffixlist` package ships (read
  from the package, never fetched): a Domain attribute naming one (`co.uk`, `github.io`) is
  refused, unless it names the request's host itself, where the cookie becomes host-only
  (section 5.7 step 9). IP addresses and single-label hosts (`localhost`) are not domains the
  list speaks for: their host-only cookies are kept as before.
- **Secure and the name prefixes** (sections 4.1.3 and 5.7): a Secure cookie only from https;
  `__Secure-` only with Secure; `__Host-` only with Secure, no Domain and `Path=/`; and a cookie
  from plain http may not replace or shadow a Secure cookie of the same name ("Leave Secure
  Cookies Alone").

A `CookieJar` the caller hands to `Cookies` is used as it is, with its own policy and storage.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator
from http import cookiejar
from http.cookiejar import Cookie, CookieJar, CookiePolicy, DefaultCookiePolicy
from typing import Any

from publicsuffixlist import PublicSuffixList

from ._urls import Origin

__all__ = (
    "MAX_COOKIES",
    "MAX_COOKIES_PER_SITE",
    "MAX_COOKIE_BYTES",
    "Jar",
    "Policy",
)

# Section 6.1's floors are 50 and 3,000; browsers keep 180 a site (Chrome's kDomainMaxCookies,
# Firefox's network.cookie.maxPerHost) and 3,000-3,300 in all.
MAX_COOKIES_PER_SITE = 180
MAX_COOKIES = 3000
# Section 5.6: a name and value over 4,096 bytes together, or an attribute value over 1,024.
MAX_COOKIE_BYTES = 4096
_MAX_ATTRIBUTE_BYTES = 1024
# The attributes RFC 6265bis defines beyond those `Cookie` has fields for; any other is ignored
# (section 5.6), so a server cannot park kilobytes in made-up attributes.
_KEPT_ATTRIBUTES = frozenset({"httponly", "samesite"})

# RFC 6265 section 4.1.1 (see `valid`): a name is a token; a value anything that cannot split
# the Cookie header or the header block (a little more lenient than cookie-octets, as browsers).
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[^\x00-\x1f\x7f;]*")

_Key = tuple[str, str, str]  # (domain, path, name): how `CookieJar` files a cookie
# What `Cookies.header_for` remembers a header by: origin, path, whether a cross-origin hop.
HeaderKey = tuple[Origin, bytes, bool]


# The stdlib's (request host, "effective" host: `localhost` -> `localhost.local`), so this
# module files and finds cookies exactly where `CookieJar` does. Not in the type stubs.
eff_request_host: Callable[[urllib.request.Request], tuple[str, str]] = cookiejar.eff_request_host  # type: ignore[attr-defined]


def valid(name: str, value: str | None) -> bool:
    """Whether a cookie of this name and value can be sent back as a legal header."""
    return bool(_NAME.fullmatch(name)) and (value is None or bool(_VALUE.fullmatch(value)))


@functools.cache
def _psl() -> PublicSuffixList:
    # Parsed at the first cookie with a domain (~50 ms), not at import.
    return PublicSuffixList()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_public_suffix(domain: str) -> bool:
    """Whether `domain` (no leading dot, any case) is a public suffix: `com`, `co.uk`,
    `github.io`, or a single label such as `localhost` (the list's default rule, `*`)."""
    return not _is_ip(domain) and _psl().is_public(domain.lower())


@functools.lru_cache(maxsize=4096)
def site_of(domain: str) -> str:
    """The site a cookie domain counts against: its registrable domain (`www.example.co.uk` ->
    `example.co.uk`), or the domain itself for an IP address, a public suffix or `""`."""
    undotted = domain.lstrip(".").lower()
    if not undotted or _is_ip(undotted):
        return undotted
    return _psl().privatesuffix(undotted) or undotted


class Policy(DefaultCookiePolicy):
    """The stdlib policy with host-only cookies kept host-only (RFC 6265 section 5.3 step 6:
    `DomainStrictNonDomain`), and the per-cookie rules of the module docstring."""

    def __init__(self) -> None:
        super().__init__(strict_ns_domain=DefaultCookiePolicy.DomainStrictNonDomain)

    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return (
            valid(cookie.name, cookie.value)
            and _within_bounds(cookie)
            and _secure_rules_kept(cookie, request)
            and super().set_ok(cookie, request)
        )

    def set_ok_domain(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        # A Domain naming a public suffix would reach every site under it (`Domain=co.uk` from
        # `www.shop.co.uk`, `Domain=github.io` from `evil.github.io`). The one allowed, naming
        # the host itself, was made host-only before this (`Jar.extract_cookies`).
        if cookie.domain_specified and is_public_suffix(cookie.domain.lstrip(".")):
            return False
        return super().set_ok_domain(cookie, request)

    def return_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        if not cookie.domain:  # set by the user without a domain: see `_cookies`
            return not getattr(request, "cross_origin_hop", False) and self.return_ok_expires(
                cookie, request
            )
        return super().return_ok(cookie, request)


def _within_bounds(cookie: Cookie) -> bool:
    if len(cookie.name) + len(cookie.value or "") > MAX_COOKIE_BYTES:
        return False
    attributes = (cookie.domain, cookie.path, cookie.port, cookie.comment, cookie.comment_url)
    return all(a is None or len(a) <= _MAX_ATTRIBUTE_BYTES for a in attributes)


def _secure_rules_kept(cookie: Cookie, request: urllib.request.Request) -> bool:
    # Section 5.7: Secure only from a secure origin (a Secure cookie planted over plain http
    # would be sent on the https requests: session fixation by anyone on the path).
    if cookie.secure and request.type != "https":
        return False
    # Section 4.1.3, matched without regard to case as the current draft does.
    prefix = cookie.name[:9].lower()
    if prefix == "__secure-":
        return cookie.secure
    if prefix[:7] == "__host-":
        return (
            cookie.secure
            and not cookie.domain_specified
            and cookie.path_specified
            and cookie.path == "/"
        )
    return True


def _prune(cookie: Cookie) -> Cookie:
    """Drop the attributes RFC 6265bis does not define (section 5.6: "ignore the cookie-av")."""
    rest: dict[str, Any] = cookie._rest  # type: ignore[attr-defined]
    if rest:
        cookie._rest = {  # type: ignore[attr-defined]
            k: v
            for k, v in rest.items()
            if k.lower() in _KEPT_ATTRIBUTES and (v is None or len(v) <= _MAX_ATTRIBUTE_BYTES)
        }
    return cookie


class Jar(CookieJar):
    """A bounded, indexed `CookieJar` (see the module docstring) that also remembers the
    `Cookie` header it computed per URL until the jar changes (`remembered`, kept by
    `Cookies.header_for`).

    Every change goes through `set_cookie` or `clear` (`extract_cookies`,
    `clear_expired_cookies`... call them). A `Cookie` object changed in place, behind the jar's
    back, is not seen: replace it with `set_cookie`.
    """

    def __init__(self, policy: Policy | None = None) -> None:
        super().__init__(policy if policy is not None else Policy())
        self.remembered: dict[HeaderKey, bytes | None] = {}
        # No expiry before this (a lower bound: kept exact only when it is reached).
        self._until = math.inf
        # Order of creation, kept when a cookie is replaced (RFC 6265 section 5.4 orders the
        # Cookie header by it); the eviction queues: (site, secure) -> keys, oldest first, and
        # the same over the whole jar per secure flag.
        self._created: dict[_Key, int] = {}
        self._serial = 0
        self._site_queues: dict[tuple[str, bool], OrderedDict[_Key, None]] = {}
        self._queues: dict[bool, OrderedDict[_Key, str]] = {
            False: OrderedDict(),
            True: OrderedDict(),
        }
        self._site_sizes: dict[str, int] = {}
        # (site, name) -> how many Secure cookies of that name the site holds.
        self._secure_names: dict[tuple[str, str], int] = {}

    # -- storing ------------------------------------------------------------------------------

    def extract_cookies(self, response: Any, request: urllib.request.Request) -> None:
        """The stdlib's, with the public-suffix host exception made first and the rule that
        needs the jar's contents ("Leave Secure Cookies Alone") checked last."""
        policy: CookiePolicy = self._policy  # type: ignore[attr-defined]
        with self._cookies_lock:  # type: ignore[attr-defined]
            for made in self.make_cookies(response, request):
                cookie = _host_only_if_public_suffix_host(_prune(made), request)
                if policy.set_ok(cookie, request) and not self._shadows_secure(cookie, request):
                    self.set_cookie(cookie)

    def set_cookie(self, cookie: Cookie) -> None:
        """Store `cookie` (the stdlib's), then evict past the bounds."""
        key = (cookie.domain, cookie.path, cookie.name)
        old = self._find(key)
        with self._cookies_lock:  # type: ignore[attr-defined]
            super().set_cookie(cookie)
            if old is not None and key in self._created:
                self._unqueue(key, old)
            elif key not in self._created:
                self._created[key] = self._serial
                self._serial += 1
            self._enqueue(key, cookie)
            self._evict(site_of(cookie.domain))
        if cookie.expires is not None:
            self._until = min(self._until, cookie.expires)
        if old is None or not _sent_alike(old, cookie):
            # The same cookie set again with only its expiry moved changes nothing on the
            # wire (load balancers re-set their sticky cookie on every response).
            self.forget()

    def clear(
        self, domain: str | None = None, path: str | None = None, name: str | None = None
    ) -> None:
        """The stdlib's (raises `KeyError` for what is not there, `ValueError` for a name
        without a domain and path), leaving no empty container behind."""
        if domain is None and path is None and name is None:
            super().clear()
            self._created.clear()
            self._site_queues.clear()
            self._queues = {False: OrderedDict(), True: OrderedDict()}
            self._site_sizes.clear()
            self._secure_names.clear()
            self._until = math.inf
            self.forget()
            return
        if name is not None and (domain is None or path is None):
            raise ValueError("domain and path must be given to remove a cookie by name")
        if path is not None and domain is None:
            raise ValueError("domain must be given to remove cookies by path")
        assert domain is not None
        by_path: dict[str, dict[str, Cookie]] = self._cookies[domain]  # type: ignore[attr-defined]
        if name is not None:
            assert path is not None
            doomed = [by_path[path][name]]
        else:
            paths = [by_path[path]] if path is not None else list(by_path.values())
            doomed = [cookie for by_name in paths for cookie in by_name.values()]
        for cookie in doomed:
            self._remove((cookie.domain, cookie.path, cookie.name), cookie)
        self.forget()

    def forget(self) -> None:
        """Forget the remembered headers (the jar changed)."""
        self.remembered.clear()

    def _find(self, key: _Key) -> Cookie | None:
        domain, path, name = key
        found: Cookie | None = (
            self._cookies.get(domain, {}).get(path, {}).get(name)  # type: ignore[attr-defined]
        )
        return found

    def _enqueue(self, key: _Key, cookie: Cookie) -> None:
        site = site_of(cookie.domain)
        self._site_queues.setdefault((site, cookie.secure), OrderedDict())[key] = None
        self._queues[cookie.secure][key] = site
        self._site_sizes[site] = self._site_sizes.get(site, 0) + 1
        if cookie.secure:
            self._secure_names[site, cookie.name] = (
                self._secure_names.get((site, cookie.name), 0) + 1
            )

    def _unqueue(self, key: _Key, cookie: Cookie) -> None:
        site = self._queues[cookie.secure].pop(key)
        queue = self._site_queues[site, cookie.secure]
        del queue[key]
        if not queue:
            del self._site_queues[site, cookie.secure]
        self._site_sizes[site] -= 1
        if not self._site_sizes[site]:
            del self._site_sizes[site]
        if cookie.secure:
            count = self._secure_names[site, cookie.name] - 1
            if count:
                self._secure_names[site, cookie.name] = count
            else:
                del self._secure_names[site, cookie.name]

    def _remove(self, key: _Key, cookie: Cookie) -> None:
        domain, path, name = key
        by_path = self._cookies[domain]  # type: ignore[attr-defined]
        by_name = by_path[path]
        del by_name[name]
        if not by_name:
            del by_path[path]
            if not by_path:
                del self._cookies[domain]  # type: ignore[attr-defined]
        if key in self._created:  # else put in `_cookies` behind the jar's back
            del self._created[key]
            self._unqueue(key, cookie)

    def _evict(self, site: str) -> None:
        """Past a bound, drop the oldest cookie, one without Secure before any Secure one."""
        while self._site_sizes.get(site, 0) > MAX_COOKIES_PER_SITE:
            queue = self._site_queues.get((site, False)) or self._site_queues[site, True]
            self._drop(next(iter(queue)))
        while len(self._created) > MAX_COOKIES:
            self._drop(next(iter(self._queues[False] or self._queues[True])))

    def _drop(self, key: _Key) -> None:
        cookie = self._find(key)
        assert cookie is not None
        self._remove(key, cookie)

    def _shadows_secure(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        """Section 5.7 ("Leave Secure Cookies Alone"): a cookie without Secure from plain http
        is ignored if a Secure cookie of that name whose domain domain-matches its domain (or
        the other way round) has a path its path path-matches."""
        if cookie.secure or request.type == "https":
            return False
        site = site_of(cookie.domain)
        if (site, cookie.name) not in self._secure_names:  # nearly always: no scan
            return False
        new_domain = "." + cookie.domain.lstrip(".")
        for domain, path, name in self._site_queues.get((site, True), {}):
            if name != cookie.name:
                continue
            old_domain = "." + domain.lstrip(".")
            if (
                new_domain.endswith(old_domain) or old_domain.endswith(new_domain)
            ) and _path_matches(cookie.path, path):
                return True
        return False

    # -- sending ------------------------------------------------------------------------------

    def _cookies_for_request(self, request: urllib.request.Request) -> list[Cookie]:
        """The stdlib's, over the domains the request's host can match instead of all of them,
        in order of creation (the stdlib then orders by path length)."""
        held: dict[str, Any] = self._cookies  # type: ignore[attr-defined]
        cookies: list[Cookie] = []
        for domain in _candidate_domains(request):
            if domain in held:
                cookies.extend(self._cookies_for_domain(domain, request))  # type: ignore[attr-defined]
        created = self._created
        cookies.sort(key=lambda c: created.get((c.domain, c.path, c.name), -1))
        return cookies

    def add_cookie_header(self, request: urllib.request.Request) -> None:
        """The stdlib's, less its sweep of the whole jar for expired cookies on every call:
        `sweep_expired` does that once the first expiry is reached. (Expired cookies are never
        sent either way.)"""
        with self._cookies_lock:  # type: ignore[attr-defined]
            self._policy._now = self._now = int(time.time())  # type: ignore[attr-defined]
            attrs = self._cookie_attrs(self._cookies_for_request(request))  # type: ignore[attr-defined]
            if attrs and not request.has_header("Cookie"):
                request.add_unredirected_header("Cookie", "; ".join(attrs))

    @property
    def remembered_until(self) -> float:
        """No cookie held expires before this time (a bound found per change, not per request)."""
        return self._until

    def sweep_expired(self) -> None:
        """Drop the expired cookies and find the next expiry: a scan of the jar, done when the
        time passes `remembered_until` (at most once a second: expiries are whole seconds)."""
        self.clear_expired_cookies()
        self._until = min((c.expires for c in self if c.expires is not None), default=math.inf)
        self.forget()


def _host_only_if_public_suffix_host(cookie: Cookie, request: urllib.request.Request) -> Cookie:
    # Section 5.7 step 9: a Domain naming a public suffix that is the request's host itself
    # (a request to `github.io`) makes a host-only cookie; any other is refused by the policy.
    if cookie.domain_specified:
        undotted = cookie.domain.lstrip(".")
        req_host, erhn = eff_request_host(request)
        if undotted.lower() == req_host and is_public_suffix(undotted):
            cookie.domain = erhn
            cookie.domain_specified = False
            cookie.domain_initial_dot = False
    return cookie


def _candidate_domains(request: urllib.request.Request) -> Iterator[str]:
    """The domains under which `CookieJar` may file a cookie for this request's host: the host
    and each parent domain, with and without a leading dot, as the host and as the stdlib's
    "effective" host (`localhost` -> `localhost.local`), and `""` (cookies set by hand)."""
    req_host, erhn = eff_request_host(request)
    seen: set[str] = set()
    for host in (req_host, erhn):
        labels = host.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            for domain in (suffix, "." + suffix):
                if domain not in seen:
                    seen.add(domain)
                    yield domain
    yield ""


def _path_matches(request_path: str, cookie_path: str) -> bool:
    # RFC 6265 section 5.1.4.
    if request_path == cookie_path:
        return True
    return request_path.startswith(cookie_path) and (
        cookie_path.endswith("/") or request_path[len(cookie_path)] == "/"
    )


def _sent_alike(a: Cookie, b: Cookie) -> bool:
    """Whether two cookies of one domain, path and name go to the same requests as the same
    header text, whatever their expiry."""
    return (a.value, a.version, a.secure, a.port, a.domain_specified) == (
        b.value,
        b.version,
        b.secure,
        b.port,
        b.domain_specified,
    )
