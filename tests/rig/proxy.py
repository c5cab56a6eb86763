"""Real proxies: tinyproxy (HTTP forwarding and CONNECT) and microsocks (SOCKS5).

Each instance runs in the foreground from a fresh temporary directory (config, pid file, log),
on a loopback port picked at start; ``stop()`` ends the process and removes the directory. Both
write a line per client request to their log, which tests read to prove a request really went
through the proxy (and, for SOCKS, whether the proxy got a name or an address).

tinyproxy started as root drops to the ``nobody`` user, so the directory is made world-readable
and its log world-writable.

``TLSRelay`` terminates TLS and relays the bytes to another loopback port: in front of tinyproxy
it makes an ``https://`` proxy (TLS to the proxy, then CONNECT, then TLS to the origin inside).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

from ._service import Service
from .fault_server import _ThreadedServer

__all__ = [
    "Microsocks",
    "ProxyRigError",
    "TLSRelay",
    "Tinyproxy",
    "find_microsocks",
    "find_tinyproxy",
]

_START_ATTEMPTS: Final = 4
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
_EXTRA_SEARCH_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/usr/local/bin")


class ProxyRigError(RuntimeError):
    """A proxy could not be found or started."""


def _find(name: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_SEARCH_DIRS])
    return shutil.which(name, path=search)


def find_tinyproxy() -> str | None:
    return _find("tinyproxy")


def find_microsocks() -> str | None:
    return _find("microsocks")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _ProxyProcess(Service):
    """A proxy binary on a loopback port, in its own temporary directory."""

    scheme = "http"

    def __init__(self, binary: str | None, *, auth: tuple[str, str] | None) -> None:
        self.auth = auth
        self._binary = binary
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ProxyRigError(f"{type(self).__name__} is not running")
        return self._port

    @property
    def url(self) -> str:
        """The proxy URL, with the credentials when the proxy requires them."""
        userinfo = f"{self.auth[0]}:{self.auth[1]}@" if self.auth else ""
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.port}"

    def url_with(self, user: str, password: str, scheme: str | None = None) -> str:
        return f"{scheme or self.scheme}://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise ProxyRigError(f"{type(self).__name__} is not running")
        return self._dir / "proxy.log"

    def log(self) -> str:
        """Everything the proxy logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _command(self, binary: str, port: int, directory: Path) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        binary = self._binary
        if binary is None:
            raise ProxyRigError(f"{type(self).__name__}: binary not found")
        last = ""
        for _ in range(_START_ATTEMPTS):
            directory = Path(tempfile.mkdtemp(prefix="aiopool-proxy-"))
            directory.chmod(0o755)  # tinyproxy run as root reads it as nobody
            log = directory / "proxy.log"
            log.touch()
            log.chmod(0o666)
            port = _free_port()
            with log.open("ab") as out:
                process = subprocess.Popen(
                    self._command(binary, port, directory),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self._dir, self._process, self._port = directory, process, port
            if self._wait_until_listening(process, port):
                return
            last = self.log()
            self.stop()  # most likely another process took the port first: try another
        raise ProxyRigError(f"{type(self).__name__} did not start: {last[-2000:]}")

    def _wait_until_listening(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        self._port = None


class Tinyproxy(_ProxyProcess):
    """tinyproxy: forwards plain HTTP (adding ``Via``) and tunnels CONNECT to any port.

    With ``auth``, every request needs ``Proxy-Authorization: Basic`` (else 407). Its log has
    one ``Request (file descriptor N): METHOD TARGET HTTP/1.1`` line per request it received.
    """

    def __init__(self, *, auth: tuple[str, str] | None = None, binary: str | None = None) -> None:
        super().__init__(binary or find_tinyproxy(), auth=auth)

    def _command(self, binary: str, port: int, directory: Path) -> list[str]:
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Timeout 60",
            f'PidFile "{directory / "tinyproxy.pid"}"',
            f'LogFile "{directory / "proxy.log"}"',
            "LogLevel Info",
            "MaxClients 200",
            # No ConnectPort lines: CONNECT is allowed to any port (the rig's are random).
        ]
        if self.auth is not None:
            lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
        config = directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o644)
        return [binary, "-d", "-c", str(config)]


class Microsocks(_ProxyProcess):
    """microsocks: a SOCKS5 server; with ``auth``, username/password is required (RFC 1929).

    Its log has one ``client[N] 127.0.0.1: connected to HOST:PORT`` line per tunnel, HOST
    being the name or the address the client sent.
    """

    scheme = "socks5"

    def __init__(self, *, auth: tuple[str, str] | None = None, binary: str | None = None) -> None:
        super().__init__(binary or find_microsocks(), auth=auth)

    def _command(self, binary: str, port: int, directory: Path) -> list[str]:
        command = [binary, "-i", "127.0.0.1", "-p", str(port)]
        if self.auth is not None:
            command += ["-u", self.auth[0], "-P", self.auth[1]]
        return command


class TLSRelay(_ThreadedServer):
    """Accepts TLS on 127.0.0.1 (certificate for localhost and 127.0.0.1), relays to ``target``.

    ``alpn`` is what the relay's TLS offers: ``("http/1.1",)`` for an https proxy.
    """

    def __init__(self, ssl_context: ssl.SSLContext, target_port: int) -> None:
        super().__init__(ssl_context)
        self._target_port = target_port

    async def _handle(self, conn_id: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        writer: asyncio.StreamWriter | None = None
        upstream: asyncio.StreamWriter | None = None
        try:
            transport, protocol = await loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), sock, ssl=self._ssl_context
            )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self._target_port)
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        except (OSError, EOFError):
            pass  # a peer went away: normal for a relay
        finally:
            for side in (upstream, writer):
                if side is not None:
                    side.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(65536):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()
