"""Issuer keyring: first key on start, rotation, publication until packages expire."""

from __future__ import annotations

import io
import json
from pathlib import Path

from modelseal.keys import SignatureAlgorithm, parse_jwks
from modelseal.server.clock import ManualClock
from modelseal.server.services.keyring import Keyring

from .conftest import Harness, start


def test_the_keyring_is_created_private_with_one_active_key(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "kr", ManualClock(1000), retire_after_seconds=100)
    keyring.ensure()
    assert (tmp_path / "kr").stat().st_mode & 0o777 == 0o700
    files = sorted(p.name for p in (tmp_path / "kr").iterdir())
    [state] = keyring.states()
    assert state.state == "active"
    assert files == [".lock", f"{state.kid}.jwk", "state.json"]
    for name in files:
        assert (tmp_path / "kr" / name).stat().st_mode & 0o777 == 0o600
    assert keyring.active_signer().kid == state.kid
    jwks = keyring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [state.kid]
    assert "d" not in jwks["keys"][0]
    keyring.ensure()  # idempotent
    assert len(keyring.states()) == 1


def test_rotation_keeps_the_old_key_published_until_its_packages_expire(tmp_path: Path) -> None:
    clock = ManualClock(1000)
    keyring = Keyring(tmp_path / "kr", clock, retire_after_seconds=1200)
    keyring.ensure()
    old = keyring.active_signer().kid
    new = keyring.rotate(SignatureAlgorithm.ES256)
    assert keyring.active_signer().kid == new.kid
    assert keyring.active_signer().alg is SignatureAlgorithm.ES256
    states = {s.kid: s for s in keyring.states()}
    assert states[old].state == "retiring"
    assert states[old].retiring_until == 2200
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old, new.kid}
    clock.now = 2199
    assert keyring.prune() == []
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old, new.kid}
    clock.now = 2200
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {new.kid}
    assert keyring.prune() == [old]
    assert not (tmp_path / "kr" / f"{old}.jwk").exists()
    assert {s.kid: s.state for s in keyring.states()}[old] == "retired"


def test_a_running_server_sees_a_rotation_made_by_another_process(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    for server in start(tmp_path, log_stream):
        token = server.user("alice")
        device = server.register(token, "phone")
        before = server.issue(token, device, "m2")
        package = server.client.get(before["download_url"], headers=server.auth(token, "phone"))
        # The admin command works on the same directory through its own Keyring object.
        other = Keyring(server.settings.keyring_dir, server.clock, retire_after_seconds=900 + 300)
        new = other.rotate()
        jwks = server.jwks()
        assert len(jwks["keys"]) == 2
        response = server.client.get("/.well-known/modelseal/issuer-jwks.json")
        assert response.headers["cache-control"] == "public, max-age=300"
        # The old package still opens against the served set; a new one uses the new key.
        server.open(package.content, device)
        after = server.issue(token, device, "m2")
        fresh = server.client.get(after["download_url"], headers=server.auth(token, "phone"))
        assert server.open(fresh.content, device).header.sig.kid == new.kid  # type: ignore[union-attr]
        # Once every package the old key signed has expired, it leaves the set.
        server.clock.advance(1200)
        assert [k["kid"] for k in server.jwks()["keys"]] == [new.kid]
        state = json.loads((server.settings.keyring_dir / "state.json").read_text())
        assert [k["state"] for k in state["keys"]] == ["retiring", "active"]
        server.services.sweep.run_once()
        state = json.loads((server.settings.keyring_dir / "state.json").read_text())
        assert [k["state"] for k in state["keys"]] == ["retired", "active"]
        assert parse_jwks(server.jwks())


def test_issuance_uses_the_active_key_of_the_configured_algorithm(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    for server in start(tmp_path, log_stream, issuer_key_alg="ES256"):
        harness: Harness = server
        token = harness.user("alice")
        device = harness.register(token, "phone")
        job = harness.issue(token, device, "m2")
        body = harness.client.get(job["download_url"], headers=harness.auth(token, "phone"))
        sig = harness.open(body.content, device).header.sig
        assert sig is not None
        assert sig.alg is SignatureAlgorithm.ES256
