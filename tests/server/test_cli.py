"""``modelseal admin`` commands, through Typer's runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from .admin_helpers import admin, write_admin_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_admin_config(tmp_path)


def test_users_and_tokens_are_managed_from_the_command_line(config: Path) -> None:
    code, out, _ = admin(config, "users", "create", "alice")
    assert code == 0
    token = out.strip()
    assert token.startswith("ms_")
    code, _, err = admin(config, "users", "create", "alice")
    assert code == 1
    assert "error: conflict:" in err
    code, out, _ = admin(config, "tokens", "create", "alice")
    assert code == 0
    assert out.strip().startswith("ms_")
    assert out.strip() != token
    token_id = token.split("_")[1]
    assert admin(config, "tokens", "revoke", token_id)[0] == 0
    code, out, _ = admin(config, "tokens", "list", "alice")
    assert code == 0
    assert token_id in out
    assert "revoked -" not in out.splitlines()[0]
    code, _, err = admin(config, "tokens", "revoke", "ffffffffffffffff")
    assert code == 1
    assert "not_found" in err
    code, out, _ = admin(config, "users", "list")
    assert "alice" in out
    assert token not in out


def test_models_keys_sweep_and_schema_commands_run(config: Path) -> None:
    code, out, _ = admin(config, "models", "list")
    assert code == 0
    assert '"id": "m1"' in out
    code, out, _ = admin(config, "rotate-issuer-key", "--alg", "ES256")
    assert code == 0
    assert [line.split("\t")[2].split()[0] for line in out.splitlines()] == ["retiring", "active"]
    code, out, _ = admin(config, "sweep")
    assert code == 0
    assert out.startswith("expired 0")
    code, out, _ = admin(config, "db", "upgrade")
    assert code == 0
    assert "schema at" in out
    assert admin(config, "devices", "list")[0] == 0
    assert admin(config, "issuances", "list")[0] == 0
    code, _, err = admin(config, "devices", "revoke", "nope")
    assert code == 1
    assert "not_found" in err


def test_a_broken_config_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "production"\n')
    code, _, err = admin(bad, "models", "list")
    assert code == 1
    assert "error: config_invalid:" in err
