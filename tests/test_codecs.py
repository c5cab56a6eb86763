"""Which codec (HTTP/1.1) or engine (HTTP/2) served a request: the parametrisation is real.

Modules and tests marked `both_parsers` / `both_engines` run once per implementation
(tests/conftest.py). These tests check that the connections built in each run really use the
implementation the run names, so a broken switch cannot pass the suite twice on one parser.
"""

from __future__ import annotations

import pytest

import aiopool
from tests.helpers import connections_of
from tests.rig.fault_server import FaultServer
from tests.rig.h2_server import H2ScriptServer


@pytest.mark.both_parsers
async def test_each_parser_run_is_served_by_that_codec(
    fresh_fault_server: FaultServer, http1_parser: str | None
) -> None:
    assert http1_parser in ("h11", "httptools")
    async with aiopool.Client() as client:  # "auto": the run's codec
        for _ in range(2):  # (the second on the reused socket)
            resp = await client.get(f"{fresh_fault_server.url}/echo")
            assert resp.status_code == 200
        conns = connections_of(client)
        assert [conn.implementation for conn in conns] == [http1_parser]
        assert f", {http1_parser}]>" in repr(conns[0])


@pytest.mark.both_engines
async def test_each_engine_run_is_served_by_that_engine(
    fresh_h2_server: H2ScriptServer, http2_engine: str | None
) -> None:
    assert http2_engine in ("h2", "native")
    async with aiopool.Client(http1=False) as client:  # h2c by prior knowledge
        resp = await client.get(f"{fresh_h2_server.url}/")
        assert resp.http_version == "HTTP/2"
        assert [conn.implementation for conn in connections_of(client)] == [http2_engine]


@pytest.mark.parametrize("parser", ["h11", "httptools"])
async def test_the_client_option_picks_the_codec(fault_server: FaultServer, parser: str) -> None:
    # Unmarked: the library's default stays "auto", and the option alone decides.
    async with aiopool.Client(http1_parser=parser) as client:  # type: ignore[arg-type]
        await client.get(f"{fault_server.url}/echo")
        assert [conn.implementation for conn in connections_of(client)] == [parser]


async def test_auto_prefers_llhttp_when_httptools_is_installed(
    fault_server: FaultServer, http1_parser: str | None, http2_engine: str | None
) -> None:
    assert http1_parser is None and http2_engine is None  # unmarked: not parametrised
    pytest.importorskip("httptools")
    async with aiopool.Client() as client:
        await client.get(f"{fault_server.url}/echo")
        assert [conn.implementation for conn in connections_of(client)] == ["httptools"]


async def test_auto_speaks_http2_on_the_native_engine(
    fresh_h2_server: H2ScriptServer, http2_engine: str | None
) -> None:
    assert http2_engine is None  # unmarked: the library's own default
    async with aiopool.Client(http1=False) as client:
        await client.get(f"{fresh_h2_server.url}/echo")
        assert [conn.implementation for conn in connections_of(client)] == ["native"]


def test_the_retired_jh2_engine_is_refused_with_the_reason() -> None:
    # jh2 was an engine before the native one overtook it; naming it must not silently run
    # something else.
    with pytest.raises(ValueError, match=r"retired.*native"):
        aiopool.Client(http2_engine="jh2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'auto', 'h2' or 'native'"):
        aiopool.Client(http2_engine="h3")  # type: ignore[arg-type]
