"""Clients watched by a metrics integration, and their `stats()` read safely from any thread.

Metrics libraries read gauges from threads of their own: OpenTelemetry's periodic reader
calls observable-instrument callbacks on its exporter thread, `prometheus_client`'s
`start_http_server` collects on its HTTP server thread. A client's pool books belong to its
event loop (they change with no lock, between awaits), so a snapshot taken from another thread
could see a dict change size mid-iteration. Here the read hops onto the client's loop
(`call_soon_threadsafe`) and the other thread waits for it, boundedly; on the loop's own thread
it is a plain call.

Clients are held weakly: watching a client never keeps it (and its sockets) alive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Iterator
from urllib.parse import urlsplit

from .._client import Client
from .._stats import PoolStats

__all__ = ("ObservedClients", "split_origin")

# How long another thread waits for a busy loop to take a snapshot before skipping that client
# for this collection (a gauge missing from one scrape is better than a scrape that hangs).
READ_TIMEOUT = 1.0


class ObservedClients:
    """A weak set of (client, its event loop, a label) with thread-safe `stats()` reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[weakref.ref[Client], asyncio.AbstractEventLoop | None, str]]
        self._entries = {}

    def add(self, client: Client, label: str = "") -> None:
        """Watch `client`. Call it on the client's event loop (its loop is noted then); called
        outside any loop, the client is read directly, which is safe only from its own thread.
        Raises `TypeError` for something that is not an `aiopool.Client`."""
        if not isinstance(client, Client):
            raise TypeError(f"expected an aiopool.Client, not {type(client).__name__}")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        key = id(client)

        def forget(_: object, key: int = key) -> None:
            with self._lock:
                self._entries.pop(key, None)

        with self._lock:
            self._entries[key] = (weakref.ref(client, forget), loop, label)

    def discard(self, client: Client) -> None:
        """Stop watching `client` (nothing if it was not watched)."""
        with self._lock:
            entry = self._entries.get(id(client))
            if entry is not None and entry[0]() is client:
                del self._entries[id(client)]

    def labels(self) -> set[str]:
        """The labels of the clients watched and still alive."""
        with self._lock:
            entries = list(self._entries.values())
        return {label for ref, _, label in entries if ref() is not None}

    def __len__(self) -> int:
        return len(self._entries)

    def snapshots(self) -> Iterator[tuple[str, PoolStats]]:
        """(label, `client.stats()`) for every watched client still alive and open."""
        with self._lock:
            entries = list(self._entries.values())
        for ref, loop, label in entries:
            client = ref()
            if client is None or client.is_closed:
                continue
            stats = _read(client, loop)
            if stats is not None:
                yield label, stats


def _read(client: Client, loop: asyncio.AbstractEventLoop | None) -> PoolStats | None:
    """`client.stats()`, taken on `loop` when called from another thread while it runs; None
    if that loop is closed or did not answer within `READ_TIMEOUT`."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if loop is None or here is loop or not loop.is_running():
        # Nothing else can be changing the books: we are their loop, or it is not running.
        return client.stats()
    future: concurrent.futures.Future[PoolStats] = concurrent.futures.Future()

    def take() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(client.stats())
            except Exception as exc:  # Defensive: stats() raises nothing today
                future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(take)
    except RuntimeError:  # the loop was closed meanwhile
        return None
    try:
        return future.result(READ_TIMEOUT)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return None


def split_origin(name: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a `PoolStats.hosts` key such as "https://example.org:443",
    "http://[::1]:8080 via http://proxy:3128" or "https://a.example:443 #2"."""
    parts = urlsplit(name.split(" ", 1)[0])
    return parts.scheme, parts.hostname or "", parts.port or 0
