"""`aiopool.MockTransport` and the hand-made `aiopool.Response`: testing code that uses aiopool.

Everything goes through the public API: a client given `transport=MockTransport(handler)`
builds its requests, follows redirects, keeps cookies, sends auth and decodes bodies for real;
only the exchange is answered by the handler. The snippets of docs/testing.md run here too.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aiopool

API = "https://api.test"


class Recorder:
    """A MockTransport handler that records every request and answers from a table."""

    def __init__(self, *answers: aiopool.Response) -> None:
        self.requests: list[aiopool.Request] = []
        self.bodies: list[bytes] = []
        self._answers = list(answers)

    async def __call__(self, request: aiopool.Request) -> aiopool.Response:
        self.requests.append(request)
        content = request.content
        if content is None or isinstance(content, bytes):
            self.bodies.append(content or b"")
        else:
            self.bodies.append(b"".join([chunk async for chunk in request.body_chunks()]))
        if self._answers:
            return self._answers.pop(0)
        return aiopool.Response(200, json={"ok": True})


async def fetch(client: aiopool.Client, url: str, streamed: bool, read: bool = False) -> None:
    """GET `url` by `request()`, or by `stream()` reading the body (`read`) or not."""
    if not streamed:
        await client.get(url)
        return
    async with client.stream("GET", url) as response:
        if read:
            async for _ in response.aiter_bytes():
                pass


# The handler, sync and async ---------------------------------------------------------------


async def test_a_sync_handler_answers() -> None:
    def handler(request: aiopool.Request) -> aiopool.Response:
        return aiopool.Response(201, json={"path": request.url.path})

    async with aiopool.Client(transport=aiopool.MockTransport(handler)) as client:
        response = await client.post(f"{API}/users")
    assert response.status_code == 201
    assert response.reason == "Created"
    assert response.json() == {"path": "/users"}
    assert response.headers["content-type"] == "application/json"
    assert response.request.method == "POST"
    assert str(response.url) == f"{API}/users"
    assert response.history == []


async def test_an_async_handler_answers() -> None:
    async def handler(request: aiopool.Request) -> aiopool.Response:
        await asyncio.sleep(0)
        return aiopool.Response(200, text=f"hello {request.url.query}")

    async with aiopool.Client(transport=aiopool.MockTransport(handler)) as client:
        response = await client.get(f"{API}/greet", params={"name": "ada"})
    assert response.text == "hello name=ada"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


async def test_a_handler_returning_something_else_is_a_type_error() -> None:
    transport = aiopool.MockTransport(lambda request: {"ok": True})  # type: ignore[arg-type, return-value]
    async with aiopool.Client(transport=transport) as client:
        with pytest.raises(TypeError, match=r"must return an aiopool\.Response, not dict"):
            await client.get(API)


async def test_the_mock_transport_directly() -> None:
    async with aiopool.MockTransport(lambda r: aiopool.Response(200, content=b"raw")) as mock:
        request = aiopool.Request("GET", f"{API}/x")
        response = await mock.handle_request(request)
        assert response.request is request
        assert await response.aread() == b"raw"


# What the client sends ------------------------------------------------------------------------


async def test_the_requests_made_carry_the_clients_defaults_cookies_and_auth() -> None:
    recorder = Recorder()
    async with aiopool.Client(
        transport=aiopool.MockTransport(recorder),
        base_url=f"{API}/v1",
        headers={"X-Team": "payments"},
        cookies={"session": "s1"},
        auth=("ada", "secret"),
    ) as client:
        await client.get("users", params={"page": "2"}, headers={"X-Request": "1"})
    [request] = recorder.requests
    assert request.method == "GET"
    assert str(request.url) == f"{API}/v1/users?page=2"
    headers = request.headers
    assert headers["user-agent"] == f"aiopool/{aiopool.__version__}"
    assert headers["accept"] == "*/*"
    assert "gzip" in headers["accept-encoding"]
    assert headers["host"] == "api.test"
    assert headers["x-team"] == "payments"
    assert headers["x-request"] == "1"
    assert headers["cookie"] == "session=s1"
    expected = base64.b64encode(b"ada:secret").decode()
    assert headers["authorization"] == f"Basic {expected}"
    assert recorder.bodies == [b""]


async def test_the_bodies_sent_for_json_content_and_a_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b"part two"

    recorder = Recorder()
    async with aiopool.Client(transport=aiopool.MockTransport(recorder)) as client:
        await client.post(API, json={"name": "ada", "tags": ["x"]})
        await client.put(API, content=b"\x00\x01")
        await client.patch(API, content="text é")
        await client.post(API, content=chunks())
    as_json, as_bytes, as_text, as_stream = recorder.requests
    assert json.loads(recorder.bodies[0]) == {"name": "ada", "tags": ["x"]}
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["content-length"] == str(len(recorder.bodies[0]))
    assert recorder.bodies[1] == b"\x00\x01"
    assert as_bytes.headers["content-length"] == "2"
    assert recorder.bodies[2] == "text é".encode()
    assert as_text.headers["content-type"] == "text/plain; charset=utf-8"
    assert recorder.bodies[3] == b"part one, part two"
    assert as_stream.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in as_stream.headers


# Responses made by hand --------------------------------------------------------------------


async def test_a_response_without_a_body_reads_as_empty() -> None:
    # Response(204), a 200 to a HEAD, a redirect with only a Location: no body given means an
    # empty one, not a closed stream.
    recorder = Recorder(
        aiopool.Response(204),
        aiopool.Response(200, headers={"content-length": "5"}),
        aiopool.Response(200),
    )
    async with aiopool.Client(transport=aiopool.MockTransport(recorder)) as client:
        assert (await client.delete(API)).content == b""
        assert (await client.head(API)).content == b""
        async with client.stream("GET", API) as response:
            assert [chunk async for chunk in response.aiter_bytes()] == []
    assert aiopool.Response(200).content == b""


def test_the_response_constructor() -> None:
    assert aiopool.Response(200, content="é").headers["content-type"] == (
        "text/plain; charset=utf-8"
    )
    assert aiopool.Response(200, json=None).content == b"null"
    own = aiopool.Response(200, headers={"Content-Type": "application/x"}, json=[1])
    assert own.headers.get_list("content-type") == ["application/x"]
    assert aiopool.Response(200, json={"é": 1}).content == '{"é":1}'.encode()
    # Names lower-case, as servers' arrive (the client looks for b"set-cookie" so).
    assert aiopool.Response(200, headers={"X-A": "1"}).headers.raw == [(b"x-a", b"1")]
    assert aiopool.Response(599).reason == ""
    assert aiopool.Response(404, reason="Nope").reason == "Nope"
    assert repr(aiopool.Response(404)) == "<Response [404 Not Found]>"
    with pytest.raises(TypeError, match="one of content=, text= and json="):
        aiopool.Response(200, text="a", json={})
    with pytest.raises(TypeError, match="content must be bytes, str or an async iterable"):
        aiopool.Response(200, content=12)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no request yet"):
        _ = aiopool.Response(200).url


async def test_an_encoded_mock_body_is_decoded_as_a_servers_would_be() -> None:
    # The client decodes what the transport returns by its Content-Encoding, whoever made it.
    body = gzip.compress(b"hello, " * 100)
    recorder = Recorder(
        aiopool.Response(200, headers={"Content-Encoding": "gzip"}, content=body),
        aiopool.Response(200, headers={"Content-Encoding": "gzip"}, content=body),
        aiopool.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip"),
    )
    async with aiopool.Client(transport=aiopool.MockTransport(recorder)) as client:
        assert (await client.get(API)).content == b"hello, " * 100
        async with client.stream("GET", API) as response:
            assert b"".join([c async for c in response.aiter_raw()]) == body
        with pytest.raises(aiopool.DecodingError) as caught:
            await client.get(API)
    assert caught.value.request is recorder.requests[2]


async def test_the_clients_size_limit_applies_to_a_streamed_mock_body() -> None:
    # (A body given as bytes is taken as read already: a limit is for what arrives.)
    mock = aiopool.MockTransport(lambda r: aiopool.Response(200, content=Body(b"x" * 100)))
    async with aiopool.Client(transport=mock, max_response_size=10) as client:
        with pytest.raises(aiopool.ResponseTooLarge):
            await client.get(API)
        assert len((await client.get(API, max_response_size=None)).content) == 100


async def test_raise_for_status_names_the_mocked_url() -> None:
    mock = aiopool.MockTransport(lambda request: aiopool.Response(503))
    async with aiopool.Client(transport=mock) as client:
        response = await client.get(f"{API}/down")
    with pytest.raises(aiopool.HTTPStatusError, match=r"503 Service Unavailable.*api\.test/down"):
        response.raise_for_status()


# Simulated failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [aiopool.ConnectTimeout, aiopool.ConnectError, aiopool.ReadTimeout, aiopool.PoolTimeout],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["request", "stream"])
async def test_a_simulated_failure_reaches_the_caller_with_its_request(
    error: type[aiopool.TransportError], streamed: bool
) -> None:
    def handler(request: aiopool.Request) -> aiopool.Response:
        raise error("simulated")

    async with aiopool.Client(transport=aiopool.MockTransport(handler)) as client:
        with pytest.raises(error) as caught:
            await fetch(client, f"{API}/slow?token=secret", streamed)
    request = caught.value.request
    assert request is not None
    assert (request.method, str(request.url)) == ("GET", f"{API}/slow?token=secret")
    if isinstance(caught.value, aiopool.TimeoutException):
        # The message says which request, and no path or query (they may carry secrets).
        assert str(caught.value) == "GET https://api.test:443: simulated"


async def test_a_failure_in_the_middle_of_a_mock_body() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        raise aiopool.ReadError("connection reset")

    mock = aiopool.MockTransport(lambda request: aiopool.Response(200, content=body()))
    async with aiopool.Client(transport=mock) as client:
        with pytest.raises(aiopool.ReadError) as caught:
            await client.get(API)
        assert caught.value.request is not None
        with pytest.raises(aiopool.ReadError):
            await fetch(client, API, streamed=True, read=True)


# Redirects, cookies -----------------------------------------------------------------------------


async def test_redirects_over_a_mock_carry_cookies_to_the_next_hop() -> None:
    def handler(request: aiopool.Request) -> aiopool.Response:
        if request.url.path == "/login":
            return aiopool.Response(
                303, headers=[("Location", "/home"), ("Set-Cookie", "sid=abc; Path=/")]
            )
        return aiopool.Response(200, text=request.headers.get("cookie", "no cookie"))

    hops: list[str] = []

    async def record(request: aiopool.Request, call_next: aiopool.Handler) -> aiopool.Response:
        hops.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    async with aiopool.Client(
        transport=aiopool.MockTransport(handler), middleware=[record]
    ) as client:
        response = await client.post(f"{API}/login", json={"user": "ada"})
        assert response.text == "sid=abc"
        assert [r.status_code for r in response.history] == [303]
        assert str(response.url) == f"{API}/home"
        assert client.cookies.get("sid") == "abc"
    assert hops == ["POST /login", "GET /home"]


async def test_credentials_are_not_carried_to_another_origin_by_a_mocked_redirect() -> None:
    recorder = Recorder(
        aiopool.Response(302, headers={"Location": "https://elsewhere.test/landing"}),
    )
    async with aiopool.Client(
        transport=aiopool.MockTransport(recorder), auth=("ada", "secret")
    ) as client:
        response = await client.get(f"{API}/start")
    assert response.status_code == 200
    first, second = recorder.requests
    assert "authorization" in first.headers
    assert str(second.url) == "https://elsewhere.test/landing"
    assert "authorization" not in second.headers


async def test_a_mocked_redirect_loop_is_too_many_redirects() -> None:
    mock = aiopool.MockTransport(lambda request: aiopool.Response(302, headers={"Location": "/"}))
    async with aiopool.Client(transport=mock, max_redirects=3) as client:
        with pytest.raises(aiopool.TooManyRedirects) as caught:
            await client.get(API)
    assert len(caught.value.history) == 3


# Streaming -------------------------------------------------------------------------------------


class Body:
    """A streamed mock body that says how far it was read and whether it was closed."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.sent = 0
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                self.sent += 1
                yield chunk
        finally:
            self.finished = True


async def test_stream_over_a_mocked_streamed_body() -> None:
    body = Body(b"one", b"", b"two", b"three")
    mock = aiopool.MockTransport(lambda request: aiopool.Response(200, content=body))
    async with aiopool.Client(transport=mock) as client:
        async with client.stream("GET", API) as response:
            assert not response.is_closed
            assert [chunk async for chunk in response.aiter_bytes()] == [b"one", b"two", b"three"]
            assert response.is_closed  # read to its end: released
        assert body.finished


async def test_breaking_out_of_a_mocked_stream_releases_it_at_the_blocks_exit() -> None:
    body = Body(b"one", b"two", b"three")
    mock = aiopool.MockTransport(lambda request: aiopool.Response(200, content=body))
    async with aiopool.Client(transport=mock) as client:
        async with client.stream("GET", API) as response:
            async for chunk in response.aiter_bytes():
                assert chunk == b"one"
                break
            assert not response.is_closed
        assert response.is_closed
        assert body.sent == 1
        assert body.finished  # the block's exit closed the body's iterator
        with pytest.raises(aiopool.StreamError):
            await response.aread()


async def test_buffering_a_mocked_streamed_body() -> None:
    mock = aiopool.MockTransport(lambda r: aiopool.Response(200, content=Body(b"a", b"b")))
    async with aiopool.Client(transport=mock) as client:
        assert (await client.get(API)).content == b"ab"
        async with client.stream("GET", API) as response:
            assert await response.aread() == b"ab"
            assert response.content == b"ab"


async def test_a_mocked_stream_dropped_unclosed_warns() -> None:
    mock = aiopool.MockTransport(lambda r: aiopool.Response(200, content=Body(b"a", b"b")))
    opened_at: list[int] = []

    async def leak(client: aiopool.Client) -> None:
        context = client.stream("GET", API)
        opened_at.append(sys._getframe().f_lineno - 1)
        await context.__aenter__()  # and never left: dropped on return
        gc.collect()

    async with aiopool.Client(transport=mock) as client:
        with pytest.warns(ResourceWarning, match=r"unclosed streamed response .*py:\d+;") as w:
            await leak(client)
    assert str(w[0].message).endswith(
        f"test_mock_transport.py:{opened_at[0]}; "
        "use `async with client.stream(...)` to release its connection"
    )


async def test_a_hand_made_body_given_as_bytes_is_no_leak() -> None:
    # Nothing holds a socket: a bytes body (encoded or not) dropped unread does not warn.
    aiopool.Response(200, content=b"x")
    aiopool.Response(200, headers={"content-encoding": "gzip"}, content=gzip.compress(b"x"))
    gc.collect()


# The client around a given transport ----------------------------------------------------------


def test_pool_options_with_a_transport_are_refused() -> None:
    mock = aiopool.MockTransport(lambda request: aiopool.Response(200))
    with pytest.raises(TypeError, match="max_connections configure the default PoolTransport"):
        aiopool.Client(transport=mock, max_connections=5)
    with pytest.raises(TypeError, match="proxy, verify configure"):
        aiopool.Client(transport=mock, verify=False, proxy="http://proxy.test:3128")
    with pytest.raises(TypeError, match="trace configure"):
        aiopool.Client(transport=mock, trace=print)
    with pytest.raises(TypeError, match=r"transport must be an aiopool\.Transport, not function"):
        aiopool.Client(transport=lambda request: None)  # type: ignore[arg-type]


async def test_a_per_request_trace_hook_is_no_pool_option() -> None:
    events: list[aiopool.TraceEvent] = []
    mock = aiopool.MockTransport(lambda request: aiopool.Response(200))
    async with aiopool.Client(transport=mock) as client:
        await client.get(API, trace=events.append)
    assert events == []  # a mock dials nothing: there is nothing to trace


async def test_the_client_closes_the_transport_it_was_given() -> None:
    closed: list[bool] = []

    class Closing(aiopool.MockTransport):
        async def aclose(self) -> None:
            closed.append(True)

    transport = Closing(lambda request: aiopool.Response(200))
    client = aiopool.Client(transport=transport)
    assert client.transport is transport
    assert client.stats() == aiopool.PoolStats(
        requests=0, connections_opened=0, connections_closed=0, reused=0
    )
    async with client:
        await client.get(API)
    assert closed == [True]
    await client.aclose()  # idempotent: the transport is closed once
    assert closed == [True]
    with pytest.raises(aiopool.ClientClosed):
        await client.get(API)


# docs/testing.md ------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def test_the_snippets_of_docs_testing_run(tmp_path: Path) -> None:
    """Every ```python block of docs/testing.md, in order, is one pytest module: run it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    module = tmp_path / "test_docs_testing.py"
    module.write_text("\n\n".join(blocks))
    # A project of the reader's own: pytest-asyncio in strict mode (the snippets mark their
    # tests), warnings as errors.
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(module),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed is not None and int(passed.group(1)) >= 5, proc.stdout
    assert "skipped" not in proc.stdout and "warning" not in proc.stdout, proc.stdout
