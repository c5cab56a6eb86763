"""Session fixtures for the real servers run as child processes: Apache httpd, caddy, h2o,
nghttpd and node (registered from tests/conftest.py as a plugin).

Each fixture is named after its pytest marker and starts its server once per session. Without
the server's binary the tests using it are skipped, except under CI (``CI`` set), where that is
a failure: ``.ci/run`` installs them. Tests that use a fixture are marked automatically, so
``pytest -m "not apache"`` deselects them; a test that reaches a server indirectly (through
``request.getfixturevalue``) carries the marker itself. When such a test fails, the servers'
logs are attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Final

import pytest
import trustme

from ._process import Docroot, ProcessServer, find_binary
from .apache import Apache
from .caddy import Caddy
from .h2o import H2o
from .nghttpd import Nghttpd
from .node import Node

__all__ = ["SERVERS"]

# Fixture (and marker) name -> server class.
SERVERS: Final[dict[str, type[ProcessServer]]] = {
    "apache": Apache,
    "caddy": Caddy,
    "h2o": H2o,
    "nghttpd": Nghttpd,
    "nodejs": Node,
}

# The servers started so far, by fixture name, for the failure reports.
_running: dict[str, ProcessServer] = {}


def _running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for name in SERVERS.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(getattr(pytest.mark, name))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for name, server in _running.items():
            if name in item.keywords:
                report.sections.append((f"{name} log", server.log() or "(empty)"))
    return report


@pytest.fixture(scope="session")
def real_docroot() -> Iterator[Docroot]:
    """The files every process server serves (``rig._process.BODIES``), written once."""
    docroot = Docroot()
    try:
        yield docroot
    finally:
        docroot.remove()


def _serve(name: str, ca: trustme.CA, docroot: Docroot) -> Iterator[ProcessServer]:
    kind = SERVERS[name]
    if find_binary(kind.BINARY) is None:
        if _running_under_ci():
            pytest.fail(
                f"{kind.BINARY} is required under CI (CI is set) but was not found on PATH or "
                "in the sbin directories; .ci/run installs it",
                pytrace=False,
            )
        pytest.skip(f"{kind.BINARY} not installed")
    server = kind(ca, docroot)
    with server:  # started on entry, stopped on exit
        _running[name] = server
        try:
            yield server
        finally:
            del _running[name]


@pytest.fixture(scope="session")
def apache(tls_ca: trustme.CA, real_docroot: Docroot) -> Iterator[ProcessServer]:
    """Apache httpd with mod_http2: TLS (h2, http/1.1), h2c; limited listeners."""
    yield from _serve("apache", tls_ca, real_docroot)


@pytest.fixture(scope="session")
def caddy(tls_ca: trustme.CA, real_docroot: Docroot) -> Iterator[ProcessServer]:
    """caddy: TLS (h2, http/1.1), h2c."""
    yield from _serve("caddy", tls_ca, real_docroot)


@pytest.fixture(scope="session")
def h2o(tls_ca: trustme.CA, real_docroot: Docroot) -> Iterator[ProcessServer]:
    """h2o: TLS (h2, http/1.1), h2c."""
    yield from _serve("h2o", tls_ca, real_docroot)


@pytest.fixture(scope="session")
def nghttpd(tls_ca: trustme.CA, real_docroot: Docroot) -> Iterator[ProcessServer]:
    """nghttpd: TLS (h2 only), h2c."""
    yield from _serve("nghttpd", tls_ca, real_docroot)


@pytest.fixture(scope="session")
def nodejs(tls_ca: trustme.CA, real_docroot: Docroot) -> Iterator[ProcessServer]:
    """node's http2 module: TLS (h2, http/1.1), h2c; limited listeners."""
    yield from _serve("nodejs", tls_ca, real_docroot)
