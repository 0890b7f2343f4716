"""A database that does not give its lock in time answers 503 with Retry-After, never 500."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy.exc

from tests.server.raising_app import app_raising


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("lock timeout")
        self.sqlstate = sqlstate


def operational(orig: Exception) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("UPDATE quota_counters ...", {}, orig)


@pytest.mark.parametrize(
    "orig",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.OperationalError("database is locked (writer queue timed out)"),
        _PgError("55P03"),
        _PgError("40P01"),
        _PgError("40001"),
    ],
    ids=["sqlite-busy", "writer-queue", "pg-lock", "pg-deadlock", "pg-serialization"],
)
def test_a_busy_database_is_503_with_retry_after(orig: Exception) -> None:
    response = app_raising(operational(orig)).get("/boom")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_busy"
    assert int(response.headers["Retry-After"]) >= 1


def test_other_database_errors_stay_internal_errors_without_details() -> None:
    response = app_raising(operational(sqlite3.OperationalError("no such table: x"))).get("/boom")
    assert response.status_code == 500
    assert response.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error",
    }
