"""A Starlette app that owns ONE aiopool.Client for its whole life, through its lifespan.

The pattern for web services: create the client when the app starts, store it on
``app.state``, use it from every handler, close it when the app shuts down. Every request
then shares one pool, so calls to the same upstream reuse warm sockets (and their TLS
sessions) instead of paying a connect and a handshake each; a client per request would.

Endpoints:

* ``GET /fanout?n=20`` -- n concurrent GETs to the upstream through the shared client; JSON
  with how many succeeded and the pool's stats (``PoolStats.as_dict()``). Call it twice and
  ``connections_opened`` does not grow: the second call runs on the first call's sockets.
* ``GET /stats`` -- the pool's stats as JSON.
* ``GET /metrics`` -- the same in the Prometheus text format (see prometheus_stats.py).

The upstream is an embedded local HTTPS server (throwaway trustme CA, started and stopped
by the same lifespan) unless ``--upstream URL`` names another. Serve it with hypercorn::

    python examples/web_app.py [--port 8000] [--upstream https://example.org]
    curl http://127.0.0.1:8000/fanout?n=50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _asgi_server import AsgiServer
from _local_server import LocalServer
from prometheus_stats import CONTENT_TYPE, render
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import aiopool

MAX_FANOUT = 1000  # one HTTP request must not make the app start unbounded work


def client_of(request: Request) -> aiopool.Client:
    client: aiopool.Client = request.app.state.client
    return client


async def fanout(request: Request) -> Response:
    try:
        n = int(request.query_params.get("n", "20"))
    except ValueError:
        n = -1
    if not 1 <= n <= MAX_FANOUT:
        return JSONResponse({"error": f"n must be an integer from 1 to {MAX_FANOUT}"}, 400)
    client = client_of(request)
    url = f"{request.app.state.upstream}/small.txt"
    results = await asyncio.gather(*(client.get(url) for _ in range(n)), return_exceptions=True)
    ok = failed = 0
    errors: set[str] = set()
    for result in results:
        if isinstance(result, aiopool.Response):
            ok += result.status_code == 200
            failed += result.status_code != 200
        elif isinstance(result, aiopool.TransportError):
            failed += 1  # the upstream is down or broke the protocol: report, don't crash
            errors.add(f"{type(result).__name__}: {result}")
        else:
            raise result  # a bug (or a cancellation), not an upstream failure
    body = {
        "requests": n,
        "ok": ok,
        "failed": failed,
        "errors": sorted(errors),
        "stats": client.stats().as_dict(),
    }
    return JSONResponse(body, status_code=200 if not failed else 502)


async def stats(request: Request) -> Response:
    return JSONResponse(client_of(request).stats().as_dict())


async def metrics(request: Request) -> Response:
    return PlainTextResponse(render(client_of(request).stats()), media_type=CONTENT_TYPE)


def create_app(upstream: str | None = None, verify: str | bool = True) -> Starlette:
    """The app; with no ``upstream`` its lifespan also runs an embedded HTTPS server."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            base, ca = upstream, verify
            if base is None:
                local = await stack.enter_async_context(LocalServer(tls=True))
                assert local.ca_path is not None
                base, ca = local.url, local.ca_path
            # Entered last, so closed first: no request can outlive the upstream it calls.
            # Timeouts shorter than the defaults: a handler that waits 30 s for an upstream
            # holds its own caller (and a worker) that long; failing fast answers 502 instead.
            # Idle sockets as many as busy ones, so a burst's sockets all stay warm for the next.
            app.state.client = await stack.enter_async_context(
                aiopool.Client(
                    verify=ca,
                    max_connections_per_host=20,
                    max_idle_per_host=20,
                    timeout=aiopool.Timeout(5.0, connect=2.0),
                )
            )
            app.state.upstream = base.rstrip("/")
            yield

    routes = [
        Route("/fanout", fanout),
        Route("/stats", stats),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def serve(port: int, upstream: str | None) -> None:
    async with AsgiServer(create_app(upstream), port=port) as server:
        print(f"serving {server.url}/fanout?n=20 , /stats and /metrics (Ctrl-C to stop)")
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (8000)")
    parser.add_argument("--upstream", help="base URL to fan out to (default: embedded server)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.upstream))
