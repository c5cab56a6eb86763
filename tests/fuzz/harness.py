"""One fuzz target: an event loop, a raw server in it, and the properties every case must keep.

Hypothesis drives synchronous functions, so each target owns an `asyncio.Runner` for its whole
life (one server, reused by every example) and runs each example to completion in it with a
fresh `aiopool.Client`. Per example:

1. the fuzzed request (GET or HEAD; read whole, or one chunk through `client.stream()`; over
   HTTP/2 maybe while another stream is open on the socket) under an outer bound a little above
   the client's read timeout: only `aiopool.AiopoolError` may escape, and hitting the outer
   bound is a hang; the other stream gets its exact answer, or a typed error if the fuzzed
   answer was broken;
2. the pool settles (no active, connecting or waiting lease, no open HTTP/2 stream) and the
   client's dial count matches the server's accept count;
3. a well-formed answer must have been parsed exactly, its socket reused exactly when HTTP
   allows it; a HEAD response never has a body;
4. once the server has written everything, a follow-up request must get the server's correct
   answer; after an HTTP/1.1 failure, or a response with bytes trailing it, never on the
   fuzzed socket. (Over HTTP/2 a failed stream may leave the socket in service: the follow-up's
   exact answer is the check there.)
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable
from types import TracebackType
from typing import Literal, NamedTuple, Self, TypeVar

import aiopool
from tests.helpers import assert_settled

from . import http2, http11
from .servers import H2FuzzServer, H11FuzzServer, check_body

__all__ = ("TARGETS", "Result", "Target")

# The client's timeouts; the outer bound sits above them (a response that stalls forever must
# end in ReadTimeout, never in the outer bound).
READ_TIMEOUT = 2.0
OUTER_BOUND = READ_TIMEOUT + 3.0

Wire = Literal["http11", "http2"]
# Target name -> (protocol, parser or engine).
TARGETS: dict[str, tuple[Wire, str]] = {
    "h11": ("http11", "h11"),
    "httptools": ("http11", "httptools"),
    "h2": ("http2", "h2"),
    "native": ("http2", "native"),
}

Case = http11.H11Case | http2.H2Case


class Result(NamedTuple):
    """How one case ended: the fuzzed request's response or error, and whether the follow-up
    request went out on the same socket."""

    outcome: aiopool.Response | aiopool.AiopoolError
    reused: bool


T = TypeVar("T")
_CONNECTION_FIELDS = frozenset({"content-length", "transfer-encoding", "connection"})


class Target:
    """`with Target("h11") as target: target.run(case)` for each case."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.protocol, self.impl = TARGETS[name]
        self.cases = 0
        # What the fuzzed requests ended as ("2xx", "RemoteProtocolError", ...), and how often
        # the follow-up reused the fuzzed socket: evidence the cases reach where they should.
        self.outcomes: Counter[str] = Counter()
        self.reused = 0
        self._nonces = itertools.count(1)
        self._runner: asyncio.Runner | None = None
        self.server: H11FuzzServer | H2FuzzServer = (
            H11FuzzServer() if self.protocol == "http11" else H2FuzzServer()
        )

    def __enter__(self) -> Target:
        self._runner = asyncio.Runner()
        self._runner.__enter__()
        self._runner.run(self.server.start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._runner is not None
        try:
            self._runner.run(self.server.stop())
        finally:
            self._runner.__exit__(exc_type, exc, tb)

    def run(self, case: Case) -> Result:
        """Run one case; raise AssertionError if a property fails."""
        assert self._runner is not None
        self.cases += 1
        return self._runner.run(self._example(case))

    def client(self) -> aiopool.Client:
        timeout = aiopool.Timeout(READ_TIMEOUT)
        if self.protocol == "http11":
            return aiopool.Client(http1_parser=self.impl, http2=False, timeout=timeout)  # type: ignore[arg-type]
        return aiopool.Client(http1=False, http2_engine=self.impl, timeout=timeout)  # type: ignore[arg-type]

    # One example -------------------------------------------------------------------------------

    async def _example(self, case: Case) -> Result:
        server = self.server
        server.begin()
        server.case = case  # type: ignore[assignment]
        base = f"http://127.0.0.1:{server.port}"
        try:
            async with self.client() as client:
                held = await self._hold(client, case, base)
                outcome = await _bounded(
                    _fuzzed(client, case, base + "/fuzz"), "the fuzzed request"
                )
                if held is not None:
                    await self._check_held(case, *held)
                self.outcomes[
                    type(outcome).__name__
                    if isinstance(outcome, aiopool.AiopoolError)
                    else str(outcome.status_code)[0] + "xx"
                ] += 1
                stats = assert_settled(client)
                assert stats.connections_opened == server.accepted_now, (stats, server.served)
                if case.expect is not None:
                    self._check_expected(case, outcome)
                if getattr(case, "method", "GET") == "HEAD" and not case.stream:
                    # RFC 9110 section 9.3.2: whatever its headers say, no body.
                    assert not isinstance(outcome, aiopool.Response) or outcome.content == b""
                # Let the server finish writing (and the client's socket see it all) before the
                # follow-up, so whatever bytes trail the answer are there to be noticed.
                if server.conn_of("fuzz") is not None:
                    await _bounded(server.written.wait(), "the server's writes")
                for _ in range(3):
                    await asyncio.sleep(0)
                if server.error is not None:
                    raise server.error
                reused = await self._follow_up(client, case, base, outcome)
        finally:
            await server.end_example()
        return Result(outcome, reused)

    async def _hold(
        self, client: aiopool.Client, case: Case, base: str
    ) -> tuple[asyncio.Future[aiopool.Response], str] | None:
        """For a concurrent case: a request whose stream stays open (the server answers it
        only after the fuzzed answer), so the fuzzed answer arrives on a busy socket."""
        if not getattr(case, "concurrent", False):
            return None
        nonce = str(next(self._nonces))
        held = asyncio.ensure_future(client.get(f"{base}/hold/{nonce}"))

        async def opened() -> None:
            while self.server.conn_of("hold") is None and not held.done():
                await asyncio.sleep(0.001)

        await _bounded(opened(), "the held request reaching the server")
        return held, nonce

    async def _check_held(
        self, case: Case, held: asyncio.Future[aiopool.Response], nonce: str
    ) -> None:
        try:
            response: aiopool.Response | aiopool.AiopoolError = await _bounded(
                held, "the held request"
            )
        except aiopool.AiopoolError as exc:
            response = exc
        if isinstance(response, aiopool.Response):
            assert (response.status_code, response.content) == (200, check_body(nonce))
        else:
            # Only a broken answer may take the other stream down with the socket.
            assert case.expect is None, f"a well-formed answer failed another stream: {response!r}"

    def _check_expected(self, case: Case, outcome: aiopool.Response | aiopool.AiopoolError) -> None:
        expect = case.expect
        assert expect is not None
        assert isinstance(outcome, aiopool.Response), f"well-formed answer refused: {outcome!r}"
        assert outcome.status_code == expect.status
        assert outcome.content == expect.body
        got = [(n, v) for n, v in outcome.headers.multi_items() if n not in _CONNECTION_FIELDS]
        assert got == [(n.lower(), v) for n, v in expect.headers]
        if isinstance(expect, http11.Expected):
            assert outcome.reason == expect.reason
            assert outcome.http_version == expect.version
        else:
            assert outcome.http_version == "HTTP/2"

    async def _follow_up(
        self,
        client: aiopool.Client,
        case: Case,
        base: str,
        outcome: aiopool.Response | aiopool.AiopoolError,
    ) -> bool:
        server = self.server
        nonce = str(next(self._nonces))
        try:
            check = await _bounded(client.get(f"{base}/check/{nonce}"), "the follow-up request")
        except aiopool.AiopoolError as exc:
            raise AssertionError(f"the follow-up request failed: {exc!r}") from exc
        assert (check.status_code, check.content) == (200, check_body(nonce)), check
        assert_settled(client)
        if server.error is not None:
            raise server.error
        served = server.served
        last = max(i for i, (kind, _) in enumerate(served) if kind == "check")
        check_conn = served[last][1]
        fuzz_conn = server.conn_of("fuzz")
        same_socket = fuzz_conn == check_conn
        # The client's view and the server's agree on whether the socket had carried a request
        # (the fuzzed one, or over HTTP/2 a held one or a retry of either).
        carried = any(conn == check_conn for _, conn in served[:last])
        assert check.conn_info.reused == carried, (check.conn_info, served)
        self.reused += same_socket
        failed = isinstance(outcome, aiopool.AiopoolError)
        if self.protocol == "http11":
            if failed or getattr(case, "trailing", False):
                # Not even once: a retry on a new socket after it must not hide the reuse.
                assert ("check", fuzz_conn) not in server.served, f"socket reused after {outcome!r}"
            expect = case.expect
            if isinstance(expect, http11.Expected) and expect.reusable is not None:
                assert same_socket == expect.reusable, (expect, server.served)
        elif case.expect is not None:
            assert same_socket, "a clean HTTP/2 connection was not used for the next request"
        return same_socket


async def _fuzzed(
    client: aiopool.Client, case: Case, url: str
) -> aiopool.Response | aiopool.AiopoolError:
    content = getattr(case, "body", b"") or None  # (HTTP/2 cases may upload a body)
    method = getattr(case, "method", "POST" if content else "GET")
    try:
        if not case.stream:
            return await client.request(method, url, content=content)
        async with client.stream(method, url, content=content) as response:
            chunks = response.aiter_bytes()
            try:
                await anext(chunks, b"")
            finally:
                await chunks.aclose()
        return response
    except aiopool.AiopoolError as exc:
        return exc


async def _bounded(awaitable: Awaitable[T], what: str) -> T:
    """Await under the outer bound: hitting it is a hang; a non-aiopool exception is a bug."""
    scope = asyncio.timeout(OUTER_BOUND)
    try:
        async with scope:
            return await awaitable
    except aiopool.AiopoolError:
        raise
    except TimeoutError as exc:
        if scope.expired():
            raise AssertionError(f"hang: {what} took longer than {OUTER_BOUND}s") from None
        raise AssertionError(f"TimeoutError escaped from {what}: {exc!r}") from exc
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped from {what}: {exc!r}") from exc


class TargetPair:
    """Two targets run side by side on every case (`ParsersAgree`, and the engines' in
    `differential.EnginesAgree`): entered and left together; `cases` counts the cases."""

    def __init__(self, first: Target, second: Target) -> None:
        self.first = first
        self.second = second
        self.cases = 0

    def __enter__(self) -> Self:
        self.first.__enter__()
        try:
            self.second.__enter__()
        except BaseException:
            self.first.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.second.__exit__(exc_type, exc, tb)
        finally:
            self.first.__exit__(exc_type, exc, tb)


class ParsersAgree(TargetPair):
    """Both HTTP/1.1 parsers on the same case: each keeps every property, and where both accept
    a response they agree on its status and body (where only one accepts, that is leniency,
    which the parsers may differ in: h11 takes a bare LF in a trailer section, llhttp two
    Transfer-Encodings; in a head both refuse bare LF and obs-fold)."""

    name = "parsers-agree"
    protocol = "http11"

    def __init__(self) -> None:
        self.h11 = Target("h11")
        self.httptools = Target("httptools")
        super().__init__(self.h11, self.httptools)

    def run(self, case: http11.H11Case) -> None:
        self.cases += 1
        a = self.h11.run(case).outcome
        b = self.httptools.run(case).outcome
        if isinstance(a, aiopool.Response) and isinstance(b, aiopool.Response) and not case.stream:
            assert (a.status_code, a.content) == (b.status_code, b.content), (a, b)
