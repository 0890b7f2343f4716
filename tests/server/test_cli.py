"""``modelseal admin`` commands, through Typer's runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.server.cli import admin_app

from .conftest import TEST_GENERATOR

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nsweep_interval_seconds = 0\n'
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
    )
    return path


def admin(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(admin_app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


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
