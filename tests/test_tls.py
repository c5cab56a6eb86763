"""HTTPS: certificate and host name verification, SNI, handshake timeouts, the client's context.

Verification stays on throughout (the trustme CA from conftest), except in the tests that show
what `verify=False` does (and that it warns).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from typing import Self

import pytest
import trustme

import aiopool
from tests.helpers import assert_settled, eventually, pool_of
from tests.rig.fault_server import BlackholeServer, FaultServer, server_ssl_context

pytestmark = pytest.mark.both_parsers


@pytest.fixture
def server(tls_fault_server: FaultServer) -> FaultServer:
    tls_fault_server.reset()
    return tls_fault_server


class SNIServer:
    """A TLS FaultServer (cert for localhost and 127.0.0.1) recording the SNI of each hello."""

    def __init__(self, ca: trustme.CA) -> None:
        context = server_ssl_context(ca)
        context.sni_callback = self._on_sni
        self._lock = threading.Lock()
        self._names: list[str | None] = []
        self.server = FaultServer(ssl_context=context)

    def _on_sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        with self._lock:  # called on the server's thread
            self._names.append(name)

    def names(self) -> list[str | None]:
        with self._lock:
            names, self._names = self._names, []
            return names


@pytest.fixture(scope="module")
def sni_server(tls_ca: trustme.CA) -> Iterator[SNIServer]:
    recorder = SNIServer(tls_ca)
    with recorder.server:
        yield recorder


@pytest.fixture(scope="module")
def other_name_server(tls_ca: trustme.CA) -> Iterator[FaultServer]:
    """A TLS FaultServer whose certificate (from the trusted CA) is for other.test only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("other.test").configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    with FaultServer(ssl_context=context) as server:
        yield server


def origin(server: FaultServer) -> str:
    return f"https://localhost:{server.port}"


def sockets_to(port: int) -> int | None:
    """How many of this process's TCP sockets connect to 127.0.0.1:`port` (None: no procfs)."""
    try:
        fds = os.listdir("/proc/self/fd")
        with open("/proc/net/tcp") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return None
    inodes = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for row in rows:
        fields = row.split()
        if int(fields[2].rpartition(":")[2], 16) == port and fields[9] in inodes:
            count += 1
    return count


class MuteTLSServer:
    """Answers one request over TLS, then neither reads nor closes until `release()`.

    A peer that never answers our close_notify: wedged, or gone without a FIN reaching us.
    """

    def __init__(self, ca: trustme.CA) -> None:
        self._context = server_ssl_context(ca)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5.0)
        self.port: int = self._listener.getsockname()[1]
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="MuteTLSServer", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._thread.join(5.0)
        self._listener.close()

    def release(self) -> None:
        self._released.set()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        conn.settimeout(5.0)
        try:
            with self._context.wrap_socket(conn, server_side=True) as tls:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = tls.recv(65536)
                    if not data:
                        return
                    head += data
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                self._released.wait(5.0)
        except OSError:
            pass  # the client gave up: fine
        finally:
            conn.close()


# Verification that succeeds --------------------------------------------------------------------


async def test_verify_with_ca_path_reuses_the_tls_socket(server: FaultServer, ca_path: str) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(verify=ca_path, trace=events.append) as client:
        first = await client.get(f"{server.url}/echo?id=1")
        second = await client.get(f"{server.url}/echo?id=2")
        assert [first.json()["id"], second.json()["id"]] == ["1", "2"]
        assert first.http_version == second.http_version == "HTTP/1.1"
        assert not first.conn_info.reused
        assert second.conn_info.reused
        assert second.conn_info.was_idle
        assert second.headers["x-conn-id"] == first.headers["x-conn-id"]
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.reused) == (1, 1)
        assert stats.hosts[origin(server)].idle == 1
    assert server.connections_accepted == 1
    # One handshake for two requests.
    (tls_done,) = [e for e in events if e.name == "tls_handshake_done"]
    assert tls_done.info["version"] in ("TLSv1.2", "TLSv1.3")
    assert tls_done.info["alpn"] == "http/1.1"
    assert tls_done.info["cipher"]


async def test_verify_with_a_path_object(server: FaultServer, ca_path: str) -> None:
    async with aiopool.Client(verify=pathlib.Path(ca_path)) as client:
        resp = await client.get(f"{server.url}/bytes/10")
        assert resp.content == b"x" * 10


async def test_verify_with_an_ssl_context(
    server: FaultServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(verify=client_ssl_context) as client:
        assert pool_of(client)._ssl_context() is client_ssl_context  # used as given
        first = await client.get(f"{server.url}/echo")
        second = await client.get(f"{server.url}/echo")
        assert second.conn_info.reused
        assert second.headers["x-conn-id"] == first.headers["x-conn-id"]
        assert_settled(client)


async def test_certificate_valid_for_the_ip_literal(server: FaultServer, ca_path: str) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        resp = await client.get(f"https://127.0.0.1:{server.port}/echo")
        assert resp.status_code == 200
        assert f"https://127.0.0.1:{server.port}" in client.stats().hosts


async def test_verify_false_skips_verification(other_name_server: FaultServer) -> None:
    # Wrong name and an untrusted issuer (no CA given): still connects, as asked, and says so.
    async with aiopool.Client(verify=False) as client:
        ctx = pool_of(client)._ssl_context()
        assert ctx.verify_mode == ssl.CERT_NONE
        assert not ctx.check_hostname
        with pytest.warns(aiopool.InsecureRequestWarning, match="without certificate verif"):
            resp = await client.get(f"{other_name_server.url}/echo?id=unverified")
        assert resp.json()["id"] == "unverified"
        assert_settled(client)


async def test_verify_false_warns_once_per_host_per_client(other_name_server: FaultServer) -> None:
    # urllib3's InsecureRequestWarning, which requests shows once per host: here once per
    # host per client, when the first unverified connection to that host is set up.
    port = other_name_server.port
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every emission, not what Python would show
        for _ in range(2):
            async with aiopool.Client(verify=False, max_idle_per_host=0) as client:
                for host in ("localhost", "localhost", "127.0.0.1", "localhost"):
                    resp = await client.get(f"https://{host}:{port}/echo")
                    assert resp.status_code == 200
                assert client.stats().connections_opened == 4  # a new socket every time
    insecure = [w for w in caught if issubclass(w.category, aiopool.InsecureRequestWarning)]
    hosts = [str(w.message).split()[2] for w in insecure]
    assert hosts == ["localhost", "127.0.0.1"] * 2
    assert issubclass(aiopool.InsecureRequestWarning, aiopool.AiopoolWarning)
    assert [w for w in caught if w not in insecure] == []


async def test_verify_with_a_trusting_context_does_not_warn(
    server: FaultServer, client_ssl_context: ssl.SSLContext
) -> None:
    async with aiopool.Client(verify=client_ssl_context) as client:  # filterwarnings=error
        assert (await client.get(f"{origin(server)}/echo")).status_code == 200


# Verification that fails -----------------------------------------------------------------------


async def test_system_store_does_not_trust_the_test_ca(server: FaultServer) -> None:
    async with aiopool.Client() as client:  # verify=True: the system CA store
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get(f"{server.url}/echo")
        message = str(info.value)
        assert "certificate verification failed" in message
        assert f"localhost:{server.port}" in message
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened) == (1, 0)
        assert stats.hosts[origin(server)].idle == 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [("localhost", "hostname mismatch"), ("127.0.0.1", "ip address mismatch")],
)
async def test_certificate_for_another_name_is_refused(
    other_name_server: FaultServer, ca_path: str, host: str, reason: str
) -> None:
    async with aiopool.Client(verify=ca_path) as client:
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get(f"https://{host}:{other_name_server.port}/echo")
        message = str(info.value)
        assert "certificate" in message
        assert reason in message.lower()
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.idle) == (0, 0)


def tls_1_0_only_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server context that speaks TLS 1.0 and nothing newer (what old appliances run)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    with warnings.catch_warnings():  # Python deprecates TLS 1.0 itself: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.0 only at level 0
    return context


@pytest.fixture(scope="module")
def tls_1_0_server(tls_ca: trustme.CA) -> Iterator[FaultServer]:
    """asyncio's TLS layer (as the rig's server): it closes on a failed handshake without
    sending the protocol_version alert, so the client sees only the connection close."""
    with FaultServer(ssl_context=tls_1_0_only_context(tls_ca)) as server:
        yield server


class AlertingTLS10Server:
    """A blocking TLS 1.0-only server (OpenSSL on a socket) for one connection: it answers
    the hello with a protocol_version alert before closing, as a real old server does."""

    def __init__(self, ca: trustme.CA) -> None:
        self._context = tls_1_0_only_context(ca)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)  # (a bound on the thread if no client ever comes)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve_one, daemon=True)

    def _serve_one(self) -> None:
        with contextlib.suppress(OSError):  # ssl.SSLError included: the expected failure
            sock, _ = self._listener.accept()
            with sock:
                sock.settimeout(10)
                self._context.wrap_socket(sock, server_side=True).close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("traced", [False, True], ids=["one-step", "traced-two-step"])
@pytest.mark.parametrize("alert", [False, True], ids=["closes", "alerts"])
async def test_a_tls_1_0_only_server_fails_with_a_message_that_says_why(
    tls_1_0_server: FaultServer, tls_ca: trustme.CA, ca_path: str, alert: bool, traced: bool
) -> None:
    # Reported: "could not connect to localhost:PORT: " with nothing after the colon (asyncio's
    # TLS layer raises a bare ConnectionResetError() when the peer closes mid-handshake).
    trace = (lambda event: None) if traced else None
    with contextlib.ExitStack() as stack:
        if alert:
            port = stack.enter_context(AlertingTLS10Server(tls_ca)).port
        else:
            port = tls_1_0_server.port
        async with aiopool.Client(verify=ca_path, trace=trace) as client:
            with pytest.raises(aiopool.ConnectError) as info:
                await client.get(f"https://localhost:{port}/")
            assert_settled(client)
    message = str(info.value)
    assert message.startswith(f"TLS handshake with localhost:{port} failed: "), message
    assert not message.rstrip().endswith(":"), message
    assert "TLS 1.2" in message, message  # what the client needs, so what the server lacks
    if alert:
        assert "TLSV1_ALERT_PROTOCOL_VERSION" in message, message
    else:
        assert "closed the connection" in message, message


async def test_a_certificate_failure_names_the_verify_code(server: FaultServer) -> None:
    async with aiopool.Client() as client:  # the system store: the test CA is unknown
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get(f"{origin(server)}/echo")
    cause = info.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert f"{cause.verify_message} (verify code {cause.verify_code})" in str(info.value)


async def test_plain_http_to_a_tls_port_is_a_protocol_error(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        with pytest.raises(aiopool.RemoteProtocolError, match="without sending a response"):
            await client.get(f"http://127.0.0.1:{server.port}/echo")
        stats = assert_settled(client)
        assert (stats.connections_opened, stats.connections_closed) == (1, 1)


async def test_tls_handshake_timeout(blackhole: BlackholeServer, ca_path: str) -> None:
    timeout = aiopool.Timeout(connect=0.2)
    async with aiopool.Client(verify=ca_path, timeout=timeout) as client:
        with pytest.raises(aiopool.ConnectTimeout) as info:
            await client.get(f"https://127.0.0.1:{blackhole.port}/")
        assert f"127.0.0.1:{blackhole.port}" in str(info.value)
        stats = assert_settled(client)
        assert (stats.requests, stats.connections_opened) == (1, 0)
        # The half-made TLS socket was closed, not leaked. (The blackhole never reads, so it
        # cannot see the close; look at our own descriptors instead.)
        if sockets_to(blackhole.port) is not None:
            await eventually(lambda: sockets_to(blackhole.port) == 0)


# SNI and the client's context ------------------------------------------------------------------


async def test_sni_names_the_host(sni_server: SNIServer, ca_path: str) -> None:
    sni_server.names()
    port = sni_server.server.port
    async with aiopool.Client(verify=ca_path) as client:
        await client.get(f"https://localhost:{port}/echo")
        assert sni_server.names() == ["localhost"]
        # RFC 6066 section 3: no SNI for an IP literal.
        await client.get(f"https://127.0.0.1:{port}/echo")
        assert sni_server.names() == [None]


async def test_one_ssl_context_per_client(server: FaultServer, ca_path: str) -> None:
    async with (
        aiopool.Client(verify=ca_path) as client,
        aiopool.Client(verify=ca_path) as other,
    ):
        ctx = pool_of(client)._ssl_context()
        assert ctx is not pool_of(other)._ssl_context()
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.check_hostname
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        for host in ("localhost", "127.0.0.1", "localhost"):
            await client.get(f"https://{host}:{server.port}/echo")
            assert pool_of(client)._ssl_context() is ctx
        assert assert_settled(client).connections_opened == 2  # one per origin


async def test_aclose_closes_tls_sockets_without_waiting_for_the_peer(
    tls_ca: trustme.CA, ca_path: str
) -> None:
    if sockets_to(0) is None:
        pytest.skip("needs /proc/self/fd and /proc/net/tcp")
    with MuteTLSServer(tls_ca) as mute:
        async with aiopool.Client(verify=ca_path) as client:
            resp = await client.get(f"https://localhost:{mute.port}/")
            assert resp.content == b"ok"
            assert sockets_to(mute.port) == 1
        try:
            await asyncio.sleep(0.05)  # dozens of loop iterations: a TCP close takes one
            assert sockets_to(mute.port) == 0
        finally:
            mute.release()  # the server closes; our half-closed TLS socket then closes too
            await eventually(lambda: sockets_to(mute.port) == 0)


@pytest.mark.parametrize("verify", [True, False, "ca_path"])
def test_tls_1_2_is_the_minimum(verify: bool | str, ca_path: str) -> None:
    client = aiopool.Client(verify=ca_path if verify == "ca_path" else verify)
    assert pool_of(client)._ssl_context().minimum_version == ssl.TLSVersion.TLSv1_2
    assert not client.is_closed  # never used, nothing to close


def test_missing_ca_bundle_fails_at_construction(tmp_path: pathlib.Path) -> None:
    # A configuration mistake, not a transport failure: a plain FileNotFoundError, deliberately
    # not an AiopoolError, raised before any request could be made.
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(FileNotFoundError, match=r"no-such-ca\.pem") as info:
        aiopool.Client(verify=str(missing))
    assert not isinstance(info.value, aiopool.AiopoolError)


def test_verify_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="verify must be"):
        aiopool.Client(verify=42)  # type: ignore[arg-type]
