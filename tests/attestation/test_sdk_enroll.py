"""The device SDK enrolls with a (development) attestation against a real server process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import tests.e2e.conftest as e2e
from modelseal.attestation.dev import InsecureDevAttester
from modelseal.client.errors import ServerRefusedError
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
        running = run_server(tmp_path_factory.mktemp("attest-server"), MODELS, users=2)
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
