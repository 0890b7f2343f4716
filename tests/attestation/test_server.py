"""Server integration: challenges, attested enrollment, policies, replay and expiry."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from modelseal.attestation import (
    ChallengeInvalidError,
    ChallengeReplayedError,
    client_data,
    client_data_hash,
)
from modelseal.attestation.base import AttestationConfigError, AttestationCounterError
from modelseal.attestation.dev import InsecureDevVerifier
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk
from modelseal.server.db.attestation_models import (
    AppAttestKey,
    AttestationChallenge,
    DeviceAttestation,
)
from modelseal.server.errors import ConfigurationError
from modelseal.server.services.audit import AuditFilter
from modelseal.server.settings import load_settings
from tests.attestation.apple_factory import APP_ID, NOW, AppleFactory
from tests.attestation.server_helpers import challenge as _challenge
from tests.attestation.server_helpers import dev_attestation as _dev_attestation
from tests.attestation.server_helpers import raw as _raw
from tests.attestation.server_helpers import start_attested
from tests.server.conftest import TEST_GENERATOR, Harness, make_settings

POLICY_MODELS: list[dict[str, Any]] = [
    {"id": "m1", "generator": TEST_GENERATOR, "options": {"size_bytes": 100}},
    {
        "id": "m-refuse",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 100},
        "attestation": {"required": ["insecure-dev"], "on_missing": "refuse"},
    },
    {
        "id": "m-suspicious",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 100},
        "attestation": {"required": ["insecure-dev"], "on_missing": "suspicious"},
    },
    {
        "id": "m-allow",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 100},
        "attestation": {"required": ["insecure-dev"], "on_missing": "allow"},
    },
    {
        "id": "m-assert",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 100},
        "attestation": {
            "required": ["apple-appattest"],
            "on_missing": "refuse",
            "assertion_max_age_seconds": 60,
        },
    },
    {
        "id": "m-apple",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 100},
        "attestation": {"required": ["apple-appattest:production"], "on_missing": "refuse"},
    },
]


@pytest.fixture(scope="module")
def apple() -> AppleFactory:
    return AppleFactory()


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO, apple: AppleFactory) -> Iterator[Harness]:
    yield from start_attested(tmp_path, log_stream, apple, models=POLICY_MODELS)


def _enroll(
    h: Harness,
    token: str,
    device_id: str,
    key: RecipientPrivateKey,
    attestation: dict[str, Any] | None,
) -> Any:
    body: dict[str, Any] = {
        "device_id": device_id,
        "app_version": "1.0.0",
        "public_key": key_to_jwk(key.public_key()),
    }
    if attestation is not None:
        body["attestation"] = attestation
    return h.client.post("/v1/devices", json=body, headers=h.auth(token))


def _request(h: Harness, token: str, device_id: str, model_id: str) -> Any:
    return h.client.post(
        "/v1/imls", json={"model_id": model_id, "device_id": device_id}, headers=h.auth(token)
    )


def _events(h: Harness, type_: str) -> list[Any]:
    return [e for e in h.services.events.recent(limit=1000) if e.type == type_]


def _apple_attestation(
    h: Harness,
    apple: AppleFactory,
    token: str,
    key: RecipientPrivateKey,
    app_key: ec.EllipticCurvePrivateKey | None = None,
) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
    """The ``attestation`` member of an App Attest enrollment of ``key``, and the app's key."""
    challenge = _challenge(h, token)
    evidence, app_key = apple.attestation(
        client_data_hash(_raw(challenge), key.public_key()), key=app_key
    )
    attestation = {
        "platform": "apple-appattest",
        "evidence": base64.b64encode(evidence).decode(),
        "challenge_id": challenge["challenge_id"],
    }
    return attestation, app_key


def _assertion_body(
    h: Harness,
    apple: AppleFactory,
    token: str,
    key: RecipientPrivateKey,
    app_key: ec.EllipticCurvePrivateKey,
    counter: int,
    purpose: str = "assertion",
) -> dict[str, Any]:
    """A ``POST /v1/attestation/assertion`` body for device ``iphone`` on a fresh challenge."""
    c = _challenge(h, token, purpose)
    data = client_data(_raw(c), key.public_key())
    return {
        "device_id": "iphone",
        "challenge_id": c["challenge_id"],
        "assertion": base64.b64encode(apple.assertion(app_key, data, counter)).decode(),
    }


# --- challenges -------------------------------------------------------------------------------


def test_challenge_is_32_random_bytes_bound_to_the_caller(server: Harness) -> None:
    token = server.user("alice")
    first, second = _challenge(server, token), _challenge(server, token)
    assert len(_raw(first)) == 32
    assert _raw(first) != _raw(second)
    assert first["expires_at"] == int(server.clock()) + 120
    assert {"insecure-dev", "apple-appattest"} <= set(first["platforms"])
    with server.services.sessions() as session:
        row = session.get(AttestationChallenge, first["challenge_id"])
        assert row is not None
        assert row.used_at is None
    assert server.client.post("/v1/attestation/challenge").status_code == 401


# --- enrollment and policy ----------------------------------------------------------------------


def test_enrollment_with_dev_attestation_is_recorded_and_meets_the_policy(
    server: Harness,
) -> None:
    token = server.user("alice")
    key = RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(
        server, token, "phone", key, _dev_attestation(_challenge(server, token), key)
    )
    assert response.status_code == 201, response.text
    with server.services.sessions() as session:
        rows = session.scalars(select(DeviceAttestation)).all()
        assert [(r.platform, r.level) for r in rows] == [("insecure-dev", "insecure-dev")]
    for model in ("m-refuse", "m-suspicious", "m-allow", "m1"):
        assert _request(server, token, "phone", model).status_code == 202
    assert _events(server, "attestation_missing") == []
    audited = server.services.audit.entries(AuditFilter(action="attestation.verified"))
    assert [(e.device_id, e.details["platform"]) for e in audited] == [("phone", "insecure-dev")]
    # An attestation of another platform does not meet an App Attest requirement.
    refused = _request(server, token, "phone", "m-apple")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "attestation_required"


def test_policy_refuse_suspicious_allow_without_attestation(server: Harness) -> None:
    token = server.user("bob")
    server.register(token, "plain")
    refused = _request(server, token, "plain", "m-refuse")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "attestation_required"
    assert [e.details["action"] for e in _events(server, "attestation_missing")] == ["refuse"]
    assert _request(server, token, "plain", "m-suspicious").status_code == 202
    actions = sorted(e.details["action"] for e in _events(server, "attestation_missing"))
    assert actions == ["refuse", "suspicious"]
    assert _request(server, token, "plain", "m-allow").status_code == 202
    assert _request(server, token, "plain", "m1").status_code == 202
    assert len(_events(server, "attestation_missing")) == 2


def test_replayed_challenge_is_refused(server: Harness) -> None:
    token = server.user("carol")
    challenge = _challenge(server, token)
    key = RecipientPrivateKey.generate(KEM.X25519)
    assert _enroll(server, token, "one", key, _dev_attestation(challenge, key)).status_code == 201
    other = RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(server, token, "two", other, _dev_attestation(challenge, other))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "attestation_challenge_replayed"
    failed = _events(server, "attestation_failed")
    assert [e.details["code"] for e in failed] == ["attestation_challenge_replayed"]
    assert [d.device_id for d in server.services.devices.list_for(_principal(server, "carol"))] == [
        "one"
    ]


def test_expired_challenge_is_refused(server: Harness) -> None:
    token = server.user("dave")
    challenge = _challenge(server, token)
    server.clock.advance(121)
    key = RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(server, token, "late", key, _dev_attestation(challenge, key))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "attestation_challenge_expired"


def test_cross_user_challenge_is_refused(server: Harness) -> None:
    alice, mallory = server.user("alice"), server.user("mallory")
    challenge = _challenge(server, alice)
    key = RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(server, mallory, "stolen", key, _dev_attestation(challenge, key))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "attestation_challenge_invalid"
    assert [e.details["code"] for e in _events(server, "attestation_failed")] == [
        "cross_user_challenge"
    ]
    # Alice's challenge is still hers to use.
    assert _enroll(server, alice, "mine", key, _dev_attestation(challenge, key)).status_code == 201


def test_evidence_for_another_device_key_is_refused_and_burns_the_challenge(
    server: Harness,
) -> None:
    token = server.user("erin")
    challenge = _challenge(server, token)
    key, other = RecipientPrivateKey.generate(KEM.X25519), RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(server, token, "relay", key, _dev_attestation(challenge, other))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "attestation_chain_invalid"
    assert [e.details["code"] for e in _events(server, "attestation_failed")] == [
        "attestation_chain_invalid"
    ]
    failed = server.services.audit.entries(AuditFilter(action="attestation.failed"))
    assert [e.details["code"] for e in failed] == ["attestation_chain_invalid"]
    with pytest.raises(ChallengeReplayedError):
        server.services.attestation._consume(
            _principal(server, "erin"), challenge["challenge_id"], "enroll", None
        )
    # A failed attestation is a fraud stop factor: the account is now blocked.
    retry = _enroll(
        server, token, "relay", key, _dev_attestation(_challenge_or_none(server, token), key)
    )
    assert retry.status_code == 403
    assert retry.json()["error"]["code"] == "account_blocked"


@pytest.mark.parametrize(
    ("attestation", "status", "code"),
    [
        (
            {"platform": "nope", "evidence": "AAAA", "challenge_id": "ac_x"},
            422,
            "attestation_unsupported",
        ),
        (
            {"platform": "insecure-dev", "evidence": "!!", "challenge_id": "ac_x"},
            422,
            "invalid_request",
        ),
        (
            {"platform": "insecure-dev", "evidence": "AAAA", "challenge_id": "ac_x"},
            403,
            "attestation_challenge_invalid",
        ),
        ({"platform": "insecure-dev", "evidence": "AAAA"}, 422, "invalid_request"),
    ],
)
def test_bad_attestation_bodies_get_stable_errors(
    server: Harness, attestation: dict[str, Any], status: int, code: str
) -> None:
    token = server.user("frank")
    key = RecipientPrivateKey.generate(KEM.X25519)
    response = _enroll(server, token, "dev", key, attestation)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_registration_without_attestation_still_works(server: Harness) -> None:
    token = server.user("gina")
    device = server.register(token, "legacy")
    job = server.issue(token, device, "m1")
    assert job["status"] == "ready"


# --- App Attest through the server ----------------------------------------------------------


def test_app_attest_enrollment_and_assertions(server: Harness, apple: AppleFactory) -> None:
    server.clock.now = NOW
    token = server.user("ivy")
    key = RecipientPrivateKey.generate(KEM.P256)
    attestation, app_key = _apple_attestation(server, apple, token, key)
    assert _enroll(server, token, "iphone", key, attestation).status_code == 201
    assert _request(server, token, "iphone", "m-apple").status_code == 202

    def assertion(counter: int) -> Any:
        body = _assertion_body(server, apple, token, key, app_key, counter)
        return server.client.post(
            "/v1/attestation/assertion", json=body, headers=server.auth(token)
        )

    first = assertion(1)
    assert first.status_code == 200, first.text
    assert first.json()["counter"] == 1
    assert assertion(7).json()["counter"] == 7
    # An enrollment challenge cannot be spent on an assertion.
    body = _assertion_body(server, apple, token, key, app_key, 8, purpose="enroll")
    wrong = server.client.post("/v1/attestation/assertion", json=body, headers=server.auth(token))
    assert wrong.json()["error"]["code"] == "attestation_challenge_invalid"
    # A replayed counter is refused, recorded, and (a fraud stop factor) blocks the account.
    replayed = assertion(7)
    assert replayed.status_code == 403
    assert replayed.json()["error"]["code"] == "attestation_counter_replayed"
    assert len(_events(server, "attestation_counter_replayed")) == 1
    with server.services.sessions() as session:
        assert session.scalars(select(AppAttestKey.sign_count)).one() == 7
    blocked = server.client.post("/v1/attestation/challenge", json={}, headers=server.auth(token))
    assert blocked.json()["error"]["code"] == "account_blocked"


def test_assertion_counter_going_back_is_refused(server: Harness, apple: AppleFactory) -> None:
    server.clock.now = NOW
    token = server.user("ivan")
    key = RecipientPrivateKey.generate(KEM.P256)
    attestation, app_key = _apple_attestation(server, apple, token, key)
    assert _enroll(server, token, "iphone", key, attestation).status_code == 201
    principal = _principal(server, "ivan")
    with server.services.sessions() as session:
        device = server.services.devices.require_active(session, principal, "iphone")
        session.expunge(device)
    for counter, ok in ((5, True), (4, False)):
        c = _challenge(server, token, "assertion")
        data = client_data(_raw(c), key.public_key())
        assertion = apple.assertion(app_key, data, counter)
        if ok:
            assert (
                server.services.attestation.verify_assertion(
                    principal, device, c["challenge_id"], assertion
                )
                == counter
            )
        else:
            with pytest.raises(AttestationCounterError):
                server.services.attestation.verify_assertion(
                    principal, device, c["challenge_id"], assertion
                )


def test_assertion_from_a_device_without_app_attest_key_is_refused(server: Harness) -> None:
    token = server.user("jack")
    server.register(token, "android")
    c = _challenge(server, token, "assertion")
    body = {"device_id": "android", "challenge_id": c["challenge_id"], "assertion": "oA=="}
    response = server.client.post(
        "/v1/attestation/assertion", json=body, headers=server.auth(token)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "attestation_unsupported"


# --- production mode --------------------------------------------------------------------------


def test_production_mode_refuses_the_dev_verifier(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "mode": "production",
        "data_dir": tmp_path,
        "issuer_id": "prod",
        "link_signing_key": base64.urlsafe_b64encode(bytes(range(32))).decode(),
        "behind_proxy": True,
    }
    with pytest.raises(ConfigurationError, match="insecure-dev"):
        load_settings(**base, attestation={"insecure_dev": True})
    with pytest.raises(ConfigurationError, match="insecure-dev"):
        load_settings(
            **base,
            models=[
                {
                    "id": "m",
                    "generator": TEST_GENERATOR,
                    "attestation": {"required": ["insecure-dev"]},
                }
            ],
        )
    assert load_settings(**base).attestation.insecure_dev is False
    with pytest.raises(AttestationConfigError):
        InsecureDevVerifier(production=True)


def test_apple_settings_with_a_missing_root_file_refuse_to_start(tmp_path: Path) -> None:
    from modelseal.server.container import build_services

    settings = make_settings(
        tmp_path / "data",
        attestation={"apple": {"app_ids": [APP_ID], "roots": [str(tmp_path / "missing.pem")]}},
    )
    with pytest.raises(ConfigurationError, match="attestation"):
        build_services(settings)


def _principal(h: Harness, name: str) -> Any:
    return h.services.authenticator.authenticate(h.tokens[name])


def test_challenge_service_refuses_unknown_ids(server: Harness) -> None:
    server.user("kim")
    with pytest.raises(ChallengeInvalidError):
        server.services.attestation._consume(
            _principal(server, "kim"), "ac_unknown", "enroll", None
        )


def _challenge_or_none(h: Harness, token: str) -> dict[str, Any]:
    response = h.client.post("/v1/attestation/challenge", json={}, headers=h.auth(token))
    if response.status_code == 201:
        body: dict[str, Any] = response.json()
        return body
    return {"challenge": "A" * 43, "challenge_id": "ac_blocked"}


def test_per_request_assertion_is_spent_by_one_iml_request(
    server: Harness, apple: AppleFactory
) -> None:
    server.clock.now = NOW
    token = server.user("lea")
    key = RecipientPrivateKey.generate(KEM.P256)
    attestation, app_key = _apple_attestation(server, apple, token, key)
    assert _enroll(server, token, "iphone", key, attestation).status_code == 201

    def assert_once(counter: int) -> None:
        body = _assertion_body(server, apple, token, key, app_key, counter)
        response = server.client.post(
            "/v1/attestation/assertion", json=body, headers=server.auth(token)
        )
        assert response.status_code == 200, response.text

    def code(response: Any) -> str:
        return str(response.json()["error"]["code"])

    assert code(_request(server, token, "iphone", "m-assert")) == "attestation_required"
    assert_once(1)
    assert _request(server, token, "iphone", "m-assert").status_code == 202
    # Spent: the next request needs another assertion.
    assert code(_request(server, token, "iphone", "m-assert")) == "attestation_required"
    assert_once(2)
    server.clock.advance(61)
    assert code(_request(server, token, "iphone", "m-assert")) == "attestation_required"
    # Models without the option do not spend the assertion.
    assert _request(server, token, "iphone", "m-apple").status_code == 202


def test_play_integrity_settings_build_a_working_verifier(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from modelseal.attestation.play_integrity import expected_request_binding
    from modelseal.server.services.attestation import build_registry
    from tests.attestation.play_factory import PACKAGE, PlayKeys, verdict

    keys = PlayKeys()
    spki = keys.signing_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    backend = tmp_path / "backend.pem"
    backend.write_bytes(
        keys.backend_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = make_settings(
        tmp_path / "data",
        attestation={
            "play_integrity": {
                "package_names": [PACKAGE],
                "decryption_key": base64.b64encode(keys.decryption_key).decode(),
                "verification_key": base64.b64encode(spki).decode(),
                "backend_key_file": str(backend),
            }
        },
    )
    verifier = build_registry(settings).get("play-integrity")
    device = RecipientPrivateKey.generate(KEM.P256).public_key()
    challenge = bytes(32)
    payload = verdict(expected_request_binding(challenge, device), NOW)
    for evidence in (keys.classic(payload), keys.backend(payload)):
        result = verifier.verify(evidence, challenge=challenge, device_key=device, now=NOW)
        assert result.level == "device"
    bad = make_settings(
        tmp_path / "data2",
        attestation={"play_integrity": {"package_names": [PACKAGE], "decryption_key": "!!"}},
    )
    with pytest.raises(AttestationConfigError):
        build_registry(bad)


def test_an_app_attest_key_attested_twice_is_refused(server: Harness, apple: AppleFactory) -> None:
    server.clock.now = NOW
    token = server.user("max")
    app_key = ec.generate_private_key(ec.SECP256R1())
    for device_id, expected in (("first", 201), ("clone", 403)):
        key = RecipientPrivateKey.generate(KEM.P256)
        attestation, _ = _apple_attestation(server, apple, token, key, app_key)
        response = _enroll(server, token, device_id, key, attestation)
        assert response.status_code == expected, response.text
    assert response.json()["error"]["code"] == "attestation_key_mismatch"
    assert [e.details["code"] for e in _events(server, "attestation_failed")] == [
        "attestation_key_mismatch"
    ]


def test_android_settings_register_the_android_key_verifier(tmp_path: Path) -> None:
    from modelseal.attestation import AttestationMalformedError
    from modelseal.server.container import build_services
    from modelseal.server.services.attestation import build_registry
    from tests.attestation.android_fixtures import status_file

    digest = "30" * 32
    android = {
        "packages": {"com.example.app": [digest]},
        "status_source": str(status_file(tmp_path)),
    }
    settings = make_settings(tmp_path / "data", attestation={"android": android})
    verifier = build_registry(settings).get("android-key")
    device = RecipientPrivateKey.generate(KEM.P256).public_key()
    with pytest.raises(AttestationMalformedError):
        verifier.verify(b"\x30\x00", challenge=bytes(32), device_key=device, now=NOW)
    typo = make_settings(
        tmp_path / "data2", attestation={"android": {**android, "require_device_lock": False}}
    )
    with pytest.raises(ConfigurationError, match="attestation"):
        build_services(typo)
