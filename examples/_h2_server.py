"""A tiny HTTP/2 server for the examples: hypercorn (h2 over TLS) serving a small ASGI app.

``_local_server.py`` speaks only HTTP/1.1; this one negotiates ``h2`` by ALPN with a throwaway
``trustme`` CA, in the caller's event loop::

    async with H2Server(max_concurrent_streams=10) as server:
        ... server.url, server.ca_path, server.app.streams_by_connection

Routes:

* ``/hello`` -- 200, a short text.
* ``/together?group=G&n=N`` -- holds each request until N requests of group G are in flight
  at once (or ``TOGETHER_TIMEOUT`` passed), then answers them all with JSON: the client's
  port (which identifies its connection), how many were in flight, and whether the group
  filled. A barrier makes concurrency certain rather than a matter of timing.

The app records, per client connection (its remote port), the most streams it carried at
once: the server's own view of multiplexing, independent of the client's statistics.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from _asgi_server import AsgiServer

__all__ = ["TOGETHER_TIMEOUT", "H2App", "H2Server"]

HELLO = b"Hello over HTTP/2.\n"
# Generous: every request of a group is sent at once, so a full group forms in milliseconds.
TOGETHER_TIMEOUT = 5.0

Scope = dict[str, Any]
Receive = Any
Send = Any


@dataclass
class _Group:
    arrived: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)


class H2App:
    """The ASGI app; ``streams_by_connection`` maps client port -> peak concurrent streams."""

    def __init__(self) -> None:
        self.streams_by_connection: dict[int, int] = {}
        self.http_versions: set[str] = set()
        self._open: dict[int, int] = {}
        self._groups: dict[str, _Group] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.http_versions.add(scope["http_version"])
        port = scope["client"][1] if scope.get("client") else 0
        self._open[port] = self._open.get(port, 0) + 1
        peak = self.streams_by_connection.get(port, 0)
        self.streams_by_connection[port] = max(peak, self._open[port])
        try:
            await self._serve(scope, send, port)
        finally:
            self._open[port] -= 1

    async def _serve(self, scope: Scope, send: Send, port: int) -> None:
        if scope["path"] == "/hello":
            await _respond(send, 200, HELLO, b"text/plain")
        elif scope["path"] == "/together":
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            size = query.get("n", "1")
            if not size.isdigit():
                await _respond(send, 400, b"n must be a number\n", b"text/plain")
                return
            group = self._groups.setdefault(query.get("group", ""), _Group())
            group.arrived += 1
            if group.arrived >= int(size):
                group.full.set()
            try:
                async with asyncio.timeout(TOGETHER_TIMEOUT):
                    await group.full.wait()
            except TimeoutError:
                pass
            body = {
                "port": port,
                "in_flight": group.arrived,
                "filled": group.full.is_set(),
                "http_version": scope["http_version"],
            }
            await _respond(send, 200, json.dumps(body).encode(), b"application/json")
        else:
            await _respond(send, 404, b"not found\n", b"text/plain")


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class H2Server(AsgiServer):
    """hypercorn over TLS (ALPN ``h2``, ``http/1.1``) serving an ``H2App`` as ``self.app``."""

    app: H2App

    def __init__(self, *, max_concurrent_streams: int = 100) -> None:
        super().__init__(H2App(), tls=True, max_concurrent_streams=max_concurrent_streams)
