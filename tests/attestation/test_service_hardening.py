"""Attestation service edge cases: server-side failures, honest retries, key rollover.

Each test here pins a property that an earlier version got wrong:

* a status-list outage is the server's problem, not a fraud stop factor for the user;
* a registration sent again after a lost response is not a challenge replay;
* after an app reinstall (new App Attest key, same device key), assertions use the new key;
* ``insecure-dev`` in the *default* policy is refused in production like in a model's;
* oversized evidence is ``attestation_malformed``; old challenges do not pile up.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from modelseal.attestation import AttestationMalformedError, AttestationResult, client_data
from modelseal.attestation.base import client_data_hash
from modelseal.attestation.revocation import RevocationUnavailableError
from modelseal.keys import KEM, RecipientPrivateKey, RecipientPublicKey, key_to_jwk
from modelseal.server.db.attestation_models import AttestationChallenge, DeviceAttestation
from modelseal.server.errors import ConfigurationError
from modelseal.server.services.attestation import CHALLENGE_RETENTION_SECONDS, AttestationIn
from modelseal.server.settings import load_settings
from tests.attestation.apple_factory import NOW, AppleFactory
from tests.attestation.server_helpers import challenge as issue_challenge
from tests.attestation.server_helpers import dev_attestation, raw, start_attested
from tests.server.conftest import TEST_GENERATOR, Harness


class _OutageVerifier:
    """A verifier whose revocation source is down (fails closed), as StatusListCache does."""

    platform = "outage-test"

    def verify(
        self,
        evidence: bytes,
        *,
        challenge: bytes,
        device_key: RecipientPublicKey | None,
        now: int,
    ) -> AttestationResult:
        raise RevocationUnavailableError("the attestation status list is unavailable")


@pytest.fixture(scope="module")
def apple() -> AppleFactory:
    return AppleFactory()


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO, apple: AppleFactory) -> Iterator[Harness]:
    yield from start_attested(tmp_path, log_stream, apple)


def _body(device_id: str, key: RecipientPrivateKey, attestation: dict[str, Any]) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "app_version": "1.0.0",
        "public_key": key_to_jwk(key.public_key()),
        "attestation": attestation,
    }


def _apple(
    apple: AppleFactory,
    challenge: dict[str, Any],
    key: RecipientPrivateKey,
    app_key: ec.EllipticCurvePrivateKey,
) -> dict[str, Any]:
    evidence, _ = apple.attestation(client_data_hash(raw(challenge), key.public_key()), key=app_key)
    return {
        "platform": "apple-appattest",
        "evidence": base64.b64encode(evidence).decode(),
        "challenge_id": challenge["challenge_id"],
    }


def _event_types(h: Harness) -> list[str]:
    return [e.type for e in h.services.events.recent(limit=1000)]


def test_a_status_list_outage_is_503_and_not_a_fraud_stop_factor(server: Harness) -> None:
    server.services.attestation._registry.register(_OutageVerifier())
    token = server.user("olga")
    key = RecipientPrivateKey.generate(KEM.P256)
    challenge = issue_challenge(server, token)
    attestation = {
        "platform": "outage-test",
        "evidence": "AAAA",
        "challenge_id": challenge["challenge_id"],
    }
    response = server.client.post(
        "/v1/devices", json=_body("phone", key, attestation), headers=server.auth(token)
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "attestation_revocation_unavailable"
    assert response.headers["Retry-After"] == "60"
    assert "attestation_failed" not in _event_types(server)
    # Not blocked: the user can try again once the list is back.
    retry = issue_challenge(server, token)
    enrolled = server.client.post(
        "/v1/devices",
        json=_body("phone", key, dev_attestation(retry, key)),
        headers=server.auth(token),
    )
    assert enrolled.status_code == 201, enrolled.text


def test_the_same_enrollment_sent_again_is_not_a_replay(server: Harness) -> None:
    token = server.user("rita")
    key = RecipientPrivateKey.generate(KEM.X25519)
    body = _body("phone", key, dev_attestation(issue_challenge(server, token), key))
    first = server.client.post("/v1/devices", json=body, headers=server.auth(token))
    assert first.status_code == 201, first.text
    again = server.client.post("/v1/devices", json=body, headers=server.auth(token))
    assert again.status_code == 200, again.text
    assert again.json()["kid"] == first.json()["kid"]
    assert "attestation_failed" not in _event_types(server)
    with server.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeviceAttestation)) == 1
    # The used challenge is still a replay for anything but that very enrollment.
    renamed = dict(body, device_id="tablet")
    refused = server.client.post("/v1/devices", json=renamed, headers=server.auth(token))
    assert refused.json()["error"]["code"] == "attestation_challenge_replayed"
    assert _event_types(server).count("attestation_failed") == 1


def test_assertions_use_the_key_of_the_latest_attestation(
    server: Harness, apple: AppleFactory
) -> None:
    server.clock.now = NOW
    token = server.user("tom")
    key = RecipientPrivateKey.generate(KEM.P256)
    old_app_key, new_app_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    for app_key, status in ((old_app_key, 201), (new_app_key, 200)):
        attestation = _apple(apple, issue_challenge(server, token), key, app_key)
        response = server.client.post(
            "/v1/devices", json=_body("iphone", key, attestation), headers=server.auth(token)
        )
        assert response.status_code == status, response.text
        server.clock.advance(5)  # the app is reinstalled and attests a new key
    challenge = issue_challenge(server, token, "assertion")
    data = client_data(raw(challenge), key.public_key())
    body = {
        "device_id": "iphone",
        "challenge_id": challenge["challenge_id"],
        "assertion": base64.b64encode(apple.assertion(new_app_key, data, 1)).decode(),
    }
    response = server.client.post(
        "/v1/attestation/assertion", json=body, headers=server.auth(token)
    )
    assert response.status_code == 200, response.text
    assert response.json()["counter"] == 1


def test_oversized_evidence_is_malformed(server: Harness) -> None:
    token = server.user("uma")
    principal = server.services.authenticator.authenticate(token)
    key = RecipientPrivateKey.generate(KEM.X25519).public_key()
    challenge = issue_challenge(server, token)
    attestation = AttestationIn("insecure-dev", bytes(64 * 1024 + 1), challenge["challenge_id"])
    with pytest.raises(AttestationMalformedError):
        server.services.attestation.verify_enrollment(principal, "phone", key, attestation)


def test_old_challenges_are_deleted_when_the_user_asks_for_a_new_one(server: Harness) -> None:
    token, other = server.user("vic"), server.user("wes")
    stale = issue_challenge(server, token)
    theirs = issue_challenge(server, other)
    server.clock.advance(120 + CHALLENGE_RETENTION_SECONDS + 1)
    fresh = issue_challenge(server, token)
    with server.services.sessions() as session:
        ids = set(session.scalars(select(AttestationChallenge.id)))
    assert stale["challenge_id"] not in ids
    assert {fresh["challenge_id"], theirs["challenge_id"]} <= ids


def test_production_refuses_insecure_dev_in_the_default_policy(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="insecure-dev"):
        load_settings(
            mode="production",
            data_dir=tmp_path,
            issuer_id="prod",
            link_signing_key=base64.urlsafe_b64encode(bytes(range(32))).decode(),
            behind_proxy=True,
            models=[{"id": "m", "generator": TEST_GENERATOR}],
            attestation={"default_policy": {"required": ["insecure-dev"]}},
        )
