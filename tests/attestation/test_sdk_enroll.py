"""The device SDK and CLI enroll with a (development) attestation against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tests.e2e.conftest as e2e
from modelseal.attestation.dev import InsecureDevAttester
from modelseal.client.errors import ServerRefusedError
from tests.e2e.cli_entry import cli
from tests.e2e.conftest import TEST_GENERATOR, ServerProcess, enrolled, run_server

MODELS = [
    {
        "id": "attested",
        "generator": TEST_GENERATOR,
        "options": {"size_bytes": 1000},
        "attestation": {"required": ["insecure-dev"], "on_missing": "refuse"},
    }
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    plain = e2e.write_config

    def with_attestation(directory: Path, models: Sequence[dict[str, Any]], **kw: Any) -> Path:
        config = plain(directory, models, **kw)
        text = config.read_text()
        # Top-level keys come first in TOML: put the table next to [auth].
        config.write_text(text.replace("[auth]", "[attestation]\ninsecure_dev = true\n[auth]", 1))
        return config

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(e2e, "write_config", with_attestation)
        running = run_server(tmp_path_factory.mktemp("attest-server"), MODELS, users=3)
        server = running.__enter__()
    try:
        yield server
    finally:
        running.__exit__(None, None, None)


def test_sdk_enrolls_with_dev_attestation_and_gets_the_attested_model(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = enrolled(server, tmp_path / "a", server.tokens[0], attester=InsecureDevAttester())
    client.fetch("attested")


def test_sdk_without_attestation_is_refused_the_attested_model(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = enrolled(server, tmp_path / "b", server.tokens[1])
    with pytest.raises(ServerRefusedError) as info:
        client.fetch("attested")
    assert info.value.code == "attestation_required"


# --- ``modelseal device enroll --attest`` ------------------------------------------------------


def _cli(*args: str | Path) -> Result:
    environment = {"MODELSEAL_KEYSTORE_PASSPHRASE": "cli attest passphrase"}
    return CliRunner().invoke(cli(), [str(a) for a in args], env=environment)


def test_cli_enroll_with_insecure_dev_attestation_gets_the_attested_model(
    server: ServerProcess, tmp_path: Path
) -> None:
    device = tmp_path / "cli-device"
    assert _cli("device", "init", "--dir", device).exit_code == 0
    enroll = _cli(
        "device", "enroll", "--dir", device, "--server", server.url,
        "--token", server.tokens[2], "--attest", "insecure-dev", "--json",
    )  # fmt: skip
    assert enroll.exit_code == 0, (enroll.stdout, enroll.stderr)
    assert json.loads(enroll.stdout)["attestation"] == "insecure-dev"
    fetched = _cli("device", "fetch", "--dir", device, "--model", "attested", "--json")
    assert fetched.exit_code == 0, (fetched.stdout, fetched.stderr)


def test_cli_enroll_refuses_platforms_a_desktop_cannot_attest(tmp_path: Path) -> None:
    device = tmp_path / "cli-device"
    assert _cli("device", "init", "--dir", device).exit_code == 0
    result = _cli(
        "device", "enroll", "--dir", device, "--server", "http://127.0.0.1:9",
        "--token", "t", "--attest", "apple-appattest",
    )  # fmt: skip
    assert result.exit_code != 0
    assert "error[usage_error]" in result.stderr
    assert "platform APIs" in result.stderr
