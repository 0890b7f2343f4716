"""Verdicts drive the policy: a blocked user gets nothing by any path; decoys block at once."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from modelseal.fraud import RuleSet, Verdict
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk
from modelseal.server.db.abuse_models import FraudOverride, FraudVerdict
from modelseal.server.errors import AccountBlockedError
from modelseal.server.services.audit import AuditFilter
from tests.server.conftest import Harness

from .conftest import ADMIN_TOKEN, abuse_overrides, start


def metric(h: Harness, name: str, **labels: str) -> float:
    value = h.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def block(h: Harness, name: str) -> None:
    h.services.abuse.override(name, Verdict.MALICIOUS, reason="test", actor="tests")


def refused_blocked(response: Any) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "account_blocked"


def test_a_blocked_user_gets_no_link_and_no_download_by_any_path(server: Harness) -> None:
    token = server.user("mallory")
    device = server.register(token, "phone")
    principal = server.services.authenticator.authenticate(token)
    ready = server.issue(token, device)  # a link minted before the block
    link_before = ready["download_url"]
    block(server, "mallory")
    headers = server.auth(token, "phone")

    # Over HTTP: request, job status (which mints links), download, registration, ack.
    refused_blocked(
        server.client.post(
            "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=headers
        )
    )
    refused_blocked(server.client.get(f"/v1/jobs/{ready['job_id']}", headers=headers))
    refused_blocked(server.client.get(link_before, headers=headers))
    refused_blocked(server.client.get(link_before, headers={**headers, "Range": "bytes=0-9"}))
    refused_blocked(server.client.post(f"/v1/issuances/{ready['jti']}/ack", headers=headers))
    refused_blocked(
        server.client.post(
            "/v1/devices",
            json={
                "device_id": "tablet",
                "app_version": "1.0.0",
                "public_key": key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key()),
            },
            headers=headers,
        )
    )
    # Below the API, where another entry point would call the services directly.
    with pytest.raises(AccountBlockedError):
        server.services.issuance.request(principal, "m1", "phone")
    with pytest.raises(AccountBlockedError):
        server.services.issuance.get_job(principal, ready["job_id"])
    token_part = link_before.rsplit("/", 1)[1]
    with pytest.raises(AccountBlockedError):
        server.services.downloads.open(principal, token_part, "phone", None)
    # Events are still accepted.
    response = server.client.post(
        "/v1/events",
        json={"device_id": "phone", "events": [{"type": "root_detected", "details": {}}]},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    assert metric(server, "abuse_refusals_total", reason="account_blocked") >= 6


def _wait_job_row(h: Harness, job_id: str) -> tuple[str, str | None]:
    import time

    from modelseal.server.db.models import Job

    deadline = time.monotonic() + 20
    while True:
        with h.services.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status in ("ready", "failed"):
                return job.status, job.error_code
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_blocked_user_is_refused_even_with_a_job_queued_before_the_block(
    server: Harness,
) -> None:
    token = server.user("queued")
    server.register(token, "phone")
    principal = server.services.authenticator.authenticate(token)
    # Hold the worker: block between request and run by running the job by hand.
    with server.services.sessions.begin() as session:
        from modelseal.server.db.models import Device, Job

        device = session.scalars(select(Device).where(Device.device_id == "phone")).one()
        session.add(
            Job(
                id="j_manual",
                user_id=principal.user_id,
                device_pk=device.id,
                model_id="m2",
                status="queued",
                created_at=int(server.clock()),
            )
        )
    block(server, "queued")
    server.services.issuance.run("j_manual")
    assert _wait_job_row(server, "j_manual") == ("failed", "account_blocked")


def test_a_decoy_model_id_blocks_at_once_with_an_alert(
    server: Harness, log_stream: io.StringIO
) -> None:
    token = server.user("scraper")
    device = server.register(token, "phone")
    server.issue(token, device)
    response = server.client.post(
        "/v1/imls", json={"model_id": "m-decoy", "device_id": "phone"}, headers=server.auth(token)
    )
    assert response.status_code in (403, 404)
    refused_blocked(
        server.client.post(
            "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=server.auth(token)
        )
    )
    info = server.services.abuse.explain("scraper")
    assert info.verdict == Verdict.MALICIOUS
    assert [rule["rule_id"] for rule in info.fired] == ["honey_token_used"]
    assert metric(server, "honey_token_uses_total", kind="model_id") == 1
    assert "honey_token_used" in log_stream.getvalue()
    assert "m-decoy" not in log_stream.getvalue()  # the decoy itself stays out of the logs


def test_a_decoy_account_is_blocked_on_its_first_request(
    server: Harness, log_stream: io.StringIO
) -> None:
    token = server.user("svc-decoy")
    refused_blocked(server.client.get("/v1/devices", headers=server.auth(token)))
    assert metric(server, "honey_token_uses_total", kind="account") == 1
    assert server.services.abuse.explain("svc-decoy").verdict == Verdict.MALICIOUS
    assert "honey_token_used" in log_stream.getvalue()
    assert "svc-decoy" not in log_stream.getvalue()


@pytest.fixture
def decoy_key() -> RecipientPrivateKey:
    return RecipientPrivateKey.generate(KEM.X25519)


@pytest.fixture
def decoy_server(
    tmp_path: Path, log_stream: io.StringIO, decoy_key: RecipientPrivateKey
) -> Iterator[Harness]:
    overrides = abuse_overrides(honey_device_kids=[decoy_key.kid])
    yield from start(tmp_path, log_stream, **overrides)


def test_a_decoy_device_key_blocks_its_registrant(
    decoy_server: Harness, decoy_key: RecipientPrivateKey, log_stream: io.StringIO
) -> None:
    h = decoy_server
    token = h.user("cloner")
    response = h.client.post(
        "/v1/devices",
        json={
            "device_id": "phone",
            "app_version": "1.0.0",
            "public_key": key_to_jwk(decoy_key.public_key()),
        },
        headers=h.auth(token),
    )
    assert response.status_code == 201
    refused_blocked(
        h.client.post(
            "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=h.auth(token)
        )
    )
    assert metric(h, "honey_token_uses_total", kind="device_key") == 1
    assert "honey_token_used" in log_stream.getvalue()
    assert decoy_key.kid not in log_stream.getvalue()


def test_an_override_is_recorded_and_wins_until_cleared(server: Harness) -> None:
    token = server.user("dave")
    device = server.register(token, "phone")
    info = server.services.abuse.override(
        "dave", Verdict.MALICIOUS, reason="chargeback fraud", actor="ops:alice"
    )
    assert (info.verdict, info.computed) == (Verdict.MALICIOUS, Verdict.OK)
    refused_blocked(server.client.get("/v1/devices", headers=server.auth(token)))
    server.services.abuse.clear_override("dave", reason="resolved", actor="ops:alice")
    server.issue(token, device)
    with server.services.sessions() as session:
        rows = session.scalars(select(FraudOverride)).all()
    assert [(r.verdict, r.actor, r.cleared_at is not None) for r in rows] == [
        ("malicious", "ops:alice", True)
    ]
    audit = [e.action for e in server.services.audit.entries(AuditFilter(action="fraud.override"))]
    assert len(audit) == 2  # the override and its clearing
    assert server.event_types().count("fraud_override") == 2


def test_an_ok_override_unblocks_a_sticky_malicious_verdict(server: Harness) -> None:
    token = server.user("erin")
    device = server.register(token, "phone")
    server.client.post(
        "/v1/imls", json={"model_id": "m-decoy", "device_id": "phone"}, headers=server.auth(token)
    )
    assert server.services.abuse.explain("erin").verdict == Verdict.MALICIOUS
    server.clock.advance(40 * 86400)  # the decoy event is out of the history window
    assert server.services.abuse.explain("erin").verdict == Verdict.MALICIOUS  # sticky
    server.services.abuse.override("erin", Verdict.OK, reason="false positive", actor="ops")
    server.issue(token, device)


def test_a_suspicious_user_gets_the_lower_quota(server: Harness) -> None:
    token = server.user("frank")
    device = server.register(token, "phone")
    server.services.abuse.override("frank", Verdict.SUSPICIOUS, reason="review", actor="ops")
    server.issue(token, device)
    server.issue(token, device)
    response = server.client.post(
        "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=server.auth(token)
    )
    assert response.json()["error"]["code"] == "quota_exceeded"


def test_the_admin_api_needs_the_admin_token_and_records_overrides(server: Harness) -> None:
    token = server.user("gina")
    server.register(token, "phone")
    base = "/v1/admin/fraud"
    assert server.client.get(f"{base}/verdicts").status_code == 401
    assert server.client.get(f"{base}/verdicts", headers=server.auth(token)).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    response = server.client.post(
        f"{base}/users/gina/override",
        json={"verdict": "suspicious", "reason": "manual review"},
        headers=admin,
    )
    assert response.status_code == 200, response.text
    assert response.json()["verdict"] == "suspicious"
    listed = server.client.get(f"{base}/verdicts?verdict=suspicious", headers=admin).json()
    assert [v["user"] for v in listed["verdicts"]] == ["gina"]
    explained = server.client.get(f"{base}/users/gina", headers=admin).json()
    assert explained["overrides"][0]["reason"] == "manual review"
    assert explained["overrides"][0]["actor"].startswith("admin-api")
    bad = server.client.post(
        f"{base}/users/gina/override", json={"verdict": "evil", "reason": "x"}, headers=admin
    )
    assert bad.status_code == 422
    assert server.client.get(f"{base}/users/nobody", headers=admin).status_code == 404
    cleared = server.client.post(
        f"{base}/users/gina/override/clear", json={"reason": "done"}, headers=admin
    )
    assert cleared.json()["verdict"] == "ok"


def test_without_an_admin_token_the_admin_api_does_not_exist(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    for h in start(tmp_path, log_stream, **abuse_overrides(admin_token_hash=None)):
        response = h.client.get(
            "/v1/admin/fraud/verdicts", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 404


def test_a_verdict_stored_under_other_rules_is_recomputed_on_use(server: Harness) -> None:
    token = server.user("erin")
    user_id = server.services.authenticator.authenticate(token).user_id
    server.services.abuse.record_server_event("app_reinstalled", user_id=user_id)
    with server.services.sessions.begin() as session:
        row = session.get(FraudVerdict, user_id)
        assert row is not None
        assert row.verdict == "ok"
    # New rules deployed: reinstalls are now a stop factor.
    server.services.abuse.rules = RuleSet.loads(
        'version = "v-new"\n[thresholds]\nsuspicious = 30.0\nmalicious = 100.0\n'
        '[[stop]]\nid = "reinstall"\ndescription = "x"\nwhen = [{ types = ["app_reinstalled"] }]\n'
    )
    response = server.client.get("/v1/devices", headers=server.auth(token))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_blocked"


def test_a_second_account_presenting_a_blocked_users_device_key_is_blocked(
    server: Harness,
) -> None:
    token = server.user("first")
    device = server.register(token, "phone")
    block(server, "first")
    second = server.user("second")
    response = server.client.post(
        "/v1/devices",
        json={
            "device_id": "phone",
            "app_version": "1.0.0",
            "public_key": key_to_jwk(device.key.public_key()),
        },
        headers=server.auth(second),
    )
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "key_already_registered"
    assert server.services.abuse.explain("second").verdict == Verdict.MALICIOUS
    refused_blocked(
        server.client.post(
            "/v1/imls",
            json={"model_id": "m1", "device_id": "phone"},
            headers=server.auth(second, "phone"),
        )
    )
