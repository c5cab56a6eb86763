"""What the native HTTP/2 engine reports: h2's event names and attributes, as slotted classes.

`HTTP2Connection` dispatches on the event's class and reads the attributes h2 documents, so the
same reader serves h2 and the native engine. Only what a client can receive is here.
"""

from __future__ import annotations

__all__ = (
    "ChangedSetting",
    "ConnectionTerminated",
    "DataReceived",
    "InformationalResponseReceived",
    "PingAckReceived",
    "PingReceived",
    "PriorityUpdated",
    "PushedStreamReceived",
    "RemoteSettingsChanged",
    "ResponseReceived",
    "SettingsAcknowledged",
    "StreamEnded",
    "StreamReset",
    "TrailersReceived",
    "UnknownFrameReceived",
    "WindowUpdated",
)

Headers = list[tuple[bytes, bytes]]


class Event:
    __slots__ = ()

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"<{type(self).__name__} {fields}>"


class ResponseReceived(Event):
    __slots__ = ("headers", "stream_ended", "stream_id")

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.stream_ended: StreamEnded | None = None


class InformationalResponseReceived(Event):
    __slots__ = ("headers", "stream_id")

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.stream_id = stream_id
        self.headers = headers


class TrailersReceived(Event):
    __slots__ = ("headers", "stream_ended", "stream_id")

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.stream_ended: StreamEnded | None = None


class DataReceived(Event):
    """The content of one or more DATA frames in a row on one stream (h2 reports each frame;
    we join the frames one read brought, `NativeConnection.receive_data`)."""

    __slots__ = ("data", "flow_controlled_length", "parts", "stream_ended", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flow_controlled_length: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow_controlled_length
        self.stream_ended: StreamEnded | None = None
        # The frames' payloads while the read is parsed; joined into `data` at its end.
        self.parts: list[memoryview] | None = None


class StreamEnded(Event):
    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class StreamReset(Event):
    __slots__ = ("error_code", "remote_reset", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote_reset: bool = True) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote_reset = remote_reset


class WindowUpdated(Event):
    __slots__ = ("delta", "stream_id")

    def __init__(self, stream_id: int, delta: int) -> None:
        self.stream_id = stream_id
        self.delta = delta


class ChangedSetting:
    __slots__ = ("new_value", "original_value", "setting")

    def __init__(self, setting: int, original_value: int | None, new_value: int) -> None:
        self.setting = setting
        self.original_value = original_value
        self.new_value = new_value

    def __repr__(self) -> str:
        return f"<ChangedSetting {self.setting}: {self.original_value} -> {self.new_value}>"


class RemoteSettingsChanged(Event):
    __slots__ = ("changed_settings",)

    def __init__(self, changed_settings: dict[int, ChangedSetting]) -> None:
        self.changed_settings = changed_settings


class SettingsAcknowledged(Event):
    __slots__ = ()


class PingReceived(Event):
    __slots__ = ("ping_data",)

    def __init__(self, ping_data: bytes) -> None:
        self.ping_data = ping_data


class PingAckReceived(Event):
    __slots__ = ("ping_data",)

    def __init__(self, ping_data: bytes) -> None:
        self.ping_data = ping_data


class ConnectionTerminated(Event):
    __slots__ = ("additional_data", "error_code", "last_stream_id")

    def __init__(self, error_code: int, last_stream_id: int, additional_data: bytes) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.additional_data = additional_data


class PriorityUpdated(Event):
    """A PRIORITY frame (validated, otherwise ignored: RFC 9113 section 5.3.2)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class UnknownFrameReceived(Event):
    """A frame of a type this engine does not know (ignored: RFC 9113 section 5.5)."""

    __slots__ = ("type",)

    def __init__(self, frame_type: int) -> None:
        self.type = frame_type


class PushedStreamReceived(Event):  # (never emitted: push is refused as a connection error)
    __slots__ = ("headers", "parent_stream_id", "pushed_stream_id")

    def __init__(self, pushed_stream_id: int, parent_stream_id: int, headers: Headers) -> None:
        self.pushed_stream_id = pushed_stream_id
        self.parent_stream_id = parent_stream_id
        self.headers = headers
