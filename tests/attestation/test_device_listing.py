"""Device listings show each device's attestation: the API's ``GET /v1/devices`` and
``modelseal admin devices list``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk
from modelseal.server.cli import admin_app
from tests.attestation.server_helpers import challenge, dev_attestation
from tests.server.conftest import FAST_ARGON2, TEST_GENERATOR, Harness, start


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    yield from start(tmp_path, log_stream, attestation={"insecure_dev": True})


def _attested_enroll(h: Harness, token: str, device_id: str) -> dict[str, Any]:
    key = RecipientPrivateKey.generate(KEM.X25519)
    body = {
        "device_id": device_id,
        "app_version": "1.0.0",
        "public_key": key_to_jwk(key.public_key()),
        "attestation": dev_attestation(challenge(h, token, "enroll"), key),
    }
    response = h.client.post("/v1/devices", json=body, headers=h.auth(token))
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


def test_the_device_list_shows_the_latest_attestation(server: Harness) -> None:
    token = server.user("nina")
    server.clock.now = 1_800_000_000
    created = _attested_enroll(server, token, "attested")
    expected = {
        "platform": "insecure-dev",
        "level": "insecure-dev",
        "verified_at": 1_800_000_000,
        "signals": [],
    }
    assert created["attestation"] == expected
    server.register(token, "plain")
    listed = server.client.get("/v1/devices", headers=server.auth(token)).json()["devices"]
    assert {d["device_id"]: d["attestation"] for d in listed} == {
        "attested": expected,
        "plain": None,
    }
    # Another user's attestation is not shown as this user's.
    other = server.user("omar")
    server.register(other, "attested")
    theirs = server.client.get("/v1/devices", headers=server.auth(other)).json()["devices"]
    assert [d["attestation"] for d in theirs] == [None]


def test_admin_devices_list_shows_the_attestation_column(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    # log_stream: the admin CLI points logging at the runner's stream, closed afterwards;
    # the fixture's teardown points it away again for the tests that follow.
    config = tmp_path / "server.toml"
    auth = "".join(f"{k} = {v}\n" for k, v in FAST_ARGON2.items())
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nsweep_interval_seconds = 0\n'
        f"[auth]\n{auth}[attestation]\ninsecure_dev = true\n"
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
    )
    from fastapi.testclient import TestClient

    from modelseal.server.app import create_app
    from modelseal.server.clock import ManualClock
    from modelseal.server.settings import load_settings

    settings = load_settings(config)
    clock = ManualClock()
    clock.now = 1_800_000_000
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        h = Harness(client, app.state.services, clock, settings, io.StringIO())
        token = h.user("pia")
        _attested_enroll(h, token, "attested")
        h.register(token, "plain")
    result = CliRunner().invoke(admin_app, ["--config", str(config), "devices", "list"])
    assert result.exit_code == 0, result.output
    columns = {line.split("\t")[1]: line.split("\t")[-1] for line in result.stdout.splitlines()}
    assert columns == {
        "attested": "insecure-dev:insecure-dev@2027-01-15T08:00:00Z",
        "plain": "-",
    }
