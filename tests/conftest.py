"""Shared fixtures: real servers for the client to talk to.

All servers are session-scoped: they run outside the tests' event loops (FaultServer and
BlackholeServer in their own threads, nginx in its own process), so one instance serves every
test. Tests therefore must not assume absolute counter values on a shared server; use
``fresh_fault_server`` to start from zeroed counters, and compare ``X-Conn-Id`` values with each
other rather than with fixed numbers.

Tests that use the ``nginx`` fixture are marked ``nginx`` automatically (see
``pytest_collection_modifyitems``), so ``pytest -m "not nginx"`` deselects them. Without an
nginx binary they are skipped, except under CI where that is a failure.

This module must not import aiopool: the rig has to work while the library is being written.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.rig.fault_server import BlackholeServer, FaultServer, server_ssl_context
from tests.rig.h2_server import H2ScriptServer
from tests.rig.hypercorn_app import HypercornServer, RigApp
from tests.rig.nginx import Nginx, find_nginx
from tests.rig.starlette_app import BodiesApp

# Apache httpd, caddy, h2o, nghttpd and node: session fixtures and their markers.
pytest_plugins = ["tests.rig.fixtures"]


def _running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark by fixture use so nobody has to remember the marker for -m selection to work.
    for item in items:
        if "nginx" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.nginx)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The CA that issued every server certificate in the rig."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_path(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of the CA certificate (PEM), for ``verify=ca_path``-style client options."""
    path: Path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A client context trusting ``tls_ca``. Shared: build your own to change settings."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    """Plain-HTTP FaultServer at ``fault_server.url``."""
    server = FaultServer()
    with server:  # started on entry, stopped on exit
        yield server


@pytest.fixture
def fresh_fault_server(fault_server: FaultServer) -> FaultServer:
    """The session's ``fault_server`` with its counters zeroed for this test."""
    fault_server.reset()
    return fault_server


@pytest.fixture(scope="session")
def tls_fault_server(tls_ca: trustme.CA) -> Iterator[FaultServer]:
    """FaultServer over TLS (ALPN http/1.1) at ``https://localhost:PORT``, cert from tls_ca."""
    server = FaultServer(ssl_context=server_ssl_context(tls_ca))
    with server:  # started on entry, stopped on exit
        yield server


@pytest.fixture(scope="session")
def blackhole() -> Iterator[BlackholeServer]:
    """Accepts connections and never answers."""
    server = BlackholeServer()
    with server:  # started on entry, stopped on exit
        yield server


@pytest.fixture(scope="session")
def nginx(tls_ca: trustme.CA) -> Iterator[Nginx]:
    """A real nginx (HTTP/1.1, HTTPS with h2, h2c); its certificate is issued by tls_ca."""
    if find_nginx() is None:
        if _running_under_ci():
            pytest.fail(
                "nginx is required under CI (CI is set) but was not found on PATH or in the "
                "sbin directories; .ci/run installs it",
                pytrace=False,
            )
        pytest.skip("nginx not installed")
    server = Nginx(tls_ca)
    with server:  # started on entry, stopped on exit
        yield server


# -- HTTP/2 servers --------------------------------------------------------------------------
# Imported here rather than at the top so this section stays a pure append to the file.


@pytest.fixture(scope="session")
def h2_server() -> Iterator[H2ScriptServer]:
    """Scripted HTTP/2 server, cleartext with prior knowledge (h2c), at ``h2_server.url``.

    Shared by the session: use ``fresh_h2_server`` so knobs left by another test cannot leak
    into yours.
    """
    server = H2ScriptServer()
    with server:  # started on entry, stopped on exit
        yield server


def _fresh(server: H2ScriptServer) -> H2ScriptServer:
    server.reset_script()
    server.reset()
    return server


@pytest.fixture
def fresh_h2_server(h2_server: H2ScriptServer) -> H2ScriptServer:
    """The session's ``h2_server`` with default knobs and zeroed counters for this test."""
    return _fresh(h2_server)


@pytest.fixture(scope="session")
def tls_h2_server(tls_ca: trustme.CA) -> Iterator[H2ScriptServer]:
    """Scripted HTTP/2 server over TLS (ALPN ``h2`` only) at ``https://localhost:PORT``."""
    server = H2ScriptServer(ssl_context=server_ssl_context(tls_ca, alpn=("h2",)))
    with server:  # started on entry, stopped on exit
        yield server


@pytest.fixture
def fresh_tls_h2_server(tls_h2_server: H2ScriptServer) -> H2ScriptServer:
    """``tls_h2_server`` with default knobs and zeroed counters for this test."""
    return _fresh(tls_h2_server)


@pytest.fixture(scope="session")
def hypercorn_server(tls_ca: trustme.CA) -> Iterator[HypercornServer]:
    """hypercorn over TLS (ALPN ``h2``, ``http/1.1``) at ``https://localhost:PORT``."""
    server = HypercornServer(tls_ca)
    with server:  # started on entry, stopped on exit
        yield server


@pytest.fixture(scope="session")
def bodies_server(tls_ca: trustme.CA) -> Iterator[HypercornServer]:
    """hypercorn over TLS (``h2``, ``http/1.1``) serving the Starlette app of
    ``rig.starlette_app`` (forms parsed by python-multipart, SSE and NDJSON streams, a proxy)."""
    bodies = BodiesApp(tls_ca)
    app = RigApp(bodies.starlette, startup=bodies.startup, shutdown=bodies.shutdown)
    server = HypercornServer(tls_ca, app=app)
    with server:
        yield server


# Both HTTP/1.1 codecs must pass the same behaviour tests, and every HTTP/2 engine: a module
# (`pytestmark = pytest.mark.both_parsers`) or a test marked so runs once with each, h11 and h2
# being the references, httptools the speedups extra, "native" aiopool's own engine (the default).
# The autouse fixtures below make the chosen one the library's "auto" default for the test;
# `tests/test_codecs.py` checks that the connections built then really use it.
_PARSERS = ("h11", "httptools")
_ENGINES = ("h2", "native")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # (A test that parametrises the fixture itself keeps its own values.)
    own = {
        name
        for mark in metafunc.definition.iter_markers("parametrize")
        for name in _argnames(mark.args[0])
    }
    if metafunc.definition.get_closest_marker("both_parsers") and "http1_parser" not in own:
        metafunc.parametrize("http1_parser", _PARSERS, indirect=True)
    if metafunc.definition.get_closest_marker("both_engines") and "http2_engine" not in own:
        metafunc.parametrize("http2_engine", _ENGINES, indirect=True)


def _argnames(names: str | list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(names, str):
        return [name.strip() for name in names.split(",")]
    return list(names)


def _choose_default(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, setting: str
) -> str | None:
    """Point the library's "auto" `setting` (module.ATTRIBUTE) at this test's parameter."""
    choice: str | None = getattr(request, "param", None)
    if choice is not None:
        module, attribute = setting.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(module), attribute, choice)
    return choice


@pytest.fixture(autouse=True)
def http2_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The HTTP/2 engine a parametrised test runs with (None: the library's default)."""
    return _choose_default(request, monkeypatch, "aiopool._h2engine.DEFAULT_ENGINE")


@pytest.fixture(autouse=True)
def http1_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The HTTP/1.1 parser a parametrised test runs with (None: the library's default)."""
    return _choose_default(request, monkeypatch, "aiopool._pool_transport.DEFAULT_HTTP1_PARSER")


# Against real servers, the same tests also run on uvloop (when installed), the loop many
# applications run in production.
_UVLOOP_MODULES = frozenset(
    {
        "tests.test_nginx",
        "tests.test_http2_nginx",
        "tests.test_proxy",
        "tests.test_network",
        "tests.test_resolver",
    }
)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    module = getattr(item, "module", None)
    if module is not None and module.__name__ in _UVLOOP_MODULES:
        try:
            import uvloop
        except ImportError:  # uvloop is optional: asyncio alone is still covered
            return factories
        factories["uvloop"] = uvloop.new_event_loop
    return factories
