"""Timeouts and the body-drain bound: the small value types the client is configured with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = (
    "DEFAULT_HEAD_LIMITS",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DRAIN_MAX_BYTES",
    "DRAIN_TIMEOUT",
    "MAX_INTERIM_RESPONSES",
    "HeadLimits",
    "Timeout",
    "TimeoutTypes",
)

# When a streamed HTTP/1.1 response is closed with its body unread, we read (and discard) up to
# this much more, for at most DRAIN_TIMEOUT seconds, to keep the socket reusable; past either
# bound the socket is closed instead. Go's net/http uses the same pair (256 KiB, 50 ms): on a LAN
# 256 KiB arrives in well under 50 ms, and 50 ms is less than a fresh TCP + TLS handshake costs
# over most WAN links, so draining is only attempted when it is cheaper than reconnecting.
DRAIN_MAX_BYTES = 256 * 1024
DRAIN_TIMEOUT = 0.05

# The most body bytes (after decoding) `client.get()` or `response.aread()` buffer in memory.
# A finite default, because a server that trickles gigabytes at `await client.get()` must not
# take the process down with it; streaming (`aiter_bytes()`) is not capped, the caller owns
# that memory. 100 MiB: Elasticsearch's low-level REST client buffers at most 100 MB the same
# way (HeapBufferedResponseConsumer); gRPC caps messages at 4 MiB and Spring's WebClient at
# 256 KiB, too little for a general client that downloads files. Far above any API or page
# response, yet ten at once fit in a small container.
DEFAULT_MAX_RESPONSE_SIZE = 100 * 1024 * 1024

# Interim (1xx) responses accepted before the final one. RFC 9110 15.2 allows several (103 Early
# Hints may repeat), but a server that sends them forever would keep a request alive with no
# read ever timing out. Go's transport stopped at 5 (max1xxResponses); we allow a few more.
MAX_INTERIM_RESPONSES = 10


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """Caps on a response head, against hostile or broken servers (`RemoteProtocolError`).

    - `max_bytes`: the status line plus headers of one response, in bytes (HTTP/1.1), and
      the decoded header list (HTTP/2, counted as RFC 9113 section 6.5.2 does: name + value +
      32 per field, advertised as SETTINGS_MAX_HEADER_LIST_SIZE). Default 100 KiB: h11's own
      16 KiB default is exceeded by real servers with large cookies and CSP headers; curl
      (CURL_MAX_HTTP_HEADER) and httpcore use 100 KiB, aiohttp 8 KiB per line, Go 10 MiB.
    - `max_count`: header fields in one response. Default 256: Python's http.client and
      Tomcat stop at 100, which cookie-heavy sites are known to exceed; Node.js keeps 2,000.
      Honest responses carry a few dozen; the cap bounds the per-field objects a hostile
      server can make us allocate, which the byte cap alone allows in the tens of thousands.
    """

    max_bytes: int = 100 * 1024
    max_count: int = 256

    def __post_init__(self) -> None:
        if self.max_bytes < 1024:
            raise ValueError(f"max_response_header_bytes must be >= 1024, not {self.max_bytes}")
        if self.max_count < 1:
            raise ValueError(f"max_response_headers must be >= 1, not {self.max_count}")


DEFAULT_HEAD_LIMITS = HeadLimits()


class _Unset:
    """Marks a keyword the caller did not pass (None already means "no timeout")."""


_UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timeouts in seconds; `None` disables one.

    Per phase, each wait on its own:
    - `connect`: TCP connect plus TLS handshake (`ConnectTimeout`), or the TCP connect alone
      when `tls_handshake` is set;
    - `read`: each wait for bytes from the server, not the whole response (`ReadTimeout`);
    - `write`: each wait for the socket to accept our bytes (`WriteTimeout`);
    - `pool`: waiting to lease a connection from the pool (`PoolTimeout`).

    Deadlines over several waits (off unless given; `Timeout(5)` does not set them):
    - `total`: one deadline for the whole call, as Go's `Client.Timeout`: waiting for a
      connection, dialing, TLS, every redirect hop and retry (backoffs included), and reading
      the body for `get()` and friends; for `stream()`, until its block is left
      (`TotalTimeout`). A server trickling a byte inside every read timeout cannot keep a
      call alive past it.
    - `response_header`: from the request fully written to the response head received
      (Go's `Transport.ResponseHeaderTimeout`; `ResponseHeaderTimeout`);
    - `tls_handshake`: the TLS handshake of a new connection, apart from the TCP connect
      (Go's `Transport.TLSHandshakeTimeout`; `TLSHandshakeTimeout`). Applies to the default
      dialer's direct connections; a custom `dialer=` or a proxy tunnel keeps `connect` for
      both.

    `Timeout(5)` sets the four phases; keywords override: `Timeout(5, connect=1, total=20)`.
    Raises `ValueError` for a negative value.
    """

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None
    total: float | None
    response_header: float | None
    tls_handshake: float | None

    def __init__(
        self,
        default: float | None = 30.0,
        *,
        connect: float | _Unset | None = _UNSET,
        read: float | _Unset | None = _UNSET,
        write: float | _Unset | None = _UNSET,
        pool: float | _Unset | None = _UNSET,
        total: float | None = None,
        response_header: float | None = None,
        tls_handshake: float | None = None,
    ) -> None:
        for name, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            chosen = default if isinstance(value, _Unset) else value
            object.__setattr__(self, name, _seconds(name, chosen))
        for name, given in (
            ("total", total),
            ("response_header", response_header),
            ("tls_handshake", tls_handshake),
        ):
            object.__setattr__(self, name, _seconds(name, given))

    @classmethod
    def coerce(cls, value: TimeoutTypes) -> Timeout:
        return value if isinstance(value, Timeout) else cls(value)


def _seconds(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    seconds = float(value)
    if not seconds >= 0:  # (also refuses NaN)
        raise ValueError(f"timeout {name} must be >= 0, not {seconds}")
    return seconds


TimeoutTypes: TypeAlias = Timeout | float | None
