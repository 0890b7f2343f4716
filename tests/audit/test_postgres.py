"""PostgreSQL: the audit tables refuse UPDATE, DELETE and TRUNCATE; an INSERT/SELECT role
cannot change entries; concurrent appends stay gap-free."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url

from modelseal.audit.verify import load_checkpoints, verify_log
from modelseal.server.clock import SystemClock
from modelseal.server.db.migrate import upgrade
from modelseal.server.db.session import make_engine, make_session_factory
from modelseal.server.services.audit import AuditLog
from tests.server.conftest import make_settings

APPEND_ONLY = ("audit_entries", "audit_checkpoints")


@pytest.fixture
def pg_log(pg_url: str, tmp_path: Path) -> Iterator[tuple[AuditLog, Engine, str]]:
    engine = make_engine(pg_url)
    upgrade(engine)
    settings = make_settings(tmp_path / "data", database_url=pg_url)
    log = AuditLog(make_session_factory(engine), settings, SystemClock())
    log.ensure()
    try:
        yield log, engine, pg_url
    finally:
        engine.dispose()


def libpq(url: str, user: str = "postgres") -> str:
    parsed = make_url(url)
    return f"host=127.0.0.1 port=5432 user={user} dbname={parsed.database}"


def fill(log: AuditLog, count: int) -> None:
    for i in range(count):
        with log._sessions.begin() as session:
            log.append(session, "test.pg", actor="system", details={"i": i})
    log.checkpoint()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET created_at = created_at + 1",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
    ],
)
def test_the_trigger_refuses_changes_even_to_the_owner(
    pg_log: tuple[AuditLog, Engine, str], statement: str
) -> None:
    log, _engine, url = pg_log
    fill(log, 3)
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        for table in APPEND_ONLY:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement.format(table=table))
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() != (0,)


def test_an_insert_select_role_cannot_change_or_unprotect_entries(
    pg_log: tuple[AuditLog, Engine, str],
) -> None:
    log, _engine, url = pg_log
    fill(log, 3)
    role = "ms_audit_app_" + secrets.token_hex(4)
    with psycopg.connect(libpq(url), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        admin.execute(f'GRANT SELECT, INSERT ON audit_entries, audit_checkpoints TO "{role}"')
        admin.execute(f'GRANT SELECT, UPDATE ON audit_state TO "{role}"')
    try:
        with psycopg.connect(libpq(url, role), autocommit=True) as app:
            app.execute(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, created_at, note) "
                "VALUES (999, 'x', 0, 'x')"
            )
            for statement in (
                "UPDATE audit_entries SET entry = 'forged' WHERE seq = 0",
                "DELETE FROM audit_entries WHERE seq = 0",
                "TRUNCATE audit_entries",
                "ALTER TABLE audit_entries DISABLE TRIGGER USER",
                "DROP TRIGGER audit_entries_no_update_delete ON audit_entries",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute(statement)
            assert app.execute("SELECT count(*) FROM audit_entries").fetchone() == (3,)
    finally:
        with psycopg.connect(libpq(url), autocommit=True) as admin:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')


def test_concurrent_appends_on_postgresql_are_gap_free(
    pg_log: tuple[AuditLog, Engine, str],
) -> None:
    log, _engine, _url = pg_log
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            with log._sessions.begin() as session:
                seq = log.append(session, "test.pg", actor=f"t{n}", details={"i": i})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(120))
    log.checkpoint()
    trusted = load_checkpoints(log.all_checkpoints(), log.recorded_verifiers(), log.origin)
    assert verify_log(list(log.stored()), trusted, expected_size=120).covered == 120
