"""Header fields the HTTP/1.1 and HTTP/2 strategies share."""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ("RESERVED_FIELDS", "TOKEN_LOWER", "header_values")

# Names the generators leave to the framing logic (RFC 9113 section 8.2.2's connection-specific
# fields for HTTP/2) or to features that would act on them: decoding, redirects, cookies,
# authentication.
RESERVED_FIELDS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "keep-alive",
        "location",
        "proxy-authenticate",
        "proxy-connection",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "www-authenticate",
    }
)
# RFC 9110 token characters (lower case: HTTP/2 field names must be).
TOKEN_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~"
# RFC 9110 section 5.5: visible characters with single inner spaces, no surrounding whitespace
# (parsers strip it, so it could not be compared).
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
header_values = st.lists(st.text(_VCHAR, min_size=1, max_size=10), max_size=3).map(" ".join)
