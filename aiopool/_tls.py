"""The client's SSL context, built once per client (httpx pays ~25 ms rebuilding one per client).

Defaults: certificate and hostname verification on, against the system's trust store; TLS 1.2 at
least (RFC 8996 deprecates 1.0 and 1.1); ALPN offers what the client speaks.

`verify=False` warns (`InsecureRequestWarning`) once per host per client, when the first TLS
connection to that host is set up: urllib3 warns on every unverified request and requests
shows that once per host; a warning at construction would not say where the unverified
traffic goes. A context the caller builds with `CERT_NONE` and passes as `verify=` is their
own explicit choice and does not warn.

Client certificates (`cert=`, mutual TLS): a PEM file holding the certificate chain and its
key, or `(certificate file, key file)`, or `(certificate file, key file, password)` for an
encrypted key, as httpx and requests take them. Loaded once, at construction (a wrong password
or a key that does not match fails there, with `ValueError`, never a message with the password).

The environment, with `trust_env=True` (the default; httpx and requests read the same):
`SSL_CERT_FILE` / `SSL_CERT_DIR` replace the system CA store for `verify=True`, and
`SSLKEYLOGFILE` makes every context we build append its TLS secrets to that file (the NSS key
log format Wireshark reads; curl, Firefox and Chrome honour it too). With `trust_env=False`
none of them is read: not even by OpenSSL, which itself looks at `SSL_CERT_FILE` and
`SSL_CERT_DIR` when the system store is loaded (so the compiled-in locations are loaded
explicitly instead), nor by `ssl.create_default_context()`, which reads `SSLKEYLOGFILE`.
A context given as `verify=` is the caller's: used as it is.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import warnings
from collections.abc import Mapping
from typing import TypeAlias

from ._exceptions import InsecureRequestWarning

__all__ = (
    "CertTypes",
    "LazySSLContext",
    "VerifyTypes",
    "check_cert",
    "check_verify",
    "create_ssl_context",
)

# Aliases are runtime objects, not strings: `typing.get_type_hints()` on a public signature
# (pydantic, FastAPI, documentation tools) evaluates them where they are used, where `os` and
# `ssl` are not names.
VerifyTypes: TypeAlias = bool | str | os.PathLike[str] | ssl.SSLContext
_Path: TypeAlias = str | os.PathLike[str]
CertTypes: TypeAlias = _Path | tuple[_Path, _Path] | tuple[_Path, _Path, str | bytes | None]


def check_cert(cert: CertTypes | None, verify: VerifyTypes) -> None:
    """Refuse a bad `cert=` at construction: load it once, into a throwaway context.

    Raises `TypeError` for a wrong shape (or `cert=` with an `ssl.SSLContext` as `verify=`:
    load the certificate into that context instead), `FileNotFoundError` for a missing file,
    and `ValueError` when OpenSSL refuses the certificate or key (a wrong password, a key that
    does not match); the password never appears in a message.
    """
    if cert is None:
        return
    if isinstance(verify, ssl.SSLContext):
        raise TypeError(
            "cert= cannot be combined with an ssl.SSLContext as verify=: call "
            "context.load_cert_chain() on that context instead"
        )
    _load_cert(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert)


def _load_cert(ctx: ssl.SSLContext, cert: CertTypes) -> None:
    if isinstance(cert, str | os.PathLike):
        certfile, keyfile, password = cert, None, None
    elif isinstance(cert, tuple) and len(cert) in (2, 3):
        certfile, keyfile = cert[0], cert[1]
        password = cert[2] if len(cert) == 3 else None
    else:
        raise TypeError(
            "cert must be a path, (certificate, key) or (certificate, key, password), "
            f"not {type(cert).__name__}"
        )
    for path in (certfile, keyfile):
        if path is not None and not os.path.isfile(os.fspath(path)):
            raise FileNotFoundError(f"cert: no such file {os.fspath(path)!r}")
    try:
        ctx.load_cert_chain(certfile, keyfile, password)
    except ssl.SSLError as exc:
        # (OpenSSL's reason names what failed, "BAD_DECRYPT", "KEY_VALUES_MISMATCH"...; the
        # password is not in it.)
        raise ValueError(
            f"cert: could not load the client certificate {os.fspath(certfile)!r}: "
            f"{exc.reason or exc.strerror or type(exc).__name__} (a wrong password, a key that "
            "does not match the certificate, or not PEM)"
        ) from None


def check_verify(verify: VerifyTypes) -> None:
    """Refuse a bad `verify=` at construction, though the context itself is built lazily.

    Raises `TypeError` for a wrong type and `FileNotFoundError` for a missing CA path.
    """
    if isinstance(verify, bool | ssl.SSLContext):
        return
    if isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if not os.path.exists(path):
            raise FileNotFoundError(f"verify={path!r}: no such CA bundle file or directory")
        return
    raise TypeError(f"verify must be bool, a path or an ssl.SSLContext, not {verify!r}")


def create_ssl_context(
    verify: VerifyTypes,
    *,
    alpn: list[str],
    cert: CertTypes | None = None,
    trust_env: bool = False,
    environ: Mapping[str, str] | None = None,
) -> ssl.SSLContext:
    """Return the context for `verify`, with `cert` loaded and, with `trust_env`, the
    environment's `SSL_CERT_FILE`, `SSL_CERT_DIR` and `SSLKEYLOGFILE` (see the module
    docstring; `environ` defaults to `os.environ`):

    - `True`: the system CA store (or the environment's), hostname checked;
    - a path: that CA bundle (a file) or a directory of hashed certificates;
    - `False`: no verification at all (for tests and private networks; says so in its name);
    - an `ssl.SSLContext`: used as given, except that ALPN protocols are set on it.
    """
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif verify is True:
        ctx = _default_context(trust_env, os.environ if environ is None else environ)
    elif verify is False:
        ctx = _UnverifiedContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str | os.PathLike):
        path = os.fspath(verify)
        if os.path.isdir(path):
            ctx = ssl.create_default_context(capath=path)
        elif os.path.isfile(path):
            ctx = ssl.create_default_context(cafile=path)
        else:
            raise FileNotFoundError(f"verify={path!r}: no such CA bundle file or directory")
    else:
        raise TypeError(f"verify must be bool, a path or an ssl.SSLContext, not {verify!r}")
    if not isinstance(verify, ssl.SSLContext):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert is not None:
            _load_cert(ctx, cert)
        keylog = (os.environ if environ is None else environ).get("SSLKEYLOGFILE")
        # (`ssl.create_default_context()` itself reads SSLKEYLOGFILE: set it either way, so
        # trust_env=False means no key log.)
        ctx.keylog_filename = keylog if trust_env and keylog else None  # type: ignore[assignment]
    ctx.set_alpn_protocols(alpn)
    return ctx


def _default_context(trust_env: bool, environ: Mapping[str, str]) -> ssl.SSLContext:
    """`verify=True`'s context: the system store, or the environment's (`SSL_CERT_FILE`,
    `SSL_CERT_DIR`) with `trust_env`. Raises `FileNotFoundError` naming a variable whose path
    does not exist (OpenSSL would ignore it silently, and verify against nothing)."""
    if trust_env:
        cafile = environ.get("SSL_CERT_FILE") or None
        capath = environ.get("SSL_CERT_DIR") or None
        for name, path, exists in (
            ("SSL_CERT_FILE", cafile, os.path.isfile),
            ("SSL_CERT_DIR", capath, os.path.isdir),
        ):
            if path is not None and not exists(path):
                raise FileNotFoundError(f"{name} (from the environment): no such path {path!r}")
        if cafile is not None or capath is not None:
            return ssl.create_default_context(cafile=cafile, capath=capath)
        return ssl.create_default_context()
    if sys.platform == "win32":  # (the Windows store is not chosen by environment variables)
        return ssl.create_default_context()
    # OpenSSL's own default locations, without its SSL_CERT_FILE / SSL_CERT_DIR lookup.
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is None and capath is None:  # Defensive: a system without a store
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=cafile, capath=capath)


class _UnverifiedContext(ssl.SSLContext):
    """`verify=False`'s context: warns once per server name, when a connection to it is set up.

    Every TLS connection, asyncio's (and uvloop's) as well as a custom dialer's blocking
    socket, is made by `wrap_bio` or `wrap_socket`: the one place that knows the host and
    sees every dial, proxy tunnels included. One context per client, so once per client.
    """

    _warned: set[str]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        self._warn(server_hostname)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        self._warn(server_hostname)
        return super().wrap_socket(
            sock,
            server_side,
            do_handshake_on_connect,
            suppress_ragged_eofs,
            server_hostname,
            session,
        )

    def _warn(self, server_hostname: str | bytes | None) -> None:
        host = server_hostname.decode() if isinstance(server_hostname, bytes) else server_hostname
        host = host or "(no server name)"
        warned = self.__dict__.setdefault("_warned", set())
        if host in warned:
            return
        warned.add(host)
        warnings.warn(
            f"TLS to {host} without certificate verification (verify=False): anyone on the "
            "path can read and change this traffic. Pass verify= a CA bundle path or an "
            "ssl.SSLContext that trusts the server instead.",
            InsecureRequestWarning,
            # No caller's frame is on the stack: the handshake starts from the event loop.
            stacklevel=1,
        )


class LazySSLContext:
    """The client's context, built on first use and then reused by every connection.

    Loading the system CA store costs ~25 ms, which a plain-HTTP client never needs to pay.
    Raises `TypeError` / `FileNotFoundError` at construction for a bad `verify`; at first use,
    `FileNotFoundError` for an environment CA path that does not exist.
    """

    __slots__ = ("_alpn", "_cert", "_context", "_trust_env", "_verify")

    def __init__(
        self,
        verify: VerifyTypes,
        *,
        alpn: list[str],
        cert: CertTypes | None = None,
        trust_env: bool = False,
    ) -> None:
        check_verify(verify)
        self._verify = verify
        self._alpn = alpn
        self._cert = cert
        self._trust_env = trust_env
        self._context: ssl.SSLContext | None = None

    def __call__(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = create_ssl_context(
                self._verify, alpn=self._alpn, cert=self._cert, trust_env=self._trust_env
            )
        return self._context
