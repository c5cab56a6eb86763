"""Byte-level mutations and write boundaries, shared by the HTTP/1.1 and HTTP/2 strategies.

A mutation names its position as an arbitrary integer taken modulo the length of the bytes it
is applied to, so the same mutation applies to any input and shrinks towards the start.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

__all__ = ("Mutation", "apply", "mutations", "split", "splits")

# Bytes that break parsers: line ends, NUL, high bytes, separators, a stray blank line.
SPECIAL = (
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\x7f",
    b"\x80",
    b"\xff",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0",
    b"-",
    b"\r\n\r\n",
    b"\x0b",
)


@dataclass(frozen=True)
class Mutation:
    """One edit: flip, insert, delete, duplicate or truncate at `pos` (modulo the length)."""

    kind: str
    pos: int
    arg: int = 1
    data: bytes = b""

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return self.data if self.kind == "insert" else data
        i = self.pos % (len(data) + (self.kind == "insert"))
        if self.kind == "flip":
            i = min(i, len(data) - 1)
            return data[:i] + bytes([data[i] ^ (self.arg or 1)]) + data[i + 1 :]
        if self.kind == "insert":
            return data[:i] + self.data + data[i:]
        if self.kind == "delete":
            return data[:i] + data[i + self.arg :]
        if self.kind == "duplicate":
            return data[: i + self.arg] + data[i : i + self.arg] + data[i + self.arg :]
        if self.kind == "truncate":
            return data[:i]
        raise AssertionError(f"unknown mutation {self.kind!r}")


_positions = st.integers(min_value=0, max_value=1 << 16)

mutation = st.one_of(
    st.builds(Mutation, st.just("flip"), _positions, st.integers(1, 255)),
    st.builds(
        Mutation,
        st.just("insert"),
        _positions,
        st.just(1),
        st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=8)),
    ),
    st.builds(Mutation, st.just("delete"), _positions, st.integers(1, 16)),
    st.builds(Mutation, st.just("duplicate"), _positions, st.integers(1, 32)),
    st.builds(Mutation, st.just("truncate"), _positions),
)


def mutations(max_size: int = 4) -> st.SearchStrategy[tuple[Mutation, ...]]:
    return st.lists(mutation, min_size=1, max_size=max_size).map(tuple)


def apply(data: bytes, edits: tuple[Mutation, ...]) -> bytes:
    for edit in edits:
        data = edit(data)
    return data


# Where the server splits its answer into separate writes (each followed by a yield to the
# loop, so the client often sees them as separate reads): positions modulo the length.
splits = st.lists(st.integers(min_value=0, max_value=1 << 16), max_size=6).map(tuple)


def split(data: bytes, points: tuple[int, ...]) -> list[bytes]:
    """`data` cut at `points` (each modulo its length); empty pieces dropped."""
    if not data:
        return []
    cuts = sorted({p % len(data) for p in points} - {0})
    pieces = []
    start = 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return pieces
