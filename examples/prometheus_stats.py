"""Export the pool's statistics to Prometheus: ``client.stats()`` as a ``/metrics`` page.

The installed way is ``aiopool.integrations.prometheus`` (``pip install aiopool[prometheus]``):
``PoolCollector`` reads a fresh ``client.stats()`` at each scrape, ``RequestDurationMiddleware``
adds a request-duration histogram, and ``prometheus_client`` renders and serves them. That is
what running this file shows: it starts a local HTTP server (no internet needed), sends some
traffic through one client, then serves that client's metrics on a local ``/metrics`` endpoint
(``prometheus_client.generate_latest`` of a registry of its own) and prints one scrape of it.
``--serve`` keeps serving (with a trickle of traffic) until Ctrl-C, for a real Prometheus to
scrape::

    python examples/prometheus_stats.py [--requests 200] [--serve] [--port 0]

Without ``prometheus_client``, ``render(client.stats())`` here returns the same pool metrics in
the text exposition format (version 0.0.4) with no dependency (``web_app.py`` serves it): for
each metric a ``# HELP`` and a ``# TYPE`` line, then one sample per origin, e.g.
``aiopool_connections_active{origin="https://example.org:443"} 3``. Gauges say what the pool
holds now (active, idle, connecting sockets, waiting requests, open HTTP/2 streams); counters
only grow (requests, sockets opened and closed, requests on a reused socket), so Prometheus'
``rate()`` turns them into per-second figures. Label values are escaped as the format asks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

sys.path.append(str(Path(__file__).resolve().parent.parent))  # run from a plain checkout too

from _local_server import LocalServer
from prometheus_client import CollectorRegistry, generate_latest

import aiopool
from aiopool.integrations.prometheus import PoolCollector, RequestDurationMiddleware

__all__ = ["CONTENT_TYPE", "MetricsServer", "render"]

# https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# (name, type, help, HostStats field): one sample per origin.
_PER_ORIGIN = (
    ("aiopool_connections_active", "gauge", "Sockets carrying a request now.", "active"),
    ("aiopool_connections_idle", "gauge", "Sockets idle in the pool, ready for reuse.", "idle"),
    ("aiopool_connections_connecting", "gauge", "Sockets being dialed.", "connecting"),
    ("aiopool_requests_waiting", "gauge", "Requests waiting for a connection.", "waiting"),
    ("aiopool_http2_streams_open", "gauge", "HTTP/2 streams open now.", "streams"),
    ("aiopool_requests_total", "counter", "Requests sent.", "requests"),
    ("aiopool_connections_opened_total", "counter", "Sockets opened.", "opened"),
    (
        "aiopool_requests_reused_total",
        "counter",
        "Requests sent on a socket that had carried an earlier request.",
        "reused",
    ),
)


def escape_label_value(value: str) -> str:
    r"""A label value in the text format: ``\`` as ``\\``, ``"`` as ``\"``, newline as ``\n``."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # HELP text escapes only backslash and newline (the format spec).
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs.items())
    return "{" + inner + "}"


def render(stats: aiopool.PoolStats, labels: Mapping[str, str] | None = None) -> str:
    """``stats`` in the Prometheus text format; ``labels`` are added to every sample.

    Use ``labels`` to tell clients apart, e.g. ``{"client": "payments"}``. Raises
    ``ValueError`` for a label name the format does not allow (or ``origin``, which is ours).
    """
    extra = dict(labels or {})
    for name in extra:
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__") or name == "origin":
            raise ValueError(f"invalid Prometheus label name: {name!r}")
    lines: list[str] = []
    for name, kind, text, attr in _PER_ORIGIN:
        lines.append(f"# HELP {name} {_escape_help(text)}")
        lines.append(f"# TYPE {name} {kind}")
        for origin, host in sorted(stats.hosts.items()):
            lines.append(f"{name}{_labels({**extra, 'origin': origin})} {getattr(host, attr)}")
    # Closes are counted for the whole client only (a socket may close after its host's pool
    # is gone), so this one has no origin label.
    name = "aiopool_connections_closed_total"
    lines.append(f"# HELP {name} Sockets closed, all origins.")
    lines.append(f"# TYPE {name} counter")
    lines.append(f"{name}{_labels(extra)} {stats.connections_closed}")
    return "\n".join(lines) + "\n"  # the format wants a final line feed


class MetricsServer:
    """A minimal HTTP/1.1 server answering ``GET /metrics`` with ``render(get_stats())``.

    One request per connection (``Connection: close``): a scrape every few seconds needs no
    keep-alive, and the server stays a few lines long.
    """

    def __init__(
        self,
        get_stats: Callable[[], aiopool.PoolStats],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        labels: Mapping[str, str] | None = None,
        exposition: Callable[[], tuple[str, bytes]] | None = None,
    ) -> None:
        """`exposition`, when given, makes the page instead of `render`: it returns the
        content type and the body (a `prometheus_client` registry's, say)."""
        self._get_stats = get_stats
        self._labels = labels
        self._exposition = exposition
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    async def __aenter__(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "GET" and target.split("?", 1)[0] == "/metrics":
                status = "200 OK"
                if self._exposition is not None:
                    ctype, body = self._exposition()
                else:
                    ctype, body = CONTENT_TYPE, render(self._get_stats(), self._labels).encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a broken or garbage request: just drop the connection
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def traffic(client: aiopool.Client, url: str, n: int) -> None:
    await asyncio.gather(*(client.get(url) for _ in range(n)))


async def main(n: int, serve: bool, port: int) -> int:
    # A registry of our own (prometheus_client's global REGISTRY would do as well; it also
    # carries the process metrics).
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    durations = RequestDurationMiddleware(registry)

    def exposition() -> tuple[str, bytes]:
        # The 0.0.4 text format, which every Prometheus reads.
        return CONTENT_TYPE, generate_latest(registry)

    async with (
        LocalServer() as server,
        aiopool.Client(max_connections_per_host=10, middleware=[durations]) as client,
        MetricsServer(client.stats, port=port, exposition=exposition) as metrics,
    ):
        collector.add(client, name="example")
        await traffic(client, f"{server.url}/small.txt", n)
        # Scrape it as Prometheus would, with a separate client (its own pool, its own stats).
        async with aiopool.Client() as scraper:
            resp = await scraper.get(metrics.url)
        print(f"# GET {metrics.url} -> {resp.status_code} {resp.headers['content-type']}")
        print(resp.text, end="")
        if resp.status_code != 200 or resp.headers["content-type"] != CONTENT_TYPE:
            print("PROBLEM: the /metrics endpoint answered wrongly", file=sys.stderr)
            return 1
        if serve:
            print(f"# serving {metrics.url} until Ctrl-C", file=sys.stderr)
            while True:  # a trickle of traffic, so the counters move between scrapes
                await asyncio.sleep(1.0)
                await traffic(client, f"{server.url}/small.txt", 10)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200, help="requests before a scrape")
    parser.add_argument("--serve", action="store_true", help="keep serving /metrics")
    parser.add_argument("--port", type=int, default=0, help="port for /metrics (0: any free)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.requests, args.serve, args.port)))
