"""Fixtures for unit tests that need a PKCS#11 token (the SoftHSM2 of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelseal.keys.pkcs11 import Token
from tests.softhsm import SoftHSM

# Two tokens of the process's SoftHSM2 (tests/conftest.py): the one tests use, and one
# that no session of this process ever logs in to, so a wrong PIN really reaches C_Login.
MAIN_TOKEN = "modelseal-test"
SPARE_TOKEN = "modelseal-spare"


@pytest.fixture(scope="session")
def token(softhsm: SoftHSM) -> Iterator[Token]:
    """The main test token, logged in for the whole session."""
    with Token(softhsm.module, MAIN_TOKEN, softhsm.user_pin) as opened:
        yield opened
