"""The `aiopool` command (also `python -m aiopool`): `get` to look at responses, `bench` to load a
server.

    aiopool get https://example.org/api | jq .          # the body alone on stdout
    aiopool get -v https://example.org/ https://example.org/about   # protocol, reuse, timing
    aiopool bench https://example.org/ -n 10000 -c 50

Standard library only (argparse, asyncio): the command must work on the base install, where
none of the optional extras (and no third-party CLI framework) is present. Options follow curl's
names where curl has one (`-H`, `-X`, `-d`, `--json`, `-o`, `-i`, `-I`, `-s`, `-S`, `-L`, `-x`,
`--cacert`, `--insecure`, `--fail`), and mean what they mean there, so a command line copied from
curl does the same thing here.

`get` keeps curl's split of the two output streams: stdout carries the response body, byte for
byte as received (after Content-Encoding decoding), so it can be piped; everything said *about*
the exchange (the `-v` lines, errors, notes) goes to stderr. On a terminal a body with a NUL
byte is not printed (httpie's rule, curl's too): binary output can wreck a terminal. Like curl
(and httpie), `get` shows a redirect rather than following it unless `-L` says to, since seeing
what a URL answers is what the command is for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from http import HTTPStatus
from typing import Any, BinaryIO, TextIO

from ._client import Client
from ._config import Timeout
from ._exceptions import AiopoolError, InsecureRequestWarning, TimeoutException
from ._models import Request, Response
from ._trace import TraceEvent
from ._urls import URL
from ._version import __version__

__all__ = ("main",)

# Exit statuses. curl's numbers where curl has the case, so scripts written for curl read them
# the same way (curl's man page, "EXIT CODES"); 2 is argparse's usage error, 130 the shell's
# 128 + SIGINT.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_HTTP_ERROR = 22  # curl: "HTTP page not retrieved" (--fail and a 4xx/5xx)
EXIT_TIMEOUT = 28  # curl: "Operation timeout"
EXIT_INTERRUPTED = 130

_EXIT_STATUS = f"""\
exit status:
  {EXIT_OK}    every request got an HTTP response (whatever its status, as curl)
  {EXIT_FAILED}    a request failed (connection, TLS, protocol, proxy, redirect), or a file
       could not be read or written
  {EXIT_USAGE}    bad arguments
  {EXIT_HTTP_ERROR}   with --fail (get): a response had a 4xx or 5xx status
  {EXIT_TIMEOUT}   get: a request timed out (connect, read, write or pool timeout)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
With several URLs, the status of the last one that failed."""

# A -d body is sent form-encoded unless -H says otherwise: curl's default for -d.
_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "get" and len(args.output) > len(args.urls):
        parser.error("more -o/--output than URLs (one -o per URL, in order, as curl)")
    quiet = args.command == "get" and args.silent and not args.show_error
    try:
        options = _client_options(args)
        with warnings.catch_warnings():
            if args.insecure:  # asked for on this command line: curl's -k says nothing either
                warnings.simplefilter("ignore", InsecureRequestWarning)
            if args.command == "get":
                return asyncio.run(_get(args, options))
            from ._cli_bench import bench

            return asyncio.run(bench(args, options))
    except KeyboardInterrupt:
        print("aiopool: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`aiopool get URL | head`): nothing left to tell it. Python's
        # documented recipe: point stdout at devnull so the exit-time flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except (AiopoolError, OSError, ImportError) as exc:
        # Errors in what the user asked for (a bad URL, an unreadable -d @file, a server that
        # does not answer, a socks5:// proxy without the socks extra) are one line, not a
        # traceback. Bugs still show theirs.
        if not quiet:
            error(exc)
        return EXIT_FAILED


def error(exc: BaseException) -> None:
    """Report `exc` on stderr in one line: `aiopool: error: ConnectTimeout: ...`."""
    message = str(exc) or repr(exc)
    print(f"aiopool: error: {type(exc).__name__}: {message}", file=sys.stderr)


# Arguments ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiopool",
        description="An HTTP/1.1 and HTTP/2 client built on the aiopool connection pool.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aiopool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    get = commands.add_parser(
        "get",
        help="send requests and show the responses, protocol, timing and socket reuse",
        description="Send one request per URL, in order, over one connection pool: a URL on "
        "an origin already visited reuses its socket. The response body goes to stdout as "
        "received (on a terminal, a body with a NUL byte is held back with a note); with -v, "
        "the request, the response head, the protocol, socket reuse and timing go to stderr, "
        "as curl's -v. Status lines read 'HTTP/1.1 200 OK', 'HTTP/2 200 OK': HTTP/2 sends no "
        "reason phrase, nor may an HTTP/1.1 server, and then the standard one is shown.",
        epilog=_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="on stderr: the request ('> '), the response head ('< '), TLS details, the "
        "protocol and socket reuse, and the timing of each phase ('* ')",
    )
    get.add_argument(
        "-i",
        "--include",
        action="store_true",
        help="print the response head (status line and headers) on stdout before the body",
    )
    get.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        metavar="FILE",
        help="write the body to FILE instead of stdout; one -o per URL, in order, as curl; "
        "'-o -' is stdout, binary or not",
    )
    get.add_argument(
        "-s",
        "--silent",
        action="store_true",
        help="print no error messages or notes on stderr: the exit status tells (-v lines "
        "still print if asked for, as curl -sv)",
    )
    get.add_argument(
        "-S", "--show-error", action="store_true", help="with -s, still print error messages"
    )
    get.add_argument(
        "-X",
        "--request",
        dest="method",
        metavar="METHOD",
        help="the method (default GET; POST with -d or --json; HEAD with -I)",
    )
    body = get.add_mutually_exclusive_group()
    body.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body; @FILE reads a file, "
        f"@- standard input (Content-Type {_FORM} unless -H sets one)",
    )
    body.add_argument(
        "--json",
        metavar="DATA",
        help=f"JSON request body, as -d (@FILE, @-), with Content-Type and Accept {_JSON} "
        "unless -H sets them (curl's --json)",
    )
    body.add_argument(
        "-I",
        "--head",
        action="store_true",
        help="send HEAD and print the response head on stdout (curl's -I)",
    )
    get.add_argument(
        "-L",
        "--location",
        action="store_true",
        help="follow redirects (at most --max-redirs); -v and -i show each hop",
    )
    get.add_argument(
        "--max-redirs",
        type=_positive,
        default=10,
        metavar="N",
        help="redirects followed in a row with -L (default 10)",
    )
    get.add_argument(
        "-f",
        "--fail",
        action="store_true",
        help=f"a response with a 4xx or 5xx status is an error: its body is not printed, "
        f"and the exit status is {EXIT_HTTP_ERROR} (curl's -f)",
    )
    _add_common(get)

    bench = commands.add_parser(
        "bench",
        help="load a URL with concurrent requests and report rate and latency",
        description="Send N GET requests to URL from C concurrent tasks sharing one client "
        "(max_connections_per_host=C), then report requests per second, latency percentiles, "
        "statuses, errors, bytes and socket reuse. Over HTTP/2 the C requests share sockets "
        "as streams.",
    )
    bench.add_argument("url", metavar="URL")
    bench.add_argument(
        "-n",
        "--requests",
        type=_positive,
        default=100,
        metavar="N",
        help="requests in all (default 100)",
    )
    bench.add_argument(
        "-c",
        "--concurrency",
        type=_positive,
        default=10,
        metavar="C",
        help="requests in flight at once (default 10)",
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_common(bench, http2_alias=True)
    return parser


def _add_common(parser: argparse.ArgumentParser, *, http2_alias: bool = False) -> None:
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        type=_header,
        help="add a header (repeatable)",
    )
    protocol = parser.add_mutually_exclusive_group()
    protocol.add_argument("--http1-only", action="store_true", help="speak HTTP/1.1 only")
    names = ["--http2-only", "--http2"] if http2_alias else ["--http2-only"]
    protocol.add_argument(
        *names,
        dest="http2_only",
        action="store_true",
        help="speak HTTP/2 only (h2 by ALPN on https, h2c by prior knowledge "
        "on http); by default h2 is offered on https and the server chooses",
    )
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cacert",
        metavar="PATH",
        help="trust the CA certificates in PATH (PEM) instead of the system's",
    )
    trust.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    parser.add_argument(
        "-x",
        "--proxy",
        metavar="URL",
        help="send through this proxy (http://, https://, socks5://, socks5h://; user:password@ "
        "for credentials); without it the http_proxy, https_proxy, all_proxy and no_proxy "
        "environment variables apply, as for curl",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="connect, read, write and pool timeout in seconds (default: "
        "connect 10, the others 30)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `Client` keywords the common options ask for."""
    options: dict[str, Any] = {}
    if args.http1_only:
        options["http2"] = False
    if args.http2_only:
        options["http1"] = False
    if args.cacert is not None:
        if not os.path.isfile(args.cacert):
            raise FileNotFoundError(f"--cacert {args.cacert}: no such file")
        options["verify"] = args.cacert
    elif args.insecure:
        options["verify"] = False
    if args.timeout is not None:
        options["timeout"] = Timeout(args.timeout)
    if args.proxy is not None:
        options["proxy"] = args.proxy
    return options


# get -------------------------------------------------------------------------------------------


async def _get(args: argparse.Namespace, options: dict[str, Any]) -> int:
    urls = [URL(url) for url in args.urls]  # all refused before anything is sent
    headers: list[tuple[str, str]] = list(args.headers)
    named = {name.lower() for name, _ in headers}
    if args.json is not None:
        body = _read_data(args.json)
        # curl's --json: both headers, each unless the user set it (httpie sends the same).
        headers += [(n, _JSON) for n in ("Content-Type", "Accept") if n.lower() not in named]
    else:
        body = _read_data(args.data)
        if body is not None and "content-type" not in named:
            headers.append(("Content-Type", _FORM))
    method = args.method or ("HEAD" if args.head else "POST" if body is not None else "GET")
    quiet = args.silent and not args.show_error
    status = EXIT_OK
    async with Client(**options) as client:
        for index, url in enumerate(urls):
            target = args.output[index] if index < len(args.output) else None
            try:
                response = await _fetch(client, method, url, headers, body, args, target)
            except AiopoolError as exc:
                if not quiet:
                    error(exc)
                status = EXIT_TIMEOUT if isinstance(exc, TimeoutException) else EXIT_FAILED
                continue
            if args.fail and response.status_code >= 400:
                if not quiet:
                    request = response.request  # (after -L, the last hop's)
                    print(
                        f"aiopool: error: {request.method} {request.url.origin} answered "
                        f"{_status_line(response)} (--fail)",
                        file=sys.stderr,
                    )
                status = EXIT_HTTP_ERROR
    return status


def _read_data(data: str | None) -> bytes | None:
    """-d's body: the text itself, or a file's bytes for @FILE (@- standard input), as curl."""
    if data is None:
        return None
    if data.startswith("@"):
        if data == "@-":
            return sys.stdin.buffer.read()
        with open(data[1:], "rb") as file:
            return file.read()
    return data.encode("utf-8")


async def _fetch(
    client: Client,
    method: str,
    url: URL,
    headers: list[tuple[str, str]],
    body: bytes | None,
    args: argparse.Namespace,
    target: str | None,
) -> Response:
    """Send one request (and its redirects with -L); write its body to stdout or `target`, and
    what -v and -i ask for. Raises the request's `AiopoolError`, or `OSError` for `target`."""
    out = sys.stdout.buffer
    info: TextIO | None = sys.stderr if args.verbose else None
    include = args.include or args.head
    events: list[TraceEvent] = []  # this request's trace, dials included (per-request hook)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with client.stream(
        method,
        url,
        headers=headers,
        content=body,
        follow_redirects=args.location,
        max_redirects=args.max_redirs,
        trace=events.append,
    ) as response:
        if info is not None:
            for event in events:
                if event.name == "tls_handshake_done":
                    tls = event.info
                    info.write(
                        f"* TLS: {tls.get('version')}, ALPN {tls.get('alpn') or '-'}, "
                        f"cipher {tls.get('cipher')}\n"
                    )
        hops = [*response.history, response]
        if info is not None:
            for hop in hops:
                _show_exchange(hop, info)
                if hop is not response:
                    reused = "true" if hop.conn_info.reused else "false"
                    info.write(
                        f"* redirect to {hop.headers.get('location', '?')} "
                        f"(conn {hop.conn_info.id} reused: {reused})\n"
                    )
        # --fail: nothing of an error response is output, not even a file (curl's -f).
        if not (args.fail and response.status_code >= 400):
            # -o FILE takes what stdout would have taken, the -i head included (as curl).
            # Blocking writes, as curl's: this loop runs one request at a time, nothing else.
            with ExitStack() as stack:
                sink: BinaryIO = out
                if target is not None and target != "-":
                    sink = stack.enter_context(open(target, "wb"))  # noqa: ASYNC230
                if include:
                    for hop in hops:
                        sink.write(_head_bytes(hop))
                if not args.head:
                    # The binary guard only for a terminal not chosen explicitly (`-o -`).
                    guard = target is None and sink.isatty()
                    await _write_body(response, sink, guard=guard, quiet=args.silent)
                sink.flush()
    total = loop.time() - start
    if info is not None:
        conn = response.conn_info
        info.write(
            f"* {response.http_version}, conn {conn.id} reused: "
            f"{'true' if conn.reused else 'false'}, total {_ms(total)}\n"
        )
        info.write(f"* timing: {_phases(events, start, total)}\n")
    return response


def _show_exchange(response: Response, info: TextIO) -> None:
    """curl -v's lines: the request sent (`> `) and the response head (`< `)."""
    request: Request = response.request
    info.write(f"> {request.method} {request.url}\n")
    for name, value in request.headers.multi_items():
        info.write(f"> {name}: {value}\n")
    info.write(">\n")
    info.write(f"< {_status_line(response)}\n")
    for name, value in response.headers.multi_items():
        info.write(f"< {name}: {value}\n")
    info.write("<\n")


def _status_line(response: Response) -> str:
    """`HTTP/1.1 200 OK`, `HTTP/2 200 OK`: one form for every protocol. HTTP/2 has no reason
    phrase and HTTP/1.1 allows an empty one (RFC 9112 section 4); the standard phrase stands in
    for a missing one (RFC 9110 section 15), so a status line never depends on the protocol."""
    reason = response.reason
    if not reason:
        try:
            reason = HTTPStatus(response.status_code).phrase
        except ValueError:  # a code with no registered phrase: say nothing rather than guess
            reason = ""
    return f"{response.http_version} {response.status_code} {reason}".rstrip()


def _head_bytes(response: Response) -> bytes:
    """The response head as -i prints it: the status line, then the header fields as they came
    (names and values unmodified), then an empty line."""
    lines = [_status_line(response).encode("latin-1", "replace")]
    lines += [name + b": " + value for name, value in response.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _write_body(response: Response, out: BinaryIO, *, guard: bool, quiet: bool) -> None:
    """Write the body to `out` as it arrives, bytes unmodified (after Content-Encoding
    decoding). With `guard` (stdout is a terminal), a body with a NUL byte is not written from
    that chunk on, only counted, and a note says so on stderr (unless `quiet`): httpie's rule
    ("binary data not shown in terminal"), and curl's, which checks for the same byte."""
    size = 0
    held = False
    last = b"\n"
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if held:
            continue
        if guard and b"\0" in chunk:
            held = True
            continue
        out.write(chunk)
        out.flush()  # a streamed body (server-sent events, a slow download) shows as it comes
        last = chunk[-1:] or last
    if held:
        if not quiet:
            described = response.headers.get("content-type") or "no Content-Type"
            print(
                f"aiopool: note: binary body ({size:,} bytes, {described}) not shown on a "
                "terminal; '-o FILE' saves it, '-o -' prints it anyway",
                file=sys.stderr,
            )
    elif guard and last != b"\n":
        # On a terminal only: end the line, so the prompt (or the -v lines) start on their
        # own. A pipe or a file gets the body exactly.
        out.write(b"\n")


def _phases(events: list[TraceEvent], start: float, total: float) -> str:
    """Connect, TLS and first byte from the trace, in ms: durations for the dial's two steps,
    and the time to first byte from the start of the request (curl's time_starttransfer)."""
    seen: dict[str, TraceEvent] = {}
    for event in events:
        seen.setdefault(event.name, event)  # the first dial (with -L, a later hop may dial too)
    for event in events:
        if event.name == "got_first_response_byte":
            seen[event.name] = event  # the last: the final response's, after any redirects
    parts = []
    began, connected = seen.get("connect_start"), seen.get("connect_done")
    if began is None or connected is None:
        parts.append("connect none (socket reused)")
    else:
        parts.append(f"connect {_ms(connected.time - began.time)}")
    tls_began, tls_done = seen.get("tls_handshake_start"), seen.get("tls_handshake_done")
    if tls_began is not None and tls_done is not None:
        parts.append(f"TLS {_ms(tls_done.time - tls_began.time)}")
    first = seen.get("got_first_response_byte")
    if first is not None:
        parts.append(f"first byte {_ms(first.time - start)}")
    parts.append(f"total {_ms(total)}")
    return ", ".join(parts)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
