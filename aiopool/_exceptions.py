"""The exception tree: one root, grouped by what went wrong.

    AiopoolError
    ├── InvalidURL
    ├── ClientClosed
    ├── HTTPStatusError                 (raise_for_status)
    ├── StreamError
    │   ├── StreamConsumed
    │   └── StreamClosed
    └── TransportError                  (carries .request when known)
        ├── TimeoutException
        │   ├── ConnectTimeout · ReadTimeout · WriteTimeout · PoolTimeout
        ├── NetworkError
        │   ├── ConnectError · ReadError · WriteError
        └── ProtocolError
            ├── LocalProtocolError      (we were about to send something illegal)
            └── RemoteProtocolError     (the server sent something illegal)

Backend errors (OSError, ssl.SSLError, h11's errors) are translated once, at the edge where they
are raised (`map_exceptions`), never caught piecemeal in the middle of the code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Request, Response

__all__ = (
    "AiopoolError",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "HTTPStatusError",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolTimeout",
    "ProtocolError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "StreamClosed",
    "StreamConsumed",
    "StreamError",
    "TimeoutException",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "map_exceptions",
)


class AiopoolError(Exception):
    """Root of every exception aiopool raises on purpose."""


class InvalidURL(AiopoolError):
    """The URL could not be parsed, or its scheme is not http/https."""


class ClientClosed(AiopoolError):
    """The client was closed; it accepts no new requests."""


class HTTPStatusError(AiopoolError):
    """Raised by `Response.raise_for_status()` for 4xx and 5xx responses."""

    def __init__(self, message: str, *, request: Request, response: Response) -> None:
        super().__init__(message)
        self.request = request
        self.response = response


class StreamError(AiopoolError):
    """A response body was used in a way its state does not allow."""


class StreamConsumed(StreamError):
    """The body was already iterated once; it can be read only once."""


class StreamClosed(StreamError):
    """The response was closed before its body was read."""


class TransportError(AiopoolError):
    """Something went wrong between us and the server; `.request` says for which request.

    `unprocessed` is True when the server is known not to have acted on the request (HTTP/2
    REFUSED_STREAM, or a stream above a GOAWAY's last stream id): it is safe to send again.
    """

    request: Request | None = None
    unprocessed: bool = False


class TimeoutException(TransportError):
    """Base of the four timeouts."""


class ConnectTimeout(TimeoutException):
    """The TCP connect or the TLS handshake took longer than `Timeout.connect`."""


class ReadTimeout(TimeoutException):
    """No byte arrived within `Timeout.read` while we were waiting for one."""


class WriteTimeout(TimeoutException):
    """The socket did not accept our bytes within `Timeout.write`."""


class PoolTimeout(TimeoutException):
    """No connection could be leased within `Timeout.pool`."""


class NetworkError(TransportError):
    """The socket failed: refused, reset, unreachable, TLS failure."""


class ConnectError(NetworkError):
    """A connection could not be established (refused, DNS, TLS certificate...)."""


class ReadError(NetworkError):
    """Reading from an established connection failed (reset by peer...)."""


class WriteError(NetworkError):
    """Writing to an established connection failed."""


class ProtocolError(TransportError):
    """The HTTP exchange broke the protocol's rules."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something HTTP does not allow; nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The server sent bytes that are not valid HTTP, or closed mid-message."""


ExceptionMapping = Mapping[type[BaseException], type[AiopoolError]]


@contextlib.contextmanager
def map_exceptions(mapping: ExceptionMapping) -> Iterator[None]:
    """Translate backend exceptions into aiopool's, keeping the original as `__cause__`.

    The first entry of `mapping` that matches (by isinstance, in order) wins; exceptions already
    derived from `AiopoolError`, and anything unmatched, pass through untouched.
    """
    try:
        yield
    except AiopoolError:
        raise
    except Exception as exc:
        for from_exc, to_exc in mapping.items():
            if isinstance(exc, from_exc):
                raise to_exc(str(exc) or type(exc).__name__) from exc
        raise
