"""Failed logins against a known token id are filed, throttled, under the token's user."""

from __future__ import annotations

import io
from pathlib import Path

from modelseal.fraud import Verdict
from tests.server.conftest import Harness

from .conftest import abuse_overrides, start


def failures(h: Harness, user_id: int) -> list[dict[str, object]]:
    return [
        dict(e.details)
        for e in h.services.events.recent(type_="credential_failure", limit=1000)
        if e.user_id == user_id
    ]


def wrong_secret(token: str) -> str:
    """The same token id with another (well-formed) secret."""
    secret = token.rsplit("_", 1)[1]
    return token[: -len(secret)] + ("A" if secret[0] != "A" else "B") + secret[1:]


def test_a_wrong_secret_for_a_known_token_id_is_a_credential_failure_of_its_user(
    server: Harness,
) -> None:
    token = server.user("alice")
    user_id = server.services.authenticator.authenticate(token).user_id
    for _ in range(5):
        response = server.client.get(
            "/v1/devices", headers={"Authorization": f"Bearer {wrong_secret(token)}"}
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
    # One address, one interval: one row, carrying the address the rules count.
    assert failures(server, user_id) == [{"ip": "testclient"}]
    # A token id nobody has files nothing.
    bogus = "ms_" + "0" * 16 + "_" + "A" * 43
    response = server.client.get("/v1/devices", headers={"Authorization": f"Bearer {bogus}"})
    assert response.status_code == 401
    assert len(server.services.events.recent(type_="credential_failure", limit=1000)) == 1


def test_a_flood_from_many_addresses_writes_few_rows_and_never_blocks_the_owner(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    for h in start(tmp_path, log_stream, **abuse_overrides(auth_failure_limit=None)):
        token = h.user("victim")
        user_id = h.services.authenticator.authenticate(token).user_id
        cap = h.settings.abuse.credential_failure_events_per_interval
        for attempt in range(1000):  # a flood from 50 addresses
            h.services.abuse.auth_failed(f"192.0.2.{attempt % 50}", user_id=user_id)
        rows = failures(h, user_id)
        assert len(rows) == cap  # not one row per attempt
        assert len({row["ip"] for row in rows}) == cap  # the rules see the addresses
        with h.services.sessions.begin() as session:
            fired = {f.rule_id for f in h.services.abuse.assess_user(session, user_id).fired}
        assert {"credential_failures", "credential_failures_many_ips"} <= fired
        # Anyone can fail logins against an account: the owner is never limited by it.
        with h.services.sessions.begin() as session:
            assert h.services.abuse.verdict_of(session, user_id) is Verdict.OK
        response = h.client.get("/v1/devices", headers=h.auth(token))
        assert response.status_code == 200
