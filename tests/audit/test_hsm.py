"""Checkpoints signed by a P-256 key on SoftHSM2 (signed-note type 0x02), end to end."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelseal.audit.checkpoint import open_checkpoint
from modelseal.audit.note import SIG_TYPE_ECDSA
from tests.server.conftest import start
from tests.softhsm import SoftHSM

from .conftest import verify_services

TOKEN = "modelseal-audit"


@pytest.fixture
def hsm(softhsm: SoftHSM) -> SoftHSM:
    """The process's SoftHSM2 (tests/conftest.py), holding this module's token."""
    return softhsm


def test_checkpoints_signed_on_the_token_verify(
    tmp_path: Path, log_stream: io.StringIO, hsm: SoftHSM
) -> None:
    keys = {
        "backend": "pkcs11",
        "pkcs11_module": hsm.module,
        "pkcs11_token_label": TOKEN,
        "pkcs11_pin": hsm.user_pin,
    }
    for server in start(tmp_path, log_stream, keys=keys):
        token = server.user("alice")
        device = server.register(token, "phone")
        server.issue(token, device)
        report = verify_services(server.services)
        assert report.covered == report.size > 0
        verifiers = server.services.audit.recorded_verifiers()
        assert [v.sig_type for v in verifiers] == [SIG_TYPE_ECDSA]
        (_, note), *_ = server.services.audit.exported_checkpoints()
        assert open_checkpoint(note, verifiers).size > 0
