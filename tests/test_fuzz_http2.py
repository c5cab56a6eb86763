"""Fuzzing HTTP/2 frame handling (on h2 and native) through the real client.

h2c by prior knowledge (`Client(http1=False)` on http://): the raw server completes the
preface and SETTINGS exchange, then answers the request's stream with generated frames. Each
test owns one event loop and one server (see `tests.fuzz.harness`, which lists the properties).
The regression tests at the end pin the bugs the fuzzer found, each with a fixed case.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import aiopool
from tests.fuzz import http2, profiles
from tests.fuzz.harness import Target
from tests.fuzz.http2 import OWN, Frame, H2Case

ENGINES = ["h2", "native"]
pytestmark = pytest.mark.parametrize("engine", ENGINES)


def _fuzz(
    engine: str,
    cases: st.SearchStrategy[H2Case],
    examples: int,
    explicit: tuple[H2Case, ...] = (),
) -> None:
    with Target(engine) as target:

        @settings(profiles.active(), max_examples=examples * profiles.scale())
        @given(case=cases)
        def run(case: H2Case) -> None:
            target.run(case)

        for case in explicit:  # (Hypothesis' @example, applied here for a parametrised list)
            run = example(case=case)(run)
        run()


_HEAD = frozenset({"END_HEADERS"})
_END = frozenset({"END_STREAM"})
_200 = Frame("HEADERS", flags=_HEAD, block=((":status", "200"),))
_BODY = Frame("DATA", flags=_END, data=b"abc")


def _ext(kind: int, payload: bytes, stream: int = 0, flags: int = 0) -> Frame:
    """A frame of a known type with a raw payload (the extension-frame path writes any type)."""
    return Frame("EXTENSION", stream, data=payload, number=kind, code=flags)


# Scenarios every ci run covers, whatever the derandomised draw: the ones the RFC names.
MUTATED_EXAMPLES = (
    # GOAWAY refusing every stream (unprocessed: retried elsewhere), with another stream open.
    H2Case((Frame("GOAWAY", 0, number=0),), concurrent=True),
    # GOAWAY(last=1) mid-response: stream 1 may finish; the socket takes no new stream.
    H2Case((_200, Frame("GOAWAY", 0, number=1), _BODY)),
    # GOAWAY with an error code mid-response: the stream fails.
    H2Case((_200, Frame("GOAWAY", 0, number=1, code=0x1), _BODY)),
    # RST_STREAM(REFUSED_STREAM): never processed, retried (a bounded number of times).
    H2Case((Frame("RST_STREAM", number=0x7),)),
    # A complete response, then RST_STREAM(NO_ERROR): the response stands (RFC 9113 8.1).
    H2Case((_200, _BODY, Frame("RST_STREAM", number=0x0)), concurrent=True),
    # PUSH_PROMISE although our SETTINGS disabled push (RFC 9113 8.4): connection error.
    H2Case((_ext(0x5, b"\x00\x00\x00\x02\x88", stream=OWN, flags=0x4), _200, _BODY)),
    # DATA larger than SETTINGS_MAX_FRAME_SIZE: FRAME_SIZE_ERROR.
    H2Case(
        (_200, Frame("DATA", flags=_END, data=bytes(16_385))),
    ),
    # SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1: FLOW_CONTROL_ERROR.
    H2Case((_ext(0x4, struct.pack(">HI", 0x4, 2**31)), _200, _BODY)),
    # WINDOW_UPDATE of 0, on the stream and on the connection.
    H2Case((_200, Frame("WINDOW_UPDATE", OWN, number=0), _BODY)),
    H2Case((_200, Frame("WINDOW_UPDATE", 0, number=0), _BODY)),
    # HEADERS on a stream the client never opened (even: server-initiated) and DATA on stream 0.
    H2Case((Frame("HEADERS", 2, flags=_HEAD, block=((":status", "200"),)), _200, _BODY)),
    H2Case((_200, Frame("DATA", 0, flags=_END, data=b"x"))),
    # A CONTINUATION flood: a thousand empty CONTINUATIONs before END_HEADERS.
    H2Case(
        (
            Frame("HEADERS", raw=b"\x88"),
            *[Frame("CONTINUATION", raw=b"")] * 1000,
            Frame("CONTINUATION", flags=_HEAD, raw=b""),
            _BODY,
        )
    ),
    # An HPACK block referring to a dynamic entry that does not exist.
    H2Case((Frame("HEADERS", flags=_HEAD, raw=b"\xbe"), _BODY)),
    # A response that never ends, on a socket the server then closes.
    H2Case((_200, Frame("DATA", data=b"partial"))),
)


def test_well_formed_frames_are_read_exactly(engine: str) -> None:
    _fuzz(engine, http2.valid_cases(), 40)


def test_mutated_frames_fail_typed_and_leave_no_stream_open(engine: str) -> None:
    _fuzz(engine, http2.mutated_cases(), 150, MUTATED_EXAMPLES)


def test_random_bytes_after_the_handshake_fail_typed(engine: str) -> None:
    _fuzz(engine, http2.random_cases(), 30)


# Regressions found by the fuzzer ----------------------------------------------------------------


@pytest.mark.parametrize("status", ["abc", "", "2_00", "+200", "99", "2000", "\u0662\u0660\u0660"])
def test_a_malformed_status_fails_its_stream_only(engine: str, status: str) -> None:
    # `int(:status)` raised ValueError on "abc" inside the reader, which failed every stream on
    # the socket; it also took "2_00" and "+200" for 200 and let 99 or 2000 through.
    frames = (
        Frame("HEADERS", flags=_HEAD, block=((":status", status),)),
        Frame("DATA", flags=_END, data=b"abc"),
    )
    with Target(engine) as target:
        result = target.run(H2Case(frames, keep_open=True))
    assert isinstance(result.outcome, aiopool.RemoteProtocolError)
    assert ":status" in str(result.outcome)
    assert result.reused  # a stream error: the connection carried the next request


@pytest.mark.parametrize("status", ["100", "200", "600", "999"])
def test_a_three_digit_status_is_accepted(engine: str, status: str) -> None:
    # RFC 9110 section 15: 600-999 are invalid but to be "processed as a 5xx": kept, as h11 does.
    final = (":status", "200") if status == "100" else (":status", status)
    frames = (
        *([Frame("HEADERS", flags=_HEAD, block=((":status", "100"),))] if status == "100" else []),
        Frame("HEADERS", flags=_HEAD, block=(final,)),
        Frame("DATA", flags=_END, data=b"abc"),
    )
    expect = http2.Expected(int(final[1]), (), b"abc")
    with Target(engine) as target:
        assert target.run(H2Case(frames, keep_open=True, expect=expect)).reused


@pytest.mark.parametrize("concurrent", [False, True])
def test_data_after_the_end_of_a_stream_spares_its_response_and_the_socket(
    engine: str, concurrent: bool
) -> None:
    # Found by the differential campaign: a DATA frame after the stream's END_STREAM (here one
    # repeated). RFC 9113 section 6.1 makes DATA on a stream that is not open a stream error
    # STREAM_CLOSED, for a stream already closed; h2 and Go keep the connection (Go ignores the
    # frame, crediting its flow control). The native engine made it a connection error (the
    # "MAY" of section 5.1), which failed the complete response before it, read in the same
    # batch, and every other stream on the socket.
    late = Frame("DATA", flags=_END, data=b"late")
    with Target(engine) as target:
        result = target.run(H2Case((_200, _BODY, late), keep_open=True, concurrent=concurrent))
    assert isinstance(result.outcome, aiopool.Response), result.outcome
    assert (result.outcome.status_code, result.outcome.content) == (200, b"abc")
    assert result.reused  # the follow-up request went out on the same socket


@pytest.mark.parametrize(
    "header",
    [
        b"\x00\x01\x01\x04\x00\x00\x00\x01\x88",  # SETTINGS on stream 392, 257 bytes announced
        b"\x00\x00\x0a\x00\x01\x00\x00\x00\x00",  # DATA on stream 0, 10 bytes announced
    ],
    ids=["SETTINGS-on-a-stream", "DATA-on-stream-0"],
)
def test_a_frame_on_the_wrong_stream_is_refused_from_its_header(engine: str, header: bytes) -> None:
    # Found by the differential campaign (a byte deleted from an answer): a frame header whose
    # stream id its type forbids (RFC 9113 sections 6.1, 6.5), its payload never sent. h2 refuses
    # it from the 9 bytes; the native engine waited for the payload, and so reported the
    # socket's end (or, on a socket kept open, its read timeout) instead of the server's error.
    with Target(engine) as target:
        result = target.run(H2Case((), raw=header))
    assert isinstance(result.outcome, aiopool.RemoteProtocolError), result.outcome
    assert not result.reused
