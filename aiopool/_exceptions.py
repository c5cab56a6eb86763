"""The exception tree: one root, grouped by what went wrong.

    AiopoolError
    ├── InvalidURL
    ├── ClientClosed
    ├── HTTPStatusError                 (raise_for_status)
    ├── ResponseTooLarge                (a body over max_response_size; .limit, .request)
    ├── CookieConflict                  (Cookies.get: several cookies match a name)
    ├── RedirectError                   (carries .response, .history, .request)
    │   ├── TooManyRedirects
    │   ├── InvalidRedirect             (also an InvalidURL)
    │   └── RedirectBodyNotReplayable
    ├── StreamError
    │   ├── StreamConsumed
    │   └── StreamClosed
    └── TransportError                  (carries .request when known)
        ├── TimeoutException
        │   ├── ConnectTimeout · ReadTimeout · WriteTimeout · PoolTimeout
        │   ├── TLSHandshakeTimeout     (also a ConnectTimeout)
        │   ├── ResponseHeaderTimeout · TotalTimeout
        ├── NetworkError
        │   ├── ConnectError · ReadError · WriteError
        ├── DecodingError               (Content-Encoding corrupt, truncated, or a bomb)
        ├── ProtocolError
        │   ├── LocalProtocolError      (we were about to send something illegal)
        │   └── RemoteProtocolError     (the server sent something illegal)
        └── ProxyError                  (the proxy refused or broke the handshake; .status_code)

Warnings have their own root, `AiopoolWarning` (a `Warning`, not an error: urllib3's
`HTTPWarning` tree), so `-W error::aiopool.AiopoolWarning` or one filter catches them all:

    AiopoolWarning
    └── InsecureRequestWarning          (verify=False: once per host per client)

Backend errors are translated once, at the edge where they are raised: OSError and ssl.SSLError
in `_backend` (dialing and the socket), h11's and llhttp's in their codecs (`_h1_h11`,
`_h1_httptools`), h2's in `_http2`. Nothing in between catches them piecemeal.
"""

from __future__ import annotations

__all__ = (
    "AiopoolError",
    "AiopoolWarning",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "CookieConflict",
    "DecodingError",
    "HTTPStatusError",
    "InsecureRequestWarning",
    "InvalidRedirect",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RedirectBodyNotReplayable",
    "RedirectError",
    "RemoteProtocolError",
    "ResponseHeaderTimeout",
    "ResponseTooLarge",
    "StreamClosed",
    "StreamConsumed",
    "StreamError",
    "TLSHandshakeTimeout",
    "TimeoutException",
    "TooManyRedirects",
    "TotalTimeout",
    "TransportError",
    "WriteError",
    "WriteTimeout",
)


class AiopoolError(Exception):
    """Root of every exception aiopool raises on purpose."""

    # Spelled out so that `inspect.signature()` works on every class of the tree (documentation
    # tools read it): BaseException's own `__init__` is C code without a signature to read.
    def __init__(self, *args: object) -> None:
        super().__init__(*args)


class InvalidURL(AiopoolError):
    """The URL could not be parsed, or its scheme is not http/https."""


class ClientClosed(AiopoolError):
    """The client was closed: it accepts no new requests, and `aclose()` fails the requests
    still in flight or waiting for a connection with this error."""


class HTTPStatusError(AiopoolError):
    """Raised by `Response.raise_for_status()` for 4xx and 5xx responses."""

    def __init__(self, message: str, *, request: Request, response: Response) -> None:
        super().__init__(message)
        self.request = request
        self.response = response


class ResponseTooLarge(AiopoolError):
    """A body to be buffered (`client.get()`, `response.aread()`) is larger than
    `max_response_size` (`limit`, counted after decoding). The socket was closed, not drained.

    Not a `TransportError`: the exchange did not fail, our limit refused it, and sending the
    request again cannot help. Stream the body with `client.stream()` instead, or raise the
    limit (`max_response_size=None` removes it).
    """

    def __init__(self, message: str, *, limit: int, request: Request) -> None:
        super().__init__(message)
        self.limit = limit
        self.request = request


class CookieConflict(AiopoolError):
    """`Cookies.get(name)` matched cookies of that name for several domains or paths; pass
    `domain=` (and `path=`) to choose one."""


class RedirectError(AiopoolError):
    """A redirect could not be followed.

    `response` is the redirect response that could not be followed (its body already read, its
    connection back in the pool), `history` the redirect responses before it, oldest first, and
    `request` the request `response` answered.
    """

    def __init__(self, message: str, *, response: Response, history: list[Response]) -> None:
        super().__init__(message)
        self.response = response
        self.history = history

    @property
    def request(self) -> Request:
        return self.response.request


class TooManyRedirects(RedirectError):
    """More than `max_redirects` redirects in a row (a loop, most likely)."""


class InvalidRedirect(RedirectError, InvalidURL):
    """The Location of a redirect is not a valid URL, or not an http(s) one."""


class RedirectBodyNotReplayable(RedirectError):
    """A 307 or 308 redirect asks for the request body again, but it was an async iterable,
    which can be sent once only. Pass the body as bytes to allow following such redirects, or
    `follow_redirects=False` to handle them yourself."""


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
    # How many times the call was sent under the client's retry policy before this error ended
    # it (1: no retry). Set by the client on the error it raises.
    attempts: int = 1


class TimeoutException(TransportError):
    """Base of the four timeouts.

    The message reads `METHOD ORIGIN: what did not happen in how long, which timeout [while
    PHASE]`, e.g. `GET https://example.org:443: no bytes arrived for 30 s (the read timeout)
    while waiting for the response head`. Each part is supplied where it is known, once: the
    wait and its timeout where the timer fires (`_backend`, the pool, the HTTP/2 stream), the
    phase by the connection that was waiting (`phase`), the method and origin by `request`
    once the client attaches it. The origin is scheme, host and port only: no credentials, no
    path or query (they may carry secrets).
    """

    phase: str | None = None  # e.g. "reading the response body"; set by the connection

    def __str__(self) -> str:
        text = super().__str__()
        if self.phase is not None:
            text = f"{text} while {self.phase}"
        request = self.request
        if request is not None:
            text = f"{request.method} {request.url.origin}: {text}"
        return text


class ConnectTimeout(TimeoutException):
    """The TCP connect or the TLS handshake took longer than `Timeout.connect`."""


class ReadTimeout(TimeoutException):
    """No byte arrived within `Timeout.read` while we were waiting for one."""


class WriteTimeout(TimeoutException):
    """The socket did not accept our bytes within `Timeout.write`."""


class PoolTimeout(TimeoutException):
    """No connection could be leased within `Timeout.pool`."""


class TLSHandshakeTimeout(ConnectTimeout):
    """The TLS handshake of a new connection took longer than `Timeout.tls_handshake` (the TCP
    connect had succeeded). A `ConnectTimeout`, so code catching that keeps working."""


class ResponseHeaderTimeout(TimeoutException):
    """The response head did not arrive within `Timeout.response_header` of the request being
    fully written, however steadily its bytes trickled in (Go's `ResponseHeaderTimeout`)."""


class TotalTimeout(TimeoutException):
    """The whole call (connection, redirects, retries and backoffs, and the body for `get()`;
    until the block's end for `stream()`) took longer than `Timeout.total`. The message names
    what it was doing when the deadline passed; the connection it was using was closed."""


def in_phase(exc: BaseException, phase: str) -> None:
    """Say which phase of the exchange `exc` cut short, if it is a timeout not yet placed (the
    innermost phase wins: a body read inside a send keeps its own)."""
    if isinstance(exc, TimeoutException) and exc.phase is None:
        exc.phase = phase


def seconds(value: float | None) -> str:
    """A timeout as a person reads it: `30 s`, `0.25 s`."""
    return "no limit" if value is None else f"{value:g} s"


class NetworkError(TransportError):
    """The socket failed: refused, reset, unreachable, TLS failure."""


class ConnectError(NetworkError):
    """A connection could not be established (refused, DNS, TLS certificate...)."""


class ReadError(NetworkError):
    """Reading from an established connection failed (reset by peer...)."""


class WriteError(NetworkError):
    """Writing to an established connection failed."""


class DecodingError(TransportError):
    """The response body could not be decoded by its Content-Encoding: corrupt or truncated
    data, more than 5 codings, or a body expanding past the decompression-bomb bound. Raised
    while the body is read; its connection was closed (the HTTP/2 stream reset) unless the
    body had arrived whole and the socket was clean.

    A `TransportError` (with `.request`) because, like a broken connection, it means the
    response the server sent is unusable; not a `ProtocolError`, whose HTTP framing it is not.
    """


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


class AiopoolWarning(Warning):
    """Root of every warning aiopool emits (leaked responses aside: those are Python's own
    `ResourceWarning`)."""

    # As `AiopoolError.__init__`: a signature `inspect.signature()` can read.
    def __init__(self, *args: object) -> None:
        super().__init__(*args)


class InsecureRequestWarning(AiopoolWarning):
    """A TLS connection was made without verifying the server's certificate (`verify=False`).

    Emitted once per host per client, when the first connection to that host is set up, as
    urllib3's warning of the same name (which requests shows once per host too). Silence it
    with `warnings.filterwarnings("ignore", category=aiopool.InsecureRequestWarning)`, only
    where an unverified connection is really meant.
    """


# The models raise these exceptions and these exceptions carry the models, so the import that
# closes the circle comes last, once every class above exists (`_models` imports them from this
# module while it loads). It is a runtime import, not a TYPE_CHECKING one, so that
# `typing.get_type_hints()` resolves `.request` and `.response`. `aiopool/__init__.py` imports
# this module first, so it is always this module that starts the circle.
from ._models import Request, Response  # noqa: E402
