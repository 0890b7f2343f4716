"""Throwaway PostgreSQL databases for tests (the server at 127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
"""Where to connect to create and drop databases."""


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """Create a database named ``prefix_<random>``; yield its SQLAlchemy URL; drop it.

    The drop forces out connections still open (a test that failed half-way may
    leave some), so a failing test never leaves a database behind.
    """
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
