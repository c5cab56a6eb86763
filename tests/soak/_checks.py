"""What the soak measures about the process and the pool, and the results it reports.

File descriptors are counted in /proc/self/fd and memory read from /proc/self/statm (Linux
only, like the rig's nginx). Both include the fault server, which runs on a thread of this
process: a phase's baseline is taken, and its final count compared, once that server has no
connection open, so its sockets are not mistaken for the client's.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiopool

__all__ = [
    "PhaseResult",
    "open_fds",
    "rss_bytes",
    "settled_problems",
    "wait_until",
]

MIB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    """Descriptors open in this process now."""
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    """Resident set size of this process now, once freed memory went back to the system.

    glibc keeps freed blocks for reuse (how much depends on how earlier allocations were laid
    out), which moves RSS by a few MiB from one measurement to the next with nothing leaked;
    `malloc_trim` hands them back first, so what remains is memory still in use.
    """
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: measure without trimming
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def settled_problems(stats: aiopool.PoolStats) -> list[str]:
    """What a pool nobody uses still holds: leaked leases, dials, waiters, h2 streams."""
    problems = []
    for origin, host in stats.hosts.items():
        busy = (host.active, host.connecting, host.waiting, host.streams)
        if busy != (0, 0, 0, 0):
            problems.append(
                f"pool not settled at {origin}: active={host.active} "
                f"connecting={host.connecting} waiting={host.waiting} streams={host.streams}"
            )
    return problems


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` on this loop until it holds (True) or `timeout` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return predicate()
        await asyncio.sleep(0.01)
    return True


@dataclass
class PhaseResult:
    """One phase's tallies and the outcome of its checks."""

    name: str
    requests: int = 0
    ok: int = 0
    cancelled: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    # Exception type name -> count, for failures a request's kind allowed...
    expected: Counter[str] = field(default_factory=Counter)
    # ... and for the rest (crossed bodies, hangs, untyped errors): any fails the run.
    unexpected: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    # Typed errors let through because a reload was under way (see the driver).
    tolerated: list[str] = field(default_factory=list)
    fds_before: int = 0
    fds_open: int = 0  # with the phase's client still open
    idle_sockets: int = 0  # idle connections the pool reported then
    fds_after: int = 0
    rss_after: int = 0
    threads_after: int = 0  # each thread has its own stack and malloc arena: RSS follows
    blocks_after: int = 0  # Python objects alive (sys.getallocatedblocks), free of fragmentation
    reloads: list[int] = field(default_factory=list)  # new worker pids
    worker_pids: int = 0  # distinct nginx workers that answered /worker
    connections_opened: int = 0
    reused: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and not self.unexpected

    def note_unexpected(self, label: str, detail: str) -> None:
        self.unexpected[label] += 1
        if len(self.samples) < 10:
            self.samples.append(detail)

    def summary(self) -> str:
        rate = self.requests / self.seconds if self.seconds else 0.0
        expected = sum(self.expected.values())
        unexpected = sum(self.unexpected.values())
        return (
            f"{self.name:<22} {self.requests:>8,} req {self.seconds:7.1f} s {rate:8,.0f} req/s"
            f" | ok {self.ok:,} cancelled {self.cancelled:,} expected-errors {expected:,}"
            f" unexpected {unexpected:,} | conns {self.connections_opened:,}"
            f" reused {self.reused:,} | fds {self.fds_before}->{self.fds_open}"
            f" (idle {self.idle_sockets})->{self.fds_after}"
            f" | rss {self.rss_after / MIB:.1f} MiB, {self.blocks_after:,} blocks,"
            f" {self.threads_after} threads"
            + (
                f" | reloads {len(self.reloads)}, workers seen {self.worker_pids}"
                if self.reloads
                else ""
            )
            + ("" if self.passed else "  FAILED")
        )
