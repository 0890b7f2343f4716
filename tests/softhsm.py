"""A throwaway SoftHSM2 installation for tests: its own config, token directory and tokens.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when the module is initialised (python-pkcs11
does that on the first ``pkcs11.lib()`` of a process), and scans its token directory
only then: tokens created later are invisible to that process. So every token a
test process needs is created up front, and ``SOFTHSM2_CONF`` is set before any
test loads the module.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MODULE_PATH = "/usr/lib/softhsm/libsofthsm2.so"
SO_PIN = "so-pin-8472"
USER_PIN = "user-pin-1931"


@dataclass(frozen=True)
class SoftHSM:
    """Where a test SoftHSM2 lives and how to log in to its tokens."""

    module: str
    conf: Path
    token_dir: Path
    labels: tuple[str, ...]
    user_pin: str = USER_PIN
    so_pin: str = SO_PIN


def create_softhsm(root: Path, labels: Iterable[str]) -> SoftHSM:
    """Write a SoftHSM2 config under ``root`` and initialise one token per label.

    The caller must point ``SOFTHSM2_CONF`` at ``SoftHSM.conf`` before the module is
    first loaded in the process.
    """
    token_dir = root / "tokens"
    token_dir.mkdir(mode=0o700, parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    names = tuple(labels)
    for label in names:
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
    return SoftHSM(module=MODULE_PATH, conf=conf, token_dir=token_dir, labels=names)
