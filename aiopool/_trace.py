"""Tracing: Go's `net/http/httptrace.ClientTrace`, as events given to hooks and to a logger.

Where events go: the client's hook (`Client(trace=fn)`), the request's own hook
(`client.get(url, trace=fn)`: the events of that request, including those of a dial its wait
started, even if another request ends up with that socket, as Go attributes them), and the
`logging.getLogger("aiopool")` logger at DEBUG. Connection-level events that belong to no
request (`conn_closed`, a dial nobody is tracing) go to the client's hook and the logger.

The rule that keeps tracing free when unused: no `TraceEvent` is built unless someone listens.
Whether anyone does is decided once per request (`tracer_for`): with no hook and DEBUG off, the
request carries `None` and every emission point costs one `is not None` test.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ("TraceEvent", "TraceHook", "TraceName", "Tracer", "logger", "tracer_for")

logger = logging.getLogger("aiopool")

TraceName = Literal[
    "get_conn",
    "dns_start",
    "dns_done",
    "connect_start",
    "connect_done",
    "tls_handshake_start",
    "tls_handshake_done",
    "got_conn",
    "wrote_headers",
    "wait_100_continue",
    "got_100_continue",
    "wrote_request",
    "got_first_response_byte",
    "put_idle_conn",
    "conn_closed",
    "retry",
]


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One step of a request's or a connection's life (Go's `httptrace.ClientTrace` hooks).

    Every event has `name`, `time` (the event loop's `loop.time()` when it happened), `origin`
    (e.g. "https://example.org:443") and `conn_id` (the connection's number, as in
    `ConnInfo.id`; None before a socket exists). `info`, a read-only mapping, holds the
    event's own fields below, and repeats `origin` and `conn_id` (where earlier versions kept
    them):

    ========================== ==============================================================
    name                       info
    ========================== ==============================================================
    get_conn                   host_port: "host:port" a connection is wanted for
    dns_start                  host: the name being resolved (only for a name, not an IP
                               address or a unix socket; by the default dialer)
    dns_done                   host; addrs: the addresses found, best first (a tuple of
                               str, empty on failure); error: None, or the `ConnectError`
    connect_start              network: "tcp" ("unix" for `uds=`); addr: "host:port" being
                               dialed (the socket's path over `uds=`)
    connect_done               network; addr; error: None, or the `ConnectError` /
                               `ConnectTimeout` the dial failed with (conn_id is None then)
    tls_handshake_start        server_name: the SNI / name the certificate must match
    tls_handshake_done         version ("TLSv1.3"), cipher, alpn ("h2", "http/1.1" or None);
                               error: None, or the `ConnectError` the handshake failed with
    got_conn                   reused, was_idle, idle_time (s), http_version: as `ConnInfo`
    wrote_headers              method, target; stream_id (HTTP/2 only)
    wait_100_continue          (stream_id on HTTP/2): the head carried `Expect: 100-continue`
                               and the body waits for `100 Continue`, a final response or
                               the client's `expect_continue_timeout`
    got_100_continue           (stream_id on HTTP/2)
    wrote_request              error: None, or what writing failed with; body_withheld: True
                               if a final response arrived before `100 Continue` and the body
                               was never sent
    got_first_response_byte    stream_id (HTTP/2 only)
    put_idle_conn              error: None if the HTTP/1.1 socket went back to the pool (to
                               the idle stack or straight to a waiting request), else why
                               not (a str, e.g. "idle limit reached")
    conn_closed                reason: "idle_timeout", "peer_closed_idle", "idle_limit",
                               "stale_idle" (an idle socket found unusable when checked out),
                               "not_reusable" (Connection: close, HTTP/1.0, an unsent body,
                               bytes after the response...), "error" (a failure or a
                               cancellation mid-exchange), "goaway", "client_closed",
                               "surplus" (an extra HTTP/2 socket, dialed while the protocol
                               was unknown, that another socket made unnecessary),
                               "closed_idle" (`client.close_idle_connections()`)
    retry                      the client's retry policy sends the request again: reason
                               ("connect_error", "read_error", "status_503"...), attempt (the
                               attempt about to start: 2, 3...), delay (s, the backoff or
                               Retry-After about to be slept), error (what the last attempt
                               failed with, or None for a status)
    ========================== ==============================================================

    `error` values are exceptions (from the `aiopool.AiopoolError` tree, or `CancelledError`)
    unless said otherwise. HTTP/2 sockets report no `put_idle_conn` (a stream ending does not
    pool a socket; Go's HTTP/2 transport reports none either).
    """

    name: TraceName
    time: float
    origin: str
    conn_id: int | None
    info: Mapping[str, Any]


class TraceHook(Protocol):
    def __call__(self, event: TraceEvent, /) -> None: ...


class Tracer:
    """Where one request's (or the pool's) events go: up to two hooks, and the logger.

    Only built by `tracer_for` when someone listens. A hook that raises is logged (ERROR, on
    the "aiopool" logger) and otherwise ignored: tracing must never change what a request or
    the pool does (a dial whose hook raised must still be booked as done).
    """

    __slots__ = ("_client_hook", "_request_hook")

    def __init__(self, client_hook: TraceHook | None, request_hook: TraceHook | None) -> None:
        self._client_hook = client_hook
        self._request_hook = request_hook

    def __call__(self, name: TraceName, origin: object, conn_id: int | None, **info: Any) -> None:
        where = str(origin)
        fields = {**info, "origin": where, "conn_id": conn_id}
        time = asyncio.get_running_loop().time()
        event = TraceEvent(name, time, where, conn_id, types.MappingProxyType(fields))
        if logger.isEnabledFor(logging.DEBUG):
            # Lazy %-formatting: nothing is rendered unless a handler takes the record.
            logger.debug("trace %s %s conn=%s %s", name, where, conn_id, info)
        for hook in (self._client_hook, self._request_hook):
            if hook is not None:
                try:
                    hook(event)
                except Exception:
                    logger.exception("trace hook %r failed on %s", hook, name)


def tracer_for(client_hook: TraceHook | None, request_hook: TraceHook | None) -> Tracer | None:
    """A `Tracer` if anyone listens (a hook, or the "aiopool" logger at DEBUG), else None."""
    if client_hook is None and request_hook is None and not logger.isEnabledFor(logging.DEBUG):
        return None
    return Tracer(client_hook, request_hook)
