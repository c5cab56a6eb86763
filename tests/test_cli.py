"""The `aiopool` command: `get` and `bench`, in-process through `main(argv)` and as a subprocess
(`python -m aiopool`, with a pseudo-terminal where the terminal matters), against the fault
server, nginx (HTTP/1.1, and h2 over TLS with the rig's CA passed by `--cacert`), hypercorn, and
a small `http.server` for bodies whose Content-Type the other servers cannot choose."""

from __future__ import annotations

import http.server
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from aiopool import _cli_bench
from aiopool._cli import main
from tests.conftest import _running_under_ci
from tests.helpers import ctrl_c_enabled
from tests.rig import encodings
from tests.rig.fault_server import BlackholeServer, FaultServer
from tests.rig.hypercorn_app import HypercornServer
from tests.rig.nginx import Nginx
from tests.rig.proxy import Tinyproxy, find_tinyproxy

_REUSE = re.compile(r"^\* (HTTP/1\.1|HTTP/2), conn (\d+) reused: (true|false), total [\d.]+ ms$")


@pytest.fixture(scope="module")
def tinyproxy() -> Iterator[Tinyproxy]:
    if find_tinyproxy() is None:
        if _running_under_ci():
            pytest.fail("tinyproxy is required under CI (CI is set); .ci/run installs it")
        pytest.skip("tinyproxy not installed")
    with Tinyproxy(auth=("user", "secret")) as proxy:
        yield proxy


# path -> (status line reason, Content-Type, body)
_TYPED: dict[str, tuple[str, str, bytes]] = {
    "/hello": ("OK", "application/octet-stream", b"hello"),  # text, whatever its label
    "/binary": ("OK", "application/octet-stream", b"GIF89a\x01\x00\x01\x00\x00\xff\x00,"),
    "/no-newline": ("OK", "text/plain", b"no newline at the end"),
    "/no-reason": ("", "text/plain", b"ok\n"),  # "HTTP/1.1 200 " on the wire
}


class _TypedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        reason, content_type, body = _TYPED[self.path]
        self.send_response(200, reason)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@pytest.fixture(scope="module")
def typed() -> Iterator[str]:
    """Base URL of a server answering `_TYPED`'s paths."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TypedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_binary(capsysbinary: pytest.CaptureFixture[bytes], *argv: str) -> tuple[int, bytes, str]:
    status = main(list(argv))
    out, err = capsysbinary.readouterr()
    return status, out, err.decode()


def summaries(err: str) -> list[tuple[str, int, bool]]:
    """(protocol, conn id, reused) from each request's -v summary line, in order."""
    found = []
    for line in err.splitlines():
        match = _REUSE.match(line)
        if match:
            found.append((match[1], int(match[2]), match[3] == "true"))
    return found


def python_m_aiopool(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiopool", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def documents(out: str) -> list[dict[str, object]]:
    """The JSON bodies printed one after another (as curl, nothing between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(out):
        document, at = decoder.raw_decode(out, at)
        found.append(document)
    return found


def echoed(out: str) -> dict[str, object]:
    (document,) = documents(out)
    return document


def on_a_terminal(
    *argv: str, stream: str = "stdout"
) -> tuple[subprocess.CompletedProcess[bytes], bytes]:
    """Run `python -m aiopool ARGV` with `stream` ("stdout" or "stderr") on a pseudo-terminal
    and the other piped; return the process and what the terminal showed."""
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aiopool", *argv],
            stdout=terminal if stream == "stdout" else subprocess.PIPE,
            stderr=terminal if stream == "stderr" else subprocess.PIPE,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                piece = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not piece:
                break
            shown += piece
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    return done, shown


# get: what goes where ------------------------------------------------------------------------


def test_get_prints_the_body_alone_on_stdout(
    capsys: pytest.CaptureFixture[str], fresh_fault_server: FaultServer
) -> None:
    # As curl: stdout is the body, so `aiopool get URL | jq` works; stderr is empty.
    url = fresh_fault_server.url
    status, out, err = run(capsys, "get", f"{url}/echo?id=first", f"{url}/echo?id=second")
    assert (status, err) == (0, "")
    first, second = documents(out)
    assert (first["id"], second["id"]) == ("first", "second")
    assert first["conn"] == second["conn"]  # one pool: the second request reused the socket


def test_get_verbose_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], fresh_fault_server: FaultServer
) -> None:
    url = fresh_fault_server.url
    status, out, err = run(
        capsys, "get", "-v", "-H", "X-Hello: there", f"{url}/echo?id=a", f"{url}/echo?id=b"
    )
    assert status == 0
    assert [body["id"] for body in documents(out)] == ["a", "b"]  # only the bodies
    assert f"> GET {url}/echo?id=a\n" in err
    assert "> user-agent: aiopool/" in err
    assert "> X-Hello: there\n" in err or "> x-hello: there\n" in err
    assert "< HTTP/1.1 200 OK\n" in err
    assert "< content-type: application/json\n" in err
    # The client says which socket: conn 1 fresh, then the same conn reused.
    assert summaries(err) == [("HTTP/1.1", 1, False), ("HTTP/1.1", 1, True)]
    assert fresh_fault_server.connections_accepted == 1
    timings = [line for line in err.splitlines() if line.startswith("* timing: ")]
    assert len(timings) == 2
    # First request: a dial; second: no dial at all. Plain HTTP: no TLS phase.
    assert re.fullmatch(
        r"\* timing: connect [\d.]+ ms, first byte [\d.]+ ms, total [\d.]+ ms", timings[0]
    )
    assert re.fullmatch(
        r"\* timing: connect none \(socket reused\), first byte [\d.]+ ms, total [\d.]+ ms",
        timings[1],
    )


def test_get_http2_over_tls_with_cacert(
    capsys: pytest.CaptureFixture[str], nginx: Nginx, ca_path: str
) -> None:
    url = f"{nginx.https_url}/small.txt"
    status, out, err = run(capsys, "get", "-v", "--cacert", ca_path, url, url)
    assert status == 0
    assert out == "Hello, world\n" * 2
    assert err.count("< HTTP/2 200 OK\n") == 2
    assert "< content-type: text/plain\n" in err
    assert summaries(err) == [("HTTP/2", 1, False), ("HTTP/2", 1, True)]
    # The handshake is described, and timed, once: the second request rode the same socket.
    assert len(re.findall(r"^\* TLS: TLSv1\.[23], ALPN h2, cipher \S+$", err, re.M)) == 1
    timings = [line for line in err.splitlines() if line.startswith("* timing: ")]
    assert re.fullmatch(
        r"\* timing: connect [\d.]+ ms, TLS [\d.]+ ms, first byte [\d.]+ ms, total [\d.]+ ms",
        timings[0],
    )
    assert timings[1].startswith("* timing: connect none (socket reused), first byte")


def test_get_include_prints_the_head_on_stdout(
    capsys: pytest.CaptureFixture[str], nginx: Nginx, ca_path: str
) -> None:
    url = f"{nginx.https_url}/small.txt"
    status, out, err = run(capsys, "get", "-i", "--http1-only", "--cacert", ca_path, url)
    assert (status, err) == (0, "")
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "\r\nContent-Type: text/plain" in head or "\r\ncontent-type: text/plain" in head
    assert body == "Hello, world\n"


def test_status_lines_have_one_form(
    capsys: pytest.CaptureFixture[str], nginx: Nginx, typed: str
) -> None:
    # HTTP/2 has no reason phrase, an HTTP/1.1 server may send an empty one: the standard
    # phrase stands in for both, so every status line reads VERSION CODE PHRASE.
    status, out, _ = run(capsys, "get", "-I", "--http2-only", f"{nginx.h2c_url}/small.txt")
    assert status == 0
    assert out.startswith("HTTP/2 200 OK\r\n")
    status, out, err = run(capsys, "get", "-i", "-v", f"{typed}/no-reason")
    assert status == 0
    assert out.startswith("HTTP/1.1 200 OK\r\n")
    assert "< HTTP/1.1 200 OK\n" in err


def test_get_head_prints_the_head_only(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    status, out, err = run(capsys, "get", "-I", f"{fault_server.url}/bytes/100")
    assert (status, err) == (0, "")
    assert out.startswith("HTTP/1.1 200 OK\r\n")
    assert out.endswith("\r\n\r\n")
    assert "content-length: 100\r\n" in out.lower()
    assert "xxxx" not in out


def test_get_binary_body_is_written_unmodified_to_a_pipe(
    capsysbinary: pytest.CaptureFixture[bytes], nginx: Nginx
) -> None:
    status, out, err = run_binary(capsysbinary, "get", f"{nginx.http_url}/1k.bin")
    assert (status, err) == (0, "")
    assert out == nginx.file_bytes("1k.bin")


def test_get_octet_stream_text_is_shown(
    capsysbinary: pytest.CaptureFixture[bytes], typed: str
) -> None:
    # 5 bytes of "hello" labelled application/octet-stream: shown, not hidden as "binary".
    status, out, err = run_binary(capsysbinary, "get", f"{typed}/hello")
    assert (status, out, err) == (0, b"hello", "")


def test_get_on_a_terminal_shows_text_and_holds_back_binary(typed: str) -> None:
    done, shown = on_a_terminal("get", f"{typed}/hello")
    assert done.returncode == 0
    assert shown == b"hello\r\n"  # a line ended for the prompt (the pty shows \n as \r\n)
    assert done.stderr == b""

    done, shown = on_a_terminal("get", f"{typed}/binary")
    assert done.returncode == 0
    assert shown == b""
    assert done.stderr.decode() == (
        "aiopool: note: binary body (14 bytes, application/octet-stream) not shown on a "
        "terminal; '-o FILE' saves it, '-o -' prints it anyway\n"
    )

    done, shown = on_a_terminal("get", "-o", "-", f"{typed}/binary")  # asked for: printed
    assert (done.returncode, done.stderr) == (0, b"")
    assert shown.startswith(b"GIF89a")

    done, shown = on_a_terminal("get", "-s", f"{typed}/binary")  # -s: no note either
    assert (done.returncode, done.stderr, shown) == (0, b"", b"")


def test_get_output_to_files(
    capsysbinary: pytest.CaptureFixture[bytes], nginx: Nginx, typed: str, tmp_path: Path
) -> None:
    # One -o per URL in order, as curl; a URL without one goes to stdout.
    first, second = tmp_path / "1k.bin", tmp_path / "hello.out"
    status, out, err = run_binary(
        capsysbinary,
        "get",
        "-o",
        str(first),
        "-o",
        str(second),
        f"{nginx.http_url}/1k.bin",
        f"{typed}/hello",
        f"{typed}/no-newline",
    )
    assert (status, err) == (0, "")
    assert first.read_bytes() == nginx.file_bytes("1k.bin")
    assert second.read_bytes() == b"hello"
    assert out == b"no newline at the end"  # a pipe: not a byte added
    # -i with -o: the head goes where the body goes.
    status, out, _ = run_binary(capsysbinary, "get", "-i", "-o", str(second), f"{typed}/hello")
    assert (status, out) == (0, b"")
    assert second.read_bytes().startswith(b"HTTP/1.1 200 OK\r\n")
    assert second.read_bytes().endswith(b"\r\n\r\nhello")


def test_get_prints_an_encoded_body_decoded(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    status, out, err = run(capsys, "get", "-v", f"{fault_server.url}/encoded?coding=br&size=3000")
    assert status == 0
    assert "< content-encoding: br\n" in err
    assert out == encodings.text(3000).decode()


# get: requests -----------------------------------------------------------------------------


def test_get_sends_data_method_and_headers(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer, tmp_path: Path
) -> None:
    url = f"{fault_server.url}/echo"
    status, out, _ = run(capsys, "get", "-d", "a=1&b=2", url)
    assert status == 0
    sent = echoed(out)
    assert (sent["method"], sent["body"]) == ("POST", "a=1&b=2")
    headers = {name.lower(): value for name, value in sent["headers"]}  # type: ignore[attr-defined]
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert headers["content-length"] == "7"

    body = tmp_path / "body.json"
    body.write_bytes(b'{"k": "v"}')
    status, out, _ = run(
        capsys, "get", "-X", "PUT", "-H", "Content-Type: application/json", "-d", f"@{body}", url
    )
    assert status == 0
    sent = echoed(out)
    assert (sent["method"], sent["body"]) == ("PUT", '{"k": "v"}')
    headers = {name.lower(): value for name, value in sent["headers"]}  # type: ignore[attr-defined]
    assert headers["content-type"] == "application/json"


def test_get_json_sends_json_and_asks_for_it(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer, tmp_path: Path
) -> None:
    url = f"{fault_server.url}/echo"
    status, out, _ = run(capsys, "get", "--json", '{"a": 1}', url)
    assert status == 0
    sent = echoed(out)
    assert (sent["method"], sent["body"]) == ("POST", '{"a": 1}')
    headers = [(n.lower(), v) for n, v in sent["headers"]]  # type: ignore[attr-defined]
    assert ("content-type", "application/json") in headers
    assert ("accept", "application/json") in headers
    assert ("accept", "*/*") not in headers  # replaced, not added to

    # @FILE, and a header the user set wins.
    body = tmp_path / "body.json"
    body.write_bytes(b"[1, 2]")
    status, out, _ = run(
        capsys, "get", "--json", f"@{body}", "-H", "Accept: application/problem+json", url
    )
    assert status == 0
    sent = echoed(out)
    assert sent["body"] == "[1, 2]"
    accepts = [v for n, v in sent["headers"] if n.lower() == "accept"]  # type: ignore[attr-defined]
    assert accepts == ["application/problem+json"]


def test_get_shows_a_redirect_and_follows_it_with_location(
    capsys: pytest.CaptureFixture[str], hypercorn_server: HypercornServer, ca_path: str
) -> None:
    url = f"{hypercorn_server.url}/chain/2"
    status, out, err = run(capsys, "get", "-i", "--cacert", ca_path, url)
    assert status == 0
    assert out.startswith("HTTP/2 302 Found\r\n")
    assert "\r\nlocation: /chain/1\r\n" in out

    status, out, err = run(capsys, "get", "-L", "-v", "--cacert", ca_path, url)
    assert status == 0
    assert re.findall(r"^\* redirect to (\S+) \(conn 1 reused: (\w+)\)$", err, re.M) == [
        ("/chain/1", "false"),
        ("/chain/0", "true"),
    ]
    assert err.count("< HTTP/2 302 Found\n") == 2
    assert echoed(out)["path"] == "/chain/0"  # stdout: the final body alone
    assert summaries(err) == [("HTTP/2", 1, True)]  # three hops, one socket

    status, _, err = run(capsys, "get", "-L", "--max-redirs", "1", "--cacert", ca_path, url)
    assert status == 1
    assert err.startswith("aiopool: error: TooManyRedirects: ")


def test_get_through_a_proxy(
    capsys: pytest.CaptureFixture[str], tinyproxy: Tinyproxy, nginx: Nginx, ca_path: str
) -> None:
    url = f"{nginx.https_url}/small.txt"
    status, out, err = run(capsys, "get", "-v", "-x", tinyproxy.url, "--cacert", ca_path, url, url)
    assert status == 0
    assert out == "Hello, world\n" * 2
    # h2 negotiated with nginx inside the CONNECT tunnel, and the tunnel reused.
    assert summaries(err) == [("HTTP/2", 1, False), ("HTTP/2", 1, True)]
    assert tinyproxy.log().count(f"CONNECT localhost:{nginx.https_port} HTTP/1.1") == 1

    anonymous = f"http://127.0.0.1:{tinyproxy.port}"
    status, out, err = run(capsys, "get", "-x", anonymous, "--cacert", ca_path, url)
    assert (status, out) == (1, "")
    assert err.startswith("aiopool: error: ProxyError: ")
    assert "407" in err


def test_get_insecure_skips_verification(capsys: pytest.CaptureFixture[str], nginx: Nginx) -> None:
    status, out, _ = run(capsys, "get", "--insecure", f"{nginx.https_url}/small.txt")
    assert (status, out) == (0, "Hello, world\n")


def test_get_http2_only_speaks_h2c_on_http(
    capsys: pytest.CaptureFixture[str], nginx: Nginx
) -> None:
    status, _, err = run(capsys, "get", "-v", "--http2-only", f"{nginx.h2c_url}/small.txt")
    assert status == 0
    assert summaries(err) == [("HTTP/2", 1, False)]


# get: failures and exit statuses -------------------------------------------------------------


def test_get_untrusted_certificate_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], nginx: Nginx
) -> None:
    # Without --cacert the rig's CA is unknown: verification must fail, and say why.
    status, out, err = run(capsys, "get", f"{nginx.https_url}/small.txt")
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("aiopool: error: ConnectError: ")
    assert "certificate" in err.lower()


@pytest.mark.parametrize(
    ("path", "options", "expected", "code"),
    [
        ("/malformed-status", [], "RemoteProtocolError", 1),
        ("/truncated", [], "RemoteProtocolError", 1),
        ("/stall-headers", ["--timeout", "0.2"], "ReadTimeout", 28),
    ],
)
def test_get_failures_are_one_line(
    capsys: pytest.CaptureFixture[str],
    fault_server: FaultServer,
    path: str,
    options: list[str],
    expected: str,
    code: int,
) -> None:
    status, _, err = run(capsys, "get", *options, f"{fault_server.url}{path}")
    assert status == code  # curl's 28 for a timeout
    assert err.startswith(f"aiopool: error: {expected}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_get_timeout_message_names_method_origin_and_phase(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    status, _, err = run(capsys, "get", "--timeout", "0.2", f"{fault_server.url}/stall?sent=10")
    assert status == 28
    assert err == (
        f"aiopool: error: ReadTimeout: GET {fault_server.url}: no bytes arrived for 0.2 s "
        "(the read timeout) while reading the response body\n"
    )


def test_get_silent_says_nothing_but_the_exit_status(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    url = f"{fault_server.url}/stall-headers"
    assert run(capsys, "get", "-s", "--timeout", "0.2", url) == (28, "", "")
    status, _, err = run(capsys, "get", "-s", "-S", "--timeout", "0.2", url)
    assert status == 28
    assert err.startswith("aiopool: error: ReadTimeout: ")
    assert run(capsys, "get", "-s", "--cacert", "/nonexistent/ca.pem", url) == (1, "", "")


def test_get_connect_refused_and_bad_urls(capsys: pytest.CaptureFixture[str]) -> None:
    with FaultServer() as server:
        closed = server.url  # a port nobody listens on once the server stops
    status, _, err = run(capsys, "get", f"{closed}/echo")
    assert status == 1
    assert err.startswith("aiopool: error: ConnectError: ")
    status, out, err = run(capsys, "get", "ftp://example.org/", "http://127.0.0.1:1/")
    # Every URL is checked before anything is sent.
    assert (status, out) == (1, "")
    assert err.startswith("aiopool: error: InvalidURL: ")


def test_get_carries_on_after_a_failed_url(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    url = fault_server.url
    status, out, err = run(capsys, "get", f"{url}/garbage", f"{url}/echo?id=after")
    assert status == 1
    assert err.startswith("aiopool: error: RemoteProtocolError: ")
    assert echoed(out)["id"] == "after"


def test_get_fail_flag(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer, tmp_path: Path
) -> None:
    url = f"{fault_server.url}/status/404"
    status, out, err = run(capsys, "get", "-i", url)
    assert (status, err) == (0, "")  # a response is a success, whatever its status (as curl)
    assert out.startswith("HTTP/1.1 404 Not Found\r\n")
    # --fail: curl's 22, one line on stderr, and the error page is not printed.
    status, out, err = run(capsys, "get", "--fail", "-i", url)
    assert (status, out) == (22, "")
    assert err == (
        f"aiopool: error: GET {fault_server.url} answered HTTP/1.1 404 Not Found (--fail)\n"
    )
    page = tmp_path / "page"
    assert run(capsys, "get", "-f", "-s", "-o", str(page), url) == (22, "", "")
    assert not page.exists()


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["get", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        shown = capsys.readouterr().out
        assert "exit status:" in shown
        assert re.search(r"^  28 +get: a request timed out", shown, re.M)
        assert re.search(r"^  22 +with --fail", shown, re.M)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["get"],
        ["get", "--cacert", "x.pem", "--insecure", "http://x/"],
        ["get", "--http1-only", "--http2-only", "http://x/"],
        ["get", "-H", "no colon", "http://x/"],
        ["get", "-d", "a", "--json", "{}", "http://x/"],
        ["get", "-I", "-d", "a", "http://x/"],
        ["get", "-o", "a", "-o", "b", "http://x/"],
        ["bench", "http://x/", "-n", "0"],
        ["bench", "http://x/", "-c", "many"],
        ["get", "--timeout", "-1", "http://x/"],
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: aiopool" in capsys.readouterr().err


def test_unreadable_data_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run(capsys, "get", "-d", f"@{tmp_path / 'nope'}", "http://127.0.0.1:1/")
    assert (status, out) == (1, "")
    assert err.startswith("aiopool: error: FileNotFoundError: ")


def test_missing_cacert_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "get", "--cacert", str(tmp_path / "nope.pem"), "https://x/")
    assert status == 1
    assert err.startswith("aiopool: error: FileNotFoundError: ")


# bench -----------------------------------------------------------------------------------------


def test_bench_reports_rate_latency_statuses_and_sockets(
    capsys: pytest.CaptureFixture[str], fresh_fault_server: FaultServer
) -> None:
    url = f"{fresh_fault_server.url}/bytes/100"
    status, out, err = run(capsys, "bench", url, "-n", "60", "-c", "4")
    assert status == 0, err
    assert "60 done, 60 succeeded, 0 failed" in out
    assert "status codes: 200: 60\n" in out
    assert "errors: none\n" in out
    assert "bytes: 6,000 body bytes received" in out
    assert "protocol: HTTP/1.1: 60\n" in out
    assert re.search(r"finished in [\d.]+ s, [\d,.]+ req/s", out)
    figures = re.search(
        r"latency \(ms\): min ([\d.]+)  mean ([\d.]+)  p50 ([\d.]+)  p90 ([\d.]+)  p99 ([\d.]+)"
        r"  max ([\d.]+)",
        out,
    )
    assert figures is not None
    low, _, p50, p90, p99, high = map(float, figures.groups())
    assert low <= p50 <= p90 <= p99 <= high
    sockets = re.search(r"sockets: (\d+) opened, (\d+) reused", out)
    assert sockets is not None
    opened, reused = map(int, sockets.groups())
    # At most -c sockets, every other request on a reused one, and the server agrees.
    assert 1 <= opened <= 4
    assert opened + reused == 60
    assert fresh_fault_server.connections_accepted == opened


def test_bench_counts_body_bytes_as_received(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    _, wire = encodings.encode(encodings.text(20_000), ["gzip"])
    url = f"{fault_server.url}/encoded?coding=gzip&size=20000"
    status, out, _ = run(capsys, "bench", url, "-n", "5", "-c", "2", "--json")
    assert status == 0
    assert json.loads(out)["body_bytes"] == 5 * len(wire)  # compressed: what came over the wire


def test_bench_http2_by_prior_knowledge(capsys: pytest.CaptureFixture[str], nginx: Nginx) -> None:
    url = f"{nginx.h2c_url}/echo?id=x"
    status, out, _ = run(capsys, "bench", url, "-n", "10", "-c", "5", "--http2")
    assert status == 0
    assert "protocol: HTTP/2: 10\n" in out
    assert "sockets: 1 opened" in out


def test_bench_json_over_http2(
    capsys: pytest.CaptureFixture[str], nginx: Nginx, ca_path: str
) -> None:
    url = f"{nginx.https_url}/1k.bin"
    status, out, _ = run(capsys, "bench", url, "-n", "40", "-c", "8", "--cacert", ca_path, "--json")
    assert status == 0
    report = json.loads(out)
    assert (report["succeeded"], report["failed"]) == (40, 0)
    assert report["status_codes"] == {"200": 40}
    assert report["protocols"] == {"HTTP/2": 40}
    assert report["body_bytes"] == 40 * 1024
    # Eight requests in flight, one socket: HTTP/2 streams, not eight connections. (Those
    # that got the socket as it was dialed were its first; every later one reused it.)
    assert report["sockets_opened"] == 1
    assert 40 - 8 <= report["sockets_reused"] <= 39
    latency = report["latency_ms"]
    assert latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert [_cli_bench.percentile(samples, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert _cli_bench.percentile([0.25], 99) == 0.25
    assert _cli_bench.percentile([1.0, 2.0, 3.0], 50) == 2.0


def test_bench_counts_errors_by_type_and_exits_1(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer
) -> None:
    status, out, err = run(capsys, "bench", f"{fault_server.url}/malformed-status", "-n", "6")
    assert status == 1
    assert "0 succeeded, 6 failed" in out
    assert "errors: RemoteProtocolError: 6\n" in out
    assert "status codes: none\n" in out
    assert err.startswith("aiopool: error: 6 of 6 requests failed (first RemoteProtocolError: ")


def test_bench_counts_redirects_without_following_them(
    capsys: pytest.CaptureFixture[str], hypercorn_server: HypercornServer, ca_path: str
) -> None:
    url = f"{hypercorn_server.url}/chain/3"
    status, out, _ = run(capsys, "bench", url, "-n", "5", "-c", "1", "--cacert", ca_path)
    assert status == 0
    assert "status codes: 302: 5\n" in out


def test_bench_plain_progress_lines_when_not_a_tty(
    capsys: pytest.CaptureFixture[str], fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli_bench, "_PLAIN_EVERY", 0.05)
    # 4 requests of 0.3 s each, one at a time: several progress periods.
    url = f"{fault_server.url}/slow?chunks=3&delay=0.1"
    status, out, err = run(capsys, "bench", url, "-n", "4", "-c", "1")
    assert status == 0
    lines = err.splitlines()
    assert len(lines) >= 3
    assert all(re.fullmatch(r"progress: \d/4 requests, [\d,]+ req/s, 0 errors", x) for x in lines)
    assert "\r" not in err
    assert "4 done, 4 succeeded" in out


def test_bench_progress_bar_on_a_terminal(fault_server: FaultServer) -> None:
    # stderr on a pseudo-terminal: the bar is redrawn in place and ends at 100%.
    url = f"{fault_server.url}/delay?s=0.15"
    done, drawn = on_a_terminal("bench", url, "-n", "4", "-c", "2", stream="stderr")
    assert done.returncode == 0
    assert b"4 done, 4 succeeded" in done.stdout
    text = drawn.decode()
    assert "\r[" in text
    assert re.search(r"\[#{30}\] 4/4 100% [\d,]+ req/s, 0 errors", text)


# As a program ----------------------------------------------------------------------------------


def test_python_m_aiopool(fault_server: FaultServer) -> None:
    url = f"{fault_server.url}/echo?id=sub"
    done = python_m_aiopool("get", "-v", url, url)
    assert done.returncode == 0, done.stderr
    assert [body["id"] for body in documents(done.stdout)] == ["sub", "sub"]
    assert summaries(done.stderr) == [("HTTP/1.1", 1, False), ("HTTP/1.1", 1, True)]


def test_python_m_aiopool_reads_data_from_stdin(fault_server: FaultServer) -> None:
    done = python_m_aiopool("get", "-d", "@-", f"{fault_server.url}/echo", stdin="from a pipe")
    assert done.returncode == 0, done.stderr
    sent = echoed(done.stdout)
    assert (sent["method"], sent["body"]) == ("POST", "from a pipe")
    assert python_m_aiopool("--version").stdout.startswith("aiopool ")


def test_python_m_aiopool_error_has_no_traceback(blackhole: BlackholeServer) -> None:
    done = python_m_aiopool("get", "--timeout", "0.2", f"{blackhole.url}/")
    assert done.returncode == 28
    assert done.stdout == ""
    assert done.stderr.startswith("aiopool: error: ReadTimeout: ")
    assert done.stderr.count("\n") == 1


def test_bench_interrupted_reports_what_it_measured(fault_server: FaultServer) -> None:
    url = f"{fault_server.url}/delay?s=0.05"
    process = subprocess.Popen(
        [sys.executable, "-m", "aiopool", "bench", url, "-n", "100000", "-c", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_enabled,
    )
    try:
        # Interrupt once some requests are done: the progress line says so.
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("progress: ")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    done = re.search(r"requests: ([\d,]+) done, ([\d,]+) succeeded, 0 failed", out)
    assert done is not None
    assert int(done[1].replace(",", "")) > 0
    assert "latency (ms): min" in out
    assert err.startswith("aiopool: interrupted after ")
    assert "Traceback" not in err


def test_python_m_aiopool_bench(fault_server: FaultServer) -> None:
    done = python_m_aiopool("bench", f"{fault_server.url}/empty", "-n", "20", "-c", "2")
    assert done.returncode == 0, done.stderr
    assert "20 done, 20 succeeded, 0 failed" in done.stdout


def test_console_script_is_declared() -> None:
    scripts = [e for e in metadata.entry_points(group="console_scripts") if e.name == "aiopool"]
    assert [e.value for e in scripts] == ["aiopool._cli:main"]
