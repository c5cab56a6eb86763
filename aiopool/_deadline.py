"""Deadlines over several waits: a call's `Timeout.total` and a response head's
`Timeout.response_header`.

The per-phase timeouts (`connect`, `read`, `write`, `pool`) bound each wait on its own, so a
server that sends one byte inside every read timeout keeps a request alive for ever. A deadline
bounds the sum, as Go's `Client.Timeout` and `Transport.ResponseHeaderTimeout` do. Both are kept
by cancellation (`asyncio.timeout_at`) around the awaits they cover: every await point of the
pool and the connections already leaves the pool consistent when cancelled (no lease, socket or
HTTP/2 stream left behind: docs/design.md, "Cancellation"), so a deadline needs no cooperation
from the layers below, and costs nothing when it is not set. The expiry is then reported as its
own `TimeoutException` subclass, never as a bare `TimeoutError` or `CancelledError`.

A base module (it knows only the exceptions and the `BodyStream` protocol): the client keeps the
total deadline, the connections the response-head one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

from ._exceptions import ResponseHeaderTimeout, TotalTimeout, TransportError, seconds
from ._models import BodyStream, Request

__all__ = ("Deadline", "DeadlineBody", "head_within")

T = TypeVar("T")


class Deadline:
    """One call's `Timeout.total`: when it passes, and what the call is doing (for the message).

    `within()` is the scope that enforces it around the client's part of a call; a streamed
    response's body gets a `DeadlineBody`.
    """

    __slots__ = ("doing", "request", "total", "when")

    def __init__(self, total: float) -> None:
        self.total = total
        self.when = asyncio.get_running_loop().time() + total
        # What the call was doing, named in the error: set by the client as it moves on.
        self.doing = "waiting for a connection or the response head"
        self.request: Request | None = None

    def remaining(self) -> float:
        return self.when - asyncio.get_running_loop().time()

    def error(self) -> TotalTimeout:
        exc = TotalTimeout(
            f"the call did not complete within {seconds(self.total)} (the total timeout)"
        )
        exc.phase = self.doing
        exc.request = self.request
        return exc

    def within(self) -> _Scope:
        """`async with deadline.within():` cancels what runs inside when the deadline passes,
        and raises `TotalTimeout` for it."""
        return _Scope(self)


class _Scope:
    """`asyncio.timeout_at` whose expiry is a `TotalTimeout`.

    An expiry that a layer inside turned into one of our own errors (a connection reporting the
    cancellation it met as a failure of its socket) is a `TotalTimeout` too: the deadline is
    what ended the call.
    """

    __slots__ = ("_deadline", "_timeout")

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._timeout = asyncio.timeout_at(deadline.when)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        timeout = self._timeout
        try:
            await timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:
            if timeout.expired():
                raise self._deadline.error() from None
            raise  # Defensive: a TimeoutError of someone else's passing through
        if (
            timeout.expired()
            and isinstance(exc, TransportError)
            and not isinstance(exc, TotalTimeout)
        ):
            raise self._deadline.error() from exc


class DeadlineBody:
    """A streamed response's body under its call's total deadline: each `receive` is cut off
    when the deadline passes (`TotalTimeout`; the response then aborts the body, closing its
    socket or resetting its stream). Past the deadline, `aclose` aborts rather than drains."""

    __slots__ = ("_deadline", "_inner")

    def __init__(self, inner: BodyStream, deadline: Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    async def receive(self) -> bytes:
        deadline = self._deadline
        deadline.doing = "reading the response body"
        timeout = asyncio.timeout_at(deadline.when)
        try:
            async with timeout:
                return await self._inner.receive()
        except TimeoutError:
            if timeout.expired():
                raise deadline.error() from None
            raise  # Defensive: a TimeoutError of someone else's passing through

    async def aclose(self) -> None:
        if self._deadline.remaining() <= 0:
            self._inner.abort()
        else:
            await self._inner.aclose()  # (the drain's own bound is far shorter than any deadline)

    def abort(self) -> None:
        self._inner.abort()


async def head_within(receive: Awaitable[T], limit: float) -> T:
    """Await `receive` (a connection's wait for the response head) for at most `limit` seconds.

    Raises `ResponseHeaderTimeout` past it; the caller's cancellation handling closes the socket
    (HTTP/1.1) or resets the stream (HTTP/2), as for any cancellation there.
    """
    timeout = asyncio.timeout(limit)
    try:
        async with timeout:
            return await receive
    except TimeoutError:
        if timeout.expired():
            raise ResponseHeaderTimeout(
                f"no complete response head within {seconds(limit)} of the request being "
                "written (the response_header timeout)"
            ) from None
        raise  # Defensive: a TimeoutError of someone else's passing through
