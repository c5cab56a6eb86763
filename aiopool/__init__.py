"""aiopool: an asyncio-native HTTP client whose heart is its connection pool.

    async with aiopool.Client() as client:
        resp = await client.get("https://example.org/")

Everything public is re-exported here; modules starting with an underscore are private.
"""

from ._client import Client, StreamContext
from ._config import Timeout
from ._exceptions import (
    AiopoolError,
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    HTTPStatusError,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ProtocolError,
    ProxyError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    StreamClosed,
    StreamConsumed,
    StreamError,
    TimeoutException,
    TransportError,
    WriteError,
    WriteTimeout,
)
from ._headers import Headers
from ._models import Request, Response
from ._stats import ConnInfo, HostStats, PoolStats, TraceEvent
from ._urls import URL

__version__ = "0.1.0"

__all__ = (
    "URL",
    "AiopoolError",
    "Client",
    "ClientClosed",
    "ConnInfo",
    "ConnectError",
    "ConnectTimeout",
    "HTTPStatusError",
    "Headers",
    "HostStats",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "PoolStats",
    "PoolTimeout",
    "ProtocolError",
    "ProxyError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "Response",
    "StreamClosed",
    "StreamConsumed",
    "StreamContext",
    "StreamError",
    "Timeout",
    "TimeoutException",
    "TraceEvent",
    "TransportError",
    "WriteError",
    "WriteTimeout",
    "__version__",
)
