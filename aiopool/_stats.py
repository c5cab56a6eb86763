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
    - `reused`: the socket had carried an earlier request (HTTP/2: this is not the socket's
      first stream, even if the first is still open: Go's definition);
    - `was_idle`: it was taken from the idle pool (rather than freshly dialed or handed over
      directly by the request that released it); HTTP/2: reused while no other stream was open
      on it;
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
    """One origin's pool: the gauges now, and the counters since the client was created.

    Gauges:
    - `active`: sockets carrying at least one request now (an HTTP/2 socket with open streams);
    - `idle`: sockets open and carrying nothing (HTTP/1.1 in the idle stack, HTTP/2 with no
      stream);
    - `connecting`: dials in flight;
    - `waiting`: requests queued for a connection;
    - `streams`: open HTTP/2 streams.

    Counters (the meaning is the same as `PoolStats`'s, for this origin): `opened`, `reused`,
    `requests`, and `retries` (all reasons together).
    """

    active: int
    idle: int
    connecting: int
    waiting: int
    opened: int
    reused: int
    requests: int
    streams: int
    retries: int = 0


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The whole client. `hosts` is keyed by origin, e.g. "https://example.org:443".

    Counters, since the client was created; each request counts once, however many times it
    was sent (each hop of a redirect chain is a request of its own):
    - `requests`: requests that asked the pool for a connection;
    - `connections_opened`: sockets dialed and handed to the pool (TCP, TLS and, for HTTP/2,
      the server's SETTINGS done);
    - `connections_closed`: sockets the pool let go of, for any reason;
    - `reused`: requests whose response came on a socket that had carried an earlier request,
      i.e. responses with `conn_info.reused` true. A request that failed on a reused socket
      and was retried on a fresh one counts as not reused.
    - `retries`: requests sent again by the pool, by reason: "stale_socket" (a reused socket
      failed before any response byte: see the replay rule in `Request.replayable`),
      "request_timeout_408" (a 408 on a reused HTTP/1.1 socket), "unprocessed" (HTTP/2: a
      GOAWAY, REFUSED_STREAM or a socket refused in its preface proved the server never
      processed it). Not counted in `requests`. The client's retry policy (`aiopool.Retry`)
      adds its own as "policy_<reason>": "policy_connect_error", "policy_read_error",
      "policy_status_503"... (those are not in the per-host `HostStats.retries`).

    So for requests that got a response, each either came on a new socket's first request or
    on a reused one: `connections_opened + reused == requests` when every socket served a
    request and every request got its response (a socket opened for nothing, such as a dial
    that lost a race, or a request that failed, breaks the equality, by design).
    """

    requests: int
    connections_opened: int
    connections_closed: int
    reused: int
    hosts: dict[str, HostStats] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

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

        The counters come first (`retries` as a dict by reason), then the totals derived from
        `hosts` (`active`, `idle`,
        `connecting`, `waiting`, `streams`), then `hosts`: origin -> that origin's counters.
        The result is a new dict each call; changing it does not touch the snapshot.
        """
        return {
            "requests": self.requests,
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "reused": self.reused,
            "retries": dict(self.retries),
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
