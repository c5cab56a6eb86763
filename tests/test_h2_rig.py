"""Checks that the HTTP/2 rig behaves, using a bare h2 client (never aiopool).

The client here is deliberately minimal: one reader task feeding h2, responses collected per
stream, and GOAWAY frames taken off the wire before h2 sees them. h2 moves a connection to
CLOSED on a GOAWAY and then rejects the DATA of the streams the GOAWAY lets finish, so a client
built on h2 must do something like this to honour a graceful GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
import trustme
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import Frame, GoAwayFrame

from tests.rig.fault_server import pattern
from tests.rig.h2_server import H2ScriptServer, ReceivedStream
from tests.rig.hypercorn_app import HypercornServer

# Per-operation bound: a rig bug should fail a test quickly, not hit the 60 s pytest timeout.
_IO_TIMEOUT = 3.0
_FRAME_HEADER = 9
_GOAWAY_TYPE = 0x7


@dataclass(eq=False)
class _Response:
    stream_id: int
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    reset_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _H2Client:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: bytes
    ) -> None:
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.reader, self.writer, self.scheme = reader, writer, scheme
        self.responses: dict[int, _Response] = {}
        self.goaways: list[GoAwayFrame] = []
        self.settings_changes: list[dict[int, int]] = []
        self.window_updates = 0
        self.window_waits = 0
        self.closed = asyncio.Event()
        self._window = asyncio.Event()
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
        with contextlib.suppress(OSError):  # the server may have reset the connection
            await self.writer.wait_closed()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, path: str, *, method: str = "GET", has_body: bool = False) -> _Response:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":scheme", self.scheme),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=not has_body)
        self.flush()
        response = self.responses[stream_id] = _Response(stream_id)
        return response

    async def send_body(self, stream_id: int, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            window = self.conn.local_flow_control_window(stream_id)
            if window <= 0:
                self.window_waits += 1
                self._window.clear()
                async with asyncio.timeout(_IO_TIMEOUT):
                    await self._window.wait()
                continue
            size = min(window, self.conn.max_outbound_frame_size, len(data) - offset)
            end = offset + size == len(data)
            self.conn.send_data(stream_id, data[offset : offset + size], end_stream=end)
            offset += size
            self.flush()
            await self.writer.drain()

    async def wait(self, *responses: _Response) -> None:
        async with asyncio.timeout(_IO_TIMEOUT):
            for response in responses:
                await response.done.wait()

    async def get(self, path: str) -> _Response:
        response = self.request(path)
        await self.wait(response)
        return response

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self._feed(data)
        except OSError:
            pass  # an RST from the server is what some tests ask for
        finally:
            self.closed.set()
            self._window.set()
            for response in self.responses.values():
                response.done.set()

    def _feed(self, data: bytes) -> None:
        # Split the stream into frames and keep GOAWAYs away from h2 (see the module docstring).
        self._buffer += data
        passed = bytearray()
        while len(self._buffer) >= _FRAME_HEADER:
            end = _FRAME_HEADER + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                break
            raw = bytes(self._buffer[:end])
            del self._buffer[:end]
            if raw[3] == _GOAWAY_TYPE:
                frame, _ = Frame.parse_frame_header(memoryview(raw[:_FRAME_HEADER]))
                frame.parse_body(memoryview(raw[_FRAME_HEADER:]))
                assert isinstance(frame, GoAwayFrame)
                self.goaways.append(frame)
            else:
                passed += raw
        for event in self.conn.receive_data(bytes(passed)):
            self._on_event(event)
        self.flush()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses[event.stream_id]
            headers = {bytes(k).decode(): bytes(v).decode() for k, v in event.headers}
            response.status = int(headers.pop(":status"))
            response.headers = headers
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].done.set()
        elif isinstance(event, h2.events.StreamReset):
            self.responses[event.stream_id].reset_code = int(event.error_code)
            self.responses[event.stream_id].done.set()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            changes = {int(k): v.new_value for k, v in event.changed_settings.items()}
            self.settings_changes.append(changes)
            self._window.set()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_updates += 1
            self._window.set()


@contextlib.asynccontextmanager
async def _client(port: int, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[_H2Client]:
    async with asyncio.timeout(_IO_TIMEOUT):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_context,
            server_hostname="localhost" if ssl_context is not None else None,
        )
    client = _H2Client(reader, writer, b"https" if ssl_context is not None else b"http")
    try:
        client.start()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def h2_client_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    return context


@pytest.fixture(autouse=True)
def _rig_without_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    # A rig bug (an exception inside a server thread) must fail the test that provoked it.
    yield
    for name in ("h2_server", "tls_h2_server"):
        if name in request.fixturenames:
            server: H2ScriptServer = request.getfixturevalue(name)
            assert server.errors == []
            assert server.protocol_errors == []


async def test_echo_over_h2c(fresh_h2_server: H2ScriptServer) -> None:
    server = fresh_h2_server
    async with _client(server.port) as client:
        response = await client.get("/echo?id=hello")
    assert (response.status, bytes(response.body)) == (200, b"hello")
    assert response.headers["x-stream-id"] == "1"
    assert response.headers["content-length"] == "5"
    conn_id = int(response.headers["x-conn-id"])
    assert server.requests == [ReceivedStream(conn_id, 1, "GET", "/echo")]
    assert (server.streams_received, server.connections_accepted) == (1, 1)
    assert await server.wait_for_async(lambda: server.open_connections() == 0)


async def test_ten_concurrent_streams_share_one_connection(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    async with _client(server.port) as client:
        responses = [client.request("/slow?chunks=3&delay=0.05") for _ in range(10)]
        await client.wait(*responses)
    assert [r.status for r in responses] == [200] * 10
    assert all(bytes(r.body) == pattern(30) for r in responses)
    assert len({r.headers["x-conn-id"] for r in responses}) == 1
    assert server.max_open_streams_seen == 10
    assert server.connections_accepted == 1


async def test_large_body_is_flow_controlled(fresh_h2_server: H2ScriptServer) -> None:
    server = fresh_h2_server
    async with _client(server.port) as client:
        response = await client.get("/bytes/200000?seed=7")
    assert bytes(response.body) == pattern(200_000, 7)
    # The default 65535-byte windows cannot hold 200 kB without the client's WINDOW_UPDATEs.
    assert server.window_updates_received > 0


async def test_goaway_finishes_older_streams_and_ignores_newer(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    server.script(goaway_after_streams=3)
    async with _client(server.port) as client:
        responses = [client.request(f"/echo?id={n}") for n in range(5)]
        async with asyncio.timeout(_IO_TIMEOUT):
            await client.closed.wait()  # the server closes once streams 1, 3, 5 are done
        [goaway] = client.goaways
    assert (goaway.last_stream_id, goaway.error_code) == (5, ErrorCodes.NO_ERROR)
    assert [(r.stream_id, r.status) for r in responses] == [
        (1, 200),
        (3, 200),
        (5, 200),
        (7, None),
        (9, None),
    ]
    assert [bytes(r.body) for r in responses[:3]] == [b"0", b"1", b"2"]
    assert server.goaways_sent == 1
    # The server may close before it has read the last HEADERS; it still reads after its FIN.
    assert await server.wait_for_async(lambda: server.streams_received == 5)


async def test_goaway_applies_to_scripted_connections_only(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    server.script(goaway_after_streams=1, scripted_connections=1)
    async with _client(server.port) as first:
        await first.get("/echo?id=a")
        async with asyncio.timeout(_IO_TIMEOUT):
            await first.closed.wait()
    async with _client(server.port) as second:
        responses = [second.request("/echo?id=b") for _ in range(3)]
        await second.wait(*responses)
    assert [len(first.goaways), len(second.goaways)] == [1, 0]
    assert [r.status for r in responses] == [200] * 3


async def test_goaway_after_path_sets_the_limit_for_its_connection(
    fresh_h2_server: H2ScriptServer,
) -> None:
    async with _client(fresh_h2_server.port) as client:
        first = await client.get("/echo?id=a")
        second = await client.get("/goaway-after?n=2&id=b")  # the 2nd stream: GOAWAY at once
        async with asyncio.timeout(_IO_TIMEOUT):
            await client.closed.wait()
    assert (first.status, second.status, bytes(second.body)) == (200, 200, b"b")
    assert [g.last_stream_id for g in client.goaways] == [3]


async def test_stop_with_streams_open_is_clean() -> None:
    # A private server: stopping the session one would break the other tests.
    server = H2ScriptServer()
    server.start()
    try:
        async with _client(server.port) as client:
            stalled = [client.request(p) for p in ("/stall", "/stall-headers", "/slow?delay=9")]
            assert await server.wait_for_async(lambda: server.streams_received == 3)
            server.stop()
            async with asyncio.timeout(_IO_TIMEOUT):
                await client.closed.wait()
    finally:
        server.stop()
    assert [r.reset_code for r in stalled] == [None] * 3
    assert (server.errors, server.open_connections()) == ([], 0)


async def test_lowered_max_concurrent_streams(fresh_h2_server: H2ScriptServer) -> None:
    server = fresh_h2_server
    server.script(lower_max_concurrent_to=(2, 1))
    max_streams = int(SettingCodes.MAX_CONCURRENT_STREAMS)
    async with _client(server.port) as client:
        responses = [client.request("/slow?chunks=3&delay=0.1") for _ in range(2)]
        async with asyncio.timeout(_IO_TIMEOUT):
            while not any(c.get(max_streams) == 1 for c in client.settings_changes):
                await asyncio.sleep(0.005)
        # h2 itself now refuses a third stream while two are open...
        with pytest.raises(h2.exceptions.TooManyStreamsError):
            client.request("/echo?id=x")
        # ...but the streams already open complete.
        await client.wait(*responses)
        assert [r.status for r in responses] == [200, 200]
    assert [c[max_streams] for c in client.settings_changes if max_streams in c] == [100, 1]


async def test_drop_resets_the_connection_with_streams_open(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    server.script(drop_after_streams=3)
    async with _client(server.port) as client:
        responses = [client.request(f"/echo?id={n}") for n in range(3)]
        async with asyncio.timeout(_IO_TIMEOUT):
            await client.closed.wait()
    assert [r.status for r in responses] == [None] * 3
    assert server.streams_received == 3
    assert await server.wait_for_async(lambda: server.open_connections() == 0)


async def test_rst_with_code(fresh_h2_server: H2ScriptServer) -> None:
    async with _client(fresh_h2_server.port) as client:
        default = await client.get("/rst")
        custom = await client.get("/rst?code=2")
        after = await client.get("/echo?id=ok")  # a stream error leaves the connection usable
    assert (default.reset_code, custom.reset_code) == (ErrorCodes.REFUSED_STREAM, 2)
    assert (default.status, after.status) == (None, 200)


async def test_refuse_first_n_and_client_resets_are_counted(
    fresh_h2_server: H2ScriptServer,
) -> None:
    server = fresh_h2_server
    server.script(refuse_first_n=1, ping_on_connect=True)
    async with _client(server.port) as client:
        refused = await client.get("/echo?id=a")
        stalled = client.request("/stall")
        async with asyncio.timeout(_IO_TIMEOUT):
            while stalled.status is None:
                await asyncio.sleep(0.005)
        client.conn.reset_stream(stalled.stream_id, ErrorCodes.CANCEL)
        client.flush()
        assert await server.wait_for_async(lambda: server.streams_reset_by_client == 1)
        assert (await client.get("/echo?id=b")).status == 200
    assert refused.reset_code == ErrorCodes.REFUSED_STREAM
    assert server.reset_codes == [ErrorCodes.CANCEL]
    assert server.pings_acked == 1  # h2 answers PINGs by itself


async def test_upload_waits_for_window_updates(fresh_h2_server: H2ScriptServer) -> None:
    server = fresh_h2_server
    server.script(initial_window_size=1024, ack_delay=0.005)
    body = pattern(20_000, 3)
    async with _client(server.port) as client:
        # Wait for the server's SETTINGS, so the 1024-byte window is in force from byte one.
        async with asyncio.timeout(_IO_TIMEOUT):
            while not client.settings_changes:
                await asyncio.sleep(0.005)
        response = client.request("/upload", method="POST", has_body=True)
        await client.send_body(response.stream_id, body)
        await client.wait(response)
    assert bytes(response.body) == f"20000 {hashlib.sha256(body).hexdigest()}".encode()
    assert client.window_waits >= 10
    assert client.window_updates >= 10
    # Acknowledgements due after the response may still be in flight, hence no equality.
    assert server.window_updates_sent >= client.window_updates


async def test_tls_h2_server_negotiates_h2(
    fresh_tls_h2_server: H2ScriptServer, h2_client_context: ssl.SSLContext
) -> None:
    server = fresh_tls_h2_server
    assert server.url.startswith("https://localhost:")
    async with _client(server.port, h2_client_context) as client:
        assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        response = await client.get("/echo?id=tls")
    assert (response.status, bytes(response.body)) == (200, b"tls")


async def test_hypercorn_serves_h2_over_tls(
    hypercorn_server: HypercornServer, h2_client_context: ssl.SSLContext
) -> None:
    body = pattern(100_000, 1)
    async with _client(hypercorn_server.port, h2_client_context) as client:
        assert client.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        echoes = [client.request(f"/echo?id=e{n}") for n in range(3)]
        upload = client.request("/upload", method="POST", has_body=True)
        await client.send_body(upload.stream_id, body)
        await client.wait(*echoes, upload)
        big = await client.get("/bytes/100000?seed=2")
    assert [(r.status, bytes(r.body), r.headers["x-id"]) for r in echoes] == [
        (200, f"e{n}".encode(), f"e{n}") for n in range(3)
    ]
    assert all(r.headers["x-http-version"] == "2" for r in (*echoes, upload, big))
    assert bytes(upload.body) == f"100000 {hashlib.sha256(body).hexdigest()}".encode()
    assert bytes(big.body) == pattern(100_000, 2)
