"""The client's SSL context, built once per client (httpx pays ~25 ms rebuilding one per client).

Defaults: certificate and hostname verification on, against the system's trust store; TLS 1.2 at
least (RFC 8996 deprecates 1.0 and 1.1); ALPN offers what the client speaks.
"""

from __future__ import annotations

import os
import ssl
from typing import TypeAlias

__all__ = ("LazySSLContext", "VerifyTypes", "check_verify", "create_ssl_context")

# Aliases are runtime objects, not strings: `typing.get_type_hints()` on a public signature
# (pydantic, FastAPI, documentation tools) evaluates them where they are used, where `os` and
# `ssl` are not names.
VerifyTypes: TypeAlias = bool | str | os.PathLike[str] | ssl.SSLContext


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


def create_ssl_context(verify: VerifyTypes, *, alpn: list[str]) -> ssl.SSLContext:
    """Return the context for `verify`:

    - `True`: the system CA store, hostname checked;
    - a path: that CA bundle (a file) or a directory of hashed certificates;
    - `False`: no verification at all (for tests and private networks; says so in its name);
    - an `ssl.SSLContext`: used as given, except that ALPN protocols are set on it.
    """
    if isinstance(verify, ssl.SSLContext):
        ctx = verify
    elif verify is True:
        ctx = ssl.create_default_context()
    elif verify is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
    ctx.set_alpn_protocols(alpn)
    return ctx


class LazySSLContext:
    """The client's context, built on first use and then reused by every connection.

    Loading the system CA store costs ~25 ms, which a plain-HTTP client never needs to pay.
    Raises `TypeError` / `FileNotFoundError` at construction for a bad `verify`.
    """

    __slots__ = ("_alpn", "_context", "_verify")

    def __init__(self, verify: VerifyTypes, *, alpn: list[str]) -> None:
        check_verify(verify)
        self._verify = verify
        self._alpn = alpn
        self._context: ssl.SSLContext | None = None

    def __call__(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = create_ssl_context(self._verify, alpn=self._alpn)
        return self._context
