"""The device client against a real server process: who gets what, and what is refused.

Every package is fetched over HTTP from ``python -m modelseal.server`` under
uvicorn; every refusal is checked for its error class and code, and for leaving
nothing behind: no at-rest copy, no partial download, no download state.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelseal.client import DeviceClient
from modelseal.client.datadir import write_private_bytes
from modelseal.client.errors import ModelNotStoredError, ServerRefusedError
from modelseal.client.transport import Transport, TransportSettings
from modelseal.envelope import OpenPolicy, open_bytes
from modelseal.errors import (
    AudienceError,
    DEKUnwrapError,
    ExpiredError,
    LicenceExpiredError,
    UnknownIssuerError,
)
from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm, key_to_jwk
from modelseal.server.generators import GenerationRequest, deterministic_test_generator
from tests.canary import files_under, holders

from .conftest import (
    CANARY,
    M1_BYTES,
    ServerProcess,
    canary_forms,
    enrolled,
    reopen,
)

E2E_SCAN_BYTES = 256 << 20  # the canary hunt reads files up to this size


def expected_m1(subject: str) -> bytes:
    request = GenerationRequest(subject, "m1", "any", "any", {"size_bytes": M1_BYTES})
    return bytes(deterministic_test_generator(request))


def ready_job(http: httpx.Client, device_id: str, model_id: str = "m1") -> dict[str, Any]:
    """Request ``model_id`` for ``device_id``; poll its job until ready (10 s at most)."""
    request = {"model_id": model_id, "device_id": device_id}
    job_id = http.post("/v1/imls", json=request).json()["job_id"]
    for _ in range(500):
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] == "ready":
            break
        time.sleep(0.02)
    return job


def plaintext_of(client: DeviceClient, model_id: str) -> bytes:
    with client.open_plaintext(model_id) as (_header, view):
        return bytes(view)


def assert_nothing_kept(root: Path, model_id: str) -> None:
    assert not (root / "models" / f"{model_id}.mseal").exists()
    assert list((root / "downloads").iterdir()) == []


def test_a_fetched_model_is_verified_resealed_at_rest_acknowledged_and_deleted_by_the_server(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    client = enrolled(server, tmp_path / "phone", token)
    result = client.fetch("m1")
    assert result.acknowledged
    assert result.resumed_from_bytes == 0
    assert result.plaintext_bytes == M1_BYTES
    assert result.claims.aud == client.enrollment.device_id
    assert set(result.timings) == {"request", "wait", "download", "verify", "reseal", "ack"}
    stored = tmp_path / "phone" / "models" / "m1.mseal"
    assert result.path == stored
    assert stored.stat().st_mode & 0o777 == 0o600
    assert stored.stat().st_size == result.at_rest_bytes
    assert list((tmp_path / "phone" / "downloads").iterdir()) == []
    assert client.pending_acks() == []
    # The at-rest copy is a kek package that keeps the issued claims.
    (model,) = client.models()
    assert model.header.rtype == "kek"
    assert model.claims == result.claims
    assert plaintext_of(client, "m1") == expected_m1(result.claims.sub)
    # The server deleted its copy: the job no longer offers a link.
    with server.http(token) as http:
        job = http.get(f"/v1/jobs/{result.job_id}").json()
    assert job["status"] == "ready"
    assert job["download_url"] is None


def test_two_devices_of_one_user_each_get_their_own_package(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    phone = enrolled(server, tmp_path / "phone", token)
    tablet = enrolled(server, tmp_path / "tablet", token)
    first, second = phone.fetch("m1"), tablet.fetch("m1")
    assert first.claims.sub == second.claims.sub
    assert (first.claims.aud, second.claims.aud) == (
        phone.enrollment.device_id,
        tablet.enrollment.device_id,
    )
    assert first.jti != second.jti
    # Same user, same model: the same model bytes, sealed differently on each device.
    assert plaintext_of(phone, "m1") == plaintext_of(tablet, "m1")
    phone_copy = (tmp_path / "phone" / "models" / "m1.mseal").read_bytes()
    tablet_copy = (tmp_path / "tablet" / "models" / "m1.mseal").read_bytes()
    assert phone_copy != tablet_copy
    with pytest.raises(DEKUnwrapError) as caught:
        open_bytes(phone_copy, tablet._kek("models"), OpenPolicy())
    assert caught.value.code == "dek_unwrap_failed"


def test_a_link_for_one_device_is_refused_to_the_other_device_of_the_same_user(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    phone = enrolled(server, tmp_path / "phone", token)
    tablet = enrolled(server, tmp_path / "tablet", token)
    with server.http(token) as http:
        job = ready_job(http, phone.enrollment.device_id)
    headers = {"X-Modelseal-Device": tablet.enrollment.device_id}
    with (
        Transport(TransportSettings(server.url), token=token) as transport,
        pytest.raises(ServerRefusedError) as caught,
        transport.stream("GET", job["download_url"], headers=headers),
    ):
        pass
    assert caught.value.code == "link_wrong_device"
    assert caught.value.status == 403


def test_two_users_get_different_models_and_cannot_see_each_others_jobs(
    server: ServerProcess, tmp_path: Path
) -> None:
    alice_token, bob_token = server.token(), server.token()
    alice = enrolled(server, tmp_path / "alice", alice_token)
    bob = enrolled(server, tmp_path / "bob", bob_token)
    from_alice, from_bob = alice.fetch("m1"), bob.fetch("m1")
    assert from_alice.claims.sub != from_bob.claims.sub
    assert plaintext_of(alice, "m1") == expected_m1(from_alice.claims.sub)
    assert plaintext_of(bob, "m1") == expected_m1(from_bob.claims.sub)
    assert plaintext_of(alice, "m1") != plaintext_of(bob, "m1")
    with Transport(TransportSettings(server.url), token=bob_token) as transport:
        with pytest.raises(ServerRefusedError) as caught:
            transport.request_json("GET", f"/v1/jobs/{from_alice.job_id}")
        assert caught.value.code == "not_found"
        # Bob cannot request a model for Alice's device either.
        with pytest.raises(ServerRefusedError) as request:
            transport.request_json(
                "POST",
                "/v1/imls",
                json_body={"model_id": "m1", "device_id": alice.enrollment.device_id},
                expect=(202,),
            )
        assert request.value.code == "not_found"


def test_a_revoked_device_is_refused_and_keeps_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    root = tmp_path / "phone"
    client = enrolled(server, root, token)
    with server.http(token) as http:
        revoked = http.delete(f"/v1/devices/{client.enrollment.device_id}")
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    with pytest.raises(ServerRefusedError, match="revoked") as caught:
        client.fetch("m1")
    assert caught.value.code == "device_revoked"
    assert caught.value.status == 403
    assert_nothing_kept(root, "m1")


def test_a_device_revoked_after_its_package_was_ready_cannot_download_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    root = tmp_path / "phone"
    client = enrolled(server, root, token)
    client.fetch("m1")
    stolen = (root / "models" / "m1.mseal").read_bytes()
    with server.http(token) as http:
        link = ready_job(http, client.enrollment.device_id)["download_url"]
        assert http.delete(f"/v1/devices/{client.enrollment.device_id}").status_code == 200
    with (
        Transport(TransportSettings(server.url), token=token) as transport,
        pytest.raises(ServerRefusedError) as caught,
        transport.stream("GET", link, headers={"X-Modelseal-Device": client.enrollment.device_id}),
    ):
        pass
    assert caught.value.code in ("device_revoked", "object_gone")
    # What the device already holds stays usable until its licence ends.
    assert (root / "models" / "m1.mseal").read_bytes() == stolen


def test_an_expired_package_is_refused_and_nothing_is_kept(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    enrolled(server, root)
    # The device's clock is an hour ahead: the 15-minute delivery deadline has passed.
    late = reopen(root, clock=lambda: time.time() + 3600)
    with pytest.raises(ExpiredError, match="package expired") as caught:
        late.fetch("m1")
    assert caught.value.code == "expired"
    assert_nothing_kept(root, "m1")
    assert late.pending_acks() == []
    (event,) = late.pending_events()
    assert event.type == "download_failure"
    assert event.details["reason"] == "expired"


def test_the_licence_is_enforced_on_load_and_renewed_by_fetching_again(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    client = enrolled(server, root)
    first = client.fetch("digits")
    assert first.claims.lexp is not None
    client.load("digits")
    later = reopen(root, clock=lambda: first.claims.lexp + 3600)  # type: ignore[operator]
    with pytest.raises(LicenceExpiredError, match="fetch the model again") as caught:
        later.load("digits")
    assert caught.value.code == "licence_expired"
    renewed = client.fetch("digits")
    assert renewed.jti != first.jti
    assert renewed.claims.lexp is not None
    assert renewed.claims.lexp >= first.claims.lexp
    (stored,) = client.models()
    assert stored.claims == renewed.claims


def test_a_package_signed_by_an_unpinned_issuer_key_is_refused(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    client = enrolled(server, root)
    client.fetch("m1")
    kept = (root / "models" / "m1.mseal").read_bytes()
    # The device pinned another issuer (a wrong pin): the server's signature must not pass.
    stranger = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519).public_key()
    pinned = json.loads((root / "issuer-jwks.json").read_text())
    pinned["jwks"] = {"keys": [key_to_jwk(stranger)]}
    write_private_bytes(root / "issuer-jwks.json", json.dumps(pinned).encode())
    with pytest.raises(UnknownIssuerError, match="not pinned") as caught:
        client.fetch("m1")
    assert caught.value.code == "unknown_issuer"
    # The refused renewal left the earlier copy alone and kept nothing new.
    assert (root / "models" / "m1.mseal").read_bytes() == kept
    assert list((root / "downloads").iterdir()) == []


def test_a_package_for_another_device_is_refused_by_audience(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    phone = enrolled(server, tmp_path / "phone", token)
    tablet = enrolled(server, tmp_path / "tablet", token)
    with server.http(token) as http:
        job = ready_job(http, phone.enrollment.device_id)
        package = http.get(
            job["download_url"], headers={"X-Modelseal-Device": phone.enrollment.device_id}
        ).content
    policy = OpenPolicy(issuers=tablet.pinned_issuers(), audience=tablet.enrollment.device_id)
    with pytest.raises(AudienceError) as caught:
        open_bytes(package, tablet._device_key(), policy)
    assert caught.value.code == "wrong_audience"


def test_no_plaintext_model_ever_reaches_the_device_disk(
    server: ServerProcess, tmp_path: Path
) -> None:
    started = time.time() - 1
    root = tmp_path / "phone"
    client = enrolled(server, root)
    result = client.fetch("canary")
    plaintext = plaintext_of(client, "canary")
    assert CANARY in plaintext  # the canary really went through the device
    forms = canary_forms(CANARY)
    # A window of the model itself too, beside the canary and its encodings.
    needles = [*forms, plaintext[1000:1064], plaintext[-64:]]
    planted = tmp_path / "planted"
    planted.write_bytes(b"x" + CANARY.hex().encode() + b"y")
    assert holders([planted], needles) == [f"{planted}: {CANARY.hex().encode()[:8]!r}"]
    planted.unlink()
    on_disk = files_under(root, max_bytes=E2E_SCAN_BYTES)
    on_disk += files_under(Path(tempfile.gettempdir()), since=started, max_bytes=E2E_SCAN_BYTES)
    assert any(p.name == "canary.mseal" for p in on_disk)
    assert holders(on_disk, needles) == []
    assert result.acknowledged


def test_the_reference_model_runs_from_memory_and_classifies_the_users_digits(
    server: ServerProcess, tmp_path: Path
) -> None:
    import onnxruntime  # type: ignore[import-untyped]

    from modelseal.models.bundle import parse_bundle
    from modelseal.models.digits import user_holdout

    client = enrolled(server, tmp_path / "phone")
    result = client.fetch("digits")
    assert result.ctype == "application/vnd.modelseal.bundle"
    model = client.load("digits")
    assert model.manifest is not None
    assert model.manifest.fields.model_id == "digits"
    images, labels = user_holdout(result.claims.sub)
    logits = np.asarray(model.run(images)["logits"])
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    assert accuracy > 0.6  # ten classes: chance is 0.1; the reference report shows ~0.85-0.9
    # The session built from memory is exactly the model in the bundle.
    reference = onnxruntime.InferenceSession(
        parse_bundle(plaintext_of(client, "digits")).entry, providers=["CPUExecutionProvider"]
    )
    (expected,) = reference.run(["logits"], {"input": images})
    np.testing.assert_array_equal(logits, expected)


def test_forgetting_removes_the_at_rest_copy(server: ServerProcess, tmp_path: Path) -> None:
    root = tmp_path / "phone"
    client = enrolled(server, root)
    client.fetch("m1")
    client.fetch("canary")
    client.forget("m1")
    assert [m.model_id for m in client.models()] == ["canary"]
    with pytest.raises(ModelNotStoredError) as caught:
        client.load("m1")
    assert caught.value.code == "model_not_found"
    assert client.forget_all() == ["canary"]
    assert list((root / "models").iterdir()) == []


def test_a_renamed_at_rest_file_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    from modelseal.client.errors import PackageMismatchError

    root = tmp_path / "phone"
    client = enrolled(server, root)
    client.fetch("canary")
    (root / "models" / "canary.mseal").rename(root / "models" / "digits.mseal")
    with pytest.raises(PackageMismatchError, match="holds another model") as caught:
        client.load("digits")
    assert caught.value.code == "package_mismatch"
