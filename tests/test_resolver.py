"""The resolver seam, the DNS cache, dns_* trace events and Happy Eyeballs (RFC 8305), against
nginx on loopback.

Only loopback addresses are dialed. A refusing address is a 127.0.0.x (or ::1) port nothing
listens on; a stalling one is a listening socket whose accept queue is full (backlog 0, one
connection never accepted): the kernel drops further SYNs, so a connect there hangs as one to a
blackholed host does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence

import pytest

import aiopool
from tests.rig.nginx import Nginx

TIMEOUT = aiopool.Timeout(10, connect=5)


class FixedResolver:
    """Answers every name with `addresses`; counts its lookups."""

    def __init__(self, *addresses: str, delay: float = 0.0) -> None:
        self.addresses = list(addresses)
        self.delay = delay
        self.lookups: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append((host, port))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.addresses


class FailingResolver:
    async def resolve(self, host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.fixture
def stalled(nginx: Nginx) -> Iterator[str]:
    """127.0.0.2 on nginx's HTTP port: accepts no connection and answers no SYN."""
    listener = socket.socket()
    held = []
    try:
        listener.bind(("127.0.0.2", nginx.http_port))
        listener.listen(0)
        for _ in range(4):  # fill the accept queue until a connect hangs
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.2", nginx.http_port))
            except TimeoutError:
                filler.close()
                break
            held.append(filler)
        else:
            pytest.skip("could not fill a loopback accept queue here")
        yield "127.0.0.2"
    finally:
        for sock in held:
            sock.close()
        listener.close()


def _events(events: list[aiopool.TraceEvent], *names: str) -> list[aiopool.TraceEvent]:
    return [e for e in events if e.name in names]


# The resolver seam and the dns_* events ----------------------------------------------------------


async def test_a_custom_resolver_answers_and_is_traced(nginx: Nginx) -> None:
    resolver = FixedResolver("127.0.0.1")
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT, trace=events.append) as client:
        response = await client.get(f"http://service.internal:{nginx.http_port}/echo?id=r")
    assert response.text == "r"
    assert resolver.lookups == [("service.internal", nginx.http_port)]
    names = [e.name for e in events]
    assert names[:5] == ["get_conn", "dns_start", "dns_done", "connect_start", "connect_done"]
    dns_start, dns_done = _events(events, "dns_start", "dns_done")
    assert dns_start.info["host"] == "service.internal"
    assert dns_done.info["addrs"] == ("127.0.0.1",) and dns_done.info["error"] is None


async def test_an_ip_address_is_not_resolved(nginx: Nginx) -> None:
    resolver = FixedResolver("127.0.0.9")
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT, trace=events.append) as client:
        await client.get(f"{nginx.http_url}/echo")
    assert resolver.lookups == [] and not _events(events, "dns_start", "dns_done")


@pytest.mark.parametrize("resolver", [FailingResolver(), FixedResolver()], ids=["error", "empty"])
async def test_a_failed_lookup_is_a_connect_error_in_dns_done(
    resolver: aiopool.Resolver,
) -> None:
    events: list[aiopool.TraceEvent] = []
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT, trace=events.append) as client:
        with pytest.raises(aiopool.ConnectError, match=r"could not resolve 'nowhere\.internal'"):
            await client.get("http://nowhere.internal/")
    (done,) = _events(events, "dns_done")
    assert done.info["addrs"] == () and isinstance(done.info["error"], aiopool.ConnectError)
    assert not _events(events, "connect_start", "connect_done")  # no connection was tried


async def test_the_system_resolver_finds_localhost(nginx: Nginx) -> None:
    async with aiopool.Client(
        resolver=aiopool.SystemResolver(), http2=False, timeout=TIMEOUT
    ) as client:
        response = await client.get(f"http://localhost:{nginx.http_port}/echo?id=sys")
    assert response.text == "sys"


def test_a_resolver_without_resolve_is_refused() -> None:
    with pytest.raises(TypeError, match="resolver must have"):
        aiopool.Client(resolver=object())  # type: ignore[arg-type]


# The DNS cache ---------------------------------------------------------------------------------


async def test_the_cache_answers_within_its_ttl(nginx: Nginx) -> None:
    inner = FixedResolver("127.0.0.1")
    cache = aiopool.CachingResolver(inner, ttl=300)
    async with aiopool.Client(resolver=cache, timeout=TIMEOUT) as client:
        for _ in range(3):
            await client.get(f"http://cached.internal:{nginx.http_port}/echo")
            await client.close_idle_connections()  # each request dials (and resolves) anew
    assert len(inner.lookups) == 1
    cache.clear()
    async with aiopool.Client(resolver=cache, timeout=TIMEOUT) as client:
        await client.get(f"http://cached.internal:{nginx.http_port}/echo")
    assert len(inner.lookups) == 2


async def test_the_cache_asks_again_after_its_ttl(nginx: Nginx) -> None:
    inner = FixedResolver("127.0.0.1")
    async with aiopool.Client(
        resolver=aiopool.CachingResolver(inner, ttl=0), timeout=TIMEOUT
    ) as client:
        for _ in range(2):
            await client.get(f"http://cached.internal:{nginx.http_port}/echo")
            await client.close_idle_connections()
    assert len(inner.lookups) == 2


async def test_concurrent_lookups_of_a_name_are_one(nginx: Nginx) -> None:
    inner = FixedResolver("127.0.0.1", delay=0.05)
    async with aiopool.Client(
        resolver=aiopool.CachingResolver(inner), max_connections_per_host=10, timeout=TIMEOUT
    ) as client:
        url = f"http://burst.internal:{nginx.http_port}/echo"
        await asyncio.gather(*(client.get(url) for _ in range(5)))
    assert len(inner.lookups) == 1


async def test_a_cancelled_lookup_does_not_fail_the_others() -> None:
    inner = FixedResolver("127.0.0.1", delay=0.2)
    cache = aiopool.CachingResolver(inner)
    first = asyncio.create_task(cache.resolve("shared.internal", 80))
    second = asyncio.create_task(cache.resolve("shared.internal", 80))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == ("127.0.0.1",)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(inner.lookups) == 1
    assert await cache.resolve("shared.internal", 80) == ("127.0.0.1",)  # kept
    assert len(inner.lookups) == 1


def test_cache_bounds() -> None:
    with pytest.raises(ValueError, match="ttl"):
        aiopool.CachingResolver(ttl=-1)
    with pytest.raises(ValueError, match="max_hosts"):
        aiopool.CachingResolver(max_hosts=0)


async def test_the_cache_keeps_at_most_max_hosts() -> None:
    inner = FixedResolver("127.0.0.1")
    cache = aiopool.CachingResolver(inner, max_hosts=2)
    for name in ("a.internal", "b.internal", "c.internal", "a.internal"):
        await cache.resolve(name, 80)
    assert len(inner.lookups) == 4  # "a" was dropped when "c" came


# Happy Eyeballs ----------------------------------------------------------------------------------


async def test_a_refusing_first_address_falls_back_at_once(nginx: Nginx) -> None:
    resolver = FixedResolver("127.0.0.3", "127.0.0.1")  # nothing listens on 127.0.0.3
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT) as client:
        response = await client.get(f"http://dual.internal:{nginx.http_port}/addr")
    assert response.status_code == 200


async def test_a_stalled_first_address_falls_back_after_the_attempt_delay(
    nginx: Nginx, stalled: str
) -> None:
    # Without a second attempt this would hang until the connect timeout (SYNs are dropped).
    resolver = FixedResolver(stalled, "127.0.0.1")
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT) as client:
        response = await client.get(f"http://dual.internal:{nginx.http_port}/echo?id=he")
        assert response.text == "he"
        # Only the winner is kept: the stalled attempt was closed.
        assert client.stats().connections_opened == 1


async def test_an_ipv6_address_that_refuses_falls_back_to_ipv4(nginx: Nginx) -> None:
    # RFC 8305: IPv6 first (the resolver's order), IPv4 next. nginx listens on 127.0.0.1 only.
    resolver = FixedResolver("::1", "127.0.0.1")
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT) as client:
        response = await client.get(f"http://dual.internal:{nginx.http_port}/echo?id=v4")
    assert response.text == "v4"


async def test_families_are_interleaved_and_every_failure_is_named(nginx: Nginx) -> None:
    port = nginx.http_port
    resolver = FixedResolver("127.0.0.3", "127.0.0.4", "::1")
    async with aiopool.Client(resolver=resolver, timeout=TIMEOUT) as client:
        with pytest.raises(aiopool.ConnectError) as info:
            await client.get(f"http://dual.internal:{port}/")
    message = str(info.value)
    assert "at any of its 3 addresses" in message
    # Attempted (and refused, at once) in RFC 8305's order: v4, v6, then the second v4.
    order = [message.index(a) for a in (f"127.0.0.3:{port}", f"[::1]:{port}", f"127.0.0.4:{port}")]
    assert order == sorted(order)


async def test_a_connect_timeout_during_the_race_leaves_no_socket(
    nginx: Nginx, stalled: str
) -> None:
    resolver = FixedResolver(stalled, stalled)  # both attempts stall
    async with aiopool.Client(
        resolver=resolver, timeout=aiopool.Timeout(10, connect=0.6)
    ) as client:
        with pytest.raises(aiopool.ConnectTimeout):
            await client.get(f"http://dual.internal:{nginx.http_port}/")
        assert client.stats().connections_opened == 0
    # The cancelled attempts closed their sockets: an unclosed one would be a ResourceWarning,
    # an error under this suite's filterwarnings.


def test_happy_eyeballs_delay_is_checked() -> None:
    with pytest.raises(ValueError, match="happy_eyeballs_delay"):
        aiopool.Client(happy_eyeballs_delay=-1)
