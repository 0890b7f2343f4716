"""Running ``modelseal admin`` in-process against a small config file."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from modelseal.server.cli import admin_app

from .conftest import TEST_GENERATOR

runner = CliRunner()


def write_admin_config(directory: Path) -> Path:
    """A server config in ``directory``: data below it, one model ``m1``, light Argon2id."""
    path = directory / "server.toml"
    path.write_text(
        f'data_dir = "{directory / "data"}"\nsweep_interval_seconds = 0\n'
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
    )
    return path


def admin(config: Path, *args: str) -> tuple[int, str, str]:
    """Run ``modelseal admin --config CONFIG ARGS...``: ``(exit code, stdout, stderr)``."""
    result = runner.invoke(admin_app, ["--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr
