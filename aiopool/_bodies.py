"""Request bodies read from files: streamed in chunks, re-readable when the file can seek.

A body the connections stream is an async iterable of bytes (`Request.body_chunks` enforces its
Content-Length). The bodies here add two things to that: a `size` known before the first byte
(so the request is framed with Content-Length, not chunked) and `replayable`, whether the body
can be sent again whole, for a redirect (307/308) or the pool's safe-replay retry.

Re-reading is by position, not by `rewind()`: each `async for` over a replayable body is a new
pass from the offset the file had when the body was made, reading with seek-then-read under a
lock (a `pread`), so a pass abandoned mid-way (a connection that failed while a read was still
running in its worker thread) cannot move the next pass's position.

Sync file reads block, so they run in a worker thread (`asyncio.to_thread`), 64 KiB at a time:
the event loop never waits on a disk, and at most a chunk per body is held in memory. (64 KiB:
httpx's and aiohttp's read size for file bodies, and Go's io.Copy uses 32 KiB.)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import stat
import threading
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO, Any, Protocol, TypeAlias, runtime_checkable

from ._exceptions import LocalProtocolError

__all__ = (
    "CHUNK_SIZE",
    "AsyncFileBody",
    "AsyncReadable",
    "BodyContent",
    "FileBody",
    "StreamBody",
    "body_from",
    "is_file",
)

CHUNK_SIZE = 64 * 1024


@runtime_checkable
class AsyncReadable(Protocol):
    """An async file object: `await f.read(n)` (aiofiles, anyio.AsyncFile, trio's)."""

    async def read(self, size: int = -1, /) -> bytes: ...


# What `content=` takes (`str` is encoded as UTF-8 by the builder).
BodyContent: TypeAlias = bytes | str | IO[bytes] | AsyncReadable | AsyncIterable[bytes]


class StreamBody:
    """A streamed request body with a `size` (None: unknown until sent, so chunked) and
    `replayable` (each `async for` is a new pass from the start)."""

    size: int | None = None
    replayable: bool = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise NotImplementedError  # Defensive: every subclass defines its passes


class FileBody(StreamBody):
    """A sync binary file object, read in a worker thread.

    Seekable (a regular file, `io.BytesIO`): sized and replayable, from the offset it had when
    given (as curl's and requests' uploads start where the file stands). Not seekable (a pipe,
    a socket file): read to its end once, chunked. Raises `TypeError` for a text-mode file.
    """

    __slots__ = ("_file", "_lock", "_start", "replayable", "size")

    def __init__(self, file: IO[bytes]) -> None:
        if isinstance(file, io.TextIOBase):
            raise TypeError("a file body must be opened in binary mode ('rb'), not text mode")
        self._file = file
        self._lock = threading.Lock()
        self._start = 0
        self.size = None
        self.replayable = False
        seekable = False
        with contextlib.suppress(AttributeError, OSError, ValueError):
            seekable = bool(file.seekable())
        if seekable:
            # One stat (or a seek to the end and back): cheap system calls, no data read.
            start = file.tell()
            end = _regular_file_size(file)
            if end is None:
                end = file.seek(0, os.SEEK_END)
                file.seek(start)
            self._start = start
            self.size = max(0, end - start)
            self.replayable = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pass() if self.replayable else self._once()

    async def _pass(self) -> AsyncIterator[bytes]:
        """One pass over the `size` bytes from the starting offset. A file that grew since is
        read only to `size` (the Content-Length sent); one that shrank raises
        `LocalProtocolError` (the server would wait for bytes that never come)."""
        assert self.size is not None
        position, left = self._start, self.size
        while left:
            chunk = await asyncio.to_thread(self._read_at, position, min(CHUNK_SIZE, left))
            if not chunk:
                raise LocalProtocolError(
                    f"the file body ended {left} bytes short of its size {self.size} "
                    "(it shrank while being sent)"
                )
            position += len(chunk)
            left -= len(chunk)
            yield chunk

    async def _once(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(self._read, CHUNK_SIZE):
            yield chunk

    def _read_at(self, position: int, size: int) -> bytes:
        with self._lock:  # (seek and read as one step: see the module's docstring)
            self._file.seek(position)
            return self._read(size)

    def _read(self, size: int) -> bytes:
        chunk = self._file.read(size)
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise TypeError(
                f"a file body's read() must return bytes, not {type(chunk).__name__} "
                "(open the file in binary mode)"
            )
        return bytes(chunk)


class AsyncFileBody(StreamBody):
    """An async file object (`await f.read(n)`): read to its end once, chunked, not
    replayable (its position is its own, and seeking it is not part of the protocol)."""

    __slots__ = ("_file",)

    def __init__(self, file: AsyncReadable) -> None:
        self._file = file

    async def __aiter__(self) -> AsyncIterator[bytes]:
        read = self._file.read
        while True:
            chunk = await read(CHUNK_SIZE)
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(
                    f"an async file body's read() must return bytes, not {type(chunk).__name__}"
                )
            if not chunk:
                return
            yield bytes(chunk)


def is_file(value: object) -> bool:
    """Whether `value` is a file object (sync or async): it has a callable `read`."""
    return callable(getattr(value, "read", None))


def body_from(value: Any) -> StreamBody | AsyncIterable[bytes]:
    """The streamed body for a file object (sync or async) or an async iterable of bytes.
    Raises `TypeError` for anything else, and for a text-mode file."""
    if isinstance(value, StreamBody):
        return value
    read = getattr(value, "read", None)
    if callable(read):
        if inspect.iscoroutinefunction(read) or _is_async_callable(read):
            return AsyncFileBody(value)
        return FileBody(value)
    if isinstance(value, AsyncIterable):
        return value
    raise TypeError(
        "content must be bytes, str, a file object or an async iterable of bytes, "
        f"not {type(value).__name__}"
    )


def _is_async_callable(read: Any) -> bool:
    # aiofiles wraps its methods; `inspect` sees through `functools.wraps`, a partial, or a
    # callable object's `__call__` only with help.
    call = getattr(read, "__call__", None)  # noqa: B004 (an object with an async __call__)
    return inspect.iscoroutinefunction(inspect.unwrap(read)) or inspect.iscoroutinefunction(call)


def _regular_file_size(file: IO[bytes]) -> int | None:
    """The size of a regular file by `fstat`, None when the object has no such descriptor."""
    try:
        info = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None
