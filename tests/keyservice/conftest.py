"""Fixtures of the key service tests: a SoftHSM2 of their own, servers on it.

The tokens live in the test process's one SoftHSM2 (tests/conftest.py), which holds
a token per area of the suite: SoftHSM2 reads its config once per process.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Harness, log_stream, server, start
from tests.softhsm import SoftHSM

__all__ = [
    "HTTP_TOKEN",
    "KEYS_TOKEN",
    "hsm",
    "log_stream",
    "pkcs11_keys",
    "pkcs11_server",
    "server",
]

KEYS_TOKEN = "modelseal-keys"
HTTP_TOKEN = "modelseal-keys-http"


@pytest.fixture
def hsm(softhsm: SoftHSM) -> SoftHSM:
    """The process's SoftHSM2 (tests/conftest.py), holding this package's two tokens."""
    return softhsm


def pkcs11_keys(hsm: SoftHSM, token: str = KEYS_TOKEN, **extra: Any) -> dict[str, Any]:
    """The ``keys`` settings section for ``token``."""
    return {
        "backend": "pkcs11",
        "pkcs11_module": hsm.module,
        "pkcs11_token_label": token,
        "pkcs11_pin": hsm.user_pin,
        **extra,
    }


@pytest.fixture
def pkcs11_server(tmp_path: Path, log_stream: io.StringIO, hsm: SoftHSM) -> Iterator[Harness]:
    """An in-process server whose issuer, link and checkpoint keys live on SoftHSM2."""
    yield from start(tmp_path, log_stream, keys=pkcs11_keys(hsm))
