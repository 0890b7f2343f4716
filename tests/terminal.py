"""Running a command with its stderr on a pseudo-terminal (progress bars draw only there)."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path


def run_on_a_terminal(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> tuple[int, bytes]:
    """Run ``command`` with stderr on a pseudo-terminal; return its exit code and what it drew."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=terminal, env=env
    ) as process:
        os.close(terminal)
        seen = bytearray()
        while True:
            try:
                block = os.read(controller, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not block:
                break
            seen += block
        code = process.wait(timeout=timeout)
    os.close(controller)
    return code, bytes(seen)
