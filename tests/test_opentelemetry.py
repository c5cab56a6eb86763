"""`aiopool.integrations.opentelemetry`: spans, metrics and propagation, against real servers.

Recorded through the OpenTelemetry SDK's in-memory span exporter and metric reader, with
providers of the test's own (never the global ones), over HTTP/1.1 (the fault server) and
HTTP/2 (hypercorn over TLS).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import aiopool
from aiopool.integrations.opentelemetry import (
    CONNECTION_DURATION_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    OpenTelemetryMiddleware,
)
from tests.rig.fault_server import FaultServer
from tests.rig.hypercorn_app import HypercornServer
from tests.test_bad_input import closed_port


@dataclass
class Otel:
    middleware: OpenTelemetryMiddleware
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(
        OpenTelemetryMiddleware(tracer_provider, meter_provider), spans, reader, tracer_provider
    )
    meter_provider.shutdown()
    tracer_provider.shutdown()


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# Spans ------------------------------------------------------------------------------------------


async def test_a_get_over_http11_is_one_client_span_and_its_traceparent_reaches_the_server(
    otel: Otel, fault_server: FaultServer
) -> None:
    async with aiopool.Client(middleware=[otel.middleware]) as client:
        resp = await client.get(f"{fault_server.url}/echo?id=7")
    assert resp.status_code == 200
    (span,) = otel.finished()
    assert span.name == "GET"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert attrs(span) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": fault_server.port,
        "url.full": f"{fault_server.url}/echo?id=7",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert span.status.status_code is StatusCode.UNSET
    # The server received this span's context (W3C trace context), so its spans join the trace.
    received = dict(resp.json()["headers"])
    assert received["traceparent"] == traceparent_of(span)


async def test_http2_hop_records_version_2_and_propagates_under_the_callers_span(
    otel: Otel, hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    async with aiopool.Client(middleware=[otel.middleware], verify=client_ssl_context) as client:
        with tracer.start_as_current_span("caller"):
            resp = await client.get(f"{hypercorn_server.url}/inspect")
    assert resp.http_version == "HTTP/2"
    hop, caller = otel.finished()
    assert caller.name == "caller"
    assert hop.parent is not None and caller.context is not None
    assert hop.parent.span_id == caller.context.span_id  # a child of the caller's span
    assert attrs(hop)["network.protocol.version"] == "2"
    assert attrs(hop)["server.address"] == "localhost"
    received = {name.lower(): value for name, value in resp.json()["headers"]}
    assert received["traceparent"] == traceparent_of(hop)


async def test_each_redirect_hop_is_a_span_of_its_own(
    otel: Otel, hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    # The conventions: a span per request sent over the wire, none encompassing them.
    url = f"{hypercorn_server.url}/chain/2?status=307"
    async with aiopool.Client(middleware=[otel.middleware], verify=client_ssl_context) as client:
        resp = await client.get(url)
    assert resp.status_code == 200
    spans = otel.finished()
    assert [attrs(s)["url.full"] for s in spans] == [
        f"{hypercorn_server.url}/chain/{n}?status=307" for n in (2, 1, 0)
    ]
    assert [attrs(s)["http.response.status_code"] for s in spans] == [307, 307, 200]
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)  # 3xx is no error
    # Each hop carried its own span's context.
    received = {name.lower(): value for name, value in resp.json()["headers"]}
    assert received["traceparent"] == traceparent_of(spans[-1])
    assert len({traceparent_of(s) for s in spans}) == 3


async def test_connect_refused_sets_error_type_and_status(otel: Otel) -> None:
    port = closed_port()
    async with aiopool.Client(middleware=[otel.middleware]) as client:
        with pytest.raises(aiopool.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/x")
    (span,) = otel.finished()
    assert attrs(span)["error.type"] == "aiopool.ConnectError"
    assert "http.response.status_code" not in attrs(span)
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]
    (point,) = otel.points("http.client.request.duration")
    assert dict(point.attributes) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "error.type": "aiopool.ConnectError",
    }


async def test_a_4xx_is_an_error_named_by_its_status(otel: Otel, fault_server: FaultServer) -> None:
    async with aiopool.Client(middleware=[otel.middleware]) as client:
        assert (await client.get(f"{fault_server.url}/status/404")).status_code == 404
    (span,) = otel.finished()
    assert attrs(span)["error.type"] == "404"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description is None  # the status code says it all
    (point,) = otel.points("http.client.request.duration")
    assert point.attributes["error.type"] == "404"
    assert point.attributes["http.response.status_code"] == 404


async def test_an_unknown_method_is_other_and_the_span_is_named_http(
    otel: Otel, fault_server: FaultServer
) -> None:
    async with aiopool.Client(middleware=[otel.middleware]) as client:
        resp = await client.request("PURGE", f"{fault_server.url}/echo")
    assert resp.json()["method"] == "PURGE"
    (span,) = otel.finished()
    assert span.name == "HTTP"
    assert attrs(span)["http.request.method"] == "_OTHER"
    assert attrs(span)["http.request.method_original"] == "PURGE"


async def test_known_methods_can_be_overridden(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The conventions' variable, a full override of the default list.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,PURGE")
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    middleware = OpenTelemetryMiddleware(provider, MeterProvider())
    async with aiopool.Client(middleware=[middleware]) as client:
        await client.request("PURGE", f"{fault_server.url}/echo")
        await client.post(f"{fault_server.url}/echo", content=b"x")
    purge, post = spans.get_finished_spans()
    assert (purge.name, attrs(purge)["http.request.method"]) == ("PURGE", "PURGE")
    assert (post.name, attrs(post)["http.request.method"]) == ("HTTP", "_OTHER")


async def test_url_full_never_holds_credentials_and_redacts_signatures(otel: Otel) -> None:
    seen: list[aiopool.Request] = []

    def answer(request: aiopool.Request) -> aiopool.Response:
        seen.append(request)
        return aiopool.Response(200, content=b"")

    # The client moves URL credentials into Authorization; so does url.full leave them out.
    transport = aiopool.MockTransport(answer)
    async with aiopool.Client(middleware=[otel.middleware], transport=transport) as client:
        await client.get("https://alice:hunter2@api.test/p?X-Amz-Signature=s3cr3t&a=1#frag")

    # A request made by hand keeps them in its URL: they are replaced.
    async def call_next(request: aiopool.Request) -> aiopool.Response:
        return answer(request)

    await otel.middleware(
        aiopool.Request("GET", "https://bob:pw@api.test/?sig=xyz&sig2=k"), call_next
    )
    first, second = (attrs(s)["url.full"] for s in otel.finished())
    assert first == "https://api.test/p?X-Amz-Signature=REDACTED&a=1#frag"
    assert second == "https://REDACTED:REDACTED@api.test/?sig=REDACTED&sig2=k"
    for span in otel.finished():
        text = repr(attrs(span))
        assert "hunter2" not in text and "pw@" not in text and "s3cr3t" not in text


async def test_a_streamed_response_span_ends_when_the_head_arrives(
    otel: Otel, fault_server: FaultServer
) -> None:
    url = f"{fault_server.url}/slow?chunks=3&delay=0.05"
    async with (
        aiopool.Client(middleware=[otel.middleware]) as client,
        client.stream("GET", url) as resp,
    ):
        # Ended already, before a byte of the body was read (the documented choice).
        (span,) = otel.finished()
        assert attrs(span)["http.response.status_code"] == 200
        assert len(await resp.aread()) == 30
    assert len(otel.finished()) == 1


async def test_cancellation_ends_the_span_as_an_error(
    otel: Otel, fault_server: FaultServer
) -> None:
    sent = asyncio.Event()

    def hook(event: aiopool.TraceEvent) -> None:
        if event.name == "wrote_request":
            sent.set()

    async with aiopool.Client(middleware=[otel.middleware]) as client:
        task = asyncio.create_task(client.get(f"{fault_server.url}/stall-headers", trace=hook))
        await sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (span,) = otel.finished()
    assert attrs(span)["error.type"] == "asyncio.CancelledError"
    assert span.status.status_code is StatusCode.ERROR


# Metrics ----------------------------------------------------------------------------------------


async def test_request_duration_histogram_uses_the_advised_buckets(
    otel: Otel, fault_server: FaultServer
) -> None:
    async with aiopool.Client(middleware=[otel.middleware]) as client:
        for _ in range(3):
            await client.get(f"{fault_server.url}/echo")
    (point,) = otel.points("http.client.request.duration")
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 3
    assert tuple(point.explicit_bounds) == REQUEST_DURATION_BUCKETS
    assert dict(point.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": fault_server.port,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }


def open_connections(otel: Otel) -> dict[str, int]:
    return {
        str(p.attributes["http.connection.state"]): int(p.value)
        for p in otel.points("http.client.open_connections")
    }


async def test_open_connections_by_state_and_connection_duration(
    otel: Otel, fresh_fault_server: FaultServer
) -> None:
    mw = otel.middleware
    async with aiopool.Client(middleware=[mw], trace=mw.connection_hook()) as client:
        mw.instrument_client(client)
        async with client.stream("GET", f"{fresh_fault_server.url}/bytes/10") as resp:
            assert open_connections(otel) == {"active": 1, "idle": 0}
            await resp.aread()
        assert open_connections(otel) == {"active": 0, "idle": 1}
        # Collected from another thread (as the SDK's periodic reader does) while the loop
        # runs: the snapshot is taken on the loop.
        points = await asyncio.to_thread(otel.points, "http.client.open_connections")
        assert {p.attributes["http.connection.state"]: p.value for p in points} == {
            "active": 0,
            "idle": 1,
        }
        assert otel.points("http.client.connection.duration") == []  # still open
        (point,) = [p for p in points if p.attributes["http.connection.state"] == "idle"]
        assert point.attributes["server.port"] == fresh_fault_server.port
    (duration,) = otel.points("http.client.connection.duration")
    assert duration.count == 1
    assert tuple(duration.explicit_bounds) == CONNECTION_DURATION_BUCKETS
    assert dict(duration.attributes) == {
        "server.address": "127.0.0.1",
        "server.port": fresh_fault_server.port,
        "network.protocol.version": "1.1",
    }
    # A closed client is no longer observed.
    assert open_connections(otel) == {}


async def test_connection_duration_over_http2(
    otel: Otel, hypercorn_server: HypercornServer, client_ssl_context: ssl.SSLContext
) -> None:
    mw = otel.middleware
    async with aiopool.Client(
        middleware=[mw], trace=mw.connection_hook(), verify=client_ssl_context
    ) as client:
        mw.instrument_client(client)
        await asyncio.gather(*(client.get(f"{hypercorn_server.url}/echo?id={i}") for i in range(5)))
        assert open_connections(otel) == {"active": 0, "idle": 1}  # one socket, five streams
    (duration,) = otel.points("http.client.connection.duration")
    assert duration.count == 1
    assert duration.attributes["network.protocol.version"] == "2"
    assert duration.attributes["server.address"] == "localhost"


async def test_a_failed_tls_handshake_is_not_a_connection(
    otel: Otel, hypercorn_server: HypercornServer
) -> None:
    mw = otel.middleware
    hook = mw.connection_hook()
    async with aiopool.Client(middleware=[mw], trace=hook) as client:  # the rig's CA untrusted
        with pytest.raises(aiopool.ConnectError):
            await client.get(f"{hypercorn_server.url}/echo")
    assert otel.points("http.client.connection.duration") == []
    assert "0 open" in repr(hook)


def test_instrument_client_refuses_other_objects(otel: Otel) -> None:
    with pytest.raises(TypeError, match=r"aiopool\.Client"):
        otel.middleware.instrument_client(object())  # type: ignore[arg-type]


async def test_suppressed_instrumentation_records_nothing(
    otel: Otel, fault_server: FaultServer
) -> None:
    # What OpenTelemetry's own exporters set around their HTTP calls.
    from opentelemetry import context
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

    async with aiopool.Client(middleware=[otel.middleware]) as client:
        token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            resp = await client.get(f"{fault_server.url}/echo")
        finally:
            context.detach(token)
    assert otel.finished() == []
    assert "traceparent" not in dict(resp.json()["headers"])


def test_annotations_resolve_at_runtime() -> None:
    from aiopool.integrations import opentelemetry
    from tests.test_public_api import _unresolvable

    failures, checked = _unresolvable(opentelemetry, "integrations.opentelemetry.")
    assert failures == []
    assert checked > 3
