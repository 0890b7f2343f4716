"""Issuer keyring: first key on start, rotation, publication until packages expire."""

from __future__ import annotations

import io
from pathlib import Path

from modelseal.keys import SignatureAlgorithm, parse_jwks
from modelseal.server.container import build_services

from .conftest import Harness, start


def test_the_keyring_is_created_private_with_one_active_key(server: Harness) -> None:
    keyring = server.services.keyring
    directory = server.settings.keyring_dir
    assert directory.stat().st_mode & 0o777 == 0o700
    [state] = keyring.states()
    assert state.state == "active"
    [checkpoint] = server.services.keys.list_keys("checkpoint")
    files = sorted(p.name for p in directory.glob("*.jwk"))
    assert files == sorted([f"{state.kid}.jwk", f"checkpoint-{checkpoint.kid}.jwk"])
    for name in files:
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert keyring.active_signer().kid == state.kid
    jwks = keyring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [state.kid]
    assert "d" not in jwks["keys"][0]
    keyring.ensure()  # idempotent
    assert len(keyring.states()) == 1


def test_rotation_keeps_the_old_key_published_until_its_packages_expire(
    server: Harness,
) -> None:
    keyring, clock = server.services.keyring, server.clock
    directory = server.settings.keyring_dir
    now = int(clock())
    old = keyring.active_signer().kid
    new = keyring.rotate(SignatureAlgorithm.ES256)
    assert keyring.active_signer().kid == new.kid
    assert keyring.active_signer().alg is SignatureAlgorithm.ES256
    states = {s.kid: s for s in keyring.states()}
    assert states[old].state == "retiring"
    assert states[old].retiring_until == now + 900 + 300  # longest package TTL + leeway
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old, new.kid}
    clock.advance(1199)
    assert keyring.prune() == []
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {old, new.kid}
    clock.advance(1)
    assert {k["kid"] for k in keyring.jwks()["keys"]} == {new.kid}
    assert keyring.prune() == [old]
    assert not (directory / f"{old}.jwk").exists()
    assert {s.kid: s.state for s in keyring.states()}[old] == "retired"


def test_a_running_server_sees_a_rotation_made_by_another_process(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    for server in start(tmp_path, log_stream):
        token = server.user("alice")
        device = server.register(token, "phone")
        before = server.issue(token, device, "m2")
        package = server.client.get(before["download_url"], headers=server.auth(token, "phone"))
        # The admin command works on the same database through services of its own.
        other = build_services(server.settings, clock=server.clock)
        try:
            new = other.keyring.rotate()
        finally:
            other.close()
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
        keyring = server.services.keyring
        assert [k.state for k in keyring.states()] == ["retiring", "active"]
        server.services.sweep.run_once()
        assert [k.state for k in keyring.states()] == ["retired", "active"]
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
