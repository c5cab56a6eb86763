"""What the servers run as child processes (Apache, caddy, h2o, nghttpd, node) share.

A ``ProcessServer`` gets a fresh temporary prefix for its config, certificate and logs, picks free
loopback ports, starts the server in its own session (process group), waits until every port
accepts, and at ``stop()`` ends the whole group, so nothing outlives the test session. The
static files come from one ``Docroot`` the session shares, so the 10 MB body is written once.

Servers that drop privileges when started as root (Apache refuses to serve as root at all) run
their workers as another user; the prefix and the docroot are therefore world-readable (0755).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final, Literal

import trustme

from ._service import Service

__all__ = [
    "BODIES",
    "Docroot",
    "Endpoint",
    "ProcessServer",
    "ServerError",
    "endpoints_for",
    "find_binary",
    "free_ports",
]

# Name -> size of the files every server serves at /<name>. Contents are seeded per name so a
# client that mixed up two responses cannot pass a content check by accident.
BODIES: Final = {
    "small": 13,
    "1k.bin": 1024,
    "200k.bin": 200 * 1024,
    "10m.bin": 10 * 1024 * 1024,
}
_SMALL: Final = b"Hello, world\n"

# Where servers live on Debian-like systems when sbin directories are not on a user's PATH.
_EXTRA_SEARCH_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_START_ATTEMPTS: Final = 4
_START_TIMEOUT: Final = 15.0
_STOP_TIMEOUT: Final = 10.0
_LOG_TAIL: Final = 8000


class ServerError(RuntimeError):
    """A rig server could not be found, started or stopped."""


def find_binary(name: str) -> str | None:
    """Path of ``name``, searching PATH and then the usual sbin directories."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_SEARCH_DIRS])
    return shutil.which(name, path=search)


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (all held until every one is chosen, so distinct).

    Another process can take one before the server binds it; ``start()`` retries on that.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


class Docroot:
    """A world-readable directory holding ``BODIES``, written once and shared by the servers."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="aiopool-docroot-"))
        self.path.chmod(0o755)
        self._sha256: dict[str, str] = {}
        for name, size in BODIES.items():
            content = _SMALL if name == "small" else random.Random(name).randbytes(size)
            (self.path / name).write_bytes(content)
            (self.path / name).chmod(0o644)
            self._sha256[name] = hashlib.sha256(content).hexdigest()

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def sha256(self, name: str) -> str:
        return self._sha256[name]

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# How a server shows that it received an upload: "count" replies b"<bytes>", "count-sha256"
# b"<bytes> <sha256 hex>", "echo" sends the body back.
UploadProof = Literal["count", "count-sha256", "echo"]


@dataclass(frozen=True)
class Endpoint:
    """One way to reach a server: its base URL and the client options that select the protocol.

    ``http_version`` is what the responses must say; ``limit`` is the number of requests the
    server serves on one connection before it closes it (HTTP/1.1) or sends GOAWAY (HTTP/2)
    at ``limited_url``, or None if the server has no such setting.
    """

    url: str
    http_version: Literal["HTTP/1.1", "HTTP/2"]
    http1: bool
    http2: bool
    upload_proof: UploadProof
    limited_url: str | None = None
    limit: int | None = None


def endpoints_for(
    tls: int,
    h2c: int | None,
    proof: UploadProof,
    *,
    http1: bool = True,
    limited: dict[str, str] | None = None,
    limit: int | None = None,
) -> dict[str, Endpoint]:
    """The endpoints of a server with one TLS port (ALPN h2 and, if `http1`, http/1.1) and,
    if `h2c` is given, an h2c port; `limited` maps endpoint names to the URLs of their
    listeners that end each connection after `limit` requests."""
    urls = {"h1-tls": f"https://localhost:{tls}", "h2-tls": f"https://localhost:{tls}"}
    if h2c is not None:
        urls["h2c"] = f"http://127.0.0.1:{h2c}"
    if not http1:
        del urls["h1-tls"]
    limited = limited or {}
    return {
        name: Endpoint(
            url,
            "HTTP/1.1" if name == "h1-tls" else "HTTP/2",
            http1=name == "h1-tls",
            http2=name != "h1-tls",
            upload_proof=proof,
            limited_url=limited.get(name),
            limit=limit if name in limited else None,
        )
        for name, url in urls.items()
    }


class ProcessServer(Service):
    """A server in a child process, in its own prefix, on ``PORTS`` free loopback ports.

    Subclasses set ``BINARY`` and ``PORTS`` and implement ``_configure()`` (write the config
    into ``self.prefix``, return the command lines: usually one) and ``endpoints()``.
    """

    BINARY: ClassVar[str]
    PORTS: ClassVar[int]
    # The keys of endpoints(), known before the server starts (for test parametrisation).
    PROTOCOLS: ClassVar[tuple[str, ...]] = ("h1-tls", "h2-tls", "h2c")
    # The protocols whose endpoints have a limited_url.
    LIMITED: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ca: trustme.CA, docroot: Docroot) -> None:
        self.ca = ca
        self.docroot = docroot
        self._prefix: Path | None = None
        self._ports: list[int] | None = None
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def prefix(self) -> Path:
        if self._prefix is None:
            raise ServerError(f"{self.BINARY} is not running")
        return self._prefix

    @property
    def ports(self) -> list[int]:
        if self._ports is None:
            raise ServerError(f"{self.BINARY} is not running")
        return self._ports

    @property
    def key_path(self) -> Path:
        return self.prefix / "key.pem"

    @property
    def chain_path(self) -> Path:
        return self.prefix / "chain.pem"

    def endpoints(self) -> dict[str, Endpoint]:
        """The endpoints by protocol name: "h1-tls", "h2-tls", "h2c" (where supported)."""
        raise NotImplementedError

    def _configure(self, binary: str) -> list[list[str]]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        """The environment the server runs in (by default, the test process's)."""
        return dict(os.environ)

    def log(self) -> str:
        """The end of every log in the prefix (startup problems included)."""
        if self._prefix is None:
            return ""
        parts = []
        for path in sorted(self._prefix.glob("*.log")):
            text = path.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {path.name}\n{text[-_LOG_TAIL:]}")
        return "\n".join(parts)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and return once every port accepts connections.

        Raises ServerError (with the server's log) if it cannot be found or started.
        """
        if self._processes:
            raise ServerError(f"{self.BINARY} already started")
        binary = find_binary(self.BINARY)
        if binary is None:
            raise ServerError(f"{self.BINARY} not found on PATH or in the sbin directories")
        self._prefix = Path(tempfile.mkdtemp(prefix=f"aiopool-{self.BINARY}-"))
        try:
            self._prefix.chmod(0o755)
            leaf = self.ca.issue_cert("localhost", "127.0.0.1")
            leaf.private_key_pem.write_to_path(str(self.key_path))
            self.chain_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._ports = free_ports(self.PORTS)
                commands = self._configure(binary)
                if self._launch(commands, last_attempt=attempt == _START_ATTEMPTS):
                    return
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server's process group (SIGTERM, then SIGKILL), remove the prefix."""
        self._terminate()
        self._ports = None
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def _launch(self, commands: list[list[str]], *, last_attempt: bool) -> bool:
        """Run ``commands``; True once they serve, False if a port was taken (try again)."""
        environment = self._environment()
        with open(self.prefix / "stdout.log", "ab") as out:
            for command in commands:
                process = subprocess.Popen(
                    command,
                    cwd=self.prefix,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own process group, so stop() reaches every worker it forks.
                    start_new_session=True,
                )
                self._processes.append(process)
        try:
            self._wait_until_serving()
        except ServerError as exc:
            self._terminate()
            log = self.log()
            if not last_attempt and "in use" in log.lower():
                return False
            raise ServerError(f"{self.BINARY} failed to start ({exc}):\n{log}") from None
        return True

    def _check_running(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                raise ServerError(f"exited with status {process.returncode}")

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        pending = list(self.ports)
        while pending:
            self._check_running()
            if time.monotonic() > deadline:
                raise ServerError(f"not listening within {_START_TIMEOUT} s")
            try:
                socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5).close()
            except OSError:
                time.sleep(0.02)
            else:
                pending.pop(0)
        # A port someone else grabbed would accept too, but the server, failing to bind it,
        # exits: look once more after a moment.
        time.sleep(0.1)
        self._check_running()

    def _terminate(self) -> None:
        processes, self._processes = self._processes, []
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # Workers the main process forked share its group; any still alive (it exited
            # uncleanly, or they ignore its shutdown) go now: no orphans.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
