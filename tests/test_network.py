"""The network layer through the public API, against real servers: unix sockets (nginx,
hypercorn), local_address, socket options and TCP keep-alive, close_idle_connections(),
keepalive=False, client certificates, the TLS environment variables, and a proxy per URL.

Happy Eyeballs and the resolver seam are in test_resolver.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

import aiopool
from tests.rig.fault_server import FaultServer, server_ssl_context
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx
from tests.rig.proxy import Tinyproxy, find_tinyproxy

TIMEOUT = aiopool.Timeout(10)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's own proxy and TLS settings must not leak into these tests.
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "SSLKEYLOGFILE"):
        monkeypatch.delenv(name, raising=False)


# Unix domain sockets -----------------------------------------------------------------------------


async def test_uds_to_nginx_reuses_the_socket_and_traces_a_unix_dial(nginx: Nginx) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(uds=nginx.uds_path, timeout=TIMEOUT, trace=events.append) as client:
        # The URL gives the Host header and the pool key; the socket goes to the path.
        first = await client.get("http://localhost/echo?id=over-uds")
        second = await client.get("http://localhost/addr")
    assert (first.status_code, first.text) == (200, "over-uds")
    assert second.text.startswith("unix:")  # nginx saw a unix socket peer
    assert second.conn_info.reused and second.conn_info.id == first.conn_info.id
    (start,) = [e for e in events if e.name == "connect_start"]
    assert (start.info["network"], start.info["addr"]) == ("unix", nginx.uds_path)
    assert not [e for e in events if e.name.startswith("dns_")]  # nothing to resolve


async def test_uds_with_tls_and_h2_to_nginx(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(uds=nginx.uds_tls_path, verify=ca_path, timeout=TIMEOUT) as client:
        response = await client.get("https://localhost/small.txt")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"  # ALPN over the unix socket, name checked
    assert response.content == nginx.file_bytes("small.txt")


@pytest.fixture
def hypercorn_uds(tmp_path: Path) -> Iterator[HypercornServer]:
    server = HypercornServer(tls=False, uds=str(tmp_path / "app.sock"))
    with server:
        yield server


@pytest.mark.parametrize("http2", [False, True], ids=["h1", "h2c"])
async def test_uds_to_hypercorn(hypercorn_uds: HypercornServer, http2: bool) -> None:
    assert hypercorn_uds.uds is not None
    async with aiopool.Client(
        uds=hypercorn_uds.uds, http1=not http2, http2=http2, timeout=TIMEOUT
    ) as client:
        responses = [await client.get(f"http://app.internal/echo?id={i}") for i in range(3)]
    assert [r.text for r in responses] == ["0", "1", "2"]
    assert {r.http_version for r in responses} == {"HTTP/2" if http2 else "HTTP/1.1"}
    assert len({r.conn_info.id for r in responses}) == 1
    assert hypercorn_uds.connections_accepted == 1


async def test_uds_to_a_missing_path_names_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody-here.sock")
    async with aiopool.Client(uds=path, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError, match=r"unix socket .*nobody-here\.sock"):
            await client.get("http://localhost/")


def test_uds_refuses_a_proxy_and_a_local_address() -> None:
    with pytest.raises(TypeError, match="uds= and proxy="):
        aiopool.Client(uds="/tmp/x.sock", proxy="http://127.0.0.1:3128")
    with pytest.raises(ValueError, match="exclude each other"):
        aiopool.Client(uds="/tmp/x.sock", local_address="127.0.0.1")


async def test_uds_ignores_environment_proxies(
    nginx: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would refuse every request
    async with aiopool.Client(uds=nginx.uds_path, timeout=TIMEOUT) as client:
        response = await client.get("http://example.org/echo?id=direct")
    assert response.text == "direct"


# local_address, socket options, TCP keep-alive ----------------------------------------------------


async def test_local_address_binds_the_source_address(nginx: Nginx) -> None:
    async with aiopool.Client(local_address="127.0.0.2", timeout=TIMEOUT) as client:
        response = await client.get(f"{nginx.http_url}/addr")
    assert response.text.split()[0] == "127.0.0.2"


async def test_local_address_of_another_family_is_a_connect_error(nginx: Nginx) -> None:
    async with aiopool.Client(local_address="::1", timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError, match="local address's family"):
            await client.get(f"{nginx.http_url}/addr")


def test_a_local_address_must_be_an_ip_address() -> None:
    with pytest.raises(ValueError, match="local_address must be an IP address"):
        aiopool.Client(local_address="localhost")


def _client_socket_options(local_port: int, names: Sequence[tuple[int, int]]) -> list[int]:
    """The options of this process's TCP socket whose local port is `local_port` (Linux: the
    descriptors are found in /proc/self/fd; each is inspected through a duplicate)."""
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(int(entry)))
            with sock:
                if sock.type != socket.SOCK_STREAM or sock.family != socket.AF_INET:
                    continue
                if sock.getsockname()[1] != local_port:
                    continue
                return [sock.getsockopt(level, name) for level, name in names]
    raise AssertionError(f"no socket with local port {local_port}")


_KEEPALIVE_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0)),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0)),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0)),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY),
]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/fd")


@linux_only
async def test_every_socket_has_tcp_keepalive_15_15_9_and_nodelay(nginx: Nginx) -> None:
    async with aiopool.Client(timeout=TIMEOUT) as client:
        response = await client.get(f"{nginx.http_url}/addr")
        port = int(response.text.split()[1])
        keepalive, idle, interval, count, nodelay = _client_socket_options(port, _KEEPALIVE_OPTIONS)
    assert keepalive != 0 and nodelay != 0
    assert (idle, interval, count) == (15, 15, 9)


@linux_only
async def test_socket_options_are_applied_after_the_defaults(nginx: Nginx) -> None:
    options = [
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 42),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
    ]
    async with aiopool.Client(socket_options=options, timeout=TIMEOUT) as client:
        response = await client.get(f"{nginx.http_url}/addr")
        port = int(response.text.split()[1])
        _, idle, interval, count, _ = _client_socket_options(port, _KEEPALIVE_OPTIONS)
    assert (idle, interval, count) == (42, 15, 3)


@linux_only
async def test_socket_options_can_turn_tcp_keepalive_off(nginx: Nginx) -> None:
    off = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)]
    async with aiopool.Client(socket_options=off, timeout=TIMEOUT) as client:
        response = await client.get(f"{nginx.http_url}/addr")
        (keepalive,) = _client_socket_options(
            int(response.text.split()[1]), [(socket.SOL_SOCKET, socket.SO_KEEPALIVE)]
        )
    assert keepalive == 0


def test_network_options_are_refused_with_a_dialer_or_a_transport() -> None:
    async def dialer(*args: object, **kwargs: object) -> aiopool.Response:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match="configure the default dialer"):
        aiopool.Client(dialer=dialer, local_address="127.0.0.1")  # type: ignore[arg-type]
    transport = aiopool.MockTransport(lambda request: aiopool.Response(200))
    with pytest.raises(TypeError, match="uds"):
        aiopool.Client(transport=transport, uds="/tmp/x.sock")
    with pytest.raises(TypeError, match="socket_options must be"):
        aiopool.Client(socket_options=[(1, 2)])  # type: ignore[list-item]


# close_idle_connections() ----------------------------------------------------------------------


async def test_close_idle_connections_closes_idle_sockets_only(nginx: Nginx) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(timeout=TIMEOUT, trace=events.append) as client:
        async with client.stream("GET", f"{nginx.http_url}/1m.bin") as busy:
            idle = await client.get(f"{nginx.http_url}/echo?id=1")  # a second socket
            await client.close_idle_connections()
            # The busy socket is untouched: its body still arrives whole.
            body = await busy.aread()
        assert body == nginx.file_bytes("1m.bin")
        stats = client.stats()
        assert stats.connections_opened == 2 and stats.connections_closed == 1
        closed = [e for e in events if e.name == "conn_closed"]
        assert [(e.conn_id, e.info["reason"]) for e in closed] == [
            (idle.conn_info.id, "closed_idle")
        ]
        # The client goes on: the busy socket went idle after its body, and is reused.
        again = await client.get(f"{nginx.http_url}/echo?id=2")
        assert again.conn_info.reused and again.conn_info.id == busy.conn_info.id
        await client.close_idle_connections()
        fresh = await client.get(f"{nginx.http_url}/echo?id=3")
        assert not fresh.conn_info.reused
        assert client.stats().hosts[f"http://127.0.0.1:{nginx.http_port}"].idle == 1


async def test_close_idle_connections_closes_an_idle_h2_socket(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path, timeout=TIMEOUT) as client:
        first = await client.get(f"{nginx.https_url}/small.txt")
        assert first.http_version == "HTTP/2"
        await client.close_idle_connections()
        assert client.stats().connections_closed == 1
        second = await client.get(f"{nginx.https_url}/small.txt")
        assert not second.conn_info.reused and second.conn_info.id != first.conn_info.id


async def test_close_idle_connections_after_close_does_nothing(nginx: Nginx) -> None:
    client = aiopool.Client(timeout=TIMEOUT)
    await client.get(f"{nginx.http_url}/echo?id=1")
    await client.aclose()
    await client.close_idle_connections()  # nothing idle, nothing raised


# keepalive=False ---------------------------------------------------------------------------------


async def test_keepalive_false_sends_connection_close_and_never_reuses(
    fault_server: FaultServer,
) -> None:
    async with aiopool.Client(keepalive=False, timeout=TIMEOUT) as client:
        responses = [await client.get(f"{fault_server.url}/echo?id={i}") for i in range(3)]
        stats = client.stats()
    for response in responses:
        headers = {name.lower(): value for name, value in response.json()["headers"]}
        assert headers["connection"] == "close"
        assert not response.conn_info.reused
    assert len({r.conn_info.id for r in responses}) == 3
    assert stats.connections_opened == 3 and stats.reused == 0


async def test_keepalive_false_overrides_a_callers_connection_header(
    fault_server: FaultServer,
) -> None:
    async with aiopool.Client(keepalive=False, timeout=TIMEOUT) as client:
        first = await client.get(f"{fault_server.url}/echo", headers={"Connection": "keep-alive"})
        second = await client.get(f"{fault_server.url}/echo")
    headers = {name.lower(): value for name, value in first.json()["headers"]}
    assert headers["connection"] == "close"
    assert first.conn_info.id != second.conn_info.id


async def test_keepalive_false_gives_each_h2_socket_one_stream(nginx: Nginx, ca_path: str) -> None:
    async with aiopool.Client(keepalive=False, verify=ca_path, timeout=TIMEOUT) as client:
        responses = [await client.get(f"{nginx.https_url}/echo?id={i}") for i in range(3)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        assert len({r.conn_info.id for r in responses}) == 3
        assert not any(r.conn_info.reused for r in responses)
        host = client.stats().hosts[f"https://localhost:{nginx.https_port}"]
        assert host.active == host.idle == 0  # each socket closed after its stream


# Client certificates ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(tls_ca: trustme.CA) -> Iterator[FaultServer]:
    """A TLS server that requires a client certificate issued by the rig's CA."""
    context = server_ssl_context(tls_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    tls_ca.configure_trust(context)
    server = FaultServer(ssl_context=context)
    with server:
        yield server


@pytest.fixture(scope="module")
def client_cert(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The rig CA's client certificate as files: combined PEM, cert and key, encrypted key."""
    leaf = tls_ca.issue_cert("client@example.org")
    folder = tmp_path_factory.mktemp("client-cert")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    (folder / "both.pem").write_bytes(chain + key)
    (folder / "cert.pem").write_bytes(chain)
    (folder / "key.pem").write_bytes(key)
    loaded = serialization.load_pem_private_key(key, password=None)
    encrypted = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret-pw"),
    )
    (folder / "key-encrypted.pem").write_bytes(encrypted)
    return {name: str(folder / f"{name}.pem") for name in ("both", "cert", "key", "key-encrypted")}


async def test_a_client_certificate_opens_mutual_tls(
    mtls_server: FaultServer, client_cert: dict[str, str], ca_path: str
) -> None:
    certs: list[aiopool._tls.CertTypes] = [
        client_cert["both"],
        (client_cert["cert"], client_cert["key"]),
        (client_cert["cert"], client_cert["key-encrypted"], "s3cret-pw"),
    ]
    for cert in certs:
        async with aiopool.Client(verify=ca_path, cert=cert, timeout=TIMEOUT) as client:
            response = await client.get(f"{mtls_server.url}/echo")
        assert response.status_code == 200


async def test_without_a_client_certificate_the_server_refuses(
    mtls_server: FaultServer, ca_path: str
) -> None:
    async with aiopool.Client(verify=ca_path, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.TransportError):
            await client.get(f"{mtls_server.url}/echo")


def test_a_bad_client_certificate_is_refused_at_construction(
    client_cert: dict[str, str], client_ssl_context: ssl.SSLContext
) -> None:
    with pytest.raises(ValueError, match="could not load the client certificate") as info:
        aiopool.Client(cert=(client_cert["cert"], client_cert["key-encrypted"], "wrong-pw"))
    assert "wrong-pw" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        aiopool.Client(cert="/nonexistent/client.pem")
    with pytest.raises(TypeError, match="load_cert_chain"):
        aiopool.Client(cert=client_cert["both"], verify=client_ssl_context)
    with pytest.raises(TypeError, match="cert must be"):
        aiopool.Client(cert=("a",))  # type: ignore[arg-type]


# SSL_CERT_FILE, SSL_CERT_DIR, SSLKEYLOGFILE ----------------------------------------------------


async def test_ssl_cert_file_is_trusted_with_trust_env(
    tls_fault_server: FaultServer, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", ca_path)
    async with aiopool.Client(timeout=TIMEOUT) as client:
        assert (await client.get(f"{tls_fault_server.url}/echo")).status_code == 200
    # Without trust_env the system store decides (OpenSSL's own reading of the variable too).
    async with aiopool.Client(trust_env=False, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError, match="certificate"):
            await client.get(f"{tls_fault_server.url}/echo")


async def test_ssl_cert_dir_is_trusted_with_trust_env(
    tls_fault_server: FaultServer,
    tls_ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A hashed directory as `c_rehash` makes it: <subject hash>.0
    pem = tls_ca.cert_pem.bytes()
    probe = tmp_path / "probe.pem"
    probe.write_bytes(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(probe))
    probe.unlink()
    subject_hash = _subject_hash(pem)
    (tmp_path / f"{subject_hash}.0").write_bytes(pem)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    async with aiopool.Client(timeout=TIMEOUT) as client:
        assert (await client.get(f"{tls_fault_server.url}/echo")).status_code == 200


def _subject_hash(pem: bytes) -> str:
    """OpenSSL's subject name hash of a certificate, as `openssl x509 -hash` prints it."""
    import subprocess

    result = subprocess.run(
        ["openssl", "x509", "-noout", "-hash"], input=pem, capture_output=True, check=True
    )
    return result.stdout.decode().strip()


async def test_a_missing_ssl_cert_file_is_named(
    tls_fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    async with aiopool.Client(timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError, match="SSL_CERT_FILE"):
            await client.get(f"{tls_fault_server.url}/echo")


@pytest.mark.parametrize("trust_env", [True, False])
async def test_sslkeylogfile_records_tls_secrets_with_trust_env(
    tls_fault_server: FaultServer,
    ca_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trust_env: bool,
) -> None:
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    async with aiopool.Client(verify=ca_path, trust_env=trust_env, timeout=TIMEOUT) as client:
        assert (await client.get(f"{tls_fault_server.url}/echo")).status_code == 200
    if trust_env:
        # NSS key log lines: TLS 1.3 traffic secrets ("CLIENT_TRAFFIC_SECRET_0 ...").
        assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()
    else:
        # No secret written. (`ssl.create_default_context()` opens the file as it reads the
        # variable, before aiopool unsets it: the file may exist, with only its header line.)
        assert not keylog.exists() or "SECRET" not in keylog.read_text()


# A proxy per URL -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[Tinyproxy]:
    if find_tinyproxy() is None:
        if os.environ.get("CI"):
            pytest.fail("tinyproxy is required under CI")
        pytest.skip("tinyproxy not installed")
    with Tinyproxy() as proxy:
        yield proxy


async def test_a_proxy_callable_chooses_per_url(
    tinyproxy: Tinyproxy, fault_server: FaultServer
) -> None:
    asked: list[str] = []

    def choose(url: aiopool.URL) -> str | None:
        asked.append(url.target.decode())
        return tinyproxy.url if "via-proxy" in url.target.decode() else None

    async with aiopool.Client(proxy=choose, timeout=TIMEOUT) as client:
        proxied = await client.get(f"{fault_server.url}/echo?id=via-proxy")
        direct = await client.get(f"{fault_server.url}/echo?id=direct")
        hosts = set(client.stats().hosts)
    assert asked == ["/echo?id=via-proxy", "/echo?id=direct"]
    assert "tinyproxy" in {k.lower(): v for k, v in proxied.json()["headers"]}.get("via", "")
    assert "via" not in {k.lower() for k, _ in direct.json()["headers"]}
    assert f"{fault_server.url}/echo?id=via-proxy" in tinyproxy.log()
    assert "id=direct" not in tinyproxy.log()
    origin = f"http://127.0.0.1:{fault_server.port}"
    assert hosts == {origin, f"{origin} via http://127.0.0.1:{tinyproxy.port}"}


async def test_a_proxy_callable_returning_garbage_is_a_type_error(
    fault_server: FaultServer,
) -> None:
    async with aiopool.Client(proxy=lambda url: 3128, timeout=TIMEOUT) as client:  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="proxy= callable must return"):
            await client.get(f"{fault_server.url}/echo")


async def test_a_proxy_mapping_picks_the_most_specific_pattern(
    tinyproxy: Tinyproxy, fault_server: FaultServer
) -> None:
    port = fault_server.port
    routes: dict[str, str | None] = {
        "all://": "http://127.0.0.1:9",  # refused: a request that took it would fail
        f"http://127.0.0.1:{port}": tinyproxy.url,
        "all://*.example.org": None,
    }
    async with aiopool.Client(proxy=routes, timeout=TIMEOUT) as client:
        response = await client.get(f"{fault_server.url}/echo?id=mapped")
    assert "tinyproxy" in {k.lower(): v for k, v in response.json()["headers"]}["via"]
    async with aiopool.Client(proxy={"https://": tinyproxy.url}, timeout=TIMEOUT) as client:
        direct = await client.get(f"{fault_server.url}/echo?id=not-https")
    assert "via" not in {k.lower() for k, _ in direct.json()["headers"]}


def test_a_bad_proxy_pattern_is_invalid() -> None:
    for key in ("example.org", "ftp://", "all://exa*mple.org", "all://host:port"):
        with pytest.raises(aiopool.InvalidURL):
            aiopool.Client(proxy={key: "http://127.0.0.1:3128"})
    with pytest.raises(aiopool.InvalidURL, match="unsupported proxy scheme") as info:
        aiopool.Client(proxy={"all://": "ftp://user:secret@proxy"})
    assert "secret" not in str(info.value)
