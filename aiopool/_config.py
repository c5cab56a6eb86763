"""Timeouts and the body-drain bound: the small value types the client is configured with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

__all__ = ("DRAIN_MAX_BYTES", "DRAIN_TIMEOUT", "Timeout", "TimeoutTypes")

# When a streamed HTTP/1.1 response is closed with its body unread, we read (and discard) up to
# this much more, for at most DRAIN_TIMEOUT seconds, to keep the socket reusable; past either
# bound the socket is closed instead. Go's net/http uses the same pair (256 KiB, 50 ms): on a LAN
# 256 KiB arrives in well under 50 ms, and 50 ms is less than a fresh TCP + TLS handshake costs
# over most WAN links, so draining is only attempted when it is cheaper than reconnecting.
DRAIN_MAX_BYTES = 256 * 1024
DRAIN_TIMEOUT = 0.05


class _Unset:
    """Marks a keyword the caller did not pass (None already means "no timeout")."""


_UNSET = _Unset()


@dataclass(frozen=True, slots=True)
class Timeout:
    """Per-phase timeouts in seconds; `None` disables one.

    - `connect`: TCP connect plus TLS handshake (`ConnectTimeout`);
    - `read`: each wait for bytes from the server, not the whole response (`ReadTimeout`);
    - `write`: each wait for the socket to accept our bytes (`WriteTimeout`);
    - `pool`: waiting to lease a connection from the pool (`PoolTimeout`).

    `Timeout(5)` sets all four; keywords override: `Timeout(5, connect=1)`.
    """

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    def __init__(
        self,
        default: float | None = 30.0,
        *,
        connect: float | _Unset | None = _UNSET,
        read: float | _Unset | None = _UNSET,
        write: float | _Unset | None = _UNSET,
        pool: float | _Unset | None = _UNSET,
    ) -> None:
        for name, value in (("connect", connect), ("read", read), ("write", write), ("pool", pool)):
            chosen = default if isinstance(value, _Unset) else value
            if chosen is not None:
                chosen = float(chosen)
                if chosen < 0:
                    raise ValueError(f"timeout {name} must be >= 0, not {chosen}")
            object.__setattr__(self, name, chosen)

    @classmethod
    def coerce(cls, value: TimeoutTypes) -> Timeout:
        return value if isinstance(value, Timeout) else cls(value)


TimeoutTypes: TypeAlias = "Timeout | float | None"
