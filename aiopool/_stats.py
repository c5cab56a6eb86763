"""Introspection: what a response's connection was, what the pool holds, what happened when.

All are frozen snapshots (as anyio's `LockStatistics`): reading one never races the pool.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Tracing lives in `_trace`; re-exported here, where introspection used to keep it.
from ._trace import TraceEvent, TraceHook, TraceName

__all__ = ("ConnInfo", "HostStats", "PoolStats", "TraceEvent", "TraceHook", "TraceName")


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """How a response's connection was obtained (Go's `httptrace.GotConnInfo`).

    - `id`: the connection's number within its client (1, 2, ...);
    - `reused`: the socket had carried an earlier request;
    - `was_idle`: it was taken from the idle pool (rather than freshly dialed or handed over
      directly by the request that released it);
    - `idle_time`: seconds it had been idle when taken (0.0 unless `was_idle`);
    - `http_version`: "HTTP/1.1" or "HTTP/2".
    """

    id: int
    reused: bool
    was_idle: bool
    idle_time: float
    http_version: str


@dataclass(frozen=True, slots=True)
class HostStats:
    """One origin's pool. `active` counts sockets carrying a request now."""

    active: int
    idle: int
    connecting: int
    waiting: int
    opened: int
    reused: int
    requests: int
    streams: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The whole client. `hosts` is keyed by origin, e.g. "https://example.org:443"."""

    requests: int
    connections_opened: int
    connections_closed: int
    reused: int
    hosts: dict[str, HostStats] = field(default_factory=dict)

    @property
    def active(self) -> int:
        return sum(h.active for h in self.hosts.values())

    @property
    def idle(self) -> int:
        return sum(h.idle for h in self.hosts.values())

    @property
    def connecting(self) -> int:
        return sum(h.connecting for h in self.hosts.values())

    @property
    def waiting(self) -> int:
        return sum(h.waiting for h in self.hosts.values())

    @property
    def streams(self) -> int:
        return sum(h.streams for h in self.hosts.values())

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain builtins (ints, strs, dicts), for JSON, logs or a metrics agent.

        The counters come first, then the totals derived from `hosts` (`active`, `idle`,
        `connecting`, `waiting`, `streams`), then `hosts`: origin -> that origin's counters.
        The result is a new dict each call; changing it does not touch the snapshot.
        """
        return {
            "requests": self.requests,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "reused": self.reused,
            "active": self.active,
            "idle": self.idle,
            "connecting": self.connecting,
            "waiting": self.waiting,
            "streams": self.streams,
            "hosts": {origin: asdict(host) for origin, host in self.hosts.items()},
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """`as_dict()` as a JSON document, keys in the same order; `indent` as in `json.dumps`."""
        return json.dumps(self.as_dict(), indent=indent)
