"""One HTTP/2 stream's state and its response body, as `HTTP2Connection` drives them.

A `Stream` is touched by exactly two parties: the task of the request it carries, which waits on
the stream's own future (`waiter`), and the socket's reader task, which appends data, marks the
end or an error, and wakes that future. Nothing else ever waits on a stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from ._exceptions import ClientClosed, TransportError, in_phase
from ._models import reason_phrase

if TYPE_CHECKING:
    from ._http2 import HTTP2Connection
    from ._trace import Tracer

__all__ = ("H2Body", "Stream", "reason_phrase", "wake")


class Stream:
    """One request/response exchange; touched by its own task and the reader only."""

    __slots__ = (
        "body",
        "continued",
        "ended",
        "error",
        "headers",
        "id",
        "interim",
        "opened",
        "read_timeout",
        "released",
        "sending",
        "status",
        "tracer",
        "unacked",
        "waiter",
        "withheld",
    )

    def __init__(self, stream_id: int, read_timeout: float | None) -> None:
        self.id = stream_id
        self.read_timeout = read_timeout
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.body: deque[bytes] = deque()
        self.unacked = 0  # flow-controlled bytes received but not yet consumed
        self.ended = False
        self.error: TransportError | ClientClosed | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sending = False
        self.opened = False  # its HEADERS were encoded (`HTTP2Connection._open_queued`)
        self.released = False
        self.tracer: Tracer | None = None  # the request's, if anyone listens
        self.interim = 0  # 1xx responses received
        self.continued = False  # ... and it was `100 Continue`
        self.withheld = False  # the body was never sent (a final response came first)


class H2Body:
    """The `BodyStream` of one HTTP/2 response."""

    __slots__ = ("_conn", "_stream")

    def __init__(self, conn: HTTP2Connection, stream: Stream) -> None:
        self._conn = conn
        self._stream = stream

    async def receive(self) -> bytes:
        stream = self._stream
        if stream.released:
            return b""
        try:
            return await self._conn._receive_chunk(stream)
        except BaseException as exc:
            in_phase(exc, "reading the response body")
            self._conn._abort_stream(stream)
            raise

    async def aclose(self) -> None:
        # No draining over HTTP/2: RST_STREAM is cheap and keeps the socket usable.
        self.abort()

    def abort(self) -> None:
        stream = self._stream
        if stream.released:
            return
        if stream.ended and not stream.body:
            self._conn._finish_stream(stream)
        else:
            self._conn._abort_stream(stream)


def wake(stream: Stream) -> None:
    waiter = stream.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
