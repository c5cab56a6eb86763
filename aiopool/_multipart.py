"""Form bodies: `application/x-www-form-urlencoded` and streamed `multipart/form-data`.

multipart/form-data follows RFC 7578 and, for what RFC 7578 leaves open, the WHATWG HTML
standard's encoding as browsers send it ("multipart/form-data encoding algorithm"):
- a field's name and a file's filename go raw as UTF-8 inside the quoted parameter, with only
  LF, CR and `"` percent-encoded (`%0A`, `%0D`, `%22`), which is what servers (python-multipart,
  Go's mime/multipart, PHP) parse back; no RFC 2231 `filename*=` (RFC 7578 section 4.2 says
  it must not be used). requests sends `filename*=`, httpx escapes differently; browsers are
  the reference servers are written against.
- a file part has a Content-Type (given, guessed from the filename, else
  application/octet-stream); a plain field has none (its charset is UTF-8, as the form's).
- field values are sent as given (no CRLF normalisation: an API client sends data, not a
  textarea).

No well-kept library encodes multipart as an async stream: `multipart` and `python-multipart`
and `streaming-form-data` parse; requests-toolbelt's `MultipartEncoder` is a sync, requests-
bound reader. The encoder is small: each part is a head (bytes) and a source, bytes or a
`StreamBody`, so a file is streamed in chunks, never read whole. The body's size is known
(Content-Length) when every part's is, and it is replayable when every part is.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import IO, Any, TypeAlias
from urllib.parse import urlencode

from ._bodies import AsyncReadable, StreamBody, body_from, is_file
from ._headers import validate_header

__all__ = ("DataTypes", "FilesTypes", "MultipartBody", "urlencoded")

Primitive: TypeAlias = str | bytes | int | float
DataTypes: TypeAlias = (
    Mapping[str, Primitive | Sequence[Primitive]] | Sequence[tuple[str, Primitive]]
)
FileContent: TypeAlias = bytes | str | IO[bytes] | AsyncReadable
FileValue: TypeAlias = (
    FileContent
    | tuple[str | None, FileContent]
    | tuple[str | None, FileContent, str | None]
    | tuple[str | None, FileContent, str | None, Mapping[str, str]]
)
FilesTypes: TypeAlias = Mapping[str, FileValue] | Sequence[tuple[str, FileValue]]

_ESCAPES = str.maketrans({"\n": "%0A", "\r": "%0D", '"': "%22"})


def urlencoded(data: DataTypes) -> bytes:
    """`data` as an application/x-www-form-urlencoded body (UTF-8, `+` for spaces, as HTML
    forms). Raises `TypeError` for a value that is not str, bytes, int or float."""
    return urlencode([(name, _value(value)) for name, value in _pairs(data)]).encode("ascii")


class MultipartBody(StreamBody):
    """A multipart/form-data body: `data` fields first, then `files`, in the order given.

    Raises `TypeError` for a value of the wrong type (or a text-mode file) and
    `LocalProtocolError` for an illegal extra part header.
    """

    __slots__ = ("_parts", "boundary", "content_type", "replayable", "size")

    def __init__(
        self, data: DataTypes | None, files: FilesTypes, boundary: bytes | None = None
    ) -> None:
        # 128 random bits, hex: what httpx and urllib3 use; a collision with the content is
        # not a practical concern, and the body is never scanned for it.
        self.boundary = boundary if boundary is not None else os.urandom(16).hex().encode()
        self.content_type = b"multipart/form-data; boundary=" + self.boundary
        dash = b"--" + self.boundary + b"\r\n"
        parts: list[tuple[bytes, bytes | StreamBody]] = []
        for name, field in _pairs(data) if data is not None else ():
            head = dash + _disposition(name, None) + b"\r\n\r\n"
            value = _value(field)
            parts.append((head, value if isinstance(value, bytes) else value.encode("utf-8")))
        items = files.items() if isinstance(files, Mapping) else files
        for name, file in items:
            parts.append(_file_part(dash, name, file))
        self._parts = parts
        tail = b"--" + self.boundary + b"--\r\n"
        size: int | None = len(tail)
        replayable = True
        for head, source in parts:
            length = len(source) if isinstance(source, bytes) else source.size
            if not isinstance(source, bytes):
                replayable = replayable and source.replayable
            if size is not None:
                size = None if length is None else size + len(head) + length + 2
        self.size = size
        self.replayable = replayable

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for head, source in self._parts:
            if isinstance(source, bytes):
                # Small parts go out with their head in one chunk (one DATA frame, one write).
                yield head + source + b"\r\n"
                continue
            yield head
            async for chunk in source:
                yield chunk
            yield b"\r\n"
        yield b"--" + self.boundary + b"--\r\n"


def _file_part(dash: bytes, name: str, value: Any) -> tuple[bytes, bytes | StreamBody]:
    filename: str | None
    content_type: str | None = None
    headers: Mapping[str, str] = {}
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise TypeError(
                "a files= tuple is (filename, file[, content_type[, headers]]), "
                f"not {len(value)} items"
            )
        filename, content = value[0], value[1]
        if len(value) > 2:
            content_type = value[2]
        if len(value) > 3:
            headers = value[3]
    else:
        content = value
        filename = _default_filename(value)
    source: bytes | StreamBody
    if isinstance(content, str):
        source = content.encode("utf-8")
    elif isinstance(content, bytes | bytearray | memoryview):
        source = bytes(content)
    elif is_file(content):
        body = body_from(content)
        assert isinstance(body, StreamBody)
        source = body
    else:
        raise TypeError(
            f"a files= value must be bytes, str or a file object, not {type(content).__name__}"
        )
    if content_type is None and filename is not None:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    lines = [_disposition(name, filename)]
    names = {key.lower() for key in headers}
    if content_type is not None and "content-type" not in names:
        lines.append(b"Content-Type: " + content_type.encode("utf-8"))
    for key, text in headers.items():
        if key.lower() == "content-disposition":
            raise TypeError("a part's Content-Disposition is built from its name and filename")
        raw_name, raw_value = key.encode("ascii"), text.encode("utf-8")
        validate_header(raw_name, raw_value)  # (CR, LF and NUL refused: no part injection)
        lines.append(raw_name + b": " + raw_value)
    return dash + b"\r\n".join(lines) + b"\r\n\r\n", source


def _default_filename(value: object) -> str:
    """A bare file's filename: its name's last component (as requests and httpx), else
    "upload" (httpx's)."""
    name = getattr(value, "name", None)
    if isinstance(name, str) and name and not (name.startswith("<") and name.endswith(">")):
        return os.path.basename(name)
    return "upload"


def _disposition(name: str, filename: str | None) -> bytes:
    line = f'Content-Disposition: form-data; name="{_escape(name)}"'
    if filename is not None:
        line += f'; filename="{_escape(filename)}"'
    return line.encode("utf-8")


def _escape(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"form field names and filenames must be str, not {type(text).__name__}")
    return text.translate(_ESCAPES)


def _pairs(data: DataTypes) -> Iterable[tuple[str, Primitive]]:
    items: Iterable[tuple[str, Any]] = data.items() if isinstance(data, Mapping) else data
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"form field names must be str, not {type(name).__name__}")
        if isinstance(value, list | tuple):
            for each in value:
                yield name, each
        else:
            yield name, value


def _value(value: object) -> str | bytes:
    """A form value as text, or as the bytes given (sent as they are)."""
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        # (bool is an int: "True" or "true" would both be a guess)
        raise TypeError(f"form values must be str, bytes, int or float, not {type(value).__name__}")
    return str(value)
