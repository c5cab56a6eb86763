"""The `aiopool` command (also `python -m aiopool`): `get` to look at responses, `bench` to load a
server.

    aiopool get https://example.org/ https://example.org/about -v
    aiopool bench https://example.org/ -n 10000 -c 50

Standard library only (argparse, asyncio): the command must work on the base install, where
none of the optional extras (and no third-party CLI framework) is present. Options follow curl's
names where curl has one (`-H`, `-X`, `-d`, `-L`, `-x`, `--cacert`, `--insecure`, `--fail`), so they
read as what they do; like curl (and httpie), `get` shows a redirect rather than following it
unless `-L` says to, since seeing what a URL answers is what the command is for.

Exit status: 0 when every request got an HTTP response (whatever its status, as curl; with
`--fail`, 1 for a 4xx or 5xx); 1 when a request failed (one line on stderr, no traceback);
2 for bad arguments (argparse's convention); 130 on Ctrl-C (the shell's 128 + SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from ._client import Client
from ._config import Timeout
from ._exceptions import AiopoolError, InsecureRequestWarning
from ._models import Response
from ._trace import TraceEvent
from ._urls import URL
from ._version import __version__

__all__ = ("main",)

# A -d body is sent form-encoded unless -H says otherwise: curl's default for -d, so a command
# line copied from curl means the same thing here.
_FORM = "application/x-www-form-urlencoded"
# Media types shown as text although they are not text/*.
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "application/x-ndjson",
        "image/svg+xml",
    }
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); return the exit status."""
    args = _parser().parse_args(argv)
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
        return 130
    except BrokenPipeError:
        # The reader went away (`aiopool get URL | head`): nothing left to tell it. Python's
        # documented recipe: point stdout at devnull so the exit-time flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (AiopoolError, OSError, ImportError) as exc:
        # Errors in what the user asked for (a bad URL, an unreadable -d @file, a server that
        # does not answer, a socks5:// proxy without the socks extra) are one line, not a
        # traceback. Bugs still show theirs.
        error(exc)
        return 1


def error(exc: BaseException) -> None:
    """Report `exc` on stderr in one line: `aiopool: error: ConnectTimeout: ...`."""
    message = str(exc) or repr(exc)
    print(f"aiopool: error: {type(exc).__name__}: {message}", file=sys.stderr)


# Arguments ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiopool",
        description="An HTTP/1.1 and HTTP/2 client built on the aiopool connection pool.",
    )
    parser.add_argument("--version", action="version", version=f"aiopool {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    get = commands.add_parser(
        "get",
        help="send requests and show the responses, protocol, timing and socket reuse",
        description="Send one request per URL, in order, over one connection pool: a URL on "
        "an origin already visited reuses its socket.",
    )
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the request headers, "
        "TLS details and the timing of each phase (connect, TLS, first byte)",
    )
    get.add_argument(
        "-X",
        "--request",
        dest="method",
        metavar="METHOD",
        help="the method (default GET, or POST with -d)",
    )
    get.add_argument(
        "-d",
        "--data",
        metavar="DATA",
        help="request body; @FILE reads a file, "
        f"@- standard input (Content-Type {_FORM} unless -H sets one)",
    )
    get.add_argument(
        "-L",
        "--location",
        action="store_true",
        help="follow redirects (at most --max-redirs), showing each one",
    )
    get.add_argument(
        "--max-redirs",
        type=_positive,
        default=10,
        metavar="N",
        help="redirects followed in a row with -L (default 10)",
    )
    get.add_argument(
        "-f", "--fail", action="store_true", help="exit 1 when a response has a 4xx or 5xx status"
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
    body = _read_data(args.data)
    headers: list[tuple[str, str]] = list(args.headers)
    if body is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", _FORM))
    method = args.method or ("POST" if body is not None else "GET")
    out = sys.stdout
    status = 0
    async with Client(**options) as client:
        for index, url in enumerate(urls):
            if index:
                out.write("\n")
            try:
                response = await _fetch(client, method, url, headers, body, args)
            except AiopoolError as exc:
                out.flush()
                error(exc)
                status = 1
                continue
            if args.fail and response.status_code >= 400:
                status = 1
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
) -> Response:
    """Send one request (and its redirects with -L) and print what came back."""
    out = sys.stdout
    verbose = args.verbose
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
        for hop in response.history:
            _print_head(hop, out)
            info = hop.conn_info
            out.write(
                f"* redirect to {hop.headers.get('location', '?')} "
                f"(conn {info.id} reused: {'true' if info.reused else 'false'})\n\n"
            )
        if verbose:
            request = response.request
            out.write(f"> {request.method} {request.url}\n")
            for name, value in request.headers.multi_items():
                out.write(f"> {name}: {value}\n")
            for event in events:
                if event.name == "tls_handshake_done":
                    tls = event.info
                    out.write(
                        f"* TLS: {tls.get('version')}, ALPN {tls.get('alpn') or '-'}, "
                        f"cipher {tls.get('cipher')}\n"
                    )
        _print_head(response, out)
        await _print_body(response, out)
    total = loop.time() - start
    info = response.conn_info
    out.write(
        f"* {response.http_version}, conn {info.id} reused: {'true' if info.reused else 'false'}"
        f", total {_ms(total)}\n"
    )
    if verbose:
        out.write(f"* timing: {_phases(events, start, total)}\n")
    return response


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


def _print_head(response: Response, out: TextIO) -> None:
    out.write(f"{response.http_version} {response.status_code} {response.reason}".rstrip() + "\n")
    for name, value in response.headers.multi_items():
        out.write(f"{name}: {value}\n")
    out.write("\n")


async def _print_body(response: Response, out: TextIO) -> None:
    """Text is printed as it arrives (decoded incrementally, so a multi-byte character split
    between two chunks survives); a binary body is counted, never held, and noted in one line."""
    content_type = response.headers.get("content-type", "")
    kind = _body_kind(content_type)
    decoder = codecs.getincrementaldecoder(response.encoding)(errors="replace")
    size = 0
    last = "\n"
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if kind is None:  # no Content-Type: look at the first bytes
            kind = "text" if _looks_like_text(chunk) else "binary"
        if kind == "text" and (text := decoder.decode(chunk)):
            _write_text(out, text)
            last = text[-1]
    if kind == "binary" and size:
        described = f" of {content_type}" if content_type else ""
        out.write(f"[binary body: {size:,} bytes{described}, not shown]\n")
    elif kind == "text":
        text = decoder.decode(b"", final=True)
        _write_text(out, text)
        if (text[-1:] or last) != "\n":
            out.write("\n")  # so the summary line starts on a line of its own


def _body_kind(content_type: str) -> str | None:
    """ "text", "binary", or None when there is no Content-Type to go by."""
    media = content_type.partition(";")[0].strip().lower()
    if not media:
        return None
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml")):
        return "text"
    return "binary"


def _looks_like_text(sample: bytes) -> bool:
    """UTF-8 with no control characters but whitespace: what a terminal can show."""
    head = sample[:4096]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut at the sample's end
            return False
    return not any(b < 0x20 and b not in b"\t\n\r\f" for b in head) and b"\x7f" not in head


def _write_text(out: TextIO, text: str) -> None:
    try:
        out.write(text)
    except UnicodeEncodeError:  # a terminal that cannot show every character
        encoding = out.encoding or "ascii"
        out.write(text.encode(encoding, errors="replace").decode(encoding))
