"""``modelseal admin fraud ...`` against a server data directory."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelseal.server.cli import admin_app
from modelseal.server.container import build_services
from modelseal.server.fraud_cli import parse_expiry
from modelseal.server.logging import configure_logging
from modelseal.server.settings import load_settings
from tests.server.conftest import FAST_ARGON2, TEST_GENERATOR


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nsweep_interval_seconds = 0\n'
        "[auth]\n"
        + "".join(f"{k} = {v}\n" for k, v in FAST_ARGON2.items())
        + f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
    )
    services = build_services(load_settings(path))
    services.accounts.create_user("alice")
    services.close()
    return path


def run(config: Path, *args: str) -> str:
    result = CliRunner().invoke(admin_app, ["--config", str(config), "fraud", *args])
    configure_logging(io.StringIO())  # the CLI logged to the runner's stream, now closed
    assert result.exit_code == 0, result.output
    return result.stdout


def test_override_explain_list_and_clear_from_the_command_line(config: Path) -> None:
    out = run(
        config,
        "override",
        "alice",
        "--verdict",
        "malicious",
        "--reason",
        "chargebacks",
        "--expires",
        "7d",
        "--json",
    )
    info = json.loads(out)
    assert (info["verdict"], info["computed"]) == ("malicious", "ok")
    assert info["override"]["reason"] == "chargebacks"
    assert info["override"]["expires_at"] - info["override"]["created_at"] == 7 * 86400
    assert "override: malicious" in run(config, "explain", "alice")
    assert run(config, "list").startswith("alice\tmalicious (override)")
    assert "alice: ok" in run(config, "clear", "alice", "--reason", "paid")
    services = build_services(load_settings(config))
    try:
        rows = services.audit.entries()
        actions = [e.action for e in rows]
    finally:
        services.close()
    assert actions.count("fraud.override") == 2


def test_unknown_users_and_bad_expiries_fail_with_a_code(config: Path) -> None:
    result = CliRunner().invoke(admin_app, ["--config", str(config), "fraud", "explain", "nobody"])
    assert result.exit_code == 1
    assert "not_found" in result.output
    result = CliRunner().invoke(
        admin_app,
        [
            "--config",
            str(config),
            "fraud",
            "override",
            "alice",
            "--verdict",
            "ok",
            "--reason",
            "x",
            "--expires",
            "soon",
        ],
    )
    configure_logging(io.StringIO())
    assert result.exit_code == 2
    assert parse_expiry("12h", 100) == 100 + 12 * 3600
    assert parse_expiry("2030-01-01T00:00:00", 0) == 1893456000


def test_admin_token_prints_a_token_and_its_argon2id_hash(config: Path) -> None:
    out = run(config, "admin-token")
    assert out.startswith("token: msa_")
    assert "$argon2id$" in out


STRICT_RULES = """
version = "strict-1"
description = "emulators are a stop factor"
[thresholds]
suspicious = 30.0
malicious = 100.0
[[stop]]
id = "emulator_stop"
description = "an emulator"
when = [{ types = ["emulator_detected"] }]
"""


def test_rules_check_accepts_a_valid_file_and_names_the_bad_member(
    config: Path, tmp_path: Path
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(STRICT_RULES)
    assert "ok, version strict-1, 1 stop factors, 0 points rules" in run(
        config, "rules", "check", str(good)
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(STRICT_RULES.replace('types = ["emulator_detected"]', "min_count = 0"))
    result = CliRunner().invoke(admin_app, ["fraud", "rules", "check", str(bad)])
    assert result.exit_code == 1
    assert "error: fraud_rules_invalid:" in result.output
    assert "stop[0].when[0]" in result.output


def test_rules_replay_shows_the_verdicts_a_new_rules_file_would_change(
    config: Path, tmp_path: Path
) -> None:
    services = build_services(load_settings(config))
    try:
        alice = services.accounts.find_user("alice")
        services.accounts.create_user("bob")
        bob = services.accounts.find_user("bob")
        services.events.record("emulator_detected", user_id=alice.id, device_id="p")
        services.events.record("app_reinstalled", user_id=bob.id, device_id="p")
    finally:
        services.close()
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT_RULES)
    out = json.loads(run(config, "rules", "replay", str(strict), "--json"))
    assert out["new"] == "strict-1"
    assert out["users"] == 2
    assert [(c["user_id"], c["after"], c["rules_after"]) for c in out["changes"]] == [
        (alice.id, "malicious", ["emulator_stop"])
    ]
    assert "-> strict-1, 2 users" in run(config, "rules", "replay", str(strict))
