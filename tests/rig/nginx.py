"""A throwaway nginx instance with a generated config, for tests against a real server.

Everything nginx touches (config, pid file, logs, temp paths, docroot, certificates) lives in a
fresh temporary prefix that ``stop()`` removes, so instances never interfere with each other or
with a system nginx.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Final

import trustme

from ._service import Service
from .encodings import text

__all__ = [
    "LIMITED_REQUESTS",
    "LIMITED_STREAMS",
    "STATIC_FILES",
    "Nginx",
    "NginxError",
    "find_nginx",
]

# Where nginx lives on Debian-like systems when sbin directories are not on a user's PATH.
_EXTRA_SEARCH_DIRS: Final = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# Name -> size of the files in the docroot. The contents are deterministic (see _file_content)
# so a test can compare a download with Nginx.file_bytes(name).
STATIC_FILES: Final = {
    "small.txt": 13,
    "1k.bin": 1024,
    "1m.bin": 1024 * 1024,
    "10m.bin": 10 * 1024 * 1024,
    "text.txt": 1024 * 1024,  # compressible (rig.encodings.text), for /gzip/
}
_SMALL_TXT: Final = b"Hello, world\n"

_START_ATTEMPTS: Final = 4
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 10.0


class NginxError(RuntimeError):
    """nginx could not be found, started or stopped."""


# Limits of the h2c_limited listener.
LIMITED_STREAMS = 4
LIMITED_REQUESTS = 25


def find_nginx() -> str | None:
    """Path of the nginx binary, searching PATH and then the usual sbin directories."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_EXTRA_SEARCH_DIRS])
    return shutil.which("nginx", path=search)


def _file_content(name: str) -> bytes:
    if name == "small.txt":
        return _SMALL_TXT
    if name == "text.txt":
        return text(STATIC_FILES[name])
    # Seeded per file so the files differ from each other (a client mixing up two responses
    # cannot pass a content check by accident).
    return random.Random(name).randbytes(STATIC_FILES[name])


def _free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago: bind to port 0, note the port, release it.

    All sockets are held open until every port is chosen so the kernel hands out distinct ones.
    Another process can still take a port before nginx binds it; start() retries on that.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _quote(path: Path) -> str:
    text = str(path)
    # nginx expands variables in some path directives and has its own escaping rules; a temp
    # path never contains these, so refuse rather than try to escape them.
    if any(ch in text for ch in '"\\$;{}'):
        raise NginxError(f"unsupported character in path {text!r}")
    return f'"{text}"'


def _quote_unix(path: Path) -> str:
    # The whole "unix:<path>" is one quoted token (nginx would take quotes after "unix:"
    # as part of the path). A file left by an earlier start attempt would be "in use".
    path.unlink(missing_ok=True)
    return _quote(Path(f"unix:{path}"))


class Nginx(Service):
    """nginx serving the same locations on three listeners.

    * ``http_url``  -- ``http://127.0.0.1:P1``, HTTP/1.1
    * ``https_url`` -- ``https://localhost:P2``, TLS 1.2/1.3, ALPN ``h2`` and ``http/1.1``; the
      certificate (issued by ``ca``) is also valid for 127.0.0.1
    * ``h2c_url``   -- ``http://127.0.0.1:P3``, HTTP/2 over cleartext with prior knowledge only
    * ``h2c_limited_url`` -- ``http://127.0.0.1:P4``, h2c with small limits: at most
      ``LIMITED_STREAMS`` concurrent streams per connection, and a GOAWAY after
      ``LIMITED_REQUESTS`` requests on a connection (nginx's ``keepalive_requests``)
    * ``uds_path`` -- a unix domain socket (in the prefix) serving HTTP/1.1; ``uds_tls_path``
      the same over TLS (ALPN ``h2`` and ``http/1.1``, the certificate as for ``https_url``)

    Locations: ``/<name>`` for each of ``STATIC_FILES``; ``/echo?id=X`` returns ``X`` as
    text/plain; ``/close`` returns ``bye`` with ``Connection: close``; ``/addr`` returns the
    client's address and port (``127.0.0.1 54321``; over a unix socket ``unix: ``);
    ``/worker?id=X`` returns
    ``X PID``, PID being the worker process that served it (it changes with ``reload()``);
    ``/gzip/<name>`` serves ``/<name>`` with ``gzip on`` (``Content-Encoding: gzip`` when the
    request accepts it).
    """

    def __init__(self, ca: trustme.CA | None = None, *, binary: str | None = None) -> None:
        self.ca: trustme.CA = ca if ca is not None else trustme.CA()
        self._binary = binary
        self._prefix: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ports: list[int] | None = None

    # -- addresses ------------------------------------------------------------------------

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise NginxError("nginx is not running")
        return self._ports[index]

    @property
    def http_port(self) -> int:
        return self._port(0)

    @property
    def https_port(self) -> int:
        return self._port(1)

    @property
    def h2c_port(self) -> int:
        return self._port(2)

    @property
    def h2c_limited_port(self) -> int:
        return self._port(3)

    @property
    def h2c_limited_url(self) -> str:
        return f"http://127.0.0.1:{self.h2c_limited_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def h2c_url(self) -> str:
        return f"http://127.0.0.1:{self.h2c_port}"

    @property
    def uds_path(self) -> str:
        if self._prefix is None:
            raise NginxError("nginx is not running")
        return str(self._prefix / "http.sock")

    @property
    def uds_tls_path(self) -> str:
        if self._prefix is None:
            raise NginxError("nginx is not running")
        return str(self._prefix / "https.sock")

    @property
    def docroot(self) -> Path:
        if self._prefix is None:
            raise NginxError("nginx is not running")
        return self._prefix / "html"

    def file_bytes(self, name: str) -> bytes:
        """The exact content nginx serves for ``/<name>``."""
        return (self.docroot / name).read_bytes()

    def worker_pid(self) -> int:
        """The pid of the worker that serves a new connection now (asked over HTTP/1.1)."""
        answer = self._get(self.http_port, "/worker")
        head, _, body = answer.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            raise NginxError(f"unexpected answer from /worker: {answer!r}")
        return int(body.split()[-1])

    def reload(self) -> int:
        """Reload nginx as an operator would, and return the new worker's pid.

        SIGHUP makes the master re-read its config and start new workers; the old ones stop
        accepting, finish the requests in flight, close their idle keep-alive connections (on
        HTTP/2 after a GOAWAY) and exit. Returns once a new connection is served by a new
        worker; the old one may still be finishing its requests then. Blocks: from a coroutine
        call it through ``asyncio.to_thread`` so the load keeps running.
        """
        process = self._process
        if process is None or process.poll() is not None:
            raise NginxError("nginx is not running")
        # Every worker alive now, including any still finishing from an earlier reload: they
        # keep accepting until they notice the master's signal, so "a pid other than the one
        # that answered last" would not prove that the new generation serves.
        old = self._children(process.pid)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + _START_TIMEOUT
        while (pid := self.worker_pid()) in old:
            if process.poll() is not None:
                raise NginxError(f"nginx exited during a reload:\n{self.error_log()}")
            if time.monotonic() > deadline:
                raise NginxError(f"no new worker within {_START_TIMEOUT} s of a reload")
            time.sleep(0.01)
        return pid

    @staticmethod
    def _children(parent: int) -> set[int]:
        """Pids of the live processes whose parent is ``parent`` (from /proc: Linux only)."""
        children = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited while we looked
            # The command name, in parentheses, may contain spaces; the ppid follows the state.
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                children.add(int(entry.name))
        return children

    def error_log(self) -> str:
        """Everything nginx logged so far (startup problems included)."""
        if self._prefix is None:
            return ""
        parts = []
        for name in ("error.log", "stderr.log"):
            with contextlib.suppress(FileNotFoundError):
                text = (self._prefix / "logs" / name).read_text(errors="replace")
                if text.strip():
                    parts.append(text)
        return "".join(parts)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start nginx and return once every listener accepts connections."""
        if self._process is not None:
            raise NginxError("nginx already started")
        binary = self._binary or find_nginx()
        if binary is None:
            raise NginxError("nginx binary not found on PATH or in the sbin directories")
        self._prefix = Path(tempfile.mkdtemp(prefix="aiopool-nginx-"))
        try:
            self._populate_prefix()
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._ports = _free_ports(4)
                self._write_config()
                if self._launch(binary, last_attempt=attempt == _START_ATTEMPTS):
                    return
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop nginx gracefully (SIGQUIT), force it (SIGKILL) if that hangs, remove the prefix."""
        self._terminate()
        self._ports = None
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    # -- internals ------------------------------------------------------------------------

    def _populate_prefix(self) -> None:
        assert self._prefix is not None
        for sub in ("html", "logs", "tls", "temp"):
            (self._prefix / sub).mkdir()
        for name in STATIC_FILES:
            (self.docroot / name).write_bytes(_file_content(name))
        leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        tls = self._prefix / "tls"
        leaf.private_key_pem.write_to_path(str(tls / "key.pem"))
        (tls / "chain.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))

    def _write_config(self) -> None:
        assert self._prefix is not None
        prefix = self._prefix
        http_port, https_port, h2c_port = self._port(0), self._port(1), self._port(2)
        limited_port = self._port(3)
        temp = prefix / "temp"
        locations = f"""
        root {_quote(self.docroot)};
        location / {{
        }}
        location = /echo {{
            default_type text/plain;
            return 200 "$arg_id";
        }}
        location = /close {{
            keepalive_timeout 0;
            default_type text/plain;
            return 200 "bye";
        }}
        location = /addr {{
            default_type text/plain;
            return 200 "$remote_addr $remote_port";
        }}
        location = /worker {{
            default_type text/plain;
            return 200 "$arg_id $pid";
        }}
        location /gzip/ {{
            # The same files, gzipped on the fly when the request accepts gzip.
            gzip on;
            gzip_types *;
            gzip_min_length 0;
            rewrite ^/gzip/(.*)$ /$1 break;
        }}"""
        config = f"""\
# Generated by tests/rig/nginx.py for one test session.
{self._user_directive()}
daemon off;
master_process on;
worker_processes 1;
{self._rlimit_directive()}
pid {_quote(prefix / "nginx.pid")};
lock_file {_quote(prefix / "nginx.lock")};
error_log {_quote(prefix / "logs" / "error.log")} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    server_tokens off;
    types {{
        text/plain txt;
        application/octet-stream bin;
    }}
    default_type application/octet-stream;
    client_body_temp_path {_quote(temp / "client_body")};
    proxy_temp_path {_quote(temp / "proxy")};
    fastcgi_temp_path {_quote(temp / "fastcgi")};
    uwsgi_temp_path {_quote(temp / "uwsgi")};
    scgi_temp_path {_quote(temp / "scgi")};
    keepalive_requests 10000;
    keepalive_timeout 60s;

    server {{
        listen 127.0.0.1:{http_port};
        server_name localhost;{locations}
    }}

    server {{
        # The same over a unix domain socket.
        listen {_quote_unix(prefix / "http.sock")};
        server_name localhost;{locations}
    }}

    server {{
        listen {_quote_unix(prefix / "https.sock")} ssl http2;
        server_name localhost;
        ssl_certificate {_quote(prefix / "tls" / "chain.pem")};
        ssl_certificate_key {_quote(prefix / "tls" / "key.pem")};
        ssl_protocols TLSv1.2 TLSv1.3;{locations}
    }}

    server {{
        listen 127.0.0.1:{https_port} ssl http2;
        server_name localhost;
        ssl_certificate {_quote(prefix / "tls" / "chain.pem")};
        ssl_certificate_key {_quote(prefix / "tls" / "key.pem")};
        ssl_protocols TLSv1.2 TLSv1.3;{locations}
    }}

    server {{
        # Cleartext HTTP/2 (prior knowledge); nginx 1.22 does not do the h2c upgrade dance.
        listen 127.0.0.1:{h2c_port} http2;
        server_name localhost;{locations}
    }}

    server {{
        # Small limits, so clients meet SETTINGS_MAX_CONCURRENT_STREAMS and GOAWAY quickly.
        listen 127.0.0.1:{limited_port} http2;
        server_name localhost;
        http2_max_concurrent_streams {LIMITED_STREAMS};
        keepalive_requests {LIMITED_REQUESTS};{locations}
    }}
}}
"""
        (prefix / "nginx.conf").write_text(config)

    @staticmethod
    def _user_directive() -> str:
        # As root, nginx would run its workers as "nobody", who cannot read our 0700 temp
        # prefix. Keep the workers on the current identity instead; as non-root the directive
        # is ignored with a warning, so leave it out.
        if os.geteuid() != 0:
            return ""
        user = pwd.getpwuid(os.geteuid()).pw_name
        group = grp.getgrgid(os.getegid()).gr_name
        return f"user {user} {group};"

    @staticmethod
    def _rlimit_directive() -> str:
        # 4096 worker connections need more descriptors than a typical soft limit of 1024;
        # raise it as far as the hard limit allows so nginx does not warn about it.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 8192
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        return f"worker_rlimit_nofile {wanted};" if wanted > soft else ""

    def _launch(self, binary: str, *, last_attempt: bool) -> bool:
        """Run nginx; True once it serves, False if a port was taken and a retry may help."""
        assert self._prefix is not None
        logs = self._prefix / "logs"
        (logs / "error.log").write_bytes(b"")
        with (logs / "stderr.log").open("wb") as stderr:
            self._process = subprocess.Popen(
                [
                    *(binary, "-p", str(self._prefix), "-c", str(self._prefix / "nginx.conf")),
                    # Errors before the config is read go here instead of the compiled-in path.
                    *("-e", str(logs / "error.log")),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # Own process group, so a forced stop can also kill the worker processes.
                start_new_session=True,
            )
        try:
            self._wait_until_serving()
        except NginxError as exc:
            self._terminate()
            log = self.error_log()
            if not last_attempt and f"({errno.EADDRINUSE}:" in log:
                return False
            raise NginxError(
                f"nginx failed to start ({exc}); its log says:\n{log or '(nothing)'}"
            ) from None
        return True

    def _wait_until_serving(self) -> None:
        assert self._process is not None
        assert self._ports is not None
        deadline = time.monotonic() + _START_TIMEOUT
        pending = list(self._ports)
        while pending:
            if self._process.poll() is not None:
                raise NginxError(f"nginx exited with status {self._process.returncode}")
            if time.monotonic() > deadline:
                raise NginxError("timed out waiting for nginx to listen")
            port = pending[0]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                time.sleep(0.02)
            else:
                pending.pop(0)
        # A port that accepts might belong to someone who grabbed it after _free_ports. nginx
        # binds every listener before serving any, so one answer only nginx can give proves
        # that all the ports are ours.
        token = secrets.token_hex(8)
        try:
            answer = self._get(self.http_port, f"/echo?id={token}")
        except OSError as exc:
            raise NginxError(f"nginx does not answer: {exc}") from None
        if not answer.endswith(token.encode()):
            raise NginxError(f"port {self.http_port} is answered by someone else: {answer!r}")

    @staticmethod
    def _get(port: int, target: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=_START_TIMEOUT) as sock:
            sock.sendall(
                f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
            )
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # SIGQUIT is nginx's graceful shutdown: idle keep-alive connections are closed,
            # requests in flight may finish.
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # The group is the session start_new_session created for this nginx.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
