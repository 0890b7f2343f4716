"""``POST /v1/events``: the client's outbox shape, validation, and whose devices count."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sqlalchemy import select

from modelseal.client.outbox import Event as OutboxEvent
from modelseal.fraud import Verdict
from modelseal.server.db.models import Event
from tests.server.conftest import Harness

from .conftest import abuse_overrides, start


def post(h: Harness, token: str, body: Any, **headers: str) -> Any:
    return h.client.post("/v1/events", json=body, headers={**h.auth(token), **headers})


def app_events(h: Harness) -> list[Event]:
    with h.services.sessions() as session:
        return list(session.scalars(select(Event).where(Event.source == "app")))


def test_the_client_outbox_batch_is_accepted_and_filed_under_the_caller(server: Harness) -> None:
    token = server.user("alice")
    server.register(token, "phone")
    # Exactly what modelseal.client.sdk sends from its outbox.
    queued = [
        OutboxEvent("tls_pin_mismatch", 1_800_000_000, {"host": "api", "observed_pin": "sha256/x"}),
        OutboxEvent("download_failure", 1_800_000_001, {"model_id": "m1", "reason": "link_used"}),
    ]
    body = {"device_id": "phone", "events": [e.to_json() for e in queued]}
    response = post(server, token, body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    stored = app_events(server)
    assert [e.type for e in stored] == ["tls_pin_mismatch", "download_failed"]
    principal = server.services.authenticator.authenticate(token)
    for event in stored:
        assert (event.user_id, event.device_id, event.source) == (principal.user_id, "phone", "app")
        assert event.created_at == int(server.clock())
        assert event.details["ip"] == "testclient"
    assert stored[0].details["client_at"] == 1_800_000_000


def test_another_users_device_cannot_be_reported_on(server: Harness) -> None:
    alice = server.user("alice")
    server.register(alice, "alice-phone")
    bob = server.user("bob")
    server.register(bob, "bob-phone")
    body = {"device_id": "alice-phone", "events": [{"type": "root_detected"}]}
    response = post(server, bob, body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert app_events(server) == []
    # Nor can a header name one device while the body names another.
    body = {"device_id": "bob-phone", "events": [{"type": "root_detected"}]}
    response = post(server, bob, body, **{"X-Modelseal-Device": "alice-phone"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "event_invalid"
    assert app_events(server) == []


def test_bad_event_batches_are_refused_with_a_clear_code(server: Harness) -> None:
    token = server.user("alice")
    server.register(token, "phone")
    one = {"type": "root_detected", "at": 1, "details": {}}
    bad_bodies = [
        {"device_id": "phone", "events": []},
        {"device_id": "phone", "events": [{**one, "type": "made_up"}]},
        # An app cannot report a server fact such as a decoy use.
        {"device_id": "phone", "events": [{**one, "type": "honey_token_used"}]},
        {"device_id": "phone", "events": [{**one, "extra": 1}]},
        {"device_id": "phone", "events": [{**one, "at": "yesterday"}]},
        {"device_id": "phone", "events": [{**one, "details": {"Bad-Key": 1}}]},
        {"device_id": "phone", "events": [{**one, "details": {"k": "x" * 300}}]},
        {"device_id": "phone", "events": [{**one, "details": {"k": {"nested": 1}}}]},
        {"device_id": "phone", "events": [one] * 257},
        {"device_id": "../etc", "events": [one]},
        {"events": [one]},
        [one],
    ]
    for body in bad_bodies:
        response = post(server, token, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "invalid_request"
    assert app_events(server) == []
    response = server.client.post(
        "/v1/events",
        content=b"{not json",
        headers={**server.auth(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert (
        post(
            server, "ms_0000000000000000_" + "a" * 43, {"device_id": "phone", "events": [one]}
        ).status_code
        == 401
    )


def test_reported_events_move_the_verdict(server: Harness) -> None:
    token = server.user("rooted")
    server.register(token, "phone")
    body = {"device_id": "phone", "events": [{"type": "root_detected"}]}
    assert post(server, token, body).status_code == 202
    assert server.services.abuse.explain("rooted").verdict == Verdict.SUSPICIOUS
    body = {"device_id": "phone", "events": [{"type": "app_signature_invalid"}]}
    assert post(server, token, body).status_code == 202
    info = server.services.abuse.explain("rooted")
    assert info.verdict == Verdict.MALICIOUS
    assert "app_signature_invalid" in [rule["rule_id"] for rule in info.fired]


def test_the_api_version_header_is_checked_and_recorded(server: Harness) -> None:
    token = server.user("old-app")
    server.register(token, "phone")
    ok = server.client.get(
        "/v1/devices", headers={**server.auth(token), "X-Modelseal-Api-Version": "1"}
    )
    assert ok.status_code == 200
    for version in ("0", "2", "x" * 40):
        response = server.client.get(
            "/v1/devices", headers={**server.auth(token), "X-Modelseal-Api-Version": version}
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "api_version_unsupported"
    # Three refusals within one interval: one event.
    assert server.event_types().count("api_version_invalid") == 1


def test_a_user_cannot_flood_the_events_table(tmp_path: Path, log_stream: io.StringIO) -> None:
    for h in start(tmp_path, log_stream, **abuse_overrides(app_events_per_user_limit="10/day")):
        token = h.user("alice")
        h.register(token, "phone")
        other = h.user("bob")
        h.register(other, "phone")
        batch = {"device_id": "phone", "events": [{"type": "app_reinstalled"}] * 4}
        assert [post(h, token, batch).status_code for _ in range(2)] == [202, 202]
        # The third batch would pass the cap: refused whole, nothing stored.
        response = post(h, token, batch)
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) > 0
        assert len([e for e in app_events(h) if e.type == "app_reinstalled"]) == 8
        # A smaller one still fits; another user's cap is their own.
        small = {"device_id": "phone", "events": [{"type": "app_reinstalled"}] * 2}
        assert post(h, token, small).status_code == 202
        assert post(h, token, small).status_code == 429
        assert post(h, other, batch).status_code == 202
        assert len(app_events(h)) == 14
