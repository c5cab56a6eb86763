"""`aiopool.integrations.prometheus`: the collector and the duration middleware, scraped for real.

Each test registers in a fresh `CollectorRegistry` and reads back `generate_latest()` through
`prometheus_client`'s own text-format parser.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import aiopool
from aiopool.integrations.prometheus import (
    DEFAULT_BUCKETS,
    PoolCollector,
    RequestDurationMiddleware,
)
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer
from tests.test_bad_input import closed_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    """Every sample of the registry's text exposition: (name, labels) -> value."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_collector_reports_stats_per_client_and_origin(
    fresh_fault_server: FaultServer,
) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    origin = f"http://127.0.0.1:{fresh_fault_server.port}"
    async with aiopool.Client() as client:
        collector.add(client, name="api")
        await asyncio.gather(*(client.get(f"{fresh_fault_server.url}/echo") for _ in range(4)))
        await client.get(f"{fresh_fault_server.url}/close/3")  # closes its socket after
        stats = client.stats()
        samples = scrape(registry)
    labels = {"client": "api", "origin": origin}
    host = stats.hosts[origin]
    assert value(samples, "aiopool_requests_total", **labels) == host.requests == 5
    assert value(samples, "aiopool_connections_opened_total", **labels) == host.opened
    assert value(samples, "aiopool_requests_reused_total", **labels) == host.reused
    assert value(samples, "aiopool_connections_idle", **labels) == host.idle
    assert value(samples, "aiopool_connections_active", **labels) == 0
    assert value(samples, "aiopool_connections_connecting", **labels) == 0
    assert value(samples, "aiopool_requests_waiting", **labels) == 0
    assert value(samples, "aiopool_http2_streams_open", **labels) == 0
    assert value(samples, "aiopool_connections_closed_total", client="api") == 1
    # A closed client is no longer reported; the families stay declared.
    after = scrape(registry)
    assert not any(name.startswith("aiopool_") for name, _ in after)
    assert "# TYPE aiopool_requests_total counter" in generate_latest(registry).decode()


async def test_gauges_while_streaming_and_scraped_from_another_thread(
    fresh_fault_server: FaultServer,
) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    origin = f"http://127.0.0.1:{fresh_fault_server.port}"
    async with aiopool.Client() as client:
        collector.add(client)
        async with client.stream("GET", f"{fresh_fault_server.url}/bytes/100") as resp:
            # prometheus_client's HTTP server scrapes on a thread of its own: the snapshot is
            # taken on the client's loop, which is free while this coroutine awaits.
            samples = await asyncio.to_thread(scrape, registry)
            await resp.aread()
    assert value(samples, "aiopool_connections_active", client="default", origin=origin) == 1
    assert value(samples, "aiopool_connections_idle", client="default", origin=origin) == 0


async def test_http2_streams_gauge(
    hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    async with aiopool.Client(verify=client_ssl_context) as client:
        collector.add(client)
        async with (
            client.stream("GET", f"{hypercorn_server.url}/slow?chunks=2&delay=0.05") as first,
            client.stream("GET", f"{hypercorn_server.url}/slow?chunks=2&delay=0.05") as second,
        ):
            samples = scrape(registry)
            await first.aread()
            await second.aread()
    origin = f"https://localhost:{hypercorn_server.port}"
    assert value(samples, "aiopool_http2_streams_open", client="default", origin=origin) == 2
    assert value(samples, "aiopool_connections_active", client="default", origin=origin) == 1


async def test_retries_by_reason(fresh_fault_server: FaultServer) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    async with aiopool.Client() as client:
        collector.add(client, name="r")
        await client.get(f"{fresh_fault_server.url}/drop-next")
        # Sent on the reused socket, which the server closes unanswered: replayed (a GET).
        assert (await client.get(f"{fresh_fault_server.url}/echo")).status_code == 200
        assert client.stats().retries == {"stale_socket": 1}
        samples = scrape(registry)
    assert value(samples, "aiopool_retries_total", client="r", reason="stale_socket") == 1


async def test_two_clients_are_told_apart_and_names_are_unique(fault_server: FaultServer) -> None:
    registry = CollectorRegistry()
    collector = PoolCollector(registry)
    origin = f"http://127.0.0.1:{fault_server.port}"
    async with aiopool.Client() as a, aiopool.Client() as b:
        collector.add(a, name="a")
        collector.add(b, name="b")
        with pytest.raises(ValueError, match="already reported"):
            collector.add(aiopool.Client(), name="a")
        await a.get(f"{fault_server.url}/echo")
        for _ in range(2):
            await b.get(f"{fault_server.url}/echo")
        samples = scrape(registry)
        collector.remove(a)
        assert not any(dict(labels).get("client") == "a" for _, labels in scrape(registry))
    assert value(samples, "aiopool_requests_total", client="a", origin=origin) == 1
    assert value(samples, "aiopool_requests_total", client="b", origin=origin) == 2


def test_registering_twice_in_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    PoolCollector(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PoolCollector(registry)
    RequestDurationMiddleware(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        RequestDurationMiddleware(registry)


async def test_request_duration_histogram_by_method_origin_code_and_error(
    fault_server: FaultServer,
) -> None:
    registry = CollectorRegistry()
    durations = RequestDurationMiddleware(registry)
    origin = f"http://127.0.0.1:{fault_server.port}"
    port = closed_port()
    async with aiopool.Client(middleware=[durations]) as client:
        for _ in range(2):
            await client.get(f"{fault_server.url}/echo")
        await client.get(f"{fault_server.url}/status/503")
        await client.request("PURGE", f"{fault_server.url}/echo")
        with pytest.raises(aiopool.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")
    samples = scrape(registry)
    name = "aiopool_request_duration_seconds_count"
    assert value(samples, name, method="GET", origin=origin, code="200", error="") == 2
    assert value(samples, name, method="GET", origin=origin, code="503", error="") == 1
    assert value(samples, name, method="_OTHER", origin=origin, code="200", error="") == 1
    refused = f"http://127.0.0.1:{port}"
    assert value(samples, name, method="GET", origin=refused, code="", error="ConnectError") == 1
    buckets = sorted(
        float(dict(labels)["le"])
        for (sample, labels) in samples
        if sample == "aiopool_request_duration_seconds_bucket" and dict(labels)["code"] == "503"
    )
    assert tuple(buckets[:-1]) == DEFAULT_BUCKETS and buckets[-1] == float("inf")


def test_annotations_resolve_at_runtime() -> None:
    from aiopool.integrations import prometheus
    from tests.test_public_api import _unresolvable

    failures, checked = _unresolvable(prometheus, "integrations.prometheus.")
    assert failures == []
    assert checked > 3
