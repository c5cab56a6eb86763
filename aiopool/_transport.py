"""The transport interface: Go's `http.RoundTripper` for async Python, and middleware around it.

A `Transport` takes one `Request` and returns its `Response` with the body still to be read
(`aclose()` on the response releases whatever carries it). It does one exchange: no redirects,
cookies, auth or policies; those stay in the client, above it. The pool-backed default is
`PoolTransport` (leasing, the wire protocols, the safe-replay rules); `MockTransport` answers
from a function, for tests; user code can wrap either (an instrumented transport counting
in-flight requests, as Go services wrap theirs).

Middleware is the lighter seam: `async def mw(request, call_next) -> Response`, run by the client
for every request it sends (each hop of a redirect chain, each retry), for `request()` and
`stream()` alike, in list order: the first one sees the request first and the response last.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from ._models import Request, Response

__all__ = ("Handler", "Middleware", "MockTransport", "Transport", "chain")

# What sends a request and returns its response: a transport's `handle_request`, or the rest
# of a middleware chain (a middleware's `call_next`).
Handler = Callable[[Request], Awaitable[Response]]
# `async def mw(request: Request, call_next: Handler) -> Response`.
Middleware = Callable[[Request, Handler], Awaitable[Response]]


class Transport(abc.ABC):
    """Sends one request and returns its response, body unread (Go's `RoundTripper`).

    Implement `handle_request`; override `aclose` if the transport holds resources. The client
    calls `aclose()` when it closes, on the transport it was given as well as on its default.
    Usable as `async with`.
    """

    @abc.abstractmethod
    async def handle_request(self, request: Request) -> Response:
        """Send `request`; return its response with the body still streaming.

        The caller releases the response (`await response.aclose()`, or reading the body to
        its end). Raises the `TransportError` family for failures to exchange, and nothing
        for an HTTP error status: a 500 is a response.
        """

    async def aclose(self) -> None:  # noqa: B027  (optional: most transports hold nothing)
        """Release what the transport holds (sockets, tasks). Idempotent."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class MockTransport(Transport):
    """A transport answering from `handler(request)`, for testing code that uses aiopool.

        def handler(request: aiopool.Request) -> aiopool.Response:
            return aiopool.Response(200, json={"ok": True})

        async with aiopool.Client(transport=aiopool.MockTransport(handler)) as client:
            assert (await client.get("https://api.test/")).json() == {"ok": True}

    `handler` may be a plain function or a coroutine function; it may raise (an
    `aiopool.ConnectTimeout`, say) to simulate a failure. The response's `request` is set to the
    request it answers. Everything above the transport (redirects, cookies, auth, decoding,
    middleware, `stream()`) runs for real.
    """

    def __init__(self, handler: Callable[[Request], Response | Awaitable[Response]]) -> None:
        self.handler = handler

    def __repr__(self) -> str:
        return f"<MockTransport {getattr(self.handler, '__qualname__', self.handler)!r}>"

    async def handle_request(self, request: Request) -> Response:
        result = self.handler(request)
        response = await result if inspect.isawaitable(result) else result
        if not isinstance(response, Response):
            raise TypeError(
                f"the MockTransport handler must return an aiopool.Response, "
                f"not {type(response).__name__}"
            )
        response.request = request
        return response


def chain(middleware: Sequence[Middleware], send: Handler) -> Handler:
    """`send` wrapped in `middleware`, the first of the list outermost.

    Built once per client: without middleware it is `send` itself, so a request pays nothing.
    """
    handler = send
    for mw in reversed(middleware):
        if not callable(mw):
            raise TypeError(f"middleware must be callable, not {type(mw).__name__}")
        handler = _bind(mw, handler)
    return handler


def _bind(mw: Middleware, call_next: Handler) -> Handler:
    name = getattr(mw, "__qualname__", repr(mw))

    async def handle(request: Request) -> Response:
        # The responses `call_next` handed this middleware. One it drops by raising (a
        # `raise_for_status()`, its own error, a cancellation) is reachable by nobody else and
        # would hold its connection until garbage collection: it is closed (never drained:
        # this may be a cancellation), as `client.stream()` closes a block's response on an
        # error. One it merely replaces may still be read by the new one (a body transformed
        # as it streams): releasing it is the middleware's part, as in httpx.
        taken: list[Response] = []

        async def next_(request: Request) -> Response:
            response = await call_next(request)
            taken.append(response)
            return response

        try:
            response = await mw(request, next_)
            if not isinstance(response, Response):
                raise TypeError(
                    f"middleware {name!r} returned {type(response).__name__}, "
                    "not an aiopool.Response"
                )
        except BaseException:
            for dropped in taken:
                dropped._abort()
            raise
        if response._request is None:  # a response the middleware made, answering itself
            response.request = request
        return response

    handle.__qualname__ = f"middleware {name}"
    return handle
