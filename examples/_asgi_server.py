"""Serve an ASGI app with hypercorn inside the caller's event loop, on a free local port.

The examples that need a real ASGI server (the Starlette app, the HTTP/2 server) use this:
``async with AsgiServer(app, tls=True) as server: ... server.url, server.ca_path``. With
``tls=True`` a throwaway ``trustme`` CA issues a certificate for ``localhost``/``127.0.0.1``,
hypercorn offers ``h2`` and ``http/1.1`` by ALPN, and the CA bundle is written to a temporary
file a client can pass as ``verify=``. Nothing here needs the internet.

The listening socket is bound and listening before hypercorn starts, so the port is known at
once (port 0 picks a free one) and a connection made early waits in the backlog instead of
being refused. Entering the block runs the app's lifespan startup; leaving it runs shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
from types import TracebackType
from typing import Any, Self

from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets

__all__ = ["AsgiServer"]

# Long enough for a slow CI machine, short enough that a broken start does not hang a demo.
_START_TIMEOUT = 10.0
# hypercorn waits this long for open requests at shutdown before it cancels them.
_GRACEFUL_TIMEOUT = 1.0


class _ReadyConfig(Config):
    """A hypercorn Config that serves a socket bound beforehand and says when it does.

    hypercorn calls ``create_sockets()`` after the app's lifespan startup completed, right
    before it starts accepting: the moment the server is ready.
    """

    def __init__(self, listener: socket.socket, ready: asyncio.Event) -> None:
        super().__init__()
        self._listener = listener
        self._ready = ready

    def create_sockets(self) -> Sockets:
        self._ready.set()
        if self.ssl_enabled:
            return Sockets([self._listener], [], [])
        return Sockets([], [self._listener], [])


class AsgiServer:
    """hypercorn serving ``app`` on ``host``; ``url`` and ``ca_path`` (TLS only) once entered.

    ``max_concurrent_streams`` is the SETTINGS_MAX_CONCURRENT_STREAMS hypercorn announces on
    HTTP/2 connections (RFC 9113 section 6.5.2). Entering raises ``RuntimeError`` if hypercorn
    does not start (for example, the app's lifespan startup failed).
    """

    def __init__(
        self,
        app: Any,
        *,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent_streams: int = 100,
    ) -> None:
        self.app = app
        self.tls = tls
        self.host = host
        self.port = port
        self.max_concurrent_streams = max_concurrent_streams
        self.ca_path: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        # "localhost" for TLS: the name the certificate was issued for, as a browser would use.
        return f"https://localhost:{self.port}" if self.tls else f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        listener = socket.create_server((self.host, self.port))
        listener.setblocking(False)
        self.port = listener.getsockname()[1]
        ready = asyncio.Event()
        config = _ReadyConfig(listener, ready)
        config.h2_max_concurrent_streams = self.max_concurrent_streams
        config.graceful_timeout = _GRACEFUL_TIMEOUT
        config.accesslog = None
        # hypercorn logs every connection error at INFO and up; the examples print their own.
        config.errorlog = logging.getLogger("aiopool.examples.hypercorn")
        if self.tls:
            self._write_certificates(config)
        self._task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._stop.wait, mode="asgi")
        )
        waiter = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait(
                {waiter, self._task}, timeout=_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            started = ready.is_set() and not self._task.done()
        except BaseException:  # cancelled while starting: take the server down with us
            started = False
            raise
        finally:
            waiter.cancel()
            if not started:
                error = await self._abort_start(listener)
        if not started:
            raise RuntimeError("hypercorn did not start") from error
        return self

    async def _abort_start(self, listener: socket.socket) -> BaseException | None:
        task, self._task = self._task, None
        assert task is not None
        task.cancel()
        (result,) = await asyncio.gather(task, return_exceptions=True)
        listener.close()  # hypercorn never took it over, or has closed it: either way, free
        self._cleanup()
        return result if isinstance(result, Exception) else None

    def _write_certificates(self, config: Config) -> None:
        import trustme

        ca = trustme.CA()
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="aiopool-asgi-")
        directory = self._tmpdir.name
        self.ca_path = os.path.join(directory, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        config.keyfile = os.path.join(directory, "key.pem")
        config.certfile = os.path.join(directory, "chain.pem")
        leaf.private_key_pem.write_to_path(config.keyfile)
        with open(config.certfile, "wb") as f:
            f.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        config.alpn_protocols = ["h2", "http/1.1"]  # RFC 7301: the server picks from our list

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, _GRACEFUL_TIMEOUT + _START_TIMEOUT)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
