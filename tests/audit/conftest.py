"""Fixtures for the audit tests: in-process servers, and a private PostgreSQL database."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modelseal.audit.verify import LogReport, load_checkpoints, verify_log
from modelseal.server.container import Services
from tests.server.conftest import Harness, log_stream, start

__all__ = ["PG_ADMIN", "log_stream", "pg_url", "server", "verify_services"]

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A fresh server in a temp data dir."""
    yield from start(tmp_path, log_stream)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of its own, dropped afterwards."""
    name = "ms_audit_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def verify_services(services: Services) -> LogReport:
    """Checkpoint now, then verify the whole stored log against every checkpoint."""
    services.audit.checkpoint()
    log = services.audit
    trusted = load_checkpoints(log.all_checkpoints(), log.recorded_verifiers(), log.origin)
    return verify_log(list(log.stored()), trusted, expected_size=log.appended_size())
