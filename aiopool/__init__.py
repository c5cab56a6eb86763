"""aiopool: an asyncio-native HTTP client whose heart is its connection pool.

    async with aiopool.Client() as client:
        resp = await client.get("https://example.org/")

Everything public is re-exported here; modules starting with an underscore are private.
"""

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
    ResponseTooLarge,
    StreamClosed,
    StreamConsumed,
    StreamError,
    TimeoutException,
    TooManyRedirects,
    TransportError,
    WriteError,
    WriteTimeout,
)
from ._headers import Headers
from ._models import Request, Response
from ._stats import ConnInfo, HostStats, PoolStats
from ._trace import TraceEvent, TraceHook, TraceName
from ._urls import URL
from ._version import __version__

__all__ = (
    "URL",
    "AiopoolError",
    "AiopoolWarning",
    "Client",
    "ClientClosed",
    "ConnInfo",
    "ConnectError",
    "ConnectTimeout",
    "CookieConflict",
    "Cookies",
    "DecodingError",
    "HTTPStatusError",
    "Headers",
    "HostStats",
    "InsecureRequestWarning",
    "InvalidRedirect",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolStats",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RedirectBodyNotReplayable",
    "RedirectError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseTooLarge",
    "StreamClosed",
    "StreamConsumed",
    "StreamContext",
    "StreamError",
    "Timeout",
    "TimeoutException",
    "TooManyRedirects",
    "TraceEvent",
    "TraceHook",
    "TraceName",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "__version__",
)
