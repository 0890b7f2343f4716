"""The KMS backend (AWS-KMS-shaped) behind the key service, against an in-process fake.

These tests say nothing about the real AWS KMS: only that the backend drives a client
of that shape correctly (docs/KEY_SERVICE.md, "Cloud KMS").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelseal.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from modelseal.audit.merkle import leaf_hash
from modelseal.audit.note import note_signer_for, parse_verifier_key
from modelseal.errors import BadSignatureError
from modelseal.server.clock import ManualClock
from modelseal.server.db.models import Base
from modelseal.server.db.session import make_engine, make_session_factory
from modelseal.server.errors import LinkInvalidError
from modelseal.server.keyservice import KeyPurpose, KeyService, KeyState
from modelseal.server.keyservice.base import HMAC_SHA256, KeyNotFoundError, KeyUnsupportedError
from modelseal.server.keyservice.kms import KMSBackend, KMSError, KMSSigner
from modelseal.server.services.audit import AuditFilter, AuditLog
from modelseal.server.services.links import LinkPayload, LinkSigner
from tests.server.conftest import make_settings

from .fake_kms import FakeKMS


@dataclass
class KMSWorld:
    kms: FakeKMS
    backend: KMSBackend
    keys: KeyService
    audit: AuditLog
    clock: ManualClock


@pytest.fixture
def world(tmp_path: Path) -> Iterator[KMSWorld]:
    settings = make_settings(tmp_path / "data")
    engine = make_engine(f"sqlite:///{tmp_path / 'kms.db'}")
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    clock = ManualClock()
    audit = AuditLog(sessions, settings, clock)
    audit.ensure()
    kms = FakeKMS()
    backend = KMSBackend(kms)
    keys = KeyService(
        sessions,
        backend,
        clock,
        retire_after_seconds=dict.fromkeys(KeyPurpose, 600),
        default_algs={
            KeyPurpose.ISSUER: "ES256",
            KeyPurpose.LINK: HMAC_SHA256,
            KeyPurpose.CHECKPOINT: "ES256",
        },
        audit=audit,
    )
    keys.ensure()
    try:
        yield KMSWorld(kms, backend, keys, audit, clock)
    finally:
        keys.close()
        engine.dispose()


def test_every_purpose_gets_a_kms_key_of_the_right_spec_and_usage(world: KMSWorld) -> None:
    specs = sorted((k.spec, k.usage) for k in world.kms.keys.values())
    assert specs == [
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("ECC_NIST_P256", "SIGN_VERIFY"),
        ("HMAC_256", "GENERATE_VERIFY_MAC"),
    ]
    infos = world.keys.list_keys()
    assert {(i.purpose, i.backend, i.state) for i in infos} == {
        (KeyPurpose.ISSUER, "kms", KeyState.ACTIVE),
        (KeyPurpose.LINK, "kms", KeyState.ACTIVE),
        (KeyPurpose.CHECKPOINT, "kms", KeyState.ACTIVE),
    }
    created = world.audit.entries(AuditFilter(action="key.created"))
    assert {e.details["backend"] for e in created} == {"kms"}


def test_issuer_signatures_are_raw_r_s_that_verify_and_fail_when_tampered(
    world: KMSWorld,
) -> None:
    signer = world.keys.issuer_signer()
    signature = signer.sign(b"header bytes")
    assert len(signature) == 64  # r || s, not the DER KMS returns
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    assert r > 0
    assert s > 0
    signer.public_key().verify(b"header bytes", signature)
    with pytest.raises(BadSignatureError):
        signer.public_key().verify(b"header byteS", signature)
    jwks = world.keys.issuer_jwks()
    assert [k["kid"] for k in jwks["keys"]] == [signer.kid]


def test_a_wrong_signature_from_kms_is_refused(world: KMSWorld) -> None:
    signer = world.keys.issuer_signer()
    world.kms.tamper_signatures = True
    with pytest.raises(KMSError):
        signer.sign(b"message")


def test_links_are_maced_in_kms_and_a_revoked_link_key_kills_them(world: KMSWorld) -> None:
    links = LinkSigner(world.keys.link_keys)
    payload = LinkPayload(lid="l1", jti="j1", uid="u1", did="d1", exp=10**10)
    token = links.mint(payload)
    assert links.verify(token) == payload
    body, mac = token.split(".")
    with pytest.raises(LinkInvalidError):
        links.verify(f"{body}.{mac[:-2]}AA")
    old = world.keys.list_keys(KeyPurpose.LINK)[0]
    world.keys.rotate(KeyPurpose.LINK, actor="admin:test")
    assert links.verify(token) == payload  # the retiring key still verifies
    world.keys.revoke(KeyPurpose.LINK, old.kid, actor="admin:test", reason="test")
    with pytest.raises(LinkInvalidError):
        links.verify(token)


def test_checkpoints_signed_in_kms_verify_as_type_2_notes(world: KMSWorld) -> None:
    note_signer = note_signer_for("kms.example/audit", world.keys.checkpoint_signer())
    checkpoint = Checkpoint("kms.example/audit", 3, leaf_hash(b"x"))
    note = sign_checkpoint(checkpoint, [note_signer])
    verifier = parse_verifier_key(note_signer.verifier_key())
    assert verifier.sig_type == 0x02
    assert open_checkpoint(note, [verifier]) == checkpoint


def test_a_revoked_key_is_disabled_and_scheduled_for_deletion_in_kms(world: KMSWorld) -> None:
    old = world.keys.issuer_signer()
    world.keys.rotate(KeyPurpose.ISSUER, actor="admin:test")
    world.keys.revoke(KeyPurpose.ISSUER, old.kid, actor="admin:test", reason="compromise")
    states = {k.key_id: k.state for k in world.kms.keys.values()}
    revoked_handles = [
        key_id
        for key_id, state in states.items()
        if state == "PendingDeletion" and world.kms.keys[key_id].spec == "ECC_NIST_P256"
    ]
    assert len(revoked_handles) == 1
    assert "DisableKey" in world.kms.keys[revoked_handles[0]].calls
    with pytest.raises(KMSError, match=r"DisabledException|KMSInvalidStateException"):
        KMSSigner(world.kms, revoked_handles[0]).sign(b"after revocation")
    jwks = world.keys.issuer_jwks()
    assert old.kid not in [k["kid"] for k in jwks["keys"]]
    assert jwks["revoked"] == [old.kid]
    # Destroying again (already pending deletion) is not an error.
    world.backend.destroy(KeyPurpose.ISSUER, old.kid, revoked_handles[0])


def test_a_row_pointing_at_another_kms_key_is_refused(world: KMSWorld) -> None:
    issuer = world.keys.list_keys(KeyPurpose.ISSUER)[0]
    other = world.kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    fresh = KMSBackend(world.kms)
    with pytest.raises(KMSError, match="is not issuer key"):
        fresh.signer(KeyPurpose.ISSUER, issuer.kid, other["KeyMetadata"]["KeyId"])
    mac = next(k.key_id for k in world.kms.keys.values() if k.spec == "HMAC_256")
    with pytest.raises(KMSError, match="UnsupportedOperationException"):
        fresh.signer(KeyPurpose.ISSUER, issuer.kid, mac)


def test_ed25519_is_refused_and_kms_errors_map_to_stable_codes(world: KMSWorld) -> None:
    with pytest.raises(KeyUnsupportedError):
        world.keys.create(KeyPurpose.ISSUER, "Ed25519", actor="admin:test")
    signer = world.keys.issuer_signer()
    world.kms.fail_next = "ThrottlingException"
    with pytest.raises(KMSError) as caught:
        signer.sign(b"m")
    assert caught.value.code == "kms_error"
    assert "ThrottlingException" in caught.value.message
    world.kms.fail_next = "AccessDeniedException"
    with pytest.raises(KMSError):
        world.keys.create(KeyPurpose.ISSUER, actor="admin:test")
    with pytest.raises(KeyNotFoundError):
        KMSSigner(world.kms, "no-such-key")


def test_key_backend_failures_are_server_errors_not_client_errors() -> None:
    from modelseal.keys.pkcs11 import TokenError
    from modelseal.server.api.errors import STATUS_BY_ERROR

    assert STATUS_BY_ERROR[KMSError] == 503
    assert STATUS_BY_ERROR[TokenError] == 503
