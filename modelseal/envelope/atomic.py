"""Atomic file output: a private temp file beside the target, renamed into place on success."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["AtomicOutput"]


class AtomicOutput:
    """Context manager yielding an unbuffered temp file (mode 0600) in the target's directory.

    On a clean exit the file is optionally fsynced, closed and renamed over the
    target. On any exception, including one raised by the fsync or the rename,
    the temp file is removed and the target is left as it was.
    """

    def __init__(self, target: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._target = Path(target)
        self._fsync = fsync
        directory = self._target.parent
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{self._target.name}.", suffix=".part")
        self._tmp = Path(name)
        self._file: BinaryIO = os.fdopen(fd, "wb", buffering=0)

    @property
    def temp_path(self) -> Path:
        """Where the bytes are written until the rename."""
        return self._tmp

    def __enter__(self) -> BinaryIO:
        return self._file

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        committed = False
        try:
            if exc_type is None:
                if self._fsync:
                    os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._tmp, self._target)
                committed = True
        finally:
            if not self._file.closed:
                self._file.close()
            if not committed:
                self._tmp.unlink(missing_ok=True)
