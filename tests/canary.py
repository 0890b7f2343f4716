"""Hunting a canary on disk: which files hold any of a list of byte strings."""

from __future__ import annotations

import os
from pathlib import Path

MAX_SCAN_BYTES = 64 << 20
"""Files larger than this are passed over by default (nothing the tests write is)."""


def files_under(
    root: Path, since: float | None = None, *, max_bytes: int = MAX_SCAN_BYTES
) -> list[Path]:
    """The regular files below ``root`` (no symlinks), modified at or after ``since`` if given."""
    found = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_file() or path.is_symlink() or st.st_size > max_bytes:
                continue
            if since is not None and st.st_mtime < since:
                continue
            found.append(path)
    return found


def holders(paths: list[Path], needles: list[bytes]) -> list[str]:
    """``"<path>: <first bytes of the needle>"`` for every needle found in every path."""
    hits = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        hits += [f"{path}: {needle[:8]!r}" for needle in needles if needle in data]
    return hits
