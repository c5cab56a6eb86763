"""The lifecycle every rig server shares: `start()`, `stop()`, and `with server:` for both."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A server started by `start()` and stopped by `stop()`; as a context manager, both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
