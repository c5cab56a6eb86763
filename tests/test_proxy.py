"""Proxies: HTTP forwarding and CONNECT (real tinyproxy), SOCKS5 (real microsocks), the
environment (trust_env, NO_PROXY), the pool key, credentials that go only to the proxy.

The origin servers are the rig's fault server (it echoes the request it received, headers
included) and nginx (TLS with h2). The proxies' own logs prove a request really went through
them: tinyproxy logs each request line it received, microsocks each target it connected to.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopool
from aiopool._backend import NetworkStream
from aiopool._pool_state import PoolState
from aiopool._proxy import NoProxy, Proxy, ProxyRoutes
from aiopool._urls import Origin
from tests.conftest import _running_under_ci
from tests.helpers import assert_settled, eventually, pool_of
from tests.mock_backend import MockDialer, MockStream, Script, response
from tests.rig.fault_server import BlackholeServer, FaultServer, server_ssl_context
from tests.rig.nginx import Nginx
from tests.rig.proxy import Microsocks, Tinyproxy, TLSRelay, find_microsocks, find_tinyproxy

# "@" in a password must be percent-encoded in the proxy URL: the SOCKS and byte-exact tests
# prove the client decodes userinfo before using it. (tinyproxy's config takes only [A-Za-z0-9_-]
# in a BasicAuth password, so its password is plain.)
USER, PASSWORD = "alice", "pa@ss-w0rd"
URL_PASSWORD = "pa%40ss-w0rd"
TINY_PASSWORD = "pa55-w0rd"
TIMEOUT = aiopool.Timeout(10)


def _require(found: str | None, name: str) -> None:
    if found is None:
        if _running_under_ci():
            pytest.fail(f"{name} is required under CI (CI is set); .ci/run installs it")
        pytest.skip(f"{name} not installed")


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[Tinyproxy]:
    _require(find_tinyproxy(), "tinyproxy")
    with Tinyproxy() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def tinyproxy_auth() -> Iterator[Tinyproxy]:
    _require(find_tinyproxy(), "tinyproxy")
    with Tinyproxy(auth=(USER, TINY_PASSWORD)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def microsocks() -> Iterator[Microsocks]:
    _require(find_microsocks(), "microsocks")
    with Microsocks() as proxy:
        yield proxy


@pytest.fixture(scope="module")
def microsocks_auth() -> Iterator[Microsocks]:
    _require(find_microsocks(), "microsocks")
    with Microsocks(auth=(USER, PASSWORD)) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own proxy settings must not leak into these tests.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "request_method"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def _echo_headers(resp: aiopool.Response) -> dict[str, str]:
    body = resp.json()
    return {name.lower(): value for name, value in body["headers"]}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


# HTTP forwarding (plain http:// targets) -------------------------------------------------------


@pytest.mark.parametrize("http1_parser", ["h11", "httptools"], indirect=True)
async def test_http_is_forwarded_through_tinyproxy(
    tinyproxy: Tinyproxy, fault_server: FaultServer, http1_parser: str
) -> None:
    url = f"{fault_server.url}/echo?id=fwd-{http1_parser}"
    async with aiopool.Client(proxy=tinyproxy.url, timeout=TIMEOUT) as client:
        resp = await client.get(url)
        assert resp.status_code == 200
        # The proxy got the absolute-form target (RFC 9112 3.2.2) and passed on origin-form.
        assert f"GET {url} HTTP/1.1" in tinyproxy.log()
        assert resp.json()["path"] == f"/echo?id=fwd-{http1_parser}"
        assert "tinyproxy" in _echo_headers(resp)["via"]
        assert list(client.stats().hosts) == [
            f"http://127.0.0.1:{fault_server.port} via http://127.0.0.1:{tinyproxy.port}"
        ]
        assert_settled(client)


async def test_a_proxy_closing_after_each_response_costs_no_request(
    tinyproxy: Tinyproxy, fault_server: FaultServer
) -> None:
    # tinyproxy closes its client socket after each forwarded response, without saying
    # "Connection: close". The pool sees the close while the socket is idle and drops it...
    async with aiopool.Client(proxy=tinyproxy.url, timeout=TIMEOUT) as client:
        for i in range(3):
            resp = await client.get(f"{fault_server.url}/echo?id={i}")
            assert resp.json()["id"] == str(i)
            assert not resp.conn_info.reused
            await eventually(lambda: client.stats().idle == 0)
        # ...and back to back, a request that meets the closing socket is retried on a fresh
        # one (the stale-socket rule): every request succeeds.
        results = [await client.get(f"{fault_server.url}/echo?id=b{i}") for i in range(5)]
        assert [r.json()["id"] for r in results] == [f"b{i}" for i in range(5)]
        stats = assert_settled(client)
        assert stats.connections_opened == 8


# HTTPS through CONNECT ------------------------------------------------------------------------


async def test_https_through_connect_negotiates_h2_inside_the_tunnel(
    tinyproxy: Tinyproxy, nginx: Nginx, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(
        proxy=tinyproxy.url, verify=client_ssl_context, timeout=TIMEOUT
    ) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/echo?id=t{i}") for i in range(20))
        )
        assert [r.text for r in responses] == [f"t{i}" for i in range(20)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        stats = assert_settled(client)
        assert stats.connections_opened == 1  # one tunnel, twenty streams
        assert f"CONNECT localhost:{nginx.https_port} HTTP/1.1" in tinyproxy.log()
        assert list(stats.hosts) == [
            f"https://localhost:{nginx.https_port} via http://127.0.0.1:{tinyproxy.port}"
        ]


async def test_https_through_connect_http11_reuses_the_tunnel(
    tinyproxy: Tinyproxy, nginx: Nginx, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(
        proxy=tinyproxy.url, verify=client_ssl_context, http2=False, timeout=TIMEOUT
    ) as client:
        for i in range(5):
            resp = await client.get(f"{nginx.https_url}/echo?id={i}")
            assert (resp.text, resp.http_version) == (str(i), "HTTP/1.1")
            assert resp.conn_info.reused == (i > 0)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused) == (1, 4)


async def test_tls_inside_the_tunnel_checks_the_origin_certificate(
    tinyproxy: Tinyproxy, nginx: Nginx
) -> None:
    # The default trust store does not know the test CA: the origin's certificate (not the
    # proxy, which has none) must fail verification.
    async with aiopool.Client(proxy=tinyproxy.url, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError, match="certificate verification failed"):
            await client.get(f"{nginx.https_url}/echo?id=x")
        assert_settled(client)


async def test_proxy_credentials_are_sent_for_forwarding_and_connect(
    tinyproxy_auth: Tinyproxy,
    fault_server: FaultServer,
    nginx: Nginx,
    client_ssl_context: ssl.SSLContext,
) -> None:
    proxy = tinyproxy_auth.url_with(USER, TINY_PASSWORD)
    async with aiopool.Client(proxy=proxy, verify=client_ssl_context, timeout=TIMEOUT) as client:
        plain = await client.get(f"{fault_server.url}/echo?id=auth")
        assert plain.status_code == 200
        # The proxy consumed its credentials: the origin never sees them.
        assert "proxy-authorization" not in _echo_headers(plain)
        tunnelled = await client.get(f"{nginx.https_url}/echo?id=auth")
        assert (tunnelled.status_code, tunnelled.text) == (200, "auth")
        assert_settled(client)


# tinyproxy answers 407 when credentials are missing, and 401 (sic) when they are wrong.
@pytest.mark.parametrize(
    ("credentials", "status"), [((USER, "wrong"), 401), (None, 407)], ids=["wrong", "missing"]
)
async def test_connect_refused_by_the_proxy_is_a_proxy_error_with_its_status(
    tinyproxy_auth: Tinyproxy, nginx: Nginx, credentials: tuple[str, str] | None, status: int
) -> None:
    proxy = (
        tinyproxy_auth.url_with(*credentials)
        if credentials
        else f"http://127.0.0.1:{tinyproxy_auth.port}"
    )
    async with aiopool.Client(proxy=proxy, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ProxyError) as info:
            await client.get(f"{nginx.https_url}/echo?id=x")
        assert info.value.status_code == status
        assert str(status) in str(info.value)
        if status == 407:  # the proxy's challenge is named, so a user sees what it wants
            assert "Basic" in str(info.value)
        assert "wrong" not in str(info.value)
        assert isinstance(info.value, aiopool.TransportError)
        assert info.value.request is not None
        stats = assert_settled(client)
        assert stats.connections_opened == 0
        # A plain-http request forwarded with bad credentials gets the proxy's 407 as its
        # response, as from any HTTP hop.
        resp = await client.get(f"http://127.0.0.1:{nginx.http_port}/echo?id=x")
        assert resp.status_code == status
        assert_settled(client)


async def test_a_proxy_that_is_down_is_a_connect_error() -> None:
    port = _closed_port()
    proxy = f"http://{USER}:secret-word@127.0.0.1:{port}"
    async with aiopool.Client(proxy=proxy, timeout=TIMEOUT) as client:
        for url in ("http://example.org/", "https://example.org/"):
            with pytest.raises(aiopool.ConnectError) as info:
                await client.get(url)
            message = str(info.value)
            assert f"proxy http://127.0.0.1:{port}" in message
            assert "secret-word" not in message
            assert "secret-word" not in repr(client)
        assert_settled(client)


# An https:// proxy: TLS to the proxy (tinyproxy behind a TLS relay) ------------------------------


@pytest.fixture(scope="module")
def https_proxy(tinyproxy: Tinyproxy, tls_ca: trustme.CA) -> Iterator[TLSRelay]:
    with TLSRelay(server_ssl_context(tls_ca), tinyproxy.port) as relay:
        yield relay


@pytest.mark.parametrize("verify", ["ca_path", "context"])
async def test_an_https_proxy_forwards_and_tunnels_tls_inside_tls(
    https_proxy: TLSRelay,
    tinyproxy: Tinyproxy,
    fault_server: FaultServer,
    nginx: Nginx,
    ca_path: str,
    client_ssl_context: ssl.SSLContext,
    verify: str,
) -> None:
    trust: str | ssl.SSLContext = ca_path if verify == "ca_path" else client_ssl_context
    proxy = f"https://localhost:{https_proxy.port}"
    async with aiopool.Client(proxy=proxy, verify=trust, timeout=TIMEOUT) as client:
        plain = await client.get(f"{fault_server.url}/echo?id=tls-proxy")
        assert "tinyproxy" in _echo_headers(plain)["via"]
        # TLS to the origin inside TLS to the proxy; ALPN inside still picks h2.
        secure = await asyncio.gather(
            *(client.get(f"{nginx.https_url}/echo?id={i}") for i in range(5))
        )
        assert [r.text for r in secure] == [str(i) for i in range(5)]
        assert {r.http_version for r in secure} == {"HTTP/2"}
        stats = assert_settled(client)
        assert (
            stats.hosts[
                f"https://localhost:{nginx.https_port} via https://localhost:{https_proxy.port}"
            ].opened
            == 1
        )
    assert f"CONNECT localhost:{nginx.https_port} HTTP/1.1" in tinyproxy.log()


async def test_an_https_proxy_certificate_is_verified(https_proxy: TLSRelay) -> None:
    proxy = f"https://localhost:{https_proxy.port}"
    async with aiopool.Client(proxy=proxy, timeout=TIMEOUT) as client:  # system CAs only
        with pytest.raises(aiopool.ConnectError, match=r"proxy.*certificate verification failed"):
            await client.get("http://example.org/")
        assert_settled(client)


async def test_an_https_proxy_choosing_h2_is_refused(
    tinyproxy: Tinyproxy, tls_ca: trustme.CA, client_ssl_context: ssl.SSLContext
) -> None:
    with TLSRelay(server_ssl_context(tls_ca, alpn=("h2",)), tinyproxy.port) as relay:
        proxy = f"https://localhost:{relay.port}"
        async with aiopool.Client(
            proxy=proxy, verify=client_ssl_context, timeout=TIMEOUT
        ) as client:
            with pytest.raises(aiopool.ProxyError, match="chose 'h2'"):
                await client.get("http://example.org/")
            assert_settled(client)


# Proxy-Authorization goes to the proxy only -----------------------------------------------------


async def test_a_user_proxy_authorization_never_reaches_a_direct_origin(
    fault_server: FaultServer,
) -> None:
    async with aiopool.Client(trust_env=False, timeout=TIMEOUT) as client:
        resp = await client.get(
            f"{fault_server.url}/echo",
            headers={"Proxy-Authorization": "Basic dXNlcjpwYXNz", "X-Kept": "yes"},
        )
    headers = _echo_headers(resp)
    assert "proxy-authorization" not in headers
    assert headers["x-kept"] == "yes"


async def test_a_user_proxy_authorization_never_goes_inside_a_tunnel(
    tinyproxy_auth: Tinyproxy, tls_fault_server: FaultServer, client_ssl_context: ssl.SSLContext
) -> None:
    proxy = tinyproxy_auth.url_with(USER, TINY_PASSWORD)
    async with aiopool.Client(proxy=proxy, verify=client_ssl_context, timeout=TIMEOUT) as client:
        resp = await client.get(
            f"{tls_fault_server.url}/echo",
            headers={"Proxy-Authorization": "Basic dXNlci1zdXBwbGllZA=="},
        )
        assert "proxy-authorization" not in _echo_headers(resp)
        assert f"CONNECT localhost:{tls_fault_server.port} HTTP/1.1" in tinyproxy_auth.log()


async def test_a_user_proxy_authorization_never_goes_through_socks(
    microsocks: Microsocks, fault_server: FaultServer
) -> None:
    async with aiopool.Client(proxy=microsocks.url, timeout=TIMEOUT) as client:
        resp = await client.get(
            f"{fault_server.url}/echo", headers={"Proxy-Authorization": "Basic eDp5"}
        )
    assert "proxy-authorization" not in _echo_headers(resp)


# Byte-exact: what goes on the wire to an HTTP proxy ----------------------------------------------


class RecordingDialer(MockDialer):
    """A MockDialer that also records where each dial went."""

    def __init__(self, scripts: list[Script]) -> None:
        super().__init__(scripts)
        self.dials: list[tuple[str, int, bool]] = []

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        timeout: float | None,
    ) -> MockStream:
        self.dials.append((host, port, ssl_context is not None))
        return await super().__call__(
            host, port, ssl_context=ssl_context, server_hostname=server_hostname, timeout=timeout
        )


def scripted(proxy: str, *scripts: Script, **kwargs: Any) -> tuple[aiopool.Client, RecordingDialer]:
    dialer = RecordingDialer(list(scripts))
    client = aiopool.Client(proxy=proxy, timeout=TIMEOUT, dialer=dialer, **kwargs)
    return client, dialer


@pytest.mark.parametrize("http1_parser", ["h11", "httptools"], indirect=True)
async def test_forwarded_request_is_absolute_form_with_the_proxy_credentials(
    http1_parser: str,
) -> None:
    client, dialer = scripted(
        f"http://{USER}:{URL_PASSWORD}@proxy.test:3128", [response(b"a")], [response(b"b")]
    )
    async with client:
        resp = await client.get(
            "http://example.org:8080/a?b=1",
            headers={"Proxy-Authorization": "Basic dXNlci1zdXBwbGllZA=="},
        )
        assert resp.content == b"a"
        resp = await client.get("http://example.org/")  # default port: left out, as in Host
        assert resp.content == b"b"
    assert dialer.dials == [("proxy.test", 3128, False), ("proxy.test", 3128, False)]
    first = bytes(dialer.streams[0].written)
    assert first.startswith(b"GET http://example.org:8080/a?b=1 HTTP/1.1\r\n")
    assert b"\r\nhost: example.org:8080\r\n" in first.lower()
    # Exactly one Proxy-Authorization: the proxy URL's credentials replace the caller's.
    assert first.lower().count(b"\r\nproxy-authorization: ") == 1
    assert b"Proxy-Authorization: " + _basic(USER, PASSWORD) in first.replace(
        b"proxy-authorization", b"Proxy-Authorization"
    )
    assert b"dXNlci1zdXBwbGllZA==" not in first
    assert bytes(dialer.streams[1].written).startswith(b"GET http://example.org/ HTTP/1.1\r\n")


@pytest.mark.parametrize("http1_parser", ["h11", "httptools"], indirect=True)
async def test_forwarded_request_keeps_the_callers_proxy_authorization_without_url_credentials(
    http1_parser: str,
) -> None:
    client, dialer = scripted("proxy.test:3128", [response(b"ok")])  # no scheme: http://
    async with client:
        await client.get("http://example.org/", headers={"Proxy-Authorization": "Bearer tok"})
    written = bytes(dialer.streams[0].written)
    assert b"Proxy-Authorization: Bearer tok\r\n" in written
    assert dialer.dials == [("proxy.test", 3128, False)]


async def test_connect_request_bytes_and_tls_inside_the_tunnel() -> None:
    client, dialer = scripted(
        f"http://{USER}:{URL_PASSWORD}@proxy.test:3128",
        [b"HTTP/1.1 200 Connection established\r\n\r\n"],
    )
    async with client:
        # The scripted stream cannot do TLS: reaching start_tls proves CONNECT succeeded.
        with pytest.raises(aiopool.ConnectError, match=r"cannot start TLS to example\.org"):
            await client.get("https://example.org/")
        assert_settled(client)
    assert dialer.dials == [("proxy.test", 3128, False)]
    assert bytes(dialer.streams[0].written) == (
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n"
        b"Proxy-Authorization: " + _basic(USER, PASSWORD) + b"\r\n\r\n"
    )
    assert dialer.streams[0].aborted


async def test_an_http10_proxy_opens_the_tunnel_too() -> None:
    # Proxies answering CONNECT in HTTP/1.0 are common (tinyproxy does); any 2xx opens it.
    client, dialer = scripted("http://proxy.test", [b"HTTP/1.0 200 Connection established\r\n\r\n"])
    async with client:
        with pytest.raises(aiopool.ConnectError, match="cannot start TLS"):
            await client.get("https://example.org/")
    assert dialer.dials == [("proxy.test", 80, False)]


async def test_connect_to_an_ipv6_origin_uses_brackets() -> None:
    client, dialer = scripted("http://proxy.test:3128", [b"HTTP/1.1 403 Forbidden\r\n\r\n"])
    async with client:
        with pytest.raises(aiopool.ProxyError) as info:
            await client.get("https://[::1]:8443/")
        assert info.value.status_code == 403
    assert bytes(dialer.streams[0].written).startswith(b"CONNECT [::1]:8443 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("script", "match"),
    [
        (
            [
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: Basic realm="p"\r\n'
                b"Content-Length: 0\r\n\r\n"
            ],
            r'407 .*required: Negotiate, Basic realm="p"\)',
        ),
        ([b"HTTP/1.1 502 Bad Gateway\r\n", b"Content-Length: 3\r\n\r\nbad"], "502"),
        ([b"garbage, not http\r\n\r\n"], "invalid answer"),
        ([b"HTTP/1.1 200 OK\r\n\r\nsurprise"], "unexpected bytes"),
        ([b"HTTP/1.1 200 OK\r\nX-A: b\r\n"], "closed the connection"),
        ([b"HTTP/1.1 200 OK\r\nX-Pad: " + b"x" * 70_000, b"\r\n\r\n"], "invalid answer"),
        ([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\n"], "403"),
        ([ConnectionResetError("reset")], "broke off"),
    ],
    ids=["407", "502", "garbage", "trailing-bytes", "eof", "oversized", "interim", "reset"],
)
async def test_a_bad_connect_answer_is_a_proxy_error_and_the_socket_is_closed(
    script: list[bytes | BaseException], match: str
) -> None:
    if isinstance(script[0], ConnectionResetError):
        script = [aiopool.ReadError("connection lost: reset")]
    client, dialer = scripted("http://proxy.test:3128", script)
    async with client:
        with pytest.raises(aiopool.ProxyError, match=match):
            await client.get("https://example.org/")
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (0, 0)
    assert dialer.streams[0].aborted


async def test_no_tls_to_a_plain_http_proxy_and_tls_to_an_https_one() -> None:
    client, dialer = scripted("https://proxy.test", [response(b"ok")], [b"HTTP/1.1 407 No\r\n\r\n"])
    async with client:
        assert (await client.get("http://example.org/")).content == b"ok"
        with pytest.raises(aiopool.ProxyError):
            await client.get("https://example.org/")
    # https:// proxy: default port 443, TLS to it for forwarding and for CONNECT alike.
    assert dialer.dials == [("proxy.test", 443, True), ("proxy.test", 443, True)]


# SOCKS5 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
async def test_socks5_http_and_https(
    scheme: str,
    microsocks: Microsocks,
    fault_server: FaultServer,
    nginx: Nginx,
    client_ssl_context: ssl.SSLContext,
) -> None:
    proxy = f"{scheme}://127.0.0.1:{microsocks.port}"
    async with aiopool.Client(proxy=proxy, verify=client_ssl_context, timeout=TIMEOUT) as client:
        plain = await client.get(f"{fault_server.url}/echo?id=socks")
        assert plain.json()["id"] == "socks"
        assert "via" not in _echo_headers(plain)  # a tunnel: nothing rewrote the request
        secure = [await client.get(f"{nginx.https_url}/echo?id={i}") for i in range(3)]
        assert [r.text for r in secure] == ["0", "1", "2"]
        assert {r.http_version for r in secure} == {"HTTP/2"}
        stats = assert_settled(client)
        assert stats.connections_opened == 2  # one per origin, reused
    # socks5h: the proxy got the name to resolve; socks5: we resolved it and sent the address.
    log = microsocks.log()
    target = "localhost" if scheme == "socks5h" else "127.0.0.1"
    assert f"connected to {target}:{nginx.https_port}" in log


async def test_h2c_by_prior_knowledge_through_socks5(microsocks: Microsocks, nginx: Nginx) -> None:
    # A SOCKS tunnel is transparent: HTTP/2 with prior knowledge works through it.
    async with aiopool.Client(proxy=microsocks.url, http1=False, timeout=TIMEOUT) as client:
        responses = await asyncio.gather(
            *(client.get(f"{nginx.h2c_url}/echo?id={i}") for i in range(5))
        )
        assert [(r.text, r.http_version) for r in responses] == [
            (str(i), "HTTP/2") for i in range(5)
        ]
        assert assert_settled(client).connections_opened == 1


@pytest.mark.parametrize("via", ["connect", "socks5"])
async def test_closing_the_client_closes_the_tunnel_end_to_end(
    via: str,
    tinyproxy: Tinyproxy,
    microsocks: Microsocks,
    tls_fault_server: FaultServer,
    client_ssl_context: ssl.SSLContext,
) -> None:
    proxy = tinyproxy.url if via == "connect" else microsocks.url
    before = tls_fault_server.open_connections()
    client = aiopool.Client(proxy=proxy, verify=client_ssl_context, timeout=TIMEOUT)
    resp = await client.get(f"{tls_fault_server.url}/echo?id=e2e")
    assert resp.json()["id"] == "e2e"
    assert tls_fault_server.open_connections() == before + 1  # the tunnelled socket, idle
    await client.aclose()
    # Our close goes through the proxy: the origin sees its connection end.
    assert await tls_fault_server.wait_for_async(
        lambda: tls_fault_server.open_connections() == before
    )


async def test_trace_events_of_a_dial_through_a_proxy(
    microsocks: Microsocks, fault_server: FaultServer
) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(proxy=microsocks.url, trace=events.append, timeout=TIMEOUT) as c:
        await c.get(f"{fault_server.url}/echo")
    starts = [e for e in events if e.name == "connect_start"]
    assert [e.info["addr"] for e in starts] == [f"127.0.0.1:{microsocks.port}"]
    done = [e for e in events if e.name == "connect_done"]
    assert len(done) == 1 and done[0].info["error"] is None


async def test_socks5_pool_reuse_over_http11(
    microsocks: Microsocks, fault_server: FaultServer
) -> None:
    async with aiopool.Client(proxy=microsocks.url, timeout=TIMEOUT) as client:
        for i in range(5):
            resp = await client.get(f"{fault_server.url}/echo?id={i}")
            assert resp.conn_info.reused == (i > 0)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused) == (1, 4)
        assert list(stats.hosts) == [
            f"http://127.0.0.1:{fault_server.port} via socks5://127.0.0.1:{microsocks.port}"
        ]


async def test_socks5_with_credentials(
    microsocks_auth: Microsocks, fault_server: FaultServer
) -> None:
    proxy = microsocks_auth.url_with(USER, URL_PASSWORD, scheme="socks5h")
    async with aiopool.Client(proxy=proxy, timeout=TIMEOUT) as client:
        resp = await client.get(f"{fault_server.url}/echo?id=auth")
        assert resp.json()["id"] == "auth"
        assert_settled(client)


@pytest.mark.parametrize(
    ("credentials", "match"),
    [((USER, "wrong"), "rejected the username/password"), (None, "does not accept")],
    ids=["wrong", "missing"],
)
async def test_socks5_refusing_credentials_is_a_proxy_error(
    microsocks_auth: Microsocks,
    fault_server: FaultServer,
    credentials: tuple[str, str] | None,
    match: str,
) -> None:
    proxy = (
        microsocks_auth.url_with(*credentials)
        if credentials
        else f"socks5://127.0.0.1:{microsocks_auth.port}"
    )
    async with aiopool.Client(proxy=proxy, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ProxyError, match=match) as info:
            await client.get(f"{fault_server.url}/echo")
        assert info.value.status_code is None
        assert "wrong" not in str(info.value)
        assert_settled(client)


async def test_socks5_target_refused_is_a_proxy_error(microsocks: Microsocks) -> None:
    async with aiopool.Client(proxy=microsocks.url, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ProxyError, match=r"could not connect to 127\.0\.0\.1"):
            await client.get(f"http://127.0.0.1:{_closed_port()}/")
        assert_settled(client)


def _socks_reply(code: int, address: bytes = b"\x01\x7f\x00\x00\x01", port: int = 80) -> bytes:
    return bytes([5, code, 0]) + address + port.to_bytes(2, "big")


@pytest.mark.parametrize(
    ("script", "match"),
    [
        ([b"\x05\xff"], "does not accept"),
        ([b"\x05\x00", _socks_reply(4)], "host unreachable"),
        ([b"\x05\x00", _socks_reply(0) + b"extra"], "unexpected bytes"),
        ([b"\x05\x00", b"\x05\x00\x00\x09"], "address type"),
        ([b"\x05"], "closed the connection"),
        ([b"\x04\x00", _socks_reply(0)], "did not answer as a SOCKS5 server"),
        ([b"HTTP/1.1 400 Bad Request\r\n\r\n"], "did not answer as a SOCKS5 server"),
        ([b"\x05\x00", b"\x04\x00\x00\x01" + bytes(6)], "invalid reply"),
    ],
    ids=[
        "no-method",
        "unreachable",
        "trailing",
        "bad-atype",
        "eof",
        "socks4-greeting",
        "http-greeting",
        "socks4-reply",
    ],
)
async def test_a_bad_socks_reply_is_a_proxy_error(
    script: list[bytes | BaseException], match: str
) -> None:
    client, dialer = scripted("socks5h://proxy.test", script)
    async with client:
        with pytest.raises(aiopool.ProxyError, match=match):
            await client.get("http://example.org/")
        assert_settled(client)
    assert dialer.dials == [("proxy.test", 1080, False)]
    assert dialer.streams[0].aborted


async def test_socks5_replies_split_and_with_every_address_type() -> None:
    ipv6 = b"\x04" + bytes(16)
    name = b"\x03\x0bexample.org"
    scripts: list[Script] = [
        [b"\x05", b"\x00", _socks_reply(0, ipv6)[:7], _socks_reply(0, ipv6)[7:], response(b"6")],
        [b"\x05\x00", _socks_reply(0, name)[:5], _socks_reply(0, name)[5:], response(b"n")],
    ]
    client, dialer = scripted("socks5h://proxy.test", *scripts)
    async with client:
        assert (await client.get("http://example.org/")).content == b"6"
        assert (await client.get("http://example.net/")).content == b"n"
    written = bytes(dialer.streams[0].written)
    # greeting (no auth), CONNECT by name (ATYP 3), then the request in origin-form.
    assert written.startswith(b"\x05\x01\x00" + b"\x05\x01\x00\x03\x0bexample.org\x00\x50")
    assert b"GET / HTTP/1.1\r\n" in written


# The environment ---------------------------------------------------------------------------------


def _routes(**env: str) -> ProxyRoutes | None:
    return ProxyRoutes.from_environ(env)


def _selected(routes: ProxyRoutes | None, url: str) -> str | None:
    assert routes is not None
    proxy = routes.select(aiopool.URL(url).origin)
    return None if proxy is None else str(proxy)


def test_environment_lower_case_wins_and_all_proxy_is_the_fallback() -> None:
    assert _routes() is None
    assert _routes(http_proxy="", HTTP_PROXY="") is None
    routes = _routes(http_proxy="lower:1", HTTP_PROXY="http://upper:2", ALL_PROXY="all:3")
    assert _selected(routes, "http://example.org/") == "http://lower:1"
    assert _selected(routes, "https://example.org/") == "http://all:3"
    routes = _routes(HTTPS_PROXY="https://secure:4", all_proxy="socks5h://s")
    assert _selected(routes, "https://example.org/") == "https://secure:4"
    assert _selected(routes, "http://example.org/") == "socks5h://s:1080"


def test_environment_http_proxy_upper_case_is_ignored_under_cgi() -> None:
    # httpoxy (CVE-2016-5385): in CGI, HTTP_PROXY is the request's "Proxy:" header.
    routes = _routes(REQUEST_METHOD="GET", HTTP_PROXY="http://attacker:1", HTTPS_PROXY="p:2")
    assert _selected(routes, "http://example.org/") is None
    assert _selected(routes, "https://example.org/") == "http://p:2"
    routes = _routes(REQUEST_METHOD="GET", http_proxy="http://mine:3")
    assert _selected(routes, "http://example.org/") == "http://mine:3"


def test_environment_never_proxies_loopback_but_an_explicit_proxy_does() -> None:
    routes = _routes(all_proxy="http://p:1")
    for url in (
        "http://localhost/",
        "http://api.localhost:81/",
        "http://127.0.0.7/",
        "http://[::1]/",
    ):
        assert _selected(routes, url) is None, url
    assert _selected(routes, "http://10.0.0.1/") == "http://p:1"
    explicit = ProxyRoutes.build("http://p:1", trust_env=True)
    assert _selected(explicit, "http://localhost/") == "http://p:1"


def test_explicit_proxy_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.setenv("HTTPS_PROXY", "http://env:1")
    assert _selected(ProxyRoutes.build("http://mine:2", True), "https://a.test/") == "http://mine:2"
    assert ProxyRoutes.build(None, trust_env=False) is None
    assert _selected(ProxyRoutes.build(None, True), "https://a.test/") is None  # NO_PROXY=*


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypass"),
    [
        ("*", "http://anything.test/", True),
        ("example.org", "http://example.org/", True),
        ("example.org", "http://api.example.org/", True),
        ("example.org", "http://badexample.org/", False),
        (".example.org", "http://example.org/", True),
        (".example.org", "http://a.b.example.org/", True),
        ("*.example.org", "http://a.example.org/", True),
        ("EXAMPLE.org.", "http://Example.ORG/", True),
        ("example.org:8080", "http://example.org:8080/", True),
        ("example.org:8080", "http://example.org/", False),
        ("10.1.2.3", "http://10.1.2.3/", True),
        ("10.1.2.3", "http://10.1.2.4/", False),
        ("10.1.2.3:81", "http://10.1.2.3/", False),
        ("10.0.0.0/8", "http://10.200.3.4/", True),
        ("10.0.0.0/8", "http://11.0.0.1/", False),
        ("fd00::/8", "http://[fd12::1]/", True),
        ("::2", "http://[::2]/", True),
        ("[::2]:8443", "https://[::2]:8443/", True),
        ("[::2]:8443", "https://[::2]/", False),
        (" a.test , , b.test ", "http://b.test/", True),
        ("not/a/block, example.net", "http://example.net/", True),
        ("", "http://example.org/", False),
    ],
)
def test_no_proxy_matching(no_proxy: str, url: str, bypass: bool) -> None:
    origin = aiopool.URL(url).origin
    assert NoProxy(no_proxy).matches(origin.host, origin.port) is bypass
    routes = _routes(all_proxy="http://p:1", no_proxy=no_proxy)
    assert (_selected(routes, url) is None) is bypass


_ENTRY_PARTS = st.sampled_from(
    ["*", ".", ":", "/", "[", "]", "::1", "10.0.0.0", "/8", "/99", "a.test", "*.", "80", "x", " "]
)


@settings(max_examples=200, deadline=None)
@given(
    no_proxy=st.one_of(st.text(max_size=40), st.lists(_ENTRY_PARTS, max_size=12).map("".join)),
    host=st.sampled_from(["a.test", "b.a.test", "10.1.2.3", "::1", "fd00::1", "localhost"]),
    port=st.integers(1, 65535),
)
def test_no_proxy_never_raises_on_any_value(no_proxy: str, host: str, port: int) -> None:
    # An environment variable is outside our control: a bad entry is ignored, never an error.
    assert isinstance(NoProxy(no_proxy).matches(host, port), bool)


@settings(max_examples=200, deadline=None)
@given(
    url=st.one_of(
        st.text(max_size=40), st.from_regex(r"(https?|socks5h?|ftp)://[\[\]:@a-z0-9.%]{0,20}")
    )
)
def test_a_proxy_url_parses_or_is_invalid_url(url: str) -> None:
    try:
        proxy = Proxy(url)
    except aiopool.InvalidURL:
        return
    assert proxy.scheme in ("http", "https", "socks5", "socks5h")
    assert 1 <= proxy.port <= 65535
    assert "@" not in str(proxy)


def test_no_proxy_lower_case_wins() -> None:
    routes = _routes(all_proxy="http://p:1", no_proxy="a.test", NO_PROXY="b.test")
    assert _selected(routes, "http://a.test/") is None
    assert _selected(routes, "http://b.test/") == "http://p:1"


def test_a_bad_proxy_in_the_environment_names_the_variable_not_the_password() -> None:
    with pytest.raises(aiopool.InvalidURL, match="https_proxy") as info:
        _routes(HTTPS_PROXY="ftp://user:hunter2@p:1")
    assert "hunter2" not in str(info.value)
    with pytest.raises(aiopool.InvalidURL) as info:
        aiopool.Client(proxy="http://user:hunter2@p:99999")
    assert "hunter2" not in str(info.value)


async def test_environment_proxy_is_used_for_a_remote_name(
    tinyproxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name that no resolver knows (RFC 6761 ".invalid"): through the proxy, it is the proxy
    # that fails to connect and says so with a 5xx to CONNECT; directly, it is a DNS failure.
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    async with aiopool.Client(timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ProxyError) as info:
            await client.get("https://aiopool-env.invalid/")
        assert info.value.status_code is not None and info.value.status_code >= 500
    assert "CONNECT aiopool-env.invalid:443 HTTP/1.1" in tinyproxy.log()

    monkeypatch.setenv("no_proxy", ".invalid")
    async with aiopool.Client(timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError):
            await client.get("https://aiopool-bypass.invalid/")
    async with aiopool.Client(timeout=TIMEOUT, trust_env=False) as client:
        with pytest.raises(aiopool.ConnectError):
            await client.get("https://aiopool-noenv.invalid/")
    log = tinyproxy.log()
    assert "aiopool-bypass" not in log and "aiopool-noenv" not in log


async def test_environment_is_read_once_and_loopback_goes_direct(
    tinyproxy: Tinyproxy, fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", tinyproxy.url)
    async with aiopool.Client(timeout=TIMEOUT) as client:
        resp = await client.get(f"{fault_server.url}/echo")  # 127.0.0.1: never via env
        assert "via" not in _echo_headers(resp)
        assert list(client.stats().hosts) == [f"http://127.0.0.1:{fault_server.port}"]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    async with aiopool.Client(timeout=TIMEOUT) as client:
        monkeypatch.delenv("HTTPS_PROXY")  # too late: the client read it at construction
        with pytest.raises(aiopool.ConnectError, match="proxy"):
            await client.get("https://aiopool-once.invalid/")


# The pool key ------------------------------------------------------------------------------------


class _FakeConn:
    """Just enough of a connection for PoolState."""

    multiplexed = False
    requests = 0
    idle_since = 0.0
    open_streams = 0

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        from aiopool._connection import ConnState

        self.state = ConnState.ACTIVE

    def is_reusable(self) -> bool:
        return True

    def capacity(self) -> int:
        return 0

    def arm_idle_watch(self) -> None:
        pass

    def disarm_idle_watch(self) -> None:
        pass


async def test_pool_key_separates_direct_and_each_proxy_and_credentials() -> None:
    direct = Origin("http", "example.org", 80)
    via_a = direct._replace(proxy=Proxy("http://u:one@proxy.test:3128"))
    via_a_again = direct._replace(proxy=Proxy("http://u:one@proxy.test:3128"))
    via_a_other_user = direct._replace(proxy=Proxy("http://u:two@proxy.test:3128"))
    via_b = direct._replace(proxy=Proxy("socks5://proxy.test"))
    assert via_a == via_a_again and hash(via_a) == hash(via_a_again)
    assert len({direct, via_a, via_a_other_user, via_b}) == 4

    state = PoolState(
        max_connections=10,
        max_connections_per_host=10,
        max_idle_per_host=10,
        max_idle=10,
        idle_timeout=90.0,
    )
    waiter = state.checkout(via_a, None, 0.0)
    assert not isinstance(waiter, _FakeConn)
    host = state.hosts[via_a]
    conn: Any = _FakeConn(via_a)
    state.dial_succeeded(host, conn, 0.0)
    assert waiter.fut.result() is conn  # type: ignore[union-attr]
    state.checkin(conn, 1.0)
    # The idle socket through proxy A (user one) goes to nobody else.
    for other in (direct, via_a_other_user, via_b):
        assert state.checkout(other, None, 1.0) is not conn
    assert state.checkout(via_a_again, None, 1.0) is conn
    names = list(state.snapshot().hosts)
    assert names == [
        "http://example.org:80 via http://proxy.test:3128",
        "http://example.org:80",
        "http://example.org:80 via http://proxy.test:3128 #2",
        "http://example.org:80 via socks5://proxy.test:1080",
    ]
    state.close()
    for key in list(state.hosts):
        assert "one" not in str(key) and "two" not in str(key)


def test_proxy_url_model() -> None:
    proxy = Proxy(f"HTTP://{USER}:{URL_PASSWORD}@Proxy.Test:8080/ignored")
    assert (proxy.scheme, proxy.host, proxy.port) == ("http", "proxy.test", 8080)
    assert (proxy.username, proxy.password) == (USER, PASSWORD)
    assert proxy.authorization == _basic(USER, PASSWORD)
    assert str(proxy) == "http://proxy.test:8080"
    assert PASSWORD not in repr(proxy) and URL_PASSWORD not in repr(proxy)
    assert "credentials" in repr(proxy)
    assert Proxy("socks5://u:p@[::1]").port == 1080
    assert str(Proxy("socks5://u:p@[::1]")) == "socks5://[::1]:1080"
    assert Proxy("socks5://u:p@s").authorization is None  # SOCKS: RFC 1929, not a header
    assert Proxy("https://p").port == 443
    assert Proxy("http://only-user@p").authorization == _basic("only-user", "")
    for bad in ("ftp://p", "http://", "http://p:0", "http://p:x"):
        with pytest.raises(aiopool.InvalidURL):
            Proxy(bad)


def test_socks_without_socksio_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiopool._proxy.find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"aiopool\[socks\]"):
        aiopool.Client(proxy="socks5://127.0.0.1:1080")
    aiopool.Client(proxy="http://127.0.0.1:3128")  # only SOCKS needs it


# Cancellation and timeouts while connecting through a proxy --------------------------------------


@pytest.mark.parametrize("proxy_scheme", ["http", "socks5h"])
async def test_cancel_while_connecting_through_a_silent_proxy_leaves_the_pool_settled(
    blackhole: BlackholeServer, proxy_scheme: str
) -> None:
    blackhole.reset()
    proxy = f"{proxy_scheme}://127.0.0.1:{blackhole.port}"
    async with aiopool.Client(proxy=proxy, timeout=aiopool.Timeout(10, connect=1.0)) as client:
        tasks = [asyncio.create_task(client.get("https://example.org/")) for _ in range(3)]
        # The dial reached the proxy and sent its handshake, which will never be answered.
        await eventually(lambda: blackhole.connections_accepted >= 1)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        assert client.stats().waiting == 0
        # The dial belongs to the pool (Go's rule), not to the cancelled requests; it ends at
        # the connect timeout and leaves nothing behind.
        await eventually(lambda: client.stats().connecting == 0)
        stats = assert_settled(client)
        assert stats.connections_opened == 0


@pytest.mark.parametrize("proxy_scheme", ["http", "socks5h"])
async def test_a_silent_proxy_is_a_connect_timeout(
    blackhole: BlackholeServer, proxy_scheme: str
) -> None:
    proxy = f"{proxy_scheme}://127.0.0.1:{blackhole.port}"
    async with aiopool.Client(proxy=proxy, timeout=aiopool.Timeout(10, connect=0.3)) as client:
        with pytest.raises(aiopool.ConnectTimeout, match="proxy handshake"):
            await client.get("https://example.org/")
        assert_settled(client)


async def test_closing_the_client_during_a_connect_aborts_the_dial(
    blackhole: BlackholeServer,
) -> None:
    client = aiopool.Client(proxy=f"http://127.0.0.1:{blackhole.port}", timeout=TIMEOUT)
    blackhole.reset()
    task = asyncio.create_task(client.get("https://example.org/"))
    await eventually(lambda: blackhole.connections_accepted >= 1)
    await client.aclose()
    with pytest.raises(aiopool.ClientClosed):
        await task
    assert not pool_of(client).has_connections


async def test_network_stream_protocol_has_start_tls() -> None:
    # The scripted backend stands in for real streams: it must keep the interface whole.
    stream: NetworkStream = MockStream([])
    with pytest.raises(aiopool.ConnectError):
        await stream.start_tls(ssl.create_default_context(), "example.org", 1.0)
