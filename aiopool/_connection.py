"""The connection contract: what the pool needs of a connection, and what it tells the pool.

Every connection (HTTP/1.1 in `_h1_connection`, HTTP/2 in `_http2`) implements `Connection`
and reports to a `ConnectionOwner` (the pool). The pool, the transport and the connections all
import this module and nothing of each other's protocol: the pool leases, counts and expires
connections without knowing which protocol a socket speaks beyond `multiplexed`.

Rules every connection keeps (docs/pool.md, "Return only when clean"):
- it tells its owner the outcome of every request synchronously (`release` or `discard`), so a
  lease is released on every path, even inside a cancelled task;
- only the pool changes `state`; the connection's own `closed` says whether its socket is shut.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from ._config import MAX_INTERIM_RESPONSES, HeadLimits, Timeout
from ._headers import Headers

if TYPE_CHECKING:
    from ._backend import NetworkStream
    from ._models import BodyStream, Request
    from ._urls import Origin

__all__ = (
    "ConnState",
    "Connection",
    "ConnectionOwner",
    "ResponseHead",
    "too_many_headers",
    "too_many_interim",
)


class ConnState(enum.Enum):
    """Where a connection stands in its pool. Only the pool changes it.

    (Whether the socket itself is closed is the connection's own `closed` flag: a connection
    closes itself on errors and then tells the pool, which moves it to CLOSED exactly once.)
    """

    ACTIVE = "active"  # leased to a request (or reserved for a waiter)
    IDLE = "idle"  # clean, in the pool's idle stack, waiting for reuse
    CLOSED = "closed"  # gone from the pool's books; never handed out again


class ConnectionOwner(Protocol):
    """What a connection tells the pool (synchronously) when a request is done with it."""

    def release(self, conn: Connection) -> None:
        """A request is done with `conn` cleanly (for HTTP/2: one stream ended)."""
        ...

    def discard(self, conn: Connection, reason: str = "error") -> None:
        """`conn` is closed or broken (`reason`: why, for the `conn_closed` trace event)."""
        ...

    def capacity_changed(self, conn: Connection) -> None:
        """An HTTP/2 peer changed how many streams `conn` may carry."""
        ...


class Connection(Protocol):
    """What the pool needs of a connection, HTTP/1.1 or (multiplexed) HTTP/2."""

    id: int
    origin: Origin
    state: ConnState
    closed: bool
    http_version: str
    multiplexed: bool
    requests: int  # requests started on it
    idle_since: float

    @property
    def implementation(self) -> str:
        """The library reading and writing the wire format: "h11" or "httptools" for
        HTTP/1.1, "native" or "h2" for HTTP/2 (the `http1_parser` and `http2_engine` names)."""
        ...

    def is_reusable(self) -> bool: ...

    def capacity(self) -> int:
        """Further requests it can take at once now (HTTP/2 streams; 0 for HTTP/1.1)."""
        ...

    def reserve(self) -> None:
        """Promise one of `capacity()` to a request (synchronous, by the pool)."""
        ...

    def unreserve(self) -> None:
        """Take back a promise no request will use (its task was cancelled)."""
        ...

    @property
    def open_streams(self) -> int: ...

    def close(self) -> None: ...

    def shut_down(self) -> None:
        """Close for the client's `aclose()`: requests on it fail with `ClientClosed`."""
        ...

    async def wait_closed(self, timeout: float) -> None: ...

    @property
    def network_stream(self) -> NetworkStream:
        """The socket under the connection (what the pool waits on once it closes)."""
        ...

    async def send(self, request: Request, timeout: Timeout) -> tuple[ResponseHead, BodyStream]:
        """Send `request`, return the response head and its body stream.

        Raises `LocalProtocolError` (nothing sent), `WriteError`/`WriteTimeout`,
        `ReadError`/`ReadTimeout`, `RemoteProtocolError`, `ClientClosed`. On any exception,
        or cancellation, the owner has been told (`discard`, or for HTTP/2 the stream freed).
        """
        ...

    def stale_failure(self, was_idle: bool) -> bool:
        """After `send` failed on a reused connection: whether the failure is the keep-alive
        race (the server closed the socket as the request went out, having answered nothing),
        so that a replayable request may be sent again on a fresh socket (Go's
        `shouldRetryRequest`). `was_idle`: the connection was taken from the idle stack.
        """
        ...

    def arm_idle_watch(self) -> None:
        """While idle: report data, EOF or a close from the server to the pool at once."""
        ...

    def disarm_idle_watch(self) -> None: ...


class ResponseHead:
    """Status line and headers, before the body."""

    __slots__ = ("headers", "http_version", "reason", "status_code")

    def __init__(self, status_code: int, reason: str, headers: Headers, http_version: str) -> None:
        self.status_code = status_code
        self.reason = reason
        self.headers = headers
        self.http_version = http_version


# Messages for the head bounds every protocol keeps (`HeadLimits`, MAX_INTERIM_RESPONSES).


def too_many_headers(count: int, limits: HeadLimits) -> str:
    return (
        f"response has {count} header fields, more than the limit of {limits.max_count} "
        f"(max_response_headers)"
    )


def too_many_interim() -> str:
    return f"server sent more than {MAX_INTERIM_RESPONSES} interim (1xx) responses"
