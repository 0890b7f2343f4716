"""Fixtures for the audit tests: in-process servers, and a private PostgreSQL database."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal.audit.verify import LogReport, load_checkpoints, verify_log
from modelseal.server.clock import ManualClock
from modelseal.server.container import Services, build_services
from tests.pg import fresh_database
from tests.server.conftest import Harness, log_stream, make_settings, start

__all__ = ["log_stream", "pg_url", "server", "services", "verify_services"]


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A fresh server in a temp data dir."""
    yield from start(tmp_path, log_stream)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Services of a fresh server (no HTTP app), closed afterwards."""
    built = build_services(make_settings(tmp_path / "data"), clock=ManualClock())
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    with fresh_database("ms_audit") as url:
        yield url


def verify_services(services: Services) -> LogReport:
    """Checkpoint now, then verify the whole stored log against every checkpoint."""
    services.audit.checkpoint()
    log = services.audit
    trusted = load_checkpoints(log.all_checkpoints(), log.recorded_verifiers(), log.origin)
    return verify_log(list(log.stored()), trusted, expected_size=log.appended_size())
