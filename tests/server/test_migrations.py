"""Migrations: upgrade from empty on SQLite and PostgreSQL; models and migrations agree."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from modelseal.server.container import open_database
from modelseal.server.db.migrate import current_revision, head_revision, is_at_head, upgrade
from modelseal.server.db.models import Base
from modelseal.server.db.session import make_engine
from modelseal.server.errors import SchemaOutdatedError
from tests.pg import fresh_database

from .conftest import make_settings, start

TABLES = {
    "users",
    "api_tokens",
    "devices",
    "jobs",
    "issuances",
    "download_links",
    "link_uses",
    "events",
    "attestation_challenges",
    "device_attestations",
    "app_attest_keys",
    "user_examples",
    "managed_keys",
    "audit_entries",
    "audit_state",
    "audit_checkpoints",
    "quota_counters",
    "fraud_verdicts",
    "fraud_overrides",
    "address_uses",
    "job_runners",
    "watermarks",
    "alembic_version",
}


def check_schema(engine: Engine) -> None:
    assert current_revision(engine) is None
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == TABLES
    assert current_revision(engine) == head_revision()
    assert is_at_head(engine)
    uniques = {
        tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("link_uses")
    }
    assert ("lid",) in uniques
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    upgrade(engine)  # idempotent at head


def test_migrations_upgrade_an_empty_sqlite_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        check_schema(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("ms_test") as url:
        yield url


def test_migrations_upgrade_an_empty_postgresql_database(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        check_schema(engine)
    finally:
        engine.dispose()


def test_production_refuses_to_start_on_a_schema_behind_head(tmp_path: Path, pg_url: str) -> None:
    settings = make_settings(
        tmp_path,
        mode="production",
        database_url=pg_url,
        link_signing_key=secrets.token_urlsafe(32),
        behind_proxy=True,
        issuer_id="https://issuer.example",
    )
    with pytest.raises(SchemaOutdatedError, match="admin db upgrade") as info:
        open_database(settings)
    assert info.value.code == "schema_outdated"
    engine = make_engine(pg_url)
    upgrade(engine)
    engine.dispose()
    open_database(settings).dispose()


def test_the_sqlite_database_file_is_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    open_database(settings).dispose()
    assert (tmp_path / "data" / "modelseal.db").stat().st_mode & 0o777 == 0o600


def test_the_whole_flow_runs_on_postgresql(
    tmp_path: Path, pg_url: str, log_stream: io.StringIO
) -> None:
    for server in start(tmp_path, log_stream, database_url=pg_url):
        token = server.user("alice")
        device = server.register(token, "phone")
        job = server.issue(token, device)
        body = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
        assert server.open(body.content, device).header.claims.jti == job["jti"]  # type: ignore[union-attr]
        again = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
        assert again.json()["error"]["code"] == "link_used"
        ack = server.client.post(f"/v1/issuances/{job['jti']}/ack", headers=server.auth(token))
        assert ack.status_code == 204
