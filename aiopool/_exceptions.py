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
        ├── ProtocolError
        │   ├── LocalProtocolError      (we were about to send something illegal)
        │   └── RemoteProtocolError     (the server sent something illegal)
        └── ProxyError                  (the proxy refused or broke the handshake; .status_code)

Backend errors are translated once, at the edge where they are raised: OSError and ssl.SSLError
in `_backend` (dialing and the socket), h11's and h2's errors in `_http11` and `_http2`. Nothing
in between catches them piecemeal.
"""

from __future__ import annotations

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
    "ProxyError",
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


class ProxyError(TransportError):
    """The proxy refused to connect us (a non-2xx answer to CONNECT, a SOCKS failure reply) or
    broke its handshake protocol. `status_code` is the HTTP status of a CONNECT refusal (407:
    proxy authentication required, 403, 502...), None otherwise. The socket was closed.

    The message names the proxy and the target, never the proxy's credentials.
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
