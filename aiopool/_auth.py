"""HTTP Basic authentication (RFC 7617): credentials turned into one `Authorization` header.

Where credentials come from, most specific first: a per-request `auth=`, then `user:password@`
in the request URL (as requests, httpx and curl accept it), then the client's `auth=`. The
header is part of the request the user made, for that request's origin only: `_redirects`
withholds it from a redirect hop to any other origin. A user-set `Authorization` header wins
over all of them. Credentials are never part of a repr or an error message.
"""

from __future__ import annotations

import base64
import re
from typing import TypeAlias

__all__ = ("AuthTypes", "basic_auth_header")

AuthTypes: TypeAlias = tuple[str | bytes, str | bytes]

# RFC 7617 section 2: "The user-id and password MUST NOT contain any control characters", and
# "a user-id containing a colon character is invalid" (the server splits at the first colon,
# so it would silently read other credentials than the ones given).
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


def basic_auth_header(auth: AuthTypes) -> bytes:
    """The `Authorization` value for `(username, password)`: `Basic base64(user:password)`.

    Text is encoded as UTF-8, the only charset RFC 7617 section 2.1 lets a server ask for,
    and what browsers and httpx send (requests sends latin-1). Raises `TypeError` for anything
    but a pair of str/bytes, `ValueError` for a colon in the user name or a control character.
    """
    if not isinstance(auth, tuple) or len(auth) != 2:
        raise TypeError("auth must be a (username, password) tuple")
    username, password = (_to_bytes(part) for part in auth)
    if b":" in username:
        raise ValueError("a Basic auth user name cannot contain ':' (RFC 7617 section 2)")
    if _CONTROL.search(username) or _CONTROL.search(password):
        raise ValueError("Basic auth credentials cannot contain control characters")
    return b"Basic " + base64.b64encode(username + b":" + password)


def _to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"auth user name and password must be str or bytes, not {type(value).__name__}")
