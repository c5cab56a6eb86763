"""Which HTTP/2 state machine drives the sockets: aiopool's own ("native", the default) or h2.

"native" (`_h2native`) is aiopool's own client-only engine with h2's API subset; it needs none
of the fixes below (it keeps those rules itself). Measured side by side (`make bench`, nginx,
TLS, 2 cores) it serves ~3.4x h2's small requests per second and downloads ~1.9x faster, with
a third of h2's CPU per request; it uses jh2's compiled HPACK when `aiopool[speedups]`
installs it (`_h2native_hpack`).

h2 is required and is the reference engine: every HTTP/2 test runs on both, and the
differential fuzz (`tests/fuzz/differential.py`) holds native to h2's outcomes.

jh2 (h2's fork with compiled parts) was an engine until native overtook it everywhere (1.85x
its small requests, 1.6x its download rate, about half its CPU) while it accepted malformed
HPACK that RFC 7541 says to refuse; `http2_engine="jh2"` now raises `ValueError` saying so.

h2's connection class gets these fixes, confined to a subclass:
1. A GOAWAY does not end the streams it lets finish. h2 moves its connection state machine to
   CLOSED on receiving GOAWAY and then refuses every later frame, but RFC 9113 section 6.8 lets
   the peer complete the streams at or below `last_stream_id` (nginx does exactly that after
   `keepalive_requests`). We keep the state machine open; `HTTP2Connection.draining` is what
   stops new streams.
2. The peer's settings start at RFC 9113's defaults (section 6.5.2: INITIAL_WINDOW_SIZE 65,535,
   HEADER_TABLE_SIZE 4,096, MAX_FRAME_SIZE 16,384, MAX_CONCURRENT_STREAMS unbounded), whatever
   the library assumes (jh2 assumed browsers' values, 6,291,456 and 65,536: a peer whose
   SETTINGS state only what differs from the RFC, as Apache's do, then got uploads that overran
   the 65,535-byte windows it gave, and answered FLOW_CONTROL_ERROR).
3. No RST_STREAM in answer to frames on a stream we reset. A server's HEADERS or DATA for a
   stream we just cancelled are still on their way when our RST_STREAM leaves; RFC 9113
   section 5.1 says an endpoint "MUST ignore frames that it receives on closed streams after it
   has sent a RST_STREAM frame", but h2 and jh2 answer each with RST_STREAM(STREAM_CLOSED), so
   one cancellation cost up to three resets. Servers count client resets since the "rapid
   reset" attack (CVE-2023-44487): Apache's mod_http2 lowers its mood with each and ends the
   connection, nghttp2 (node, Apache) has a reset budget. Go's client and curl (nghttp2) send
   one reset per cancelled stream and ignore what follows; so do we now.
4. h2 formats every received frame for a trace log (`repr(frame)`) even when nothing
   logs, and a DATA frame's repr serialises and hex-encodes its whole payload: half of h2's
   per-frame cost. Received DATA frames get a cheap repr instead.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

__all__ = ("H2Engine", "H2EngineName", "load_engine", "native_engine", "select_engine")

_RST_STREAM = 0x3  # frame type (RFC 9113 section 6.4)

H2EngineName = Literal["auto", "h2", "native"]
# What "auto" means; tests switch it to run the HTTP/2 suites on each engine.
DEFAULT_ENGINE: H2EngineName = "native"


@dataclass(frozen=True)
class H2Engine:
    """One HTTP/2 library, as `HTTP2Connection` uses it."""

    name: str
    connection_class: type[Any]  # our subclass of the library's H2Connection
    config_class: type[Any]
    events: ModuleType
    protocol_error: type[Exception]
    stream_closed_error: type[Exception]


def select_engine(choice: H2EngineName) -> H2Engine:
    """The engine for `choice`; "auto" is "native".

    Raises `ValueError` for a name that is not an engine (and says why for "jh2")."""
    name: str = DEFAULT_ENGINE if choice == "auto" else choice
    if name == "native":
        return native_engine()
    if name == "h2":
        return load_engine("h2")
    if name == "jh2":
        raise ValueError(
            "http2_engine='jh2' was retired: the native engine (the default) is faster in "
            "every benchmark and uses jh2's compiled HPACK when it is installed; "
            "http2_engine='h2' remains as the reference"
        )
    raise ValueError(f"http2_engine must be 'auto', 'h2' or 'native', not {name!r}")


@functools.cache
def native_engine() -> H2Engine:
    """aiopool's own engine (`_h2native`)."""
    from . import _h2native, _h2native_events, _h2native_frames

    return H2Engine(
        name="native",
        connection_class=_h2native.NativeConnection,
        config_class=_h2native.NativeConfig,
        events=_h2native_events,
        protocol_error=_h2native_frames.ProtocolError,
        stream_closed_error=_h2native_frames.StreamClosedError,
    )


@functools.cache
def load_engine(name: Literal["h2"]) -> H2Engine:
    connection = importlib.import_module(f"{name}.connection")
    config = importlib.import_module(f"{name}.config")
    events = importlib.import_module(f"{name}.events")
    exceptions = importlib.import_module(f"{name}.exceptions")
    settings = importlib.import_module(f"{name}.settings")
    stream = importlib.import_module(f"{name}.stream")
    data_frame: type[Any] | None = None
    if name == "h2":
        data_frame = importlib.import_module("hyperframe.frame").DataFrame
    return H2Engine(
        name=name,
        connection_class=_connection_class(
            connection.H2Connection,
            connection.ConnectionState.CLOSED,
            data_frame,
            settings.Settings,
            settings.SettingCodes,
            stream.StreamClosedBy.SEND_RST_STREAM,
        ),
        config_class=config.H2Configuration,
        events=events,
        protocol_error=exceptions.ProtocolError,
        stream_closed_error=exceptions.StreamClosedError,
    )


def _connection_class(
    base: type[Any],
    closed: Any,
    data_frame: type[Any] | None,
    settings_class: type[Any],
    codes: Any,
    closed_by_our_reset: Any,
) -> type[Any]:
    # RFC 9113 section 6.5.2's initial values, stated explicitly so that no library default
    # can stand in for them (MAX_CONCURRENT_STREAMS: absent means unbounded).
    rfc_defaults = {
        codes.HEADER_TABLE_SIZE: 4096,
        codes.ENABLE_PUSH: 0,  # (a server's is never used; RFC 9113 section 6.5.2)
        codes.INITIAL_WINDOW_SIZE: 65_535,
        codes.MAX_FRAME_SIZE: 16_384,
    }
    unbounded = (codes.MAX_CONCURRENT_STREAMS, codes.MAX_HEADER_LIST_SIZE)

    quiet_frame: type[Any] | None = None
    if data_frame is not None:

        class QuietDataFrame(data_frame):  # type: ignore[valid-type, misc]
            """A DATA frame whose repr does not copy and hex-encode its whole payload."""

            def _body_repr(self) -> str:
                return f"<{len(self.data)} bytes>"

        quiet_frame = QuietDataFrame

    class Connection(base):  # type: ignore[misc]
        def __init__(self, config: Any) -> None:
            super().__init__(config=config)
            self._ignoring = 0  # the stream whose RST_STREAM(STREAM_CLOSED) is not sent
            remote = settings_class(client=False, initial_values=rfc_defaults)
            for code in unbounded:  # (no library default may stand in for "absent")
                remote.pop(code, None)
            self.remote_settings = remote
            self.max_outbound_frame_size = remote.max_frame_size
            if self.encoder.header_table_size != remote.header_table_size:  # (both: 4,096)
                self.encoder.header_table_size = remote.header_table_size
            if quiet_frame is not None:
                self._frame_dispatch_table[quiet_frame] = self._receive_data_frame

        def _receive_frame(self, frame: Any) -> Any:
            if quiet_frame is not None and frame.__class__ is data_frame:
                frame.__class__ = quiet_frame
            stream_id = frame.stream_id
            if not stream_id or self._stream_closed_by(stream_id) is not closed_by_our_reset:
                return super()._receive_frame(frame)
            # A frame on a stream we reset (h2 also marks a stream it resets for a peer's
            # error so, but only while handling that frame: an answer to a later one is
            # equally ignorable). The connection's flow control still counts its DATA.
            self._ignoring = stream_id
            try:
                return super()._receive_frame(frame)
            finally:
                self._ignoring = 0

        def _prepare_for_sending(self, frames: list[Any]) -> None:
            ignoring = self._ignoring
            if ignoring:
                # (Drops h2's answer to a frame on a stream we reset; see point 3 above.)
                frames = [f for f in frames if f.type != _RST_STREAM or f.stream_id != ignoring]
            super()._prepare_for_sending(frames)

        def _receive_goaway_frame(self, frame: Any) -> Any:
            before = self.state_machine.state
            result = super()._receive_goaway_frame(frame)
            if before is not closed:
                self.state_machine.state = before
            return result

    Connection.__name__ = Connection.__qualname__ = f"GoawayTolerant{base.__name__}"
    return Connection
