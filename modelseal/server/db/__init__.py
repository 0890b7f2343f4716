"""Persistence: SQLAlchemy 2 models, the engine and session factory, Alembic migrations.

Times are stored as integer Unix seconds (UTC) so SQLite and PostgreSQL agree and
an injected clock governs everything the same way.
"""
