"""A scripted HTTP/2 server for byte-exact scenarios the client must survive.

Built on h2's server-side state machine, in its own thread and loop like ``FaultServer`` (and on
the same ``_ThreadedServer`` base), so one session-scoped instance serves tests on any loop. It
speaks h2c with prior knowledge, or TLS when given a context (offer ALPN ``h2``). The request
path picks a response (see ``H2ScriptServer``); per-connection faults are *scripted* with knobs
(see ``H2Knobs``), because HTTP/2 faults such as GOAWAY are about streams and connections, not
about the one request that would carry a path.

Frames go out in the order h2 produced them: every h2 call is followed by a flush of h2's output
on the server's loop, with no await in between, so per-stream tasks never interleave partial
writes. The one frame written behind h2's back is the graceful GOAWAY: h2 moves a connection to
CLOSED as soon as it sends (or receives) GOAWAY and then refuses to send DATA, so the server
could not finish the streams the GOAWAY promised to finish.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, TypedDict, Unpack
from urllib.parse import parse_qsl, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import DataFrame, GoAwayFrame, SettingsFrame

from .fault_server import _ThreadedServer, close_writer, pattern

__all__ = ["H2Knobs", "H2ScriptServer", "ReceivedStream"]

# A graceful close waits this long for the client to close its side (or for a TLS close_notify)
# so that bytes the client is still sending do not make the kernel answer with an RST, which
# could destroy response bytes the client has not read yet.
_CLOSE_GRACE = 1.0
_READ_SIZE = 65536
_PING_PAYLOAD = b"rig-ping"
_FRAME_HEADER = 9
_WINDOW_UPDATE = 0x8
_RST_STREAM = 0x3
_PREFACE_SIZE = 24  # the client's connection preface, before its first frame
_LATE_DATA = b"late-frame"


class H2Knobs(TypedDict, total=False):
    """Knobs of ``H2ScriptServer``; each connection takes a snapshot of them when accepted."""

    max_concurrent_streams: int | None
    """SETTINGS_MAX_CONCURRENT_STREAMS the server advertises; None: not stated, so unbounded
    by RFC 9113 section 6.5.2 (the server then enforces no limit) (100)."""
    initial_window_size: int | None
    """The server's per-stream receive window, SETTINGS_INITIAL_WINDOW_SIZE; None: not stated,
    so the RFC default of 65,535 applies, as with Apache, whose SETTINGS omit it (65535)."""
    connection_window: int
    """The server's connection-level receive window: above 65,535 (the RFC's start), a
    WINDOW_UPDATE on stream 0 right after SETTINGS opens it, as Apache and nginx do (65535)."""
    max_frame_size: int
    """Largest frame the client may send, SETTINGS_MAX_FRAME_SIZE (16384)."""
    ack_delay: float
    """Seconds before received DATA is acknowledged (returned to the client's window) (0)."""
    goaway_after_streams: int | None
    """On the N-th request stream: GOAWAY(last_stream_id=that stream, NO_ERROR) (None)."""
    lower_max_concurrent_to: tuple[int, int] | None
    """(k, limit): after the k-th stream, SETTINGS MAX_CONCURRENT_STREAMS=limit (None)."""
    drop_after_streams: int | None
    """Hold every stream unanswered; once N are held, reset the TCP connection (None)."""
    ping_on_connect: bool
    """Send a PING right after SETTINGS; ACKs are counted in ``pings_acked`` (False)."""
    refuse_first_n: int
    """RST_STREAM(REFUSED_STREAM) the first N streams of each connection (0)."""
    goaway_error_code: int
    """The error code of the ``goaway_after_streams`` GOAWAY (0, NO_ERROR)."""
    close_on_goaway: bool
    """Close the connection right after a ``goaway_after_streams`` GOAWAY, reading nothing
    more and leaving the streams at or below its last_stream_id unanswered, as Go's server
    now and then does; what the client sent meanwhile makes it an RST (False)."""
    data_after_reset: int
    """Answer a client's RST_STREAM with N more 10-byte DATA frames on that stream, written
    past h2 as if they had crossed the reset on the wire (0)."""
    scripted_connections: int | None
    """Apply the fault knobs above (all but the SETTINGS, ``ack_delay`` and
    ``data_after_reset``) only to the first N connections accepted after
    ``script()`` / ``reset_script()``; later ones behave normally. None: all (None)."""


_DEFAULT_KNOBS: H2Knobs = {
    "max_concurrent_streams": 100,
    "initial_window_size": 65535,
    "connection_window": 65535,
    "max_frame_size": 16384,
    "ack_delay": 0.0,
    "goaway_after_streams": None,
    "lower_max_concurrent_to": None,
    "drop_after_streams": None,
    "ping_on_connect": False,
    "refuse_first_n": 0,
    "goaway_error_code": 0,
    "close_on_goaway": False,
    "data_after_reset": 0,
    "scripted_connections": None,
}


@dataclass(frozen=True)
class _Script:
    """What one connection does: the knobs as they were when it was accepted."""

    max_concurrent_streams: int | None
    initial_window_size: int | None
    connection_window: int
    max_frame_size: int
    ack_delay: float
    goaway_after_streams: int | None
    lower_max_concurrent_to: tuple[int, int] | None
    drop_after_streams: int | None
    ping_on_connect: bool
    refuse_first_n: int
    goaway_error_code: int
    close_on_goaway: bool
    data_after_reset: int


class ReceivedStream(NamedTuple):
    conn_id: int
    stream_id: int
    method: str
    path: str


class _BadRequest(Exception):
    pass


@dataclass(eq=False)
class _Stream:
    id: int
    method: str
    path: str
    query: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    reset: bool = False  # by either side: nothing may be sent on it any more
    done: bool = False


@dataclass(eq=False)
class _Session:
    """One connection: its h2 state machine, its streams, and how it is being closed."""

    id: int
    script: _Script
    h2: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    on_window_updates: Callable[[int], None]
    streams: dict[int, _Stream] = field(default_factory=dict)
    received: int = 0
    goaway_after: int | None = None
    goaway_last: int | None = None  # last_stream_id of the GOAWAY we sent
    held: int = 0
    window_waiters: dict[int, asyncio.Event] = field(default_factory=dict)
    scanner: _ResetScanner = field(default_factory=lambda: _ResetScanner())
    timers: set[asyncio.TimerHandle] = field(default_factory=set)
    read_deadline: asyncio.Timeout | None = None
    write_closed: bool = False
    dropped: bool = False
    terminated: bool = False  # h2 is CLOSED (a protocol error, or the client's GOAWAY)
    closed: bool = False  # the handler is tearing the connection down

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.write_closed and not self.writer.transport.is_closing():
            self.writer.write(data)
            # h2 emits WINDOW_UPDATEs on its own schedule (see acknowledge_received_data), so
            # the only reliable count is of the frames that actually go out.
            if updates := _count_frames(data, _WINDOW_UPDATE):
                self.on_window_updates(updates)

    def wake_senders(self, stream_id: int | None = None) -> None:
        if stream_id is None:
            waiters = list(self.window_waiters.values())
            self.window_waiters.clear()
        else:
            waiter = self.window_waiters.pop(stream_id, None)
            waiters = [] if waiter is None else [waiter]
        for event in waiters:
            event.set()


_Handler = Callable[[_Session, _Stream], Awaitable[None]]


class _ResetScanner:
    """Finds the RST_STREAM frames in what the client sends, as (stream_id, error_code).

    h2 reports no event for a reset of a stream that is already closed, so its events alone
    cannot tell how many resets a client sent.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._preface = _PREFACE_SIZE

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        buffer = self._buffer
        buffer += data
        if self._preface:
            skipped = min(self._preface, len(buffer))
            del buffer[:skipped]
            self._preface -= skipped
        found: list[tuple[int, int]] = []
        offset = 0
        while offset + _FRAME_HEADER <= len(buffer):
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            end = offset + _FRAME_HEADER + length
            if end > len(buffer):
                break
            if buffer[offset + 3] == _RST_STREAM and length == 4:
                stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
                found.append((stream_id, int.from_bytes(buffer[offset + 9 : end], "big")))
            offset = end
        del buffer[:offset]
        return found


class H2ScriptServer(_ThreadedServer):
    """An HTTP/2 server whose responses are chosen by ``:path`` and whose faults are scripted.

    ==========================  ==========================================================
    path                        behaviour
    ==========================  ==========================================================
    /echo?id=X                  200, body X
    /bytes/N?seed=S             200, ``pattern(N, S)`` (S defaults to 0), sent as the
                                client's flow-control window allows
    /slow?chunks=K&delay=S      200, K (5) DATA frames of 10 bytes, each after S (0.1) s;
                                the body is ``pattern(10 * K)``
    /upload                     reads the whole request body; 200, body ``b"<count> <sha256
                                hex>"``
    /expect-silent              as /upload (every other path answers a request's ``expect:
                                100-continue`` with a ``100`` HEADERS frame at once; this
                                one never does)
    /expect-reject?status=N     status N (417) with a small body at once, without waiting
                                for the request body; ``body_bytes`` counts what still came;
                                ``rst=1``: then RST_STREAM(NO_ERROR), "send no body"
                                (RFC 9113 section 8.1)
    /stall                      200 headers, then nothing until the stream or connection
                                ends
    /stall-headers              nothing at all
    /rst?code=N                 RST_STREAM with error code N (7, REFUSED_STREAM)
    /headers?n=N&size=B         200 with N (100) extra ``x-many-i`` headers of B (10) bytes
    /interim?n=N                N (3) ``103 Early Hints`` heads, then 200 ``ok``
    /goaway-after?n=N           as /echo, and this connection behaves as if
                                ``goaway_after_streams=N`` (a GOAWAY naming this stream
                                at once if N streams were already received)
    anything else               404
    ==========================  ==========================================================

    Responses carry ``content-length`` (except /stall), ``x-conn-id`` and ``x-stream-id``.
    Every handler but /rst, /stall and /stall-headers waits for the whole request body first.
    Bad query values get a 400.

    Knobs are attributes (``server.goaway_after_streams = 2``) or set together with
    ``script(...)``; each connection snapshots them when it is accepted, so a change affects
    new connections only. ``reset()`` zeroes the counters, ``reset_script()`` restores the
    knobs given to the constructor.
    """

    def __init__(
        self, ssl_context: ssl.SSLContext | None = None, **defaults: Unpack[H2Knobs]
    ) -> None:
        super().__init__(ssl_context)
        _check_knobs(defaults)
        self._defaults: H2Knobs = {**_DEFAULT_KNOBS, **defaults}
        # Declared one by one (not just via setattr) so that attribute access type-checks.
        self.max_concurrent_streams: int | None = 100
        self.initial_window_size: int | None = 65535
        self.connection_window: int = 65535
        self.max_frame_size: int = 16384
        self.ack_delay: float = 0.0
        self.goaway_after_streams: int | None = None
        self.lower_max_concurrent_to: tuple[int, int] | None = None
        self.drop_after_streams: int | None = None
        self.ping_on_connect: bool = False
        self.refuse_first_n: int = 0
        self.goaway_error_code: int = 0
        self.close_on_goaway: bool = False
        self.data_after_reset: int = 0
        self.scripted_connections: int | None = None
        self._scripted_so_far = 0
        self.reset_script()
        self._zero_counters()
        self._routes: dict[str, _Handler] = {
            "echo": self._echo,
            "goaway-after": self._echo,
            "bytes": self._bytes,
            "slow": self._slow,
            "upload": self._upload,
            "expect-silent": self._upload,
            "expect-reject": self._expect_reject,
            "stall": self._stall,
            "stall-headers": self._stall_headers,
            "rst": self._rst,
            "headers": self._headers,
            "interim": self._interim,
        }

    # -- script -----------------------------------------------------------------------------

    def script(self, **knobs: Unpack[H2Knobs]) -> None:
        """Set several knobs at once; also restarts the ``scripted_connections`` count."""
        _check_knobs(knobs)
        with self._lock:
            for name, value in knobs.items():
                setattr(self, name, value)
            self._scripted_so_far = 0

    def reset_script(self) -> None:
        """Every knob back to its constructor value (the defaults in ``H2Knobs`` otherwise)."""
        self.script(**self._defaults)

    def _snapshot(self) -> _Script:
        with self._lock:
            self._scripted_so_far += 1
            limit = self.scripted_connections
            faulty = limit is None or self._scripted_so_far <= limit
            return _Script(
                max_concurrent_streams=self.max_concurrent_streams,
                initial_window_size=self.initial_window_size,
                connection_window=self.connection_window,
                max_frame_size=self.max_frame_size,
                ack_delay=self.ack_delay,
                goaway_after_streams=self.goaway_after_streams if faulty else None,
                lower_max_concurrent_to=self.lower_max_concurrent_to if faulty else None,
                drop_after_streams=self.drop_after_streams if faulty else None,
                ping_on_connect=self.ping_on_connect and faulty,
                refuse_first_n=self.refuse_first_n if faulty else 0,
                goaway_error_code=self.goaway_error_code,
                close_on_goaway=self.close_on_goaway and faulty,
                data_after_reset=self.data_after_reset,
            )

    # -- counters ---------------------------------------------------------------------------

    def _zero_counters(self) -> None:
        self._streams_received = 0
        self._reset_codes: list[int] = []
        self._rst_frames: list[tuple[int, int]] = []
        self._window_updates = 0
        self._window_updates_sent = 0
        self._max_open = 0
        self._goaways_sent = 0
        self._goaways_received = 0
        self._pings_acked = 0
        self._pings_received = 0
        self._requests: list[ReceivedStream] = []
        self._body_bytes: dict[tuple[int, int], int] = {}
        self._protocol_errors: list[str] = []

    def reset(self) -> None:
        """Zero every counter (``connections_accepted`` too) and clear ``errors``."""
        super().reset()
        with self._lock:
            self._zero_counters()

    def _count(self, name: str, increment: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + increment)

    @property
    def streams_received(self) -> int:
        """Request streams (HEADERS opening a stream) received, over all connections."""
        with self._lock:
            return self._streams_received

    @property
    def streams_reset_by_client(self) -> int:
        """RST_STREAM frames from the client that reset a stream the server knew as open."""
        with self._lock:
            return len(self._reset_codes)

    @property
    def reset_codes(self) -> list[int]:
        """Their error codes, in order (8 is CANCEL)."""
        with self._lock:
            return list(self._reset_codes)

    @property
    def rst_frames_received(self) -> list[tuple[int, int]]:
        """Every RST_STREAM frame from the client as (stream_id, error_code), in order: also
        those for streams already closed, which ``reset_codes`` does not see."""
        with self._lock:
            return list(self._rst_frames)

    @property
    def window_updates_received(self) -> int:
        """WINDOW_UPDATE frames from the client, connection- and stream-level."""
        with self._lock:
            return self._window_updates

    @property
    def window_updates_sent(self) -> int:
        """WINDOW_UPDATE frames the server sent: how often an upload got more window."""
        with self._lock:
            return self._window_updates_sent

    @property
    def max_open_streams_seen(self) -> int:
        """Peak of h2's count of open inbound streams on any one connection."""
        with self._lock:
            return self._max_open

    @property
    def goaways_sent(self) -> int:
        with self._lock:
            return self._goaways_sent

    @property
    def goaways_received(self) -> int:
        """GOAWAY frames from the client (a graceful client close sends one)."""
        with self._lock:
            return self._goaways_received

    @property
    def pings_received(self) -> int:
        """PINGs from the client (a health check), each answered by h2."""
        with self._lock:
            return self._pings_received

    @property
    def pings_acked(self) -> int:
        """ACKs of the PINGs sent because of ``ping_on_connect``."""
        with self._lock:
            return self._pings_acked

    @property
    def requests(self) -> list[ReceivedStream]:
        """Every request stream received, in order, answered or not."""
        with self._lock:
            return list(self._requests)

    def body_bytes(self, conn_id: int, stream_id: int) -> int:
        """DATA bytes received on one stream (0 if none came)."""
        with self._lock:
            return self._body_bytes.get((conn_id, stream_id), 0)

    @property
    def protocol_errors(self) -> list[str]:
        """h2's complaints about what the client sent; each one ended its connection."""
        with self._lock:
            return list(self._protocol_errors)

    # -- connection -------------------------------------------------------------------------

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        session: _Session | None = None
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader),
                sock,
                ssl=self._ssl_context,
                # asyncio waits 30 s for the peer's close_notify by default.
                ssl_shutdown_timeout=_CLOSE_GRACE if self._ssl_context is not None else None,
            )
            config = h2.config.H2Configuration(client_side=False, header_encoding=None)
            session = _Session(
                id=conn_id,
                script=self._snapshot(),
                h2=h2.connection.H2Connection(config=config),
                writer=asyncio.StreamWriter(transport, protocol, reader, loop),
                on_window_updates=lambda n: self._count("_window_updates_sent", n),
            )
            await self._serve(session, reader)
        except (OSError, EOFError):
            pass  # the client went away, or failed the TLS handshake
        except Exception as exc:
            self._record_error(exc)
        finally:
            if session is not None:
                await self._close(session)

    async def _serve(self, session: _Session, reader: asyncio.StreamReader) -> None:
        script, conn = session.script, session.h2
        # The first SETTINGS frame is empty (the RFC defaults hold); the real values follow in a
        # second one via update_settings(), which h2 enforces only once the client ACKs it.
        # Enforcing them from the start, as initiate_connection() would, punishes a client for
        # using the defaults before our SETTINGS could reach it (RFC 9113, section 6.5.3).
        # h2 would state every default in that first frame; real servers state only what
        # differs (Apache omits INITIAL_WINDOW_SIZE and HEADER_TABLE_SIZE), and a client must
        # then assume the RFC defaults, not its library's.
        conn.local_settings = h2.settings.Settings(client=False)
        conn.initiate_connection()
        conn.data_to_send()  # (h2's preface: one SETTINGS frame stating every default)
        stated: dict[h2.settings.SettingCodes | int, int] = {
            h2.settings.SettingCodes.MAX_FRAME_SIZE: script.max_frame_size
        }
        if script.max_concurrent_streams is not None:
            stated[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = script.max_concurrent_streams
        if script.initial_window_size is not None:
            stated[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = script.initial_window_size
        conn.update_settings(stated)
        if script.connection_window > 65535:
            conn.increment_flow_control_window(script.connection_window - 65535)
        if script.ping_on_connect:
            conn.ping(_PING_PAYLOAD)
        # One write for the preface and what follows, as before: a client that has read only
        # the first SETTINGS would not yet know the stream limit in the second.
        preface = conn.data_to_send()
        session.writer.write(SettingsFrame(0).serialize() + preface)
        if updates := _count_frames(preface, _WINDOW_UPDATE):
            session.on_window_updates(updates)
        try:
            async with asyncio.timeout(None) as session.read_deadline:
                while not session.terminated and (data := await reader.read(_READ_SIZE)):
                    if resets := session.scanner.feed(data):
                        with self._lock:
                            self._rst_frames += resets
                    try:
                        events = conn.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        with self._lock:
                            self._protocol_errors.append(f"conn {session.id}: {exc!r}")
                        session.terminated = True
                        session.flush()  # h2 has queued a GOAWAY with the error code
                        return
                    # h2 is CLOSED after a GOAWAY from the client and would raise on any
                    # frame we send; the events that arrived before it must not try.
                    if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                        session.terminated = True
                    for event in events:
                        self._on_event(session, event)
                    with self._lock:
                        self._max_open = max(self._max_open, conn.open_inbound_streams)
                    session.flush()
        except TimeoutError:
            pass  # the client did not close within the grace period after ours

    async def _close(self, session: _Session) -> None:
        session.closed = True
        for handle in session.timers:
            handle.cancel()
        tasks = [s.task for s in session.streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert self._stopping is not None
        await close_writer(session.writer, abort=session.dropped or self._stopping.is_set())

    def _finish(self, session: _Session) -> None:
        """Close gracefully: FIN now, but keep reading until the client closes too."""
        if session.write_closed:
            return
        session.flush()
        if session.writer.can_write_eof():
            session.writer.write_eof()
            session.write_closed = True
            if session.read_deadline is not None:
                deadline = asyncio.get_running_loop().time() + _CLOSE_GRACE
                session.read_deadline.reschedule(deadline)
        else:
            # TLS cannot half-close; its close() sends close_notify and keeps reading until
            # the peer's, which serves the same purpose.
            session.write_closed = True
            session.writer.close()

    def _drop(self, session: _Session) -> None:
        """Reset the TCP connection: SO_LINGER 0 makes the close send an RST, not a FIN."""
        if session.dropped:
            return
        session.flush()
        sock = session.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        session.dropped = session.write_closed = True
        # abort() rather than close(): over TLS, close() would first send close_notify.
        session.writer.transport.abort()

    def _send_goaway(self, session: _Session, last_stream_id: int) -> None:
        # Written past h2 (see the module docstring); h2's pending bytes go first to keep order.
        session.flush()
        code = session.script.goaway_error_code
        frame = GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code)
        if not session.write_closed and not session.writer.transport.is_closing():
            session.writer.write(frame.serialize())
        session.goaway_last = last_stream_id
        self._count("_goaways_sent")
        if session.script.close_on_goaway and not session.write_closed:
            # Go's way: close at once, GOAWAY sent. Frames of the client's still unread (or
            # still arriving) make the kernel answer with an RST instead of a FIN.
            session.write_closed = session.terminated = True
            session.writer.close()
            return
        self._maybe_finish(session)

    def _maybe_finish(self, session: _Session) -> None:
        last = session.goaway_last
        if last is None or session.write_closed or session.closed:
            return
        if all(s.done or s.reset for sid, s in session.streams.items() if sid <= last):
            self._finish(session)

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, session: _Session, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(session, event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(session, event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = session.streams.get(event.stream_id)
            if stream is not None:
                stream.ended.set()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(session, event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._count("_window_updates")
            session.wake_senders(event.stream_id or None)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            # A new SETTINGS_INITIAL_WINDOW_SIZE resizes every stream's send window.
            session.wake_senders()
        elif isinstance(event, h2.events.PingAckReceived):
            self._count("_pings_acked")
        elif isinstance(event, h2.events.PingReceived):
            self._count("_pings_received")  # h2 answers it itself
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._count("_goaways_received")
            session.terminated = True

    def _on_request(self, session: _Session, event: h2.events.RequestReceived) -> None:
        headers = {_text(k): _text(v) for k, v in event.headers}
        split = urlsplit(headers.get(":path", ""))
        stream = _Stream(
            id=event.stream_id,
            method=headers.get(":method", ""),
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
        )
        if event.stream_ended is not None:
            stream.ended.set()
        elif headers.get("expect", "").lower() == "100-continue" and split.path not in (
            "/expect-silent",
            "/expect-reject",
        ):
            session.h2.send_headers(stream.id, [(b":status", b"100")])  # RFC 9113 section 8.1
        session.streams[stream.id] = stream
        session.received += 1
        with self._lock:
            self._streams_received += 1
            self._requests.append(ReceivedStream(session.id, stream.id, stream.method, split.path))
        script, count = session.script, session.received
        if session.terminated or session.dropped:
            return
        if session.goaway_last is not None and stream.id > session.goaway_last:
            return  # beyond the GOAWAY: never answered, as promised
        if count <= script.refuse_first_n:
            session.h2.reset_stream(stream.id, ErrorCodes.REFUSED_STREAM)
            stream.reset = True
        elif script.drop_after_streams is not None:
            session.held += 1
            if session.held >= script.drop_after_streams:
                self._drop(session)
                return
        else:
            if stream.path == "/goaway-after":
                session.goaway_after = _int_param(stream, "n", 1)
            stream.task = asyncio.get_running_loop().create_task(self._run(session, stream))
        goaway_after = session.goaway_after
        if goaway_after is None:
            goaway_after = script.goaway_after_streams
        if session.goaway_last is None and goaway_after is not None and count >= goaway_after:
            self._send_goaway(session, stream.id)
        if script.lower_max_concurrent_to is not None:
            after, limit = script.lower_max_concurrent_to
            if count == after:
                session.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit})

    def _on_data(self, session: _Session, event: h2.events.DataReceived) -> None:
        stream = session.streams.get(event.stream_id)
        if stream is not None:
            stream.body += event.data
        with self._lock:
            key = (session.id, event.stream_id)
            self._body_bytes[key] = self._body_bytes.get(key, 0) + len(event.data)
        size, stream_id = event.flow_controlled_length, event.stream_id
        if session.terminated:
            return
        if session.script.ack_delay <= 0:
            session.h2.acknowledge_received_data(size, stream_id)
            return
        loop = asyncio.get_running_loop()

        def acknowledge() -> None:
            session.timers.discard(handle)
            if session.terminated or session.write_closed or session.closed:
                return
            session.h2.acknowledge_received_data(size, stream_id)
            session.flush()

        handle = loop.call_later(session.script.ack_delay, acknowledge)
        session.timers.add(handle)

    def _on_reset(self, session: _Session, event: h2.events.StreamReset) -> None:
        if event.remote_reset:
            with self._lock:
                self._reset_codes.append(int(event.error_code))
            self._send_late_data(session, event.stream_id)
        stream = session.streams.get(event.stream_id)
        if stream is None:
            return
        stream.reset = True
        stream.ended.set()
        if stream.task is not None:
            stream.task.cancel()
        session.wake_senders(stream.id)
        self._maybe_finish(session)

    def _send_late_data(self, session: _Session, stream_id: int) -> None:
        """``data_after_reset``: DATA the client must take as having crossed its reset."""
        count = session.script.data_after_reset
        if not count or session.write_closed or session.writer.transport.is_closing():
            return
        session.flush()  # (h2's pending frames go first)
        for _ in range(count):
            session.writer.write(DataFrame(stream_id, data=_LATE_DATA).serialize())
            # Past h2, so its count of the client's connection window is kept by hand.
            session.h2.outbound_flow_control_window -= len(_LATE_DATA)

    # -- streams ----------------------------------------------------------------------------

    async def _run(self, session: _Session, stream: _Stream) -> None:
        name = stream.path.removeprefix("/").split("/", 1)[0]
        handler = self._routes.get(name, self._not_found)
        try:
            try:
                await handler(session, stream)
            except _BadRequest as exc:
                await self._respond(session, stream, 400, f"{exc}\n".encode())
        except (OSError, h2.exceptions.ProtocolError) as exc:
            # Expected once the client reset the stream or the connection is gone; anything
            # else is a bug in the rig.
            if not (stream.reset or session.terminated or session.write_closed):
                self._record_error(exc)
        finally:
            stream.done = True
            self._maybe_finish(session)

    def _send_head(
        self, session: _Session, stream: _Stream, status: int, length: int | None, *, end: bool
    ) -> None:
        headers = [(b":status", str(status).encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        headers += [
            (b"x-conn-id", str(session.id).encode()),
            (b"x-stream-id", str(stream.id).encode()),
        ]
        session.h2.send_headers(stream.id, headers, end_stream=end)
        session.flush()

    async def _respond(self, session: _Session, stream: _Stream, status: int, body: bytes) -> None:
        self._send_head(session, stream, status, len(body), end=not body)
        if body:
            await self._send_data(session, stream, body, end_stream=True)

    async def _send_data(
        self, session: _Session, stream: _Stream, data: bytes, *, end_stream: bool
    ) -> None:
        """Send ``data`` in frames as large as the client's windows and max frame size allow."""
        conn, offset = session.h2, 0
        while offset < len(data):
            window = conn.local_flow_control_window(stream.id)
            if window <= 0:
                # Woken by a WINDOW_UPDATE, a SETTINGS change or a reset of this stream.
                waiter = session.window_waiters.setdefault(stream.id, asyncio.Event())
                await waiter.wait()
                continue
            size = min(window, conn.max_outbound_frame_size, len(data) - offset)
            last = offset + size == len(data)
            conn.send_data(stream.id, data[offset : offset + size], end_stream=end_stream and last)
            offset += size
            session.flush()
            await session.writer.drain()

    async def _echo(self, session: _Session, stream: _Stream) -> None:
        await stream.ended.wait()
        await self._respond(session, stream, 200, stream.query.get("id", "").encode("latin-1"))

    async def _bytes(self, session: _Session, stream: _Stream) -> None:
        count = _parse_int(stream.path.removeprefix("/bytes/"), "N")
        body = pattern(count, _int_param(stream, "seed", 0))
        await stream.ended.wait()
        await self._respond(session, stream, 200, body)

    async def _slow(self, session: _Session, stream: _Stream) -> None:
        chunks, delay = _int_param(stream, "chunks", 5), _float_param(stream, "delay", 0.1)
        await stream.ended.wait()
        body = pattern(10 * chunks)
        self._send_head(session, stream, 200, len(body), end=not body)
        for index in range(chunks):
            await asyncio.sleep(delay)
            piece = body[index * 10 : index * 10 + 10]
            await self._send_data(session, stream, piece, end_stream=index == chunks - 1)

    async def _upload(self, session: _Session, stream: _Stream) -> None:
        await stream.ended.wait()
        digest = hashlib.sha256(stream.body).hexdigest()
        await self._respond(session, stream, 200, f"{len(stream.body)} {digest}".encode())

    async def _expect_reject(self, session: _Session, stream: _Stream) -> None:
        status = _int_param(stream, "status", 417)
        await self._respond(session, stream, status, f"rejected: {status}\n".encode())
        if stream.query.get("rst") == "1" and not stream.reset:
            session.h2.reset_stream(stream.id, ErrorCodes.NO_ERROR)
            stream.reset = True
            session.flush()

    async def _stall(self, session: _Session, stream: _Stream) -> None:
        self._send_head(session, stream, 200, None, end=False)
        await asyncio.get_running_loop().create_future()  # cancelled by reset or close

    async def _stall_headers(self, session: _Session, stream: _Stream) -> None:
        await asyncio.get_running_loop().create_future()  # cancelled by reset or close

    async def _rst(self, session: _Session, stream: _Stream) -> None:
        code = _int_param(stream, "code", ErrorCodes.REFUSED_STREAM)
        session.h2.reset_stream(stream.id, code)
        stream.reset = True
        session.flush()

    async def _headers(self, session: _Session, stream: _Stream) -> None:
        count, size = _int_param(stream, "n", 100), _int_param(stream, "size", 10)
        await stream.ended.wait()
        headers = [(b":status", b"200"), (b"content-length", b"3")]
        headers += [(b"x-many-%d" % index, b"v" * size) for index in range(count)]
        session.h2.send_headers(stream.id, headers)
        session.flush()
        await self._send_data(session, stream, b"ok\n", end_stream=True)

    async def _interim(self, session: _Session, stream: _Stream) -> None:
        count = _int_param(stream, "n", 3)
        await stream.ended.wait()
        for _ in range(count):
            hint = [(b":status", b"103"), (b"link", b"</style.css>; rel=preload")]
            session.h2.send_headers(stream.id, hint)
            session.flush()
        await self._respond(session, stream, 200, b"ok\n")

    async def _not_found(self, session: _Session, stream: _Stream) -> None:
        await stream.ended.wait()
        await self._respond(session, stream, 404, b"not found\n")


def _check_knobs(knobs: H2Knobs) -> None:
    unknown = set(knobs) - set(_DEFAULT_KNOBS)
    if unknown:
        raise TypeError(f"unknown knobs: {sorted(unknown)}")
    window = knobs.get("initial_window_size", 65535)
    frame = knobs.get("max_frame_size", 16384)
    streams = knobs.get("max_concurrent_streams", 100)
    window = 65535 if window is None else window
    streams = 0 if streams is None else streams
    opened = knobs.get("connection_window", 65535)
    # Checked here so a bad value fails in the test, not later in the server thread.
    if (
        not 65535 <= opened < 2**31
        or not 0 <= window < 2**31
        or not 2**14 <= frame < 2**24
        or not 0 <= streams < 2**32
    ):
        raise ValueError(f"invalid SETTINGS value in {knobs}")


def _count_frames(data: bytes, frame_type: int) -> int:
    """Frames of ``frame_type`` in ``data``, which holds whole frames (h2 emits nothing else)."""
    count = offset = 0
    while offset + _FRAME_HEADER <= len(data):
        count += data[offset + 3] == frame_type
        offset += _FRAME_HEADER + int.from_bytes(data[offset : offset + 3], "big")
    return count


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _parse_int(raw: str, name: str) -> int:
    if not raw.isdigit():
        raise _BadRequest(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


def _int_param(stream: _Stream, name: str, default: int) -> int:
    raw = stream.query.get(name)
    return default if raw is None else _parse_int(raw, name)


def _float_param(stream: _Stream, name: str, default: float) -> float:
    raw = stream.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value < 3600:
        raise _BadRequest(f"{name} out of range: {raw!r}")
    return value
