"""Key lifecycle on the local backend: create, activate, retire, revoke; JWKS; audit; CLI.

Every transition is checked for what the issuer JWK Set serves afterwards, for its
audit entry, and for the transitions it must refuse.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from modelseal.audit.note import parse_verifier_key
from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm, key_to_jwk
from modelseal.keys.jwk import save_key
from modelseal.server.container import build_services
from modelseal.server.db.key_models import ManagedKey
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice import (
    KeyNotFoundError,
    KeyPurpose,
    KeyService,
    KeyState,
    KeyStateError,
    KeyUnsupportedError,
)
from modelseal.server.logging import configure_logging
from tests.server.admin_helpers import admin, write_admin_config
from tests.server.conftest import Harness, make_settings, start

ACTOR = "test-operator"
ISSUER = KeyPurpose.ISSUER


def served(server: Harness) -> tuple[list[str], list[str]]:
    document = server.jwks()
    return [k["kid"] for k in document["keys"]], document["revoked"]


def key_entries(server: Harness) -> list[tuple[str, str, str, str]]:
    """(action, actor, kid, state) of every key audit entry, in log order."""
    return [
        (e.action, e.actor, e.details["kid"], e.details["state"])
        for e in server.services.audit.entries()
        if e.action.startswith("key.")
    ]


def test_create_activate_retire_revoke_and_what_the_jwks_serves_at_each_step(
    server: Harness,
) -> None:
    keys: KeyService = server.services.keys
    (first,) = keys.list_keys(ISSUER)
    assert served(server) == ([first.kid], [])
    before = len(key_entries(server))

    # created: published ahead of use, so devices can pin it before it signs.
    second = keys.create(ISSUER, "ES256", actor=ACTOR)
    assert second.state is KeyState.CREATED
    assert served(server) == ([first.kid, second.kid], [])
    assert keys.issuer_signer().kid == first.kid

    # activate: it signs; the old key retires but stays published for its packages.
    keys.activate(ISSUER, second.kid, actor=ACTOR)
    assert keys.issuer_signer().kid == second.kid
    states = {k.kid: k for k in keys.list_keys(ISSUER)}
    assert states[first.kid].state is KeyState.RETIRING
    assert served(server) == ([first.kid, second.kid], [])
    assert "issuer_key_rotated" in server.event_types()

    # retire: the retiring key leaves the set at once and its private file is gone.
    keys.retire(ISSUER, first.kid, actor=ACTOR)
    assert served(server) == ([second.kid], [])
    assert not (server.settings.keyring_dir / f"{first.kid}.jwk").exists()

    # revoke: a created key never used, then the retired one is refused.
    third = keys.create(ISSUER, actor=ACTOR)
    assert served(server) == ([second.kid, third.kid], [])
    keys.revoke(ISSUER, third.kid, actor=ACTOR, reason="test")
    assert served(server) == ([second.kid], [third.kid])
    with pytest.raises(KeyStateError):
        keys.revoke(ISSUER, first.kid, actor=ACTOR, reason="too late")

    assert key_entries(server)[before:] == [
        ("key.created", ACTOR, second.kid, "created"),
        ("key.retired", ACTOR, first.kid, "retiring"),
        ("key.activated", ACTOR, second.kid, "active"),
        ("key.retired", ACTOR, first.kid, "retired"),
        ("key.created", ACTOR, third.kid, "created"),
        ("key.revoked", ACTOR, third.kid, "revoked"),
    ]


def test_a_retiring_key_leaves_the_jwks_when_its_window_ends(server: Harness) -> None:
    keys = server.services.keys
    old = keys.issuer_signer().kid
    new = keys.rotate(ISSUER, actor=ACTOR)
    window = 900 + 300  # the longest package TTL of the test models, plus the leeway
    server.clock.advance(window - 1)
    assert served(server)[0] == [old, new.kid]
    server.clock.advance(1)
    assert served(server)[0] == [new.kid]
    assert keys.prune() == [old]
    assert ("key.retired", "system", old, "retired") in key_entries(server)


def test_revoking_the_active_key_needs_force_and_then_nothing_signs(server: Harness) -> None:
    keys = server.services.keys
    active = keys.issuer_signer().kid
    with pytest.raises(KeyStateError, match="active") as caught:
        keys.revoke(ISSUER, active, actor=ACTOR, reason="compromise")
    assert caught.value.code == "key_state_conflict"
    keys.revoke(ISSUER, active, actor=ACTOR, reason="compromise", force=True)
    assert served(server) == ([], [active])
    with pytest.raises(ConfigurationError, match="exactly one active issuer key"):
        keys.issuer_signer()
    replacement = keys.rotate(ISSUER, actor=ACTOR)
    assert served(server) == ([replacement.kid], [active])


@pytest.mark.parametrize(
    ("which", "call", "error"),
    [
        ("active", "activate", KeyStateError),
        ("active", "retire", KeyStateError),
        ("retired", "activate", KeyStateError),
        ("retired", "retire", KeyStateError),
        ("retired", "revoke", KeyStateError),
        ("revoked", "activate", KeyStateError),
        ("revoked", "retire", KeyStateError),
        ("revoked", "revoke", KeyStateError),
        ("missing", "activate", KeyNotFoundError),
        ("missing", "retire", KeyNotFoundError),
        ("missing", "revoke", KeyNotFoundError),
    ],
)
def test_transitions_that_make_no_sense_are_refused(
    server: Harness, which: str, call: str, error: type[Exception]
) -> None:
    keys = server.services.keys
    retired = keys.create(ISSUER, actor=ACTOR).kid
    keys.retire(ISSUER, retired, actor=ACTOR)
    revoked = keys.create(ISSUER, actor=ACTOR).kid
    keys.revoke(ISSUER, revoked, actor=ACTOR, reason="x")
    kid = {
        "active": keys.issuer_signer().kid,
        "retired": retired,
        "revoked": revoked,
        "missing": "00" * 16,
    }[which]
    operations: dict[str, Callable[[], object]] = {
        "activate": lambda: keys.activate(ISSUER, kid, actor=ACTOR),
        "retire": lambda: keys.retire(ISSUER, kid, actor=ACTOR),
        "revoke": lambda: keys.revoke(ISSUER, kid, actor=ACTOR, reason="x"),
    }
    before = key_entries(server)
    with pytest.raises(error):
        operations[call]()
    assert key_entries(server) == before  # a refused transition leaves no audit entry


def test_a_key_change_whose_audit_entry_fails_is_not_committed(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = server.services.keys
    created = keys.create(ISSUER, actor=ACTOR)
    states = {k.kid: k.state for k in keys.list_keys()}

    def broken(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(server.services.audit, "append", broken)
    with pytest.raises(RuntimeError):
        keys.activate(ISSUER, created.kid, actor=ACTOR)
    with pytest.raises(RuntimeError):
        keys.revoke(ISSUER, created.kid, actor=ACTOR, reason="x")
    monkeypatch.undo()
    assert {k.kid: k.state for k in keys.list_keys()} == states
    assert (server.settings.keyring_dir / f"{created.kid}.jwk").exists()


def test_local_link_keys_come_from_settings_and_are_not_managed(server: Harness) -> None:
    with pytest.raises(KeyUnsupportedError, match="link_signing_key") as caught:
        server.services.keys.create(KeyPurpose.LINK, actor=ACTOR)
    assert caught.value.code == "key_unsupported"
    assert {k.purpose for k in server.services.keys.list_keys()} == {
        KeyPurpose.ISSUER,
        KeyPurpose.CHECKPOINT,
    }


def test_a_wrong_algorithm_for_the_purpose_is_refused(server: Harness) -> None:
    with pytest.raises(KeyUnsupportedError, match="must use one of"):
        server.services.keys.create(ISSUER, "HS256", actor=ACTOR)


def test_the_checkpoint_key_signs_the_audit_checkpoints(server: Harness) -> None:
    keys = server.services.keys
    (info,) = keys.list_keys(KeyPurpose.CHECKPOINT)
    assert info.alg == "Ed25519"
    signer = server.services.audit.signer
    assert signer.verifier_key().startswith(server.services.audit.origin + "+")
    public = keys.checkpoint_signer().public_key().raw
    assert parse_verifier_key(signer.verifier_key()).public_key == public


def test_a_keyring_made_before_the_key_service_is_imported_once(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    directory = tmp_path / "data" / "keyring"
    directory.mkdir(parents=True, mode=0o700)
    active = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
    retiring = IssuerPrivateKey.generate(SignatureAlgorithm.ES256)
    save_key(directory / f"{active.kid}.jwk", active)
    save_key(directory / f"{retiring.kid}.jwk", retiring)
    state = {
        "version": 1,
        "keys": [
            {
                "kid": "ab" * 16,
                "alg": "Ed25519",
                "state": "retired",
                "created_at": 10,
                "retiring_until": 20,
                "retired_at": 20,
            },
            {
                "kid": retiring.kid,
                "alg": "ES256",
                "state": "retiring",
                "created_at": 30,
                "retiring_until": 4_000_000_000,
                "retired_at": None,
            },
            {
                "kid": active.kid,
                "alg": "Ed25519",
                "state": "active",
                "created_at": 40,
                "retiring_until": None,
                "retired_at": None,
            },
        ],
    }
    (directory / "state.json").write_text(json.dumps(state))
    for server in start(tmp_path, log_stream):
        keys = server.services.keys
        assert keys.issuer_signer().kid == active.kid
        assert {k.kid: k.state for k in keys.list_keys(ISSUER)} == {
            "ab" * 16: KeyState.RETIRED,
            retiring.kid: KeyState.RETIRING,
            active.kid: KeyState.ACTIVE,
        }
        assert served(server) == ([retiring.kid, active.kid], [])
        assert not (directory / "state.json").exists()
        assert (directory / "state.json.imported").exists()
        imported = [
            e
            for e in server.services.audit.entries()
            if e.details.get("imported_from") == "state.json"
        ]
        assert len(imported) == 3
    # A second start imports nothing again.
    services = build_services(make_settings(tmp_path / "data"))
    try:
        assert len(services.keys.list_keys(ISSUER)) == 3
    finally:
        services.close()


# --- the admin CLI -----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_admin_config(tmp_path)


def test_the_admin_cli_runs_the_whole_lifecycle(config: Path) -> None:
    code, out, _ = admin(config, "keys", "list")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert sorted(row[0] for row in rows) == ["checkpoint", "issuer"]
    (old,) = [row[1] for row in rows if row[0] == "issuer"]

    code, out, _ = admin(config, "keys", "create", "issuer", "--alg", "ES256")
    assert code == 0
    new = out.split("\t")[1]
    assert out.split("\t")[4] == "created"
    code, out, _ = admin(config, "keys", "activate", "issuer", new)
    assert code == 0
    assert out.split("\t")[4].startswith("active")
    code, out, err = admin(config, "keys", "retire", "issuer", new)
    assert code == 1
    assert "error: key_state_conflict:" in err
    code, out, _ = admin(config, "keys", "revoke", "issuer", old, "--reason", "lost laptop")
    assert code == 0
    assert "revoked" in out
    assert "lost laptop" in out
    code, out, err = admin(config, "keys", "activate", "issuer", "nope")
    assert code == 1
    assert "error: key_not_found:" in err
    code, out, err = admin(config, "keys", "create", "link")
    assert code == 1
    assert "error: key_unsupported:" in err
    code, out, _ = admin(config, "keys", "list", "--purpose", "issuer")
    assert [line.split("\t")[4].split()[0] for line in out.splitlines()] == ["revoked", "active"]

    configure_logging(io.StringIO())  # the runner closed the stream the CLI logged to
    services = build_services(make_settings(config.parent / "data"))
    try:
        actors = {e.actor for e in services.audit.entries() if e.action.startswith("key.")}
        assert any(actor.startswith("admin:") for actor in actors)
        document = services.keyring.jwks()
        assert [k["kid"] for k in document["keys"]] == [new]
        assert document["revoked"] == [old]
    finally:
        services.close()


def test_private_key_material_never_reaches_the_database_the_audit_log_or_the_logs(
    server: Harness,
) -> None:
    keys = server.services.keys
    keys.rotate(ISSUER, "ES256", actor=ACTOR)
    keys.create(KeyPurpose.CHECKPOINT, actor=ACTOR)
    token = server.user("alice")
    device = server.register(token, "phone")
    url = server.issue(token, device, "m1")["download_url"]
    assert server.client.get(url, headers=server.auth(token, "phone")).status_code == 200
    secrets_ = []
    for path in server.settings.keyring_dir.glob("*.jwk"):
        document = json.loads(path.read_text())
        secrets_.append(document["d"])
        secrets_.append(base64.urlsafe_b64decode(document["d"] + "==").hex())
    assert len(secrets_) >= 6
    link_token = url.rsplit("/", 1)[1]
    audit = json.dumps([e.to_json() for e in server.services.audit.entries()])
    database = (server.settings.data_dir / "modelseal.db").read_bytes()
    wal = server.settings.data_dir / "modelseal.db-wal"
    if wal.exists():
        database += wal.read_bytes()
    logs = server.logs.getvalue()
    for needle in [*secrets_, link_token]:
        assert needle not in audit
        assert needle not in logs
        assert needle.encode() not in database


def test_a_key_written_into_the_database_alone_is_never_published(server: Harness) -> None:
    keys = server.services.keys
    genuine = keys.issuer_signer().kid
    attacker = IssuerPrivateKey.generate(SignatureAlgorithm.ES256)
    attacker_jwk = key_to_jwk(attacker.public_key())
    created = keys.create(ISSUER, actor=ACTOR)
    with server.services.sessions.begin() as session:
        # A row of the attacker's own key, and a genuine row whose public JWK is swapped.
        session.add(
            ManagedKey(
                purpose="issuer",
                kid=attacker.kid,
                backend="local",
                alg="ES256",
                state="active",
                handle=f"{attacker.kid}.jwk",
                public_jwk=attacker_jwk,
                created_at=0,
            )
        )
        session.execute(
            update(ManagedKey).where(ManagedKey.kid == created.kid).values(public_jwk=attacker_jwk)
        )
    kids, _ = served(server)
    assert attacker.kid not in kids
    assert kids == [genuine, created.kid]
    assert served_key(server, created.kid) != attacker_jwk
    assert "issuer_key_unusable" in server.logs.getvalue()


def served_key(server: Harness, kid: str) -> dict[str, Any]:
    (key,) = [k for k in server.jwks()["keys"] if k["kid"] == kid]
    return dict(key)
