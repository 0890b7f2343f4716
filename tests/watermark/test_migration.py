"""Migration 0007: the ``watermarks`` table goes up and down on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, inspect

from modelseal.server.db.migrate import alembic_config, upgrade
from modelseal.server.db.session import make_engine
from modelseal.server.db.watermark_models import WatermarkRecord
from tests.pg import fresh_database


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def _check(engine: Engine) -> None:
    upgrade(engine, "0007")
    columns = {c["name"] for c in inspect(engine).get_columns("watermarks")}
    assert columns == set(WatermarkRecord.__table__.columns.keys())
    indexes = {i["name"] for i in inspect(engine).get_indexes("watermarks")}
    assert "ix_watermarks_model_issued" in indexes
    (fk,) = inspect(engine).get_foreign_keys("watermarks")
    assert (fk["referred_table"], fk["referred_columns"]) == ("issuances", ["jti"])
    _downgrade(engine, "0006")
    assert "watermarks" not in inspect(engine).get_table_names()
    assert "issuances" in inspect(engine).get_table_names()
    upgrade(engine, "0007")
    assert "watermarks" in inspect(engine).get_table_names()


def test_migration_0007_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'wm.db'}")
    try:
        _check(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database("ms_wm") as url:
        yield url


def test_migration_0007_on_postgresql(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        _check(engine)
    finally:
        engine.dispose()
