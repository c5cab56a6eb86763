"""Fuzzing HTTP/2 frame handling (on h2 and on jh2) through the real client.

h2c by prior knowledge (`Client(http1=False)` on http://): the raw server completes the
preface and SETTINGS exchange, then answers the request's stream with generated frames. Each
test owns one event loop and one server (see `tests.fuzz.harness`, which lists the properties).
The regression tests at the end pin the bugs the fuzzer found, each with a fixed case.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aiopool
from tests.fuzz import http2, profiles
from tests.fuzz.harness import Target
from tests.fuzz.http2 import Frame, H2Case

ENGINES = ["h2", "jh2"]
pytestmark = pytest.mark.parametrize("engine", ENGINES)


def _fuzz(engine: str, cases: st.SearchStrategy[H2Case], examples: int) -> None:
    with Target(engine) as target:

        @settings(profiles.active(), max_examples=examples * profiles.scale())
        @given(case=cases)
        def run(case: H2Case) -> None:
            target.run(case)

        run()


def test_well_formed_frames_are_read_exactly(engine: str) -> None:
    _fuzz(engine, http2.valid_cases(), 40)


def test_mutated_frames_fail_typed_and_leave_no_stream_open(engine: str) -> None:
    _fuzz(engine, http2.mutated_cases(), 150)


def test_random_bytes_after_the_handshake_fail_typed(engine: str) -> None:
    _fuzz(engine, http2.random_cases(), 30)


# Regressions found by the fuzzer ----------------------------------------------------------------

_HEAD = frozenset({"END_HEADERS"})
_END = frozenset({"END_STREAM"})


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
