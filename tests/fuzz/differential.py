"""Differential fuzzing of the HTTP/2 engines: h2 (the reference) and aiopool's native engine.

`EnginesAgree` runs each case through the real client against the raw fuzz server once per
engine (each run keeps every property `harness` checks) and asserts that both ended alike:
a response with the same status, headers and body, or an error of the same class; and the
same decision about the socket (the follow-up request on the fuzzed socket, or on a new one).
`_agree` lists the intended differences, each with the RFC section behind native's choice.
Used by tests/test_h2_differential.py and by the campaign's "engines-agree" target.

The native engine advertises a 1 MiB SETTINGS_MAX_FRAME_SIZE where h2 keeps 16,384; while the
native run of a case is under way the advertised size is held at 16,384 (`same_frame_size`),
so that an oversized frame means the same to both. The hold lasts only that run: the plain
"native" target, and the rest of a test session, keep the engine's own value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import aiopool
from aiopool import _h2native

from .harness import Result, Target, TargetPair
from .http2 import OWN, H2Case

__all__ = ("EnginesAgree", "same_frame_size")

_REFERENCE_FRAME_SIZE = 16_384  # h2's SETTINGS_MAX_FRAME_SIZE (the RFC 9113 default)


@contextmanager
def same_frame_size() -> Iterator[None]:
    """Hold the native engine's advertised SETTINGS_MAX_FRAME_SIZE at h2's 16,384.

    The engine has no per-connection parameter for it (connections are built by the client);
    it reads the module constant when a connection starts, so patching it for the duration of
    one run covers exactly the connections that run opens."""
    with mock.patch.object(_h2native, "MAX_INBOUND_FRAME_SIZE", _REFERENCE_FRAME_SIZE):
        yield


def _summary(result: Result, stream: bool) -> tuple[object, ...]:
    outcome = result.outcome
    if isinstance(outcome, aiopool.Response):
        # A streamed response is left after one chunk: its body is not comparable.
        body = None if stream else outcome.content
        return ("response", outcome.status_code, tuple(outcome.headers.multi_items()), body)
    return ("error", type(outcome).__name__)


def _interim_head_after_reset(case: H2Case) -> bool:
    """Whether the answer sends a 1xx HEADERS on the request's stream after that stream was
    reset: by the server (RST_STREAM), or by us (a head with a malformed :status is a stream
    error). Only for answers sent as generated (edits may change any frame)."""
    if case.raw is not None or case.edits or case.byte_edits:
        return False
    reset = False
    for frame in case.frames:
        if frame.stream != OWN:
            continue
        if frame.kind == "RST_STREAM":
            reset = True
        elif frame.kind == "HEADERS":
            status = dict(frame.block).get(":status", "")
            if reset and status[:1] == "1":
                return True
            if not (len(status) == 3 and status.isdigit()):
                reset = True
    return False


def _agree(native: Result, reference: Result, case: H2Case) -> bool:
    """Whether native's outcome and socket decision are h2's, or differ only where intended."""
    stream = case.stream
    same_socket = native.reused == reference.reused
    if same_socket and _summary(native, stream) == _summary(reference, stream):
        return True
    ours, theirs = native.outcome, reference.outcome
    # Intended: native refuses an oversized frame from its 9-byte header (RFC 9113 section
    # 4.2: a frame over SETTINGS_MAX_FRAME_SIZE is an error as such), h2 only once the whole
    # payload is in; when the server closes before that, h2 reports the socket's end
    # (ReadError) where native already named the frame.
    if (
        same_socket
        and isinstance(ours, aiopool.RemoteProtocolError)
        and "SETTINGS_MAX_FRAME_SIZE" in str(ours)
        and isinstance(theirs, aiopool.ReadError)
    ):
        return True
    # Intended: an interim (1xx) HEADERS on a stream that was reset, by the server or by us.
    # Both fail the request alike; h2 also ends the connection, only because its stream state
    # table has no entry for an interim head on a closed stream (a final head there gets
    # RST_STREAM, the connection kept). Native ignores every frame on a reset stream, whatever
    # its :status: RFC 9113 section 5.1 says an endpoint "MUST ignore frames that it receives
    # on closed streams after it has sent a RST_STREAM frame", and lets one that received a
    # RST_STREAM choose; so the socket stays in service. (When the server's reset came first,
    # h2's error names the state; when ours did, the request failed before and only the
    # socket decision differs.)
    return (
        type(ours) is type(theirs)
        and isinstance(ours, aiopool.RemoteProtocolError)
        and native.reused
        and not reference.reused
        and (
            "RECV_INFORMATIONAL_HEADERS in state" in str(theirs) or _interim_head_after_reset(case)
        )
    )


class EnginesAgree(TargetPair):
    """`with EnginesAgree() as agree: agree.run(case)`: h2 and native on the same case, each
    keeping the harness' properties, and ending alike (AssertionError if not)."""

    name = "engines-agree"
    protocol = "http2"

    def __init__(self) -> None:
        self.h2 = Target("h2")
        self.native = Target("native")
        super().__init__(self.h2, self.native)

    def run(self, case: H2Case) -> None:
        self.cases += 1
        reference = self.h2.run(case)
        with same_frame_size():
            native = self.native.run(case)
        assert _agree(native, reference, case), (native, reference)
