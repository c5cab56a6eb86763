"""Fuzzing the HTTP/1.1 response parsers (h11 and httptools) through the real client.

Each test owns one event loop and one raw server (see `tests.fuzz.harness`) for all its
examples; the properties every example keeps are listed there. The "ci" Hypothesis profile
bounds the run; `make fuzz` runs the same targets for minutes. The regression tests at the end
pin the bugs the fuzzer found, each with a fixed case.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import aiopool
from tests.fuzz import http11, profiles
from tests.fuzz.harness import ParsersAgree, Target
from tests.fuzz.http11 import Expected, H11Case

PARSERS = ["h11", "httptools"]
by_parser = pytest.mark.parametrize("parser", PARSERS)


def _fuzz(
    parser: str,
    cases: st.SearchStrategy[H11Case],
    examples: int,
    explicit: tuple[H11Case, ...] = (),
) -> None:
    with Target(parser) as target:

        @settings(profiles.active(), max_examples=examples * profiles.scale())
        @given(case=cases)
        def run(case: H11Case) -> None:
            target.run(case)

        for case in explicit:  # (Hypothesis' @example, applied here for a parametrised list)
            run = example(case=case)(run)
        run()


def _bad(data: bytes, method: str = "GET") -> H11Case:
    return H11Case(method, data, close_after=True)


# Scenarios every ci run covers, whatever the derandomised draw: the classic framing attacks.
MUTATED_EXAMPLES = (
    _bad(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    _bad(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    _bad(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nabc"),
    _bad(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc"),
    _bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nab"),
    _bad(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked, gzip\r\n\r\n0\r\n\r\n"),
    _bad(b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\nContent-Length: 0\r\n\r\n"),
    _bad(b"HTTP/1.1 200 OK\r\nA: 1\x002\r\nContent-Length: 0\r\n\r\n"),
    _bad(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"),
    _bad(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"),
    _bad(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n"),
    _bad(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
    _bad(b"HTTP/1.1 200 OK\r\nContent-Le"),
    H11Case("GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"),
    H11Case("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
)


@by_parser
def test_well_formed_responses_are_parsed_exactly(parser: str) -> None:
    _fuzz(parser, http11.valid_cases(), 50)


@by_parser
def test_mutated_responses_fail_typed_and_never_reuse_a_broken_socket(parser: str) -> None:
    _fuzz(parser, http11.mutated_cases(), 150, MUTATED_EXAMPLES)


@by_parser
def test_random_bytes_fail_typed(parser: str) -> None:
    _fuzz(parser, http11.random_cases(), 30)


def test_parsers_agree_on_what_both_accept() -> None:
    with ParsersAgree() as agree:

        @settings(profiles.active(), max_examples=40 * profiles.scale())
        @given(case=http11.mutated_cases())
        def run(case: H11Case) -> None:
            agree.run(case)

        run()


# Regressions found by the fuzzer ----------------------------------------------------------------


def _ok(
    status: int, body: bytes, reusable: bool, headers: tuple[tuple[str, str], ...] = ()
) -> Expected:
    return Expected(status, "OK", headers, body, reusable, "HTTP/1.1")


@by_parser
def test_trailer_fields_do_not_join_the_response_headers(parser: str) -> None:
    # httptools: llhttp reports trailers through on_header, which appended them to the list the
    # response had already adopted as its headers.
    data = (
        b"HTTP/1.1 200 OK\r\nA: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nT: 2\r\n\r\n"
    )
    case = H11Case("GET", data, keep_open=True, expect=_ok(200, b"abc", True, (("A", "1"),)))
    with Target(parser) as target:
        assert target.run(case).reused


@by_parser
@pytest.mark.parametrize("status", [b"000", b"099"])
def test_a_status_below_100_is_refused(parser: str, status: bytes) -> None:
    # httptools: llhttp takes any three digits, so "099" came back as a response with status 99.
    data = b"HTTP/1.1 " + status + b" X\r\nContent-Length: 1\r\n\r\nA"
    with Target(parser) as target:
        result = target.run(H11Case("GET", data, keep_open=True))
    assert isinstance(result.outcome, aiopool.RemoteProtocolError)
    assert not result.reused


@by_parser
@pytest.mark.parametrize("connection", [b"keep-alive", b"close"])
@pytest.mark.parametrize(
    "junk", [b"\x00", b"xyz\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]
)
def test_bytes_after_a_complete_response_in_the_same_read(
    parser: str, connection: bytes, junk: bytes
) -> None:
    # httptools: llhttp parses on after the response in the same read, and its error on the
    # junk ("Data after `Connection: close`", "Invalid character...") failed a complete
    # response. The response stands; the socket is never reused.
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: %s\r\n\r\nhi%s" % (
        connection,
        junk,
    )
    case = H11Case("GET", data, keep_open=True, trailing=True, expect=_ok(200, b"hi", False))
    with Target(parser) as target:
        assert not target.run(case).reused


@by_parser
@pytest.mark.parametrize(
    "framing", [b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Content-Length: 50"]
)
def test_a_head_response_has_no_body_and_bytes_after_it_retire_the_socket(
    parser: str, framing: bytes
) -> None:
    # httptools: with the announced length's worth of bytes in the same read, llhttp delivered
    # them as the HEAD response's body, and the socket went back to the pool.
    data = b"HTTP/1.1 200 OK\r\n%s\r\n\r\n\x00\x01\x02" % framing
    case = H11Case("HEAD", data, keep_open=True, trailing=True, expect=_ok(200, b"", False))
    with Target(parser) as target:
        assert not target.run(case).reused


_SIZED = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n"
_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhi\n\r\n0\r\nT: 1\r\n\r\n"
_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@by_parser
@pytest.mark.parametrize("response", [_SIZED, _CHUNKED, _EMPTY], ids=["sized", "chunked", "empty"])
@pytest.mark.parametrize("line_ends", [b"\r\n", b"\n", b"\r", b"\r\n\r\n"])
def test_stray_line_ends_after_a_response_retire_the_socket(
    parser: str, response: bytes, line_ends: bytes
) -> None:
    # httptools: llhttp skips CR and LF between messages without a callback, so a response
    # followed by line ends in the same read looked clean and its socket was reused.
    body = b"" if response is _EMPTY else b"hi\n"
    case = H11Case(
        "GET", response + line_ends, keep_open=True, trailing=True, expect=_ok(200, body, False)
    )
    with Target(parser) as target:
        assert not target.run(case).reused


@by_parser
@pytest.mark.parametrize("response", [_SIZED, _CHUNKED, _EMPTY], ids=["sized", "chunked", "empty"])
def test_a_response_ending_in_line_ends_of_its_own_keeps_its_socket(
    parser: str, response: bytes
) -> None:
    # The other side of the check above: a body that itself ends in "\n" is not trailing bytes.
    body = b"" if response is _EMPTY else b"hi\n"
    case = H11Case("GET", response, keep_open=True, expect=_ok(200, body, True))
    with Target(parser) as target:
        assert target.run(case).reused


@by_parser
def test_an_unasked_for_protocol_upgrade_fails_typed(parser: str) -> None:
    # httptools: llhttp stops at a 101 that upgrades the connection by raising
    # HttpParserUpgrade, which is not an HttpParserError: it escaped the client untranslated.
    data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    with Target(parser) as target:
        result = target.run(H11Case("GET", data, keep_open=True))
    assert isinstance(result.outcome, aiopool.RemoteProtocolError)
    assert not result.reused
