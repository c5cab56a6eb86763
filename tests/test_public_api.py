"""The public surface fixed by the design contract: names, fields, the exception tree, the
lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.resources
import inspect
import os
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import aiopool
from tests.helpers import assert_settled
from tests.rig.fault_server import FaultServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# __all__ ---------------------------------------------------------------------------------------


def test_all_is_a_tuple_of_unique_existing_names() -> None:
    assert isinstance(aiopool.__all__, tuple)
    assert len(set(aiopool.__all__)) == len(aiopool.__all__)
    missing = [name for name in aiopool.__all__ if not hasattr(aiopool, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    # anyio's test_all_attributes idea: nothing public is exported by accident or forgotten.
    public = {
        name
        for name, value in vars(aiopool).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith("aiopool")
    }
    assert public - set(aiopool.__all__) == set()
    # ...and everything exported besides __version__ and the types for annotating hooks and
    # middleware (the trace event names, a `Literal`; `Handler` and `Middleware`, `Callable`
    # aliases) is such a class or function.
    assert set(aiopool.__all__) - public == {"__version__", "TraceName", "Handler", "Middleware"}


def test_exports_are_reexported_from_private_modules() -> None:
    for name in aiopool.__all__:
        value = getattr(aiopool, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("aiopool._"), name
            assert value.__name__ == name


# Annotations resolve at run time -------------------------------------------------------------
# pydantic, FastAPI and documentation tools call `typing.get_type_hints()` and
# `inspect.signature()` on what they are given: a string alias, or a name imported only under
# TYPE_CHECKING, makes them raise NameError or TypeError on our public signatures.


def _public_callables(qualname: str, obj: object) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The object itself and, for a class, its `__init__` and every public method, class or
    static method and property getter (inherited ones included: they are public there too)."""
    if inspect.isfunction(obj):
        yield qualname, obj
        return
    assert inspect.isclass(obj), qualname
    yield qualname, obj
    for name in ["__init__", *(n for n in dir(obj) if not n.startswith("_"))]:
        raw = inspect.getattr_static(obj, name)
        if isinstance(raw, property) and raw.fget is not None:
            yield f"{qualname}.{name}", raw.fget
        elif isinstance(raw, staticmethod | classmethod):
            yield f"{qualname}.{name}", raw.__func__
        elif inspect.isfunction(raw):
            yield f"{qualname}.{name}", raw


def _typed_dicts(hint: object) -> Iterator[type]:
    """TypedDicts inside a resolved hint (`**kwargs: Unpack[RequestOptions]`): their fields are
    part of the signature, so they must resolve as well."""
    if isinstance(hint, type) and typing.is_typeddict(hint):
        yield hint
    for arg in typing.get_args(hint):
        yield from _typed_dicts(arg)


def _unresolvable(module: types.ModuleType, prefix: str) -> tuple[list[str], int]:
    """What fails to resolve among the classes and functions `module.__all__` exports, and how
    many callables were looked at."""
    failures: list[str] = []
    checked = 0
    for name in module.__all__:
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # __version__, and TraceName (a Literal): nothing to resolve
        for where, func in _public_callables(prefix + name, value):
            checked += 1
            try:
                hints = typing.get_type_hints(func)
                for hint in hints.values():
                    for typed_dict in _typed_dicts(hint):
                        typing.get_type_hints(typed_dict)
            except Exception as exc:
                failures.append(f"get_type_hints({where}): {type(exc).__name__}: {exc}")
            try:
                inspect.signature(func)
            except (TypeError, ValueError) as exc:
                failures.append(f"signature({where}): {type(exc).__name__}: {exc}")
    return failures, checked


def test_every_public_annotation_resolves_at_runtime() -> None:
    failures, checked = _unresolvable(aiopool, "")
    assert failures == []
    assert checked > 100  # the walk did reach the methods, not only the names


def test_the_integrations_annotations_resolve_at_runtime() -> None:
    httpx_adapter = pytest.importorskip("aiopool.integrations.httpx")
    failures, checked = _unresolvable(httpx_adapter, "integrations.httpx.")
    assert failures == []
    assert checked > 1


def test_the_aliases_in_public_signatures_are_runtime_objects() -> None:
    # The root of the failures above: an alias written as a string is evaluated in the module
    # that uses it, where its names (`os`, `ssl`, `Headers`...) are not imported.
    verify = typing.get_type_hints(aiopool.Client.__init__)["verify"]
    assert any(typing.get_origin(arg) is os.PathLike for arg in typing.get_args(verify))
    headers = typing.get_type_hints(aiopool.Headers.__init__)["headers"]
    assert aiopool.Headers in typing.get_args(headers)
    cookies = typing.get_type_hints(aiopool.Cookies.__init__)["cookies"]
    assert aiopool.Cookies in typing.get_args(cookies)
    assert typing.get_type_hints(aiopool.TransportError)["request"] == aiopool.Request | None


def test_version_is_a_string() -> None:
    assert isinstance(aiopool.__version__, str)
    assert aiopool.__version__.count(".") >= 1


# Names fixed by the design contract ------------------------------------------------------------


def test_client_constructor_options() -> None:
    params = inspect.signature(aiopool.Client).parameters
    for name in (
        "max_connections",
        "max_connections_per_host",
        "max_idle_per_host",
        "idle_timeout",
        "http2",
        "timeout",
        "verify",
    ):
        assert name in params, name
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    defaults = {name: p.default for name, p in params.items()}
    assert defaults["max_connections"] == 100
    assert defaults["max_connections_per_host"] == 10
    assert defaults["max_idle_per_host"] == 10
    assert defaults["idle_timeout"] == 90.0
    assert defaults["http2"] is True
    assert defaults["verify"] is True


@pytest.mark.parametrize(
    "method", ["get", "head", "post", "put", "patch", "delete", "options", "request", "stream"]
)
def test_client_request_methods(method: str) -> None:
    func = getattr(aiopool.Client, method)
    assert callable(func)
    if method in ("request", "stream"):
        params = inspect.signature(func).parameters
        assert list(params)[:3] == ["self", "method", "url"]
        for keyword in ("headers", "params", "content", "json", "timeout"):
            assert params[keyword].kind is inspect.Parameter.KEYWORD_ONLY, keyword
    if method != "stream":
        assert inspect.iscoroutinefunction(func)
    else:
        assert not inspect.iscoroutinefunction(func)  # `async with client.stream(...)`


def test_client_lifecycle_methods() -> None:
    assert inspect.iscoroutinefunction(aiopool.Client.aclose)
    assert callable(aiopool.Client.stats)
    assert hasattr(aiopool.Client, "__aenter__")
    assert hasattr(aiopool.Client, "__aexit__")


def test_response_attributes() -> None:
    request = aiopool.Request("GET", aiopool.URL("http://example.org/"), aiopool.Headers())
    info = aiopool.ConnInfo(1, False, False, 0.0, "HTTP/1.1")
    resp = aiopool.Response(200, request=request, conn_info=info, content=b"{}")
    for name in (
        "status_code",
        "reason",
        "headers",
        "http_version",
        "url",
        "request",
        "conn_info",
        "content",
        "text",
        "encoding",
        "is_success",
        "is_closed",
    ):
        assert hasattr(resp, name), name
    for name in ("json", "raise_for_status"):
        assert callable(getattr(resp, name)), name
    for name in ("aread", "aclose"):
        assert inspect.iscoroutinefunction(getattr(resp, name)), name
    assert inspect.isasyncgenfunction(aiopool.Response.aiter_bytes)


def test_timeout_fields() -> None:
    fields = [f.name for f in dataclasses.fields(aiopool.Timeout)]
    # The four per-phase timeouts of the contract, then the deadlines (`total` is fixed by it).
    assert fields == [
        "connect",
        "read",
        "write",
        "pool",
        "total",
        "response_header",
        "tls_handshake",
    ]
    assert callable(aiopool.Timeout.coerce)


@pytest.mark.parametrize(
    ("cls", "names"),
    [
        (aiopool.ConnInfo, ["id", "reused", "was_idle", "idle_time", "http_version"]),
        (
            aiopool.PoolStats,
            ["requests", "connections_opened", "connections_closed", "reused", "hosts", "retries"],
        ),
        (
            aiopool.HostStats,
            [
                "active",
                "idle",
                "connecting",
                "waiting",
                "opened",
                "reused",
                "requests",
                "streams",
                "retries",
            ],
        ),
    ],
)
def test_introspection_types_are_frozen_dataclasses(cls: type, names: list[str]) -> None:
    assert dataclasses.is_dataclass(cls)
    assert [f.name for f in dataclasses.fields(cls)] == names
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_introspection_snapshots_cannot_be_changed() -> None:
    info = aiopool.ConnInfo(1, True, True, 0.5, "HTTP/1.1")
    host = aiopool.HostStats(0, 1, 0, 0, 1, 1, 2, 0)
    stats = aiopool.PoolStats(2, 1, 0, 1, {"http://h:80": host})
    for obj, field in ((info, "reused"), (host, "idle"), (stats, "requests")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, 99)
    assert (stats.active, stats.idle, stats.connecting, stats.waiting) == (0, 1, 0, 0)


# The exception tree ----------------------------------------------------------------------------

EXCEPTIONS = [
    value
    for name in aiopool.__all__
    if inspect.isclass(value := getattr(aiopool, name))
    and issubclass(value, BaseException)
    and not issubclass(value, Warning)
]
WARNINGS = [
    value
    for name in aiopool.__all__
    if inspect.isclass(value := getattr(aiopool, name)) and issubclass(value, Warning)
]


@pytest.mark.parametrize("warning", WARNINGS, ids=lambda w: w.__name__)
def test_every_warning_derives_from_aiopool_warning_and_is_no_error(
    warning: type[Warning],
) -> None:
    assert issubclass(warning, aiopool.AiopoolWarning)
    assert not issubclass(warning, aiopool.AiopoolError)  # `except AiopoolError` is for errors


def test_insecure_request_warning_is_public() -> None:
    assert aiopool.InsecureRequestWarning in WARNINGS


def test_design_md_exception_names_exist() -> None:
    for name in (
        "AiopoolError",
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "RemoteProtocolError",
        "LocalProtocolError",
        "InvalidURL",
    ):
        assert getattr(aiopool, name) in EXCEPTIONS


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda e: e.__name__)
def test_every_exception_derives_from_aiopool_error(exc: type[BaseException]) -> None:
    assert issubclass(exc, aiopool.AiopoolError)
    assert issubclass(exc, Exception)  # never BaseException-only: `except Exception` sees them


@pytest.mark.parametrize(
    ("exc", "parent"),
    [
        (aiopool.ConnectTimeout, aiopool.TimeoutException),
        (aiopool.ReadTimeout, aiopool.TimeoutException),
        (aiopool.WriteTimeout, aiopool.TimeoutException),
        (aiopool.PoolTimeout, aiopool.TimeoutException),
        (aiopool.TimeoutException, aiopool.TransportError),
        (aiopool.ConnectError, aiopool.NetworkError),
        (aiopool.ReadError, aiopool.NetworkError),
        (aiopool.WriteError, aiopool.NetworkError),
        (aiopool.NetworkError, aiopool.TransportError),
        (aiopool.RemoteProtocolError, aiopool.ProtocolError),
        (aiopool.LocalProtocolError, aiopool.ProtocolError),
        (aiopool.ProtocolError, aiopool.TransportError),
        (aiopool.StreamConsumed, aiopool.StreamError),
        (aiopool.StreamClosed, aiopool.StreamError),
    ],
    ids=lambda e: e.__name__,
)
def test_exception_tree(exc: type[Exception], parent: type[Exception]) -> None:
    assert issubclass(exc, parent)


def test_exception_families_do_not_overlap() -> None:
    assert not issubclass(aiopool.ConnectTimeout, aiopool.NetworkError)
    assert not issubclass(aiopool.ConnectError, aiopool.TimeoutException)
    assert not issubclass(aiopool.InvalidURL, aiopool.TransportError)
    assert not issubclass(aiopool.ClientClosed, aiopool.TransportError)
    assert not issubclass(aiopool.HTTPStatusError, aiopool.TransportError)


def test_transport_errors_carry_an_optional_request() -> None:
    exc = aiopool.ReadTimeout("timed out")
    assert exc.request is None
    request = aiopool.Request("GET", aiopool.URL("http://example.org/"), aiopool.Headers())
    exc.request = request
    assert exc.request is request


# Packaging -------------------------------------------------------------------------------------


def test_py_typed_ships_in_the_package() -> None:
    assert importlib.resources.files("aiopool").joinpath("py.typed").is_file()
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as f:
        config = tomllib.load(f)
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["aiopool"]


# Lifecycle -------------------------------------------------------------------------------------


@pytest.fixture
def server(fresh_fault_server: FaultServer) -> FaultServer:
    return fresh_fault_server


async def test_async_with_closes_the_client(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        assert not client.is_closed
        await client.get(f"{server.url}/echo")
        assert client.stats().idle == 1
    assert client.is_closed
    stats = client.stats()
    assert stats.idle == 0
    assert stats.connections_closed == stats.connections_opened == 1
    assert await server.wait_for_async(lambda: server.open_connections() == 0)


async def test_closed_client_refuses_new_requests(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        await client.get(f"{server.url}/echo")
    with pytest.raises(aiopool.ClientClosed):
        await client.get(f"{server.url}/echo")
    with pytest.raises(aiopool.ClientClosed):
        client.stream("GET", f"{server.url}/echo")
    with pytest.raises(aiopool.ClientClosed):
        async with client:
            pass
    await client.aclose()  # idempotent
    assert client.stats().requests == 1
    assert server.connections_accepted == 1


async def test_client_accepts_a_url_object(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        resp = await client.get(aiopool.URL(f"{server.url}/echo?id=u"))
        assert resp.json()["id"] == "u"


async def test_repr_shows_the_pool_counts(server: FaultServer) -> None:
    async with aiopool.Client() as client:
        assert "0 idle" in repr(client)
        await client.get(f"{server.url}/echo")
        text = repr(client)
        assert text.startswith("<aiopool.Client")
        assert "0 active" in text
        assert "1 idle" in text
        assert "0 connecting" in text
        assert_settled(client)


def test_a_client_refuses_a_second_event_loop_with_a_clear_error(
    fault_server: FaultServer,
) -> None:
    client = aiopool.Client()

    async def get() -> int:
        return (await client.get(f"{fault_server.url}/echo")).status_code

    first = asyncio.new_event_loop()
    try:
        assert first.run_until_complete(get()) == 200
        with pytest.raises(RuntimeError, match="first used on another event loop"):
            asyncio.run(get())
        first.run_until_complete(client.aclose())  # still fine on its own loop
    finally:
        first.close()
