"""Fixtures for unit tests that need a PKCS#11 token (SoftHSM2)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pkcs11
import pytest

from modelseal.keys.pkcs11 import Token
from tests.softhsm import SoftHSM, create_softhsm

# Two tokens: the one tests use, and one that no session of this process ever logs
# in to, so a wrong PIN really reaches C_Login there.
MAIN_TOKEN = "modelseal-test"
SPARE_TOKEN = "modelseal-spare"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """A SoftHSM2 with its own config and tokens, for this test process only."""
    hsm = create_softhsm(tmp_path_factory.mktemp("softhsm"), [MAIN_TOKEN, SPARE_TOKEN])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(hsm.conf))
        yield hsm
    # Finalise and unload SoftHSM2 now, while OpenSSL is still alive. Left to the exit
    # handlers, SoftHSM2's static destructors can run after OpenSSL's own clean-up and
    # crash or hang the process (SoftHSMv2 issues #548, #635).
    pkcs11.unload(os.path.realpath(hsm.module))


@pytest.fixture(scope="session")
def token(softhsm: SoftHSM) -> Iterator[Token]:
    """The main test token, logged in for the whole session."""
    with Token(softhsm.module, MAIN_TOKEN, softhsm.user_pin) as opened:
        yield opened
