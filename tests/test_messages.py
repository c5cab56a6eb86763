"""Messages a person reads.

What a timeout says: every ConnectTimeout, ReadTimeout, WriteTimeout and PoolTimeout names the
method, the origin (never credentials, path or query) and the phase it cut short, with the
timeout that ran out, and carries `.request`. Over HTTP/1.1 with both parsers (the fault
server's stalling routes), over HTTP/2 (the scripted peer), and for the dial and the pool."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import aiopool
from tests.helpers import assert_settled, eventually
from tests.rig.fault_server import BlackholeServer, FaultServer
from tests.rig.h2_server import H2ScriptServer

_READ = "no bytes arrived for 0.2 s (the read timeout)"
_WRITE = "the peer accepted no bytes for 0.2 s (the write timeout)"


def _origin(url: str) -> str:
    return str(aiopool.URL(url).origin)


async def _endless() -> AsyncIterator[bytes]:
    while True:
        yield b"x" * 65536


# HTTP/1.1, both parsers -------------------------------------------------------------------------


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_http11_read_timeout_waiting_for_the_head(
    fault_server: FaultServer, parser: str
) -> None:
    url = f"{fault_server.url}/stall-headers?token=hush"
    async with aiopool.Client(timeout=aiopool.Timeout(5, read=0.2), http1_parser=parser) as c:  # type: ignore[arg-type]
        with pytest.raises(aiopool.ReadTimeout) as info:
            await c.get(url)
        assert info.value.request is not None and info.value.request.url == aiopool.URL(url)
        assert str(info.value) == (
            f"GET {_origin(url)}: {_READ} while waiting for the response head"
        )
        assert "hush" not in str(info.value)  # the query may carry secrets: origin only
        assert_settled(c)


async def test_http11_read_timeout_in_the_body(fault_server: FaultServer, parser: str) -> None:
    url = f"{fault_server.url}/stall?sent=10"
    async with aiopool.Client(timeout=aiopool.Timeout(5, read=0.2), http1_parser=parser) as c:  # type: ignore[arg-type]
        with pytest.raises(aiopool.ReadTimeout) as info:
            await c.get(url)
        assert str(info.value) == f"GET {_origin(url)}: {_READ} while reading the response body"
        assert info.value.request is not None
        # Streamed: the body is read outside the client's call, and says the same.
        async with c.stream("GET", url) as response:
            with pytest.raises(aiopool.ReadTimeout) as streamed:
                await response.aread()
        assert str(streamed.value) == str(info.value)
        assert streamed.value.request is response.request
        assert_settled(c)


async def test_http11_write_timeout(blackhole: BlackholeServer, parser: str) -> None:
    url = f"{blackhole.url}/upload"
    async with aiopool.Client(timeout=aiopool.Timeout(5, write=0.2), http1_parser=parser) as c:  # type: ignore[arg-type]
        with pytest.raises(aiopool.WriteTimeout) as info:
            await c.post(url, content=_endless())
        assert str(info.value) == f"POST {_origin(url)}: {_WRITE} while writing the request"
        assert info.value.request is not None and info.value.request.method == "POST"
        assert_settled(c)


# HTTP/2 -----------------------------------------------------------------------------------------


@pytest.fixture
def h2(h2_server: H2ScriptServer) -> H2ScriptServer:
    h2_server.script()  # the defaults: no knobs left over from another test
    return h2_server


def _h2_client(**options: object) -> aiopool.Client:
    return aiopool.Client(http1=False, **options)  # type: ignore[arg-type]


async def test_http2_read_timeouts_name_the_phase(h2: H2ScriptServer) -> None:
    async with _h2_client(timeout=aiopool.Timeout(5, read=0.2)) as c:
        head = f"{h2.url}/stall-headers"
        with pytest.raises(aiopool.ReadTimeout) as info:
            await c.get(head)
        assert str(info.value) == (
            f"GET {_origin(head)}: {_READ} while waiting for the response head"
        )
        assert info.value.request is not None
        body = f"{h2.url}/stall"
        with pytest.raises(aiopool.ReadTimeout) as info:
            await c.get(body)
        assert str(info.value) == f"GET {_origin(body)}: {_READ} while reading the response body"
        assert info.value.request is not None
        assert_settled(c)


async def test_http2_upload_on_a_shut_window(h2: H2ScriptServer) -> None:
    h2.script(initial_window_size=65535, ack_delay=5.0)
    url = f"{h2.url}/upload"
    async with _h2_client(timeout=aiopool.Timeout(10, write=0.2)) as c:
        with pytest.raises(aiopool.WriteTimeout) as info:
            await c.post(url, content=b"x" * 300_000)
        assert str(info.value) == (
            f"POST {_origin(url)}: the server opened no flow-control window for 0.2 s "
            "(the write timeout) while writing the request"
        )
        assert info.value.request is not None
        assert_settled(c)


async def test_http2_preface_timeout(blackhole: BlackholeServer) -> None:
    # h2c by prior knowledge to a peer that never sends its SETTINGS.
    url = f"{blackhole.url}/"
    async with _h2_client(timeout=aiopool.Timeout(5, connect=0.2)) as c:
        with pytest.raises(aiopool.ConnectTimeout) as info:
            await c.get(url)
        origin = _origin(url)
        assert str(info.value) == (
            f"GET {origin}: no HTTP/2 SETTINGS from {origin} within the connect timeout (0.2 s)"
        )
        assert info.value.request is not None


# The dial and the pool ------------------------------------------------------------------------


@pytest.mark.parametrize("traced", [False, True])
async def test_tls_handshake_timeout_names_the_step(
    blackhole: BlackholeServer, ca_path: str, traced: bool
) -> None:
    # With a trace hook the dial takes two steps, so the message can say which one hung;
    # without one asyncio does TCP and TLS in one call and the message says both. The
    # credentials in the URL appear nowhere.
    port = blackhole.port
    url = f"https://user:secret@localhost:{port}/private?key=hush"
    hook = (lambda event: None) if traced else None
    timeout = aiopool.Timeout(5, connect=0.2)
    async with aiopool.Client(verify=ca_path, timeout=timeout, trace=hook) as c:
        with pytest.raises(aiopool.ConnectTimeout) as info:
            await c.get(url)
    step = "TLS handshake" if traced else "TCP connect and TLS handshake"
    assert str(info.value) == (
        f"GET https://localhost:{port}: {step} with localhost:{port} not done within the "
        "connect timeout (0.2 s)"
    )
    assert info.value.request is not None
    for secret in ("user", "secret", "private", "hush"):
        assert secret not in str(info.value)


async def test_pool_timeout(fault_server: FaultServer) -> None:
    async with aiopool.Client(max_connections_per_host=1) as c:
        busy = c.stream("GET", f"{fault_server.url}/stall?sent=10")
        async with busy:
            await eventually(lambda: c.stats().active == 1)
            url = f"{fault_server.url}/echo"
            with pytest.raises(aiopool.PoolTimeout) as info:
                await c.get(url, timeout=aiopool.Timeout(5, pool=0.2))
        origin = _origin(url)
        assert str(info.value) == (
            f"GET {origin}: no connection to {origin} became available within the pool "
            "timeout (0.2 s)"
        )
        assert info.value.request is not None
        assert_settled(c)


def test_a_timeout_without_a_request_says_what_it_knows() -> None:
    # Raised outside a client (a custom transport, a test double): no prefix to give.
    exc = aiopool.ReadTimeout("no bytes arrived for 1 s (the read timeout)")
    assert str(exc) == "no bytes arrived for 1 s (the read timeout)"
    exc.phase = "reading the response body"
    assert str(exc).endswith(" while reading the response body")


# Response repr ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "shown"), [("OK", "<Response [200 OK]>"), ("", "<Response [200]>")]
)
def test_response_repr(reason: str, shown: str) -> None:
    request = aiopool.Request("GET", aiopool.URL("http://example.test/"), aiopool.Headers())
    info = aiopool.ConnInfo(1, False, False, 0.0, "HTTP/1.1")
    assert repr(aiopool.Response(200, reason=reason, request=request, conn_info=info)) == shown


async def test_a_silent_proxy_names_the_origin_and_the_proxy_without_credentials(
    blackhole: BlackholeServer,
) -> None:
    proxy = f"http://user:secret@127.0.0.1:{blackhole.port}"
    async with aiopool.Client(proxy=proxy, timeout=aiopool.Timeout(5, connect=0.2)) as c:
        with pytest.raises(aiopool.ConnectTimeout) as info:
            await c.get("https://example.org/")
        assert str(info.value) == (
            "GET https://example.org:443: proxy handshake and TLS with https://example.org:443 "
            f"via http://127.0.0.1:{blackhole.port} not done within the connect timeout (0.2 s)"
        )
        assert "secret" not in str(info.value)
        assert info.value.request is not None
        assert_settled(c)
