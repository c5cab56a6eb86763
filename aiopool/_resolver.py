"""Name resolution: the resolver seam, the system resolver (the default), and a DNS cache.

A resolver turns a host name into IP addresses, best first; the dialer (`_backend`) then races
connections to them (Happy Eyeballs, RFC 8305). Resolving apart from connecting is what makes the
seam possible: asyncio's `create_connection(happy_eyeballs_delay=...)` implements the same race,
but calls `getaddrinfo` itself, so nothing else could answer.

- `SystemResolver` (the default) is the event loop's `getaddrinfo`: /etc/hosts, nsswitch, the
  system's own caching (nscd, systemd-resolved), and RFC 6724 destination address ordering
  (IPv6 first where it is usable), as Go's cgo resolver, curl and every browser use it. It runs
  in the loop's thread pool, as asyncio's own dials do.
- Any object with `async def resolve(host, port) -> Sequence[str]` can replace it: an aiodns
  (c-ares) resolver that needs no threads, a service registry, a test's fixed answers. See
  docs/network.md for an aiodns adapter.
- `CachingResolver` keeps answers for a fixed time. Off by default, as in Go and httpx:
  `getaddrinfo` does not report record TTLs, so a client-side cache can only guess, and a guess
  longer than the record's TTL keeps sending traffic to an address a failover moved away from.
  aiohttp caches for 10 s by default; opt in where lookups are slow or many and the names stable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ("CachingResolver", "Resolver", "SystemResolver", "is_ip_address")


@runtime_checkable
class Resolver(Protocol):
    """Resolves host names for the dialer (`Client(resolver=...)`)."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """The IP addresses of `host` (text, as "192.0.2.1" or "2001:db8::1"), best first.

        `port` is the port about to be dialed (some resolvers, SRV-aware ones, care). Raise
        `OSError` (such as `socket.gaierror`) when the name does not resolve: the dialer
        reports it as `ConnectError("could not resolve ...")`. An empty answer is a failure
        too.
        """
        ...


class SystemResolver:
    """The event loop's `getaddrinfo` (the system resolver), run in its thread pool.

    Raises `socket.gaierror` (an `OSError`) when the name does not resolve.
    """

    __slots__ = ()

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[str] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue  # Defensive: getaddrinfo for a stream socket gives IP families only
            address = str(sockaddr[0])
            scope = sockaddr[3] if len(sockaddr) == 4 else 0
            if scope:
                # A link-local address needs its zone to be dialed (RFC 6874's "%25" in URLs).
                address = f"{address.partition('%')[0]}%{scope}"
            if address not in addresses:  # (one per address, whatever the protocol entries)
                addresses.append(address)
        return addresses

    def __repr__(self) -> str:
        return "SystemResolver()"


class CachingResolver:
    """Remembers another resolver's answers for `ttl` seconds (a DNS cache).

    At most `max_hosts` names are kept (least recently used dropped first), so a crawler cannot
    grow the cache without bound. Concurrent lookups of one name share a single lookup (Go's
    `singleflight` in its resolver): a burst of requests to a new host asks once. Failures are
    not cached: the next request asks again. `clear()` forgets everything.

    Raises `ValueError` for a negative `ttl` or a `max_hosts` below 1.
    """

    __slots__ = ("_answers", "_inflight", "_resolver", "max_hosts", "ttl")

    def __init__(
        self, resolver: Resolver | None = None, *, ttl: float = 10.0, max_hosts: int = 1024
    ) -> None:
        if not ttl >= 0:  # (also refuses NaN)
            raise ValueError(f"ttl must be >= 0, not {ttl}")
        if max_hosts < 1:
            raise ValueError(f"max_hosts must be >= 1, not {max_hosts}")
        self._resolver: Resolver = resolver if resolver is not None else SystemResolver()
        self.ttl = ttl
        self.max_hosts = max_hosts
        self._answers: OrderedDict[tuple[str, int], tuple[float, tuple[str, ...]]] = OrderedDict()
        self._inflight: dict[tuple[str, int], asyncio.Task[tuple[str, ...]]] = {}

    def __repr__(self) -> str:
        return f"CachingResolver({self._resolver!r}, ttl={self.ttl}, max_hosts={self.max_hosts})"

    def clear(self) -> None:
        """Forget every cached answer."""
        self._answers.clear()

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        key = (host.lower(), port)
        now = loop.time()
        cached = self._answers.get(key)
        if cached is not None:
            if cached[0] > now:
                self._answers.move_to_end(key)
                return cached[1]
            del self._answers[key]
        lookup = self._inflight.get(key)
        if lookup is None:
            # The lookup belongs to the cache, not to the request that started it: a caller
            # cancelled (its timeout) does not cancel it for the others, and its answer is
            # still kept for the next request.
            lookup = self._inflight[key] = loop.create_task(self._lookup(key, host, port))
            lookup.add_done_callback(_retrieve)
        return await asyncio.shield(lookup)

    async def _lookup(self, key: tuple[str, int], host: str, port: int) -> tuple[str, ...]:
        try:
            answer = tuple(await self._resolver.resolve(host, port))
        finally:
            del self._inflight[key]
        if answer:  # (an empty answer is a failure for the dialer: not worth keeping)
            self._answers[key] = (asyncio.get_running_loop().time() + self.ttl, answer)
            while len(self._answers) > self.max_hosts:
                self._answers.popitem(last=False)
        return answer


def _retrieve(task: asyncio.Task[tuple[str, ...]]) -> None:
    # Every caller may have gone (cancelled) before a lookup failed: nobody else would take
    # its exception, and asyncio would log "Task exception was never retrieved".
    if not task.cancelled():
        task.exception()


def is_ip_address(host: str) -> bool:
    """Whether `host` is an IP address literal (no lookup needed), zone index allowed."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True
