"""The cookie jar against hostile servers: its bounds (count per site and in all, size per
cookie, per-request cost), public suffixes, and the Secure / `__Secure-` / `__Host-` rules.

The bounds are proven against hypercorn on loopback; the domain rules need host names a loopback
server cannot have (`www.shop.co.uk`), so they drive the jar from the caller's side with
`Cookies.extract(headers, url)`, exactly as the client does with each response.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import trustme

import aiopool
from tests.rig.hypercorn_app import HypercornServer

# The bounds the jar promises (SECURITY.md).
PER_SITE = 180
TOTAL = 3000


@pytest.fixture(scope="module")
def plain_hypercorn(tls_ca: trustme.CA) -> Iterator[HypercornServer]:
    """hypercorn over plain HTTP at ``http://127.0.0.1:PORT``."""
    with HypercornServer(tls_ca, tls=False) as server:
        yield server


def set_cookie_url(base: str, *cookies: str) -> str:
    return f"{base}/set-cookie?" + "&".join(f"cookie={quote(c, safe='')}" for c in cookies)


def sent_cookies(response: aiopool.Response) -> list[str]:
    """The Cookie header values an /inspect response says the server received."""
    return [v for n, v in response.json()["headers"] if n.lower() == "cookie"]


def extract(cookies: aiopool.Cookies, url: str, *set_cookies: str) -> None:
    """Store what a response from `url` carrying these Set-Cookie fields would store."""
    headers = aiopool.Headers([(b"set-cookie", c.encode("latin-1")) for c in set_cookies])
    cookies.extract(headers, aiopool.URL(url))


def header(cookies: aiopool.Cookies, url: str) -> str | None:
    value = cookies.header_for(aiopool.URL(url))
    return None if value is None else value.decode("latin-1")


def held(cookies: aiopool.Cookies) -> list[str]:
    return [c.name for c in cookies.jar]


# Bounds -----------------------------------------------------------------------------------------


async def test_a_server_setting_250_new_cookies_per_response_cannot_grow_the_jar(
    plain_hypercorn: HypercornServer,
) -> None:
    # The attack: 121 responses of 250 new cookies each left 30,250 cookies and a
    # 312 KiB Cookie header. Now the site keeps its newest 180 and the header stays small.
    responses, per_response = 121, 250
    async with aiopool.Client() as client:
        for r in range(responses):
            batch = [f"c{r}_{i}={i}" for i in range(per_response)]
            resp = await client.get(set_cookie_url(plain_hypercorn.url, *batch))
            assert resp.status_code == 200
            assert len(list(client.cookies.jar)) == min((r + 1) * per_response, PER_SITE)
        last = responses - 1
        newest = [f"c{last}_{i}={i}" for i in range(per_response - PER_SITE, per_response)]
        resp = await client.get(f"{plain_hypercorn.url}/inspect")
        assert sent_cookies(resp) == ["; ".join(newest)]  # oldest evicted, order of creation
        assert len(sent_cookies(resp)[0]) < 4 * 1024


def test_the_bound_is_per_site_not_per_subdomain() -> None:
    # Wildcard DNS gives a server any number of host names: they share one site's bound.
    cookies = aiopool.Cookies()
    for i in range(PER_SITE + 20):
        extract(cookies, f"http://h{i}.evil.example/", f"c{i}=1")
    assert len(held(cookies)) == PER_SITE
    assert held(cookies)[0] == "c20"  # the oldest went first
    extract(cookies, "http://good.example/", "mine=1")
    assert header(cookies, "http://good.example/") == "mine=1"


def test_the_jar_holds_at_most_3000_cookies_oldest_evicted_first() -> None:
    cookies = aiopool.Cookies()
    for i in range(TOTAL + 300):
        extract(cookies, f"http://site{i}.example/", f"c{i}=1")
    names = held(cookies)
    assert len(names) == TOTAL
    assert "c299" not in names and "c300" in names and f"c{TOTAL + 299}" in names
    assert header(cookies, "http://site0.example/") is None
    assert header(cookies, "http://site300.example/") == "c300=1"


def test_secure_cookies_are_evicted_last() -> None:
    # RFC 6265bis section 5.7: plain http flooding a site must not push its Secure cookies out.
    cookies = aiopool.Cookies()
    extract(cookies, "https://bank.example/", "session=s3cret; Secure; Path=/")
    for i in range(PER_SITE + 50):
        extract(cookies, "http://bank.example/", f"flood{i}=1")
    assert len(held(cookies)) == PER_SITE
    assert "session" in held(cookies)
    assert header(cookies, "https://bank.example/").startswith("session=s3cret")  # type: ignore[union-attr]


def test_sending_does_not_look_at_other_sites(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-request cost flat in the jar's size: with 2,999 cookies of other sites in the jar,
    # computing a Cookie header considers only the domains the host can match, and does not
    # sweep the whole jar for expired cookies (the stdlib did both on every request).
    cookies = aiopool.Cookies()
    for i in range(TOTAL - 1):
        extract(cookies, f"http://site{i}.example/", f"c{i}=1; Max-Age=3600")
    extract(cookies, "http://www.target.example/", "mine=1; Domain=target.example")
    calls = {"domains": 0, "expiry checks": 0}
    domain_return_ok = http.cookiejar.DefaultCookiePolicy.domain_return_ok
    is_expired = http.cookiejar.Cookie.is_expired

    def counting_domain_return_ok(self: Any, domain: str, request: Any) -> bool:
        calls["domains"] += 1
        return domain_return_ok(self, domain, request)

    def counting_is_expired(self: Any, now: int | None = None) -> bool:
        calls["expiry checks"] += 1
        return is_expired(self, now)

    monkeypatch.setattr(
        http.cookiejar.DefaultCookiePolicy, "domain_return_ok", counting_domain_return_ok
    )
    monkeypatch.setattr(http.cookiejar.Cookie, "is_expired", counting_is_expired)
    assert header(cookies, "http://www.target.example/") == "mine=1"
    assert calls["domains"] <= 2 and calls["expiry checks"] <= 2, calls


@pytest.mark.parametrize(
    ("set_cookie", "stored"),
    [
        ("n=" + "v" * (4096 - 1), True),  # name and value: 4,096 bytes
        ("n=" + "v" * 4096, False),
        ("n=1; Path=/" + "p" * 1023, True),  # an attribute: 1,024 bytes
        ("n=1; Path=/" + "p" * 1024, False),
    ],
)
def test_a_cookie_over_the_size_bounds_is_dropped(set_cookie: str, stored: bool) -> None:
    cookies = aiopool.Cookies()
    extract(cookies, "http://h.example/", set_cookie)
    assert held(cookies) == (["n"] if stored else [])


def test_unknown_attributes_are_not_kept() -> None:
    # Section 5.6 ignores them; kept, they would let a server park ~100 KiB in every cookie.
    cookies = aiopool.Cookies()
    extract(cookies, "http://h.example/", "n=1; HttpOnly; SameSite=Lax; x=" + "y" * 60_000)
    (cookie,) = cookies.jar
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") == "Lax"
    assert not cookie.has_nonstandard_attr("x")


# Public suffixes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "domain", "victim"),
    [
        ("http://www.shop.co.uk/", "co.uk", "http://x.co.uk/"),
        ("http://evil.github.io/", "github.io", "http://victim.github.io/"),
        ("http://evil.example.com/", ".com", "http://bank.com/"),
        ("http://a.s3.amazonaws.com/", "s3.amazonaws.com", "http://b.s3.amazonaws.com/"),
    ],
)
def test_a_cookie_for_a_public_suffix_is_refused(origin: str, domain: str, victim: str) -> None:
    cookies = aiopool.Cookies()
    extract(cookies, origin, f"fixation=1; Domain={domain}")
    assert held(cookies) == []
    assert header(cookies, victim) is None


def test_a_cookie_for_a_registrable_domain_still_reaches_its_subdomains() -> None:
    cookies = aiopool.Cookies()
    extract(cookies, "http://www.shop.co.uk/", "a=1; Domain=shop.co.uk")
    extract(cookies, "http://pages.github.io/", "b=2; Domain=pages.github.io")
    assert header(cookies, "http://checkout.shop.co.uk/") == "a=1"
    assert header(cookies, "http://x.pages.github.io/") == "b=2"


@pytest.mark.parametrize("host", ["github.io", "co.uk", "localhost"])
def test_a_public_suffix_host_may_set_a_host_only_cookie(host: str) -> None:
    # RFC 6265bis section 5.7 step 9: a Domain naming the host itself, a public suffix, makes a
    # host-only cookie: it goes back to that host and to none under it.
    cookies = aiopool.Cookies()
    extract(cookies, f"http://{host}/", f"a=1; Domain={host}", "b=2")
    assert header(cookies, f"http://{host}/") == "a=1; b=2"
    assert header(cookies, f"http://sub.{host}/") is None


def test_ip_and_single_label_hosts_keep_their_cookies() -> None:
    cookies = aiopool.Cookies()
    for url in ("http://127.0.0.1:8000/", "http://localhost:8000/", "http://[::1]:8000/"):
        extract(cookies, url, "h=1")
        assert header(cookies, url) == "h=1", url
    extract(cookies, "http://127.0.0.2/", "d=1; Domain=127.0.0.2")
    assert header(cookies, "http://127.0.0.2/") == "d=1"


# Secure and the name prefixes (RFC 6265bis) -----------------------------------------------------


async def test_a_secure_cookie_from_plain_http_is_not_stored(
    plain_hypercorn: HypercornServer,
) -> None:
    async with aiopool.Client() as client:
        await client.get(set_cookie_url(plain_hypercorn.url, "planted=1; Secure", "plain=1"))
        assert held(client.cookies) == ["plain"]


async def test_prefixed_cookies_from_a_real_server(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    url = f"https://127.0.0.1:{hypercorn_server.port}"
    async with aiopool.Client(verify=client_ssl_context) as client:
        await client.get(
            set_cookie_url(
                url,
                "__Host-ok=1; Secure; Path=/",
                "__Host-domain=1; Secure; Path=/; Domain=127.0.0.1",
                "__Secure-ok=1; Secure",
                "__Secure-plain=1",
            )
        )
        assert sorted(held(client.cookies)) == ["__Host-ok", "__Secure-ok"]


@pytest.mark.parametrize(
    ("url", "set_cookie", "stored"),
    [
        ("https://h.example/", "s=1; Secure", True),
        ("http://h.example/", "s=1; Secure", False),
        ("https://h.example/", "__Secure-s=1; Secure", True),
        ("https://h.example/", "__Secure-s=1", False),
        ("http://h.example/", "__Secure-s=1; Secure", False),
        ("https://h.example/", "__secure-s=1", False),  # prefixes match in any case
        ("https://h.example/", "__Host-s=1; Secure; Path=/", True),
        ("https://h.example/", "__Host-s=1; Secure; Path=/; Domain=h.example", False),
        ("https://h.example/", "__Host-s=1; Secure", False),  # Path=/ must be given
        ("https://h.example/a/", "__Host-s=1; Secure; Path=/a", False),
        ("https://h.example/", "__Host-s=1; Path=/", False),
        ("http://h.example/", "__Host-s=1; Secure; Path=/", False),
        ("https://h.example/", "__HOST-s=1; Secure; Path=/; Domain=h.example", False),
    ],
)
def test_secure_and_prefix_rules(url: str, set_cookie: str, stored: bool) -> None:
    cookies = aiopool.Cookies()
    extract(cookies, url, set_cookie)
    assert bool(held(cookies)) == stored


@pytest.mark.parametrize(
    "attack",
    [
        "sid=evil",  # replace it
        "sid=evil; Path=/account",  # shadow it under a longer path
        "sid=evil; Domain=bank.example",  # shadow it from the parent domain
    ],
)
def test_plain_http_cannot_replace_or_shadow_a_secure_cookie(attack: str) -> None:
    # RFC 6265bis section 5.7, "Leave Secure Cookies Alone".
    cookies = aiopool.Cookies()
    extract(cookies, "https://www.bank.example/", "sid=good; Secure; Path=/")
    extract(cookies, "http://www.bank.example/", attack, "other=1")
    assert header(cookies, "https://www.bank.example/account") == "sid=good; other=1"
    assert header(cookies, "http://www.bank.example/account") == "other=1"
