"""The retry policy: `Retry`, what it retries and how long it waits, and the retry budget.

A policy of the client layer, above the transport: the client's `_send` runs the middleware
chain and the transport once per attempt, so middleware sees every retry, and the pool's own
silent replays (a stale keep-alive socket, an HTTP/2 stream the server never processed) stay
below it, bounded and uncounted here.

What is retried, and the precedents:
- A failure to connect (`ConnectError`, `ConnectTimeout`): nothing of the request left us, so any
  method whose body can be sent again (urllib3's `connect` retries, which ignore the method).
  `PoolTimeout` is not: the pool is congested here, and a retry adds to it.
- A failure after connecting but before a response (`ReadError`, `WriteError`, `ReadTimeout`,
  `WriteTimeout`, `ResponseHeaderTimeout`, `RemoteProtocolError`): the server may have acted on
  the request, so only a method `Retry.methods` allows; by default the idempotent ones, or any
  request with an `Idempotency-Key` (`Request.idempotent`, the pool's stale-socket rule: Go's
  `shouldRetryRequest`, RFC 9110 section 9.2.2).
- A response whose status is in `Retry.statuses` (429, 502, 503, 504 by default, as urllib3's
  `RETRY_AFTER_STATUS_CODES` plus the gateway errors gRPC and Envoy retry), for the same
  methods. It is released (drained or closed) before the next attempt. When the attempts run
  out, the last such response is returned as it is, a response like any other.
- Never: the total deadline (`TotalTimeout`), `PoolTimeout`, `LocalProtocolError`, `ProxyError`,
  `DecodingError`, and a body that cannot be sent again (`Request.rereadable`: an async
  iterable of which a chunk was taken).

Waiting: "full jitter" backoff (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015:
a uniformly random wait in [0, min(cap, base * 2**n)], which spreads a crowd of clients best),
unless the response says `Retry-After` (RFC 9110 section 10.2.3: seconds or an HTTP-date), which
is obeyed as given. A Retry-After beyond `retry_after_max`, or a wait that would end past the
call's total deadline, ends the retrying instead: waiting less than the server asked would only
be refused again, and the caller gets the response to decide.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from ._exceptions import (
    ConnectError,
    ConnectTimeout,
    NetworkError,
    ReadTimeout,
    RemoteProtocolError,
    ResponseHeaderTimeout,
    TransportError,
    WriteTimeout,
)
from ._models import Request, Response

__all__ = ("Retry", "RetryBudget")

_DEFAULT_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retries a client may add to its traffic: at most `ratio` of its requests over
    the last `ttl` seconds, plus `min_per_second` (Finagle's `RetryBudget`: 20 % plus 10 per
    second, over 10 s, the defaults here).

    Why a budget: a per-request limit alone (`attempts`) multiplies load by up to `attempts`
    exactly when the servers are failing: an outage becomes a retry storm. A ratio of requests
    bounds the extra load at 20 % whatever the failure rate, and the per-second reserve lets a
    quiet client (a few requests a minute) still retry. gRPC's throttle (`maxTokens`,
    `tokenRatio`) bounds it by the failure rate instead, which lets a client that fails half its
    calls still retry freely; Finagle's bound is the one that says what the issue asks: retries
    add at most a fixed fraction. A retry refused by the budget ends the call with what its
    attempt got (the error, or the response).

    Each client keeps its own account per budget; every request sent with a retry policy
    deposits `ratio`, every retry withdraws 1. Raises `ValueError` for a negative value or a
    `ttl` outside [1, 60] seconds.
    """

    ratio: float = 0.2
    min_per_second: float = 10.0
    ttl: float = 10.0

    def __post_init__(self) -> None:
        if not self.ratio >= 0 or not self.min_per_second >= 0:
            raise ValueError("RetryBudget ratio and min_per_second must be >= 0")
        if not 1 <= self.ttl <= 60:
            raise ValueError(f"RetryBudget ttl must be within [1, 60] seconds, not {self.ttl}")


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy: `Client(retry=Retry(...))`, or per request (`retry=`; `None` or `False`:
    none).

    - `attempts`: sends of one request in all, the first included (gRPC's `maxAttempts`);
      `Retry(attempts=1)` never retries.
    - `statuses`: response statuses to retry (429, 502, 503, 504).
    - `methods`: methods retried after the request may have reached the server (a status, a
      read or write failure); None (the default) means the idempotent ones, or any request
      with an `Idempotency-Key` header. A failure to connect is retried for any method.
    - `connect_errors`, `read_errors`: whether those failures are retried (see `_retry`).
    - `backoff`, `backoff_max`: the first retry waits a random time up to `backoff` seconds
      (0.1), each next one up to twice as long, never more than `backoff_max` (10).
    - `retry_after_max`: the longest `Retry-After` obeyed (60 s); a longer one ends retrying.
    - `budget`: the client's `RetryBudget` (None: unbounded, not recommended).

    The error that ends a call carries `.attempts`; each retry emits a `retry` trace event
    (reason, attempt, delay) and is counted in `client.stats().retries`. Raises `ValueError`
    for an `attempts` below 1 or a negative time.
    """

    attempts: int = 3
    statuses: Collection[int] = _DEFAULT_STATUSES
    methods: Collection[str] | None = None
    connect_errors: bool = True
    read_errors: bool = True
    backoff: float = 0.1
    backoff_max: float = 10.0
    retry_after_max: float = 60.0
    budget: RetryBudget | None = field(default_factory=RetryBudget)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"Retry attempts must be an int >= 1, not {self.attempts!r}")
        for name in ("backoff", "backoff_max", "retry_after_max"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"Retry {name} must be >= 0")
        # Frozen sets: the policy is shared by every request of a client, and hashable.
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        if self.methods is not None:
            methods = frozenset(m.upper() for m in self.methods)
            object.__setattr__(self, "methods", methods)

    def allows_method(self, request: Request) -> bool:
        """Whether `request` may be sent again after the server may have acted on it."""
        methods = self.methods
        return request.idempotent if methods is None else request.method in methods

    def error_reason(self, exc: TransportError, request: Request) -> str | None:
        """Why the failed attempt may be retried ("connect_error", "read_error"), or None."""
        if not request.rereadable:
            return None
        if isinstance(exc, ConnectError | ConnectTimeout):
            # (A `TLSHandshakeTimeout` is a `ConnectTimeout`: nothing of the request was sent.)
            return "connect_error" if self.connect_errors else None
        if (
            self.read_errors
            and isinstance(
                exc,
                NetworkError
                | ReadTimeout
                | WriteTimeout
                | ResponseHeaderTimeout
                | RemoteProtocolError,
            )
            and self.allows_method(request)
        ):
            return "read_error"
        return None

    def status_reason(self, response: Response) -> str | None:
        """Why this response may be retried ("status_503"), or None."""
        status = response.status_code
        if status not in self.statuses:
            return None
        request = response.request
        if not request.rereadable or not self.allows_method(request):
            return None
        return f"status_{status}"

    def backoff_for(self, retry: int) -> float:
        """The wait before retry number `retry` (1, 2, ...): full jitter."""
        ceiling = min(self.backoff_max, self.backoff * 2.0 ** min(retry - 1, 62))
        return random.uniform(0.0, ceiling)


def retry_after(response: Response, now: float | None = None) -> float | None:
    """The wait `response`'s Retry-After asks for, in seconds (0 for a date in the past), or
    None when it has none or an unreadable one (RFC 9110 section 10.2.3: delay-seconds or an
    HTTP-date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # Defensive: an HTTP-date is always GMT; "-0000" parses naive
        return None
    wait = when.timestamp() - (time.time() if now is None else now)
    return max(wait, 0.0) if math.isfinite(wait) else None


class BudgetAccount:
    """One client's account under a `RetryBudget`: requests and retries per second over the
    last `ttl` seconds, in a ring of one-second slots: a request costs one addition, a retry
    a sum over at most 60 slots (a retry is the rare case), never a scan of past requests."""

    __slots__ = ("_budget", "_deposits", "_epoch", "_size", "_withdrawals")

    def __init__(self, budget: RetryBudget) -> None:
        self._budget = budget
        self._size = max(1, math.ceil(budget.ttl))
        self._deposits = [0] * self._size  # requests per second
        self._withdrawals = [0] * self._size  # retries per second
        self._epoch = self._now()

    @staticmethod
    def _now() -> int:
        return int(time.monotonic())

    def _roll(self) -> int:
        """Clear the slots of the seconds that left the window; the current slot's index."""
        now = self._now()
        gone = now - self._epoch
        if gone > 0:
            for second in range(self._epoch + 1, self._epoch + 1 + min(gone, self._size)):
                slot = second % self._size
                self._deposits[slot] = self._withdrawals[slot] = 0
            self._epoch = now
        return now % self._size

    def deposit(self) -> None:
        """A request was sent (its first attempt)."""
        self._deposits[self._roll()] += 1

    def withdraw(self) -> bool:
        """Take one retry if the budget allows it now; False if it does not."""
        slot = self._roll()
        budget = self._budget
        allowed = budget.ratio * sum(self._deposits) + budget.min_per_second * budget.ttl
        if sum(self._withdrawals) + 1 > allowed:
            return False
        self._withdrawals[slot] += 1
        return True
