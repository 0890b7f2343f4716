"""``modelseal audit``: verify, show, proof and verify-proof against a real data directory."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from typer.testing import CliRunner

from modelseal.audit.checkpoint import Checkpoint, sign_checkpoint
from modelseal.audit.merkle import leaf_hash, root_hash
from modelseal.audit.note import Ed25519NoteSigner
from modelseal.cli.main import app
from modelseal.server.clock import ManualClock
from modelseal.server.container import Services, build_services
from modelseal.server.services.audit import export_checkpoint
from tests.server.conftest import make_settings

runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Iterator[tuple[Services, Path]]:
    """A server's data directory with a few audited actions and a checkpoint."""
    settings = make_settings(tmp_path / "data")
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\nsweep_interval_seconds = 0\n')
    services = build_services(settings, clock=ManualClock())
    try:
        for i in range(6):
            with services.sessions.begin() as session:
                services.audit.append(
                    session,
                    "test.cli",
                    actor="system",
                    user_id=i % 2 + 1,
                    device_id=f"dev-{i % 3}",
                    model_id="m1" if i % 2 else "m2",
                    details={"i": i},
                )
        services.audit.checkpoint()
        yield services, config
    finally:
        services.close()


def run(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", "--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr


def database(services: Services) -> str:
    return services.settings.resolved_database_url.removeprefix("sqlite:///")


def test_verify_passes_on_an_untouched_log(data: tuple[Services, Path]) -> None:
    services, config = data
    code, out, err = run(config, "verify", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["entries"] == report["covered"] == services.audit.appended_size()


def test_verify_names_the_changed_entry_and_exits_4(data: tuple[Services, Path]) -> None:
    services, config = data
    assert run(config, "verify", "--entry", "5")[0] == 0
    with sqlite3.connect(database(services)) as conn:
        (text,) = conn.execute("SELECT entry FROM audit_entries WHERE seq = 5").fetchone()
        conn.execute(
            "UPDATE audit_entries SET entry = ? WHERE seq = 5",
            (text.replace('"i":1', '"i":7'),),
        )
    code, _out, err = run(config, "verify")
    assert code == 4
    assert err.splitlines()[-1].startswith("error[audit_chain_broken]:")
    assert "first bad entry 5" in err
    assert "Traceback" not in err
    code, _out, err = run(config, "verify", "--entry", "5")
    assert code == 4
    assert err.splitlines()[-1].startswith("error[audit_root_mismatch]:")


def test_verify_detects_truncation_after_a_published_checkpoint(
    data: tuple[Services, Path],
) -> None:
    services, config = data
    size = services.audit.appended_size()
    with sqlite3.connect(database(services)) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq >= ?", (size - 2,))
        conn.execute("DELETE FROM audit_checkpoints")  # the exported files remain
        conn.execute("UPDATE audit_state SET size = ?", (size - 2,))
    code, _out, err = run(config, "verify")
    assert code == 4
    assert err.splitlines()[-1].startswith("error[audit_truncated]:")


def test_verify_with_a_pinned_wrong_key_refuses_the_checkpoints(
    data: tuple[Services, Path],
) -> None:
    _services, config = data
    other = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    code, _out, err = run(config, "verify", "--key", other)
    assert code == 4
    assert err.startswith("error[audit_checkpoint_signature]:")


def test_show_filters_by_user_device_model_and_time(data: tuple[Services, Path]) -> None:
    _services, config = data
    code, out, _err = run(config, "show", "--user", "2", "--model", "m1", "--json")
    assert code == 0
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["details"]["i"] for e in entries] == [1, 3, 5]
    code, out, _err = run(config, "show", "--device", "dev-0", "--action", "test.cli")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["4", "7"]
    code, out, _err = run(config, "show", "--since", "2100-01-01T00:00:00Z")
    assert (code, out) == (0, "")
    code, _out, err = run(config, "show", "--since", "yesterday")
    assert code == 2
    assert "error[usage" in err


def test_a_proof_verifies_offline_and_fails_with_another_key(
    data: tuple[Services, Path], tmp_path: Path
) -> None:
    _services, config = data
    code, bundle, err = run(config, "proof", "--entry", "6")
    assert code == 0, err
    path = tmp_path / "proof.json"
    path.write_text(bundle)
    code, key, _err = run(config, "key")
    key = key.split()[0]
    result = runner.invoke(app, ["audit", "verify-proof", str(path), "--key", key, "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["entry"]["seq"] == 6
    other = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    result = runner.invoke(app, ["audit", "verify-proof", str(path), "--key", other])
    assert result.exit_code == 4
    document = json.loads(bundle)
    document["entry"] = document["entry"].replace('"i":2', '"i":3')
    path.write_text(json.dumps(document))
    result = runner.invoke(app, ["audit", "verify-proof", str(path), "--key", key])
    assert result.exit_code == 4
    assert result.stderr.startswith("error[audit_proof_invalid]:")
    path.write_text("{not json")
    result = runner.invoke(app, ["audit", "verify-proof", str(path), "--key", key])
    assert result.exit_code == 1
    assert result.stderr.startswith("error[audit_note_malformed]:")


def test_a_consistency_proof_between_checkpoints_verifies_offline(
    data: tuple[Services, Path], tmp_path: Path
) -> None:
    services, config = data
    first = services.audit.appended_size()
    for i in range(5):
        with services.sessions.begin() as session:
            services.audit.append(session, "test.more", actor="system", details={"i": i})
    services.audit.checkpoint()
    code, bundle, err = run(config, "consistency", "--from", str(first))
    assert code == 0, err
    path = tmp_path / "consistency.json"
    path.write_text(bundle)
    key = run(config, "key")[1].split()[0]
    result = runner.invoke(app, ["audit", "verify-consistency", str(path), "--key", key])
    assert result.exit_code == 0, result.stderr
    assert f"at size {first + 5} extends its checkpoint at size {first}" in result.stdout
    document = json.loads(bundle)
    document["consistency_proof"][0] = document["consistency_proof"][1]
    path.write_text(json.dumps(document))
    result = runner.invoke(app, ["audit", "verify-consistency", str(path), "--key", key])
    assert result.exit_code == 4
    assert result.stderr.startswith("error[audit_proof_invalid]:")
    code, _out, err = run(config, "consistency", "--from", "3")
    assert code == 2
    assert "no signed checkpoint of size 3" in err


def test_a_key_planted_in_the_data_directory_fools_only_an_unpinned_verify(
    data: tuple[Services, Path],
) -> None:
    services, config = data
    log = services.audit
    real_key = run(config, "key")[1].split()[0]
    size = log.appended_size()
    # An insider truncates the log, removes every checkpoint, signs the truncated log
    # with a key of their own and records that key where the server records its own.
    with sqlite3.connect(database(services)) as conn:
        conn.execute("DELETE FROM audit_entries WHERE seq >= ?", (size - 2,))
        conn.execute("DELETE FROM audit_checkpoints")
        conn.execute("UPDATE audit_state SET size = ?", (size - 2,))
    for path in log.export_dir.glob("*.checkpoint"):
        path.unlink()
    leaves = [leaf_hash(row.data) for row in log.stored()]
    forger = Ed25519NoteSigner(log.origin, ed25519.Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint(log.origin, len(leaves), root_hash(leaves)), [forger])
    export_checkpoint(log.export_dir, len(leaves), note)
    with (log.key_dir / "verifier-keys").open("a") as handle:
        handle.write(forger.verifier_key() + "\n")
    code, _out, err = run(config, "verify")
    assert code == 0, err  # what the data directory vouches for
    assert "no checkpoint key pinned" in err
    pinned = config.parent / "pinned.toml"
    pinned.write_text(config.read_text() + f'\n[audit]\nverifier_keys = ["{real_key}"]\n')
    code, _out, err = run(pinned, "verify")
    assert code == 4
    assert err.startswith("error[audit_checkpoint_signature]:")
    assert run(config, "verify", "--key", real_key)[0] == 4


def test_a_malformed_pinned_key_is_a_configuration_error(data: tuple[Services, Path]) -> None:
    _services, config = data
    pinned = config.parent / "pinned.toml"
    pinned.write_text(config.read_text() + '\n[audit]\nverifier_keys = ["not-a-key"]\n')
    code, _out, err = run(pinned, "verify")
    assert code != 0
    assert "audit.verifier_keys[0]" in err
    assert "Traceback" not in err
