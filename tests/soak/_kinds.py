"""What the soak sends: request kinds, each with its own check and its own expected failures.

Every request carries an id the server sends back (nginx's ``/echo`` and ``/worker``, the fault
server's JSON ``/echo``), or fetches a body whose bytes are known in advance (nginx's static
files, the fault server's ``pattern``). A response that does not match its request is a crossed
body, the worst thing a pool can do, and fails the run.

A kind that injects a fault names it (``fault``) and lists the exceptions it may legitimately
end with (``expected``). Faults aimed at the *next* request on a socket (``/drop-next``,
``/reset-next``, ``/close-idle``, ``/408-idle``) expect nothing: the request they hit is
replayable and on a reused socket, so the client must retry it silently (docs/design.md
invariant 6) or never hand the socket out (invariant 3).
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiopool
from tests.rig.fault_server import pattern
from tests.rig.nginx import Nginx

__all__ = ["Check", "Mix", "SoakContext", "Spec", "fault_kinds", "nginx_kinds"]

Check = Callable[[int, bytes], str | None]
"""(status, body) -> None when the response is the one asked for, else what is wrong."""

# Read timeouts on the slow routes: short enough that many requests hit them, long enough that
# some do not, so both the timeout path and the success path run on the same sockets.
_SHORT_READ = 0.03
# Idle time after which the fault server closes (or sends a 408 on) a socket. A few
# milliseconds: under load most such sockets are reused before that, some are caught idle, and
# a few race the server (the request goes out as the server gives up on the socket).
_IDLE_FAULT_AFTER = 0.003


@dataclass(frozen=True, slots=True)
class Spec:
    """One request to send, and how to judge what comes back."""

    kind: str
    method: str
    url: str
    check: Check
    content: bytes | None = None
    timeout: aiopool.Timeout | None = None
    expected: tuple[type[BaseException], ...] = ()
    fault: str | None = None
    # Stream the response and leave the block after this many bytes (None: read it all).
    prefix: int | None = None


@dataclass
class SoakContext:
    """What the kinds need to know: the servers, the expected bodies, what was seen."""

    nginx: Nginx
    fault_url: str
    files: dict[str, bytes] = field(default_factory=dict)
    # Worker pids that answered /worker in the current phase: after a reload both generations
    # must show up, which proves the reload happened under load.
    worker_pids: set[int] = field(default_factory=set)

    def file(self, name: str) -> bytes:
        if name not in self.files:
            self.files[name] = self.nginx.file_bytes(name)
        return self.files[name]


Factory = Callable[[SoakContext, str, random.Random], Spec]


class Mix:
    """Weighted request kinds; `pick` builds the spec for request `rid`."""

    def __init__(self, kinds: Sequence[tuple[float, Factory]]) -> None:
        if not kinds:
            raise ValueError("a mix needs at least one kind")
        self._factories = [factory for _, factory in kinds]
        self._cumulative = list(itertools.accumulate(weight for weight, _ in kinds))

    def pick(self, ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        point = rng.random() * self._cumulative[-1]
        return self._factories[bisect.bisect_right(self._cumulative, point)](ctx, rid, rng)


# -- checks -------------------------------------------------------------------------------------


def _exact(expected: bytes, status: int = 200) -> Check:
    def check(got_status: int, body: bytes) -> str | None:
        if got_status != status:
            return f"status {got_status}, expected {status}"
        if body != expected:
            return f"body {_show(body)} is not the expected {_show(expected)}"
        return None

    return check


def _json_echo(rid: str, sent: bytes | None = None) -> Check:
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status} for echo {rid}"
        try:
            payload = json.loads(body)
        except ValueError:
            return f"echo {rid}: not JSON: {_show(body)}"
        if payload.get("id") != rid:
            return f"echo {rid} answered for id {payload.get('id')!r}"
        if sent is not None and payload.get("body") != sent.decode("latin-1"):
            return f"echo {rid}: the server saw another request body"
        return None

    return check


def _worker(ctx: SoakContext, rid: str) -> Check:
    def check(status: int, body: bytes) -> str | None:
        echoed, _, pid = body.decode("latin-1").partition(" ")
        if status != 200 or echoed != rid or not pid.isdigit():
            return f"status {status}, body {_show(body)} for /worker id {rid}"
        ctx.worker_pids.add(int(pid))
        return None

    return check


def _show(body: bytes) -> str:
    return repr(body) if len(body) <= 60 else f"{body[:40]!r}... ({len(body)} bytes)"


# -- nginx --------------------------------------------------------------------------------------


def nginx_kinds(
    base: str, label: str, *, big: float = 0.5, close: bool = False
) -> list[tuple[float, Factory]]:
    """Kinds against one nginx listener at `base`; `big` weighs the 1 MiB downloads (they are
    what a reload catches in flight), `close` adds ``Connection: close`` (HTTP/1.1 only)."""

    def echo(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        return Spec(f"{label} echo", "GET", f"{base}/echo?id={rid}", _exact(rid.encode()))

    def worker(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        return Spec(f"{label} worker", "GET", f"{base}/worker?id={rid}", _worker(ctx, rid))

    def put(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        content = rng.randbytes(rng.randrange(0, 4096))
        url = f"{base}/echo?id={rid}"
        return Spec(f"{label} put", "PUT", url, _exact(rid.encode()), content=content)

    def small(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        name = rng.choice(("small.txt", "1k.bin"))
        return Spec(f"{label} static", "GET", f"{base}/{name}?id={rid}", _exact(ctx.file(name)))

    def large(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/1m.bin?id={rid}"
        return Spec(f"{label} 1 MiB", "GET", url, _exact(ctx.file("1m.bin")))

    def abandon(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        # Leaving a stream early: HTTP/1.1 drains within bounds or closes, HTTP/2 resets.
        prefix = rng.choice((1, 4096, 100_000))
        return Spec(
            f"{label} abandoned 1 MiB",
            "GET",
            f"{base}/1m.bin?id={rid}",
            _exact(ctx.file("1m.bin")[:prefix]),
            prefix=prefix,
            fault="body abandoned mid-stream",
        )

    def closing(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/close?id={rid}"
        return Spec(f"{label} close", "GET", url, _exact(b"bye"), fault="Connection: close")

    kinds: list[tuple[float, Factory]] = [
        (40, echo),
        (20, worker),
        (10, put),
        (15, small),
        (big, large),
        (big, abandon),
    ]
    if close:
        kinds.append((2, closing))
    return kinds


# -- the fault server ---------------------------------------------------------------------------


def fault_kinds(base: str) -> list[tuple[float, Factory]]:
    """Kinds against the fault-injecting HTTP/1.1 server at `base`."""
    short = aiopool.Timeout(10.0, read=_SHORT_READ)
    after = _IDLE_FAULT_AFTER

    def echo(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        return Spec("fault-server echo", "GET", f"{base}/echo?id={rid}", _json_echo(rid))

    def put(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        content = rng.randbytes(rng.randrange(1, 2048))
        url = f"{base}/echo?id={rid}"
        return Spec("fault-server put", "PUT", url, _json_echo(rid, content), content=content)

    def chunked(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        size = rng.randrange(1, 200_000)
        url = f"{base}/chunked/{size}?chunks={rng.randrange(1, 9)}&id={rid}"
        return Spec("fault-server chunked", "GET", url, _exact(pattern(size)))

    def slow_ok(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/slow?chunks=3&delay=0.002&size=64&id={rid}"
        return Spec("fault-server slow", "GET", url, _exact(pattern(192)))

    def delay(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        # Around the read timeout: some answer in time (and must be theirs), some do not.
        url = f"{base}/delay?s={rng.uniform(0, 2 * _SHORT_READ):.4f}&id={rid}"
        return Spec(
            "fault-server delay",
            "GET",
            url,
            _json_echo(rid),
            timeout=short,
            expected=(aiopool.ReadTimeout,),
            fault="slow answer vs. short read timeout",
        )

    def stall(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        return Spec(
            "fault-server stall",
            "GET",
            f"{base}/stall?sent={rng.randrange(0, 100)}&id={rid}",
            _exact(b"", status=-1),  # never completes
            timeout=short,
            expected=(aiopool.ReadTimeout,),
            fault="body stalls vs. short read timeout",
        )

    def idle_close(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/close-idle?after={after}&id={rid}"
        return Spec("fault-server close-idle", "GET", url, _exact(b"ok\n"), fault="idle close")

    def idle_408(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/408-idle?after={after}&id={rid}"
        return Spec("fault-server 408-idle", "GET", url, _exact(b"ok\n"), fault="408 on idle")

    def drop_next(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/drop-next?id={rid}"
        fault = "next request dropped (FIN)"
        return Spec("fault-server drop-next", "GET", url, _exact(b"ok\n"), fault=fault)

    def reset_next(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        url = f"{base}/reset-next?id={rid}"
        fault = "next request reset (RST)"
        return Spec("fault-server reset-next", "GET", url, _exact(b"ok\n"), fault=fault)

    def reset_mid_body(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        return Spec(
            "fault-server reset-mid-body",
            "GET",
            f"{base}/reset-mid-body?sent={rng.randrange(0, 4096)}&id={rid}",
            _exact(b"", status=-1),
            # The RST may arrive before the client reads the bytes sent ahead of it (a reset
            # discards them), or after (the body is short): ReadError or RemoteProtocolError.
            expected=(aiopool.ReadError, aiopool.RemoteProtocolError),
            fault="reset mid-body",
        )

    def truncated(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        declared = rng.randrange(1, 10_000)
        return Spec(
            "fault-server truncated",
            "GET",
            f"{base}/truncated?declared={declared}&sent={rng.randrange(0, declared)}&id={rid}",
            _exact(b"", status=-1),
            expected=(aiopool.RemoteProtocolError,),
            fault="truncated body",
        )

    def closing(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        size = rng.randrange(0, 5000)
        url = f"{base}/close/{size}?id={rid}"
        return Spec(
            "fault-server close", "GET", url, _exact(b"x" * size), fault="Connection: close"
        )

    def abandon(ctx: SoakContext, rid: str, rng: random.Random) -> Spec:
        prefix = rng.choice((1, 10_000, 300_000))
        return Spec(
            "fault-server abandoned",
            "GET",
            f"{base}/big/1000000?id={rid}",
            _exact(pattern(prefix)),
            prefix=prefix,
            fault="body abandoned mid-stream",
        )

    return [
        (30, echo),
        (10, put),
        (8, chunked),
        (4, slow_ok),
        (6, delay),
        (2, stall),
        (4, idle_close),
        (4, idle_408),
        (3, drop_next),
        (3, reset_next),
        (3, reset_mid_body),
        (3, truncated),
        (3, closing),
        (2, abandon),
    ]
