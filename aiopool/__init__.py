"""aiopool: an asyncio-native HTTP client whose heart is its connection pool.

    async with aiopool.Client() as client:
        resp = await client.get("https://example.org/")

Everything public is re-exported here; modules starting with an underscore are private.
"""

# First: `_exceptions` and `_models` import each other (see the end of `_exceptions`), which
# works when `_exceptions` is the one loaded first, whatever order the modules below use.
from . import _exceptions  # noqa: F401
from ._client import Client, StreamContext
from ._config import Timeout
from ._cookies import Cookies
from ._exceptions import (
    AiopoolError,
    AiopoolWarning,
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    CookieConflict,
    DecodingError,
    HTTPStatusError,
    InsecureRequestWarning,
    InvalidRedirect,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RedirectBodyNotReplayable,
    RedirectError,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    ResponseTooLarge,
    StreamClosed,
    StreamConsumed,
    StreamError,
    TimeoutException,
    TLSHandshakeTimeout,
    TooManyRedirects,
    TotalTimeout,
    TransportError,
    WriteError,
    WriteTimeout,
)
from ._headers import Headers
from ._models import Request, Response
from ._pool import Dialer
from ._pool_transport import PoolTransport
from ._resolver import CachingResolver, Resolver, SystemResolver
from ._retry import Retry, RetryBudget
from ._stats import ConnInfo, HostStats, PoolStats
from ._trace import TraceEvent, TraceHook, TraceName
from ._transport import Handler, Middleware, MockTransport, Transport
from ._urls import URL
from ._version import __version__

__all__ = (
    "URL",
    "AiopoolError",
    "AiopoolWarning",
    "CachingResolver",
    "Client",
    "ClientClosed",
    "ConnInfo",
    "ConnectError",
    "ConnectTimeout",
    "CookieConflict",
    "Cookies",
    "DecodingError",
    "Dialer",
    "HTTPStatusError",
    "Handler",
    "Headers",
    "HostStats",
    "InsecureRequestWarning",
    "InvalidRedirect",
    "InvalidURL",
    "LocalProtocolError",
    "Middleware",
    "MockTransport",
    "NetworkError",
    "PoolStats",
    "PoolTimeout",
    "PoolTransport",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RedirectBodyNotReplayable",
    "RedirectError",
    "RemoteProtocolError",
    "Request",
    "Resolver",
    "Response",
    "ResponseHeaderTimeout",
    "ResponseTooLarge",
    "Retry",
    "RetryBudget",
    "StreamClosed",
    "StreamConsumed",
    "StreamContext",
    "StreamError",
    "SystemResolver",
    "TLSHandshakeTimeout",
    "Timeout",
    "TimeoutException",
    "TooManyRedirects",
    "TotalTimeout",
    "TraceEvent",
    "TraceHook",
    "TraceName",
    "Transport",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "__version__",
)
