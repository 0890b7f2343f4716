"""Engine and session factory.

SQLite (embedded mode) runs in WAL mode with a busy timeout, and distinguishes two
kinds of transaction:

* **writes** (``sessions.begin()``, and any session not opened with :func:`reading`)
  start with ``BEGIN IMMEDIATE``: request threads and job workers write
  concurrently, and a deferred transaction that later upgrades to a write lock would
  fail at once instead of waiting. Code relies on this: a write transaction holds
  the database's write lock from its first statement (the audit log's sequence and
  the key service's one-active-key rule do). Inside one process, writers first
  queue on a process-wide lock, so at most one thread per process waits in
  SQLite's busy handler (which sleeps up to 100 ms between retries; queueing on a
  Python lock instead wakes the next writer as soon as the lock is free);
* **reads** (:func:`reading`) start with a deferred ``BEGIN``: in WAL mode they see
  a consistent snapshot and neither wait for nor block writers. A reading session
  cannot write: its connection is ``query_only`` until the transaction ends (a
  deferred transaction that wrote would fail under load, when its snapshot is stale).

PostgreSQL gets its default (READ COMMITTED) transactions for both.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["READ_ONLY_OPTION", "SessionFactory", "make_engine", "make_session_factory", "reading"]

SessionFactory = sessionmaker[Session]

READ_ONLY_OPTION = "modelseal_read_only"
_BUSY_TIMEOUT_SECONDS = 30


class _WriterLockedConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions hold a process-wide lock.

    The lock is taken before ``BEGIN IMMEDIATE`` and given back once the transaction
    ends (commit, rollback or close), so one thread per process at a time contends
    for SQLite's own write lock. Subclasses made by :func:`make_engine` carry the
    lock of one engine.
    """

    _writer_lock: threading.Lock
    _holds_writer_lock = False
    _query_only = False

    def begin_deferred(self) -> None:
        """``BEGIN`` a read transaction; the connection refuses writes until it ends."""
        self.execute("PRAGMA query_only = ON")
        self._query_only = True
        try:
            self.execute("BEGIN")
        except BaseException:
            self._end()
            raise

    def begin_immediate(self) -> None:
        """Take the process's writer lock, then ``BEGIN IMMEDIATE``.

        Raises:
            sqlite3.OperationalError: The lock was not free within the busy timeout,
                or SQLite's write lock was not (``database is locked``).
        """
        if not self._writer_lock.acquire(timeout=_BUSY_TIMEOUT_SECONDS):
            raise sqlite3.OperationalError("database is locked (writer queue timed out)")
        self._holds_writer_lock = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release_writer_lock()
            raise

    def _release_writer_lock(self) -> None:
        if self._holds_writer_lock:
            self._holds_writer_lock = False
            self._writer_lock.release()

    def _end(self) -> None:
        """After a transaction: give the writer lock back, or make the connection writable."""
        self._release_writer_lock()
        if self._query_only:
            self._query_only = False
            self.execute("PRAGMA query_only = OFF")

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            # A failed COMMIT leaves the transaction open; the rollback that follows
            # ends it, and another writer that gets in first waits in SQLite's busy handler.
            self._end()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._end()

    def close(self) -> None:
        self._query_only = False
        try:
            super().close()
        finally:
            self._release_writer_lock()


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the pragmas and transaction kinds modelseal relies on."""
    if url.startswith("sqlite"):
        connection_class = type(
            "_EngineConnection", (_WriterLockedConnection,), {"_writer_lock": threading.Lock()}
        )
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": _BUSY_TIMEOUT_SECONDS,
                "factory": connection_class,
            },
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_SECONDS * 1000}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            dbapi_connection = connection.connection.dbapi_connection
            if not isinstance(dbapi_connection, _WriterLockedConnection):  # pragma: no cover
                raise TypeError("a connection of this engine is not a _WriterLockedConnection")
            if connection.get_execution_options().get(READ_ONLY_OPTION):
                dbapi_connection.begin_deferred()
            else:
                dbapi_connection.begin_immediate()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> SessionFactory:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def reading(sessions: SessionFactory) -> Session:
    """A session for reads only: on SQLite its transaction begins deferred.

    Use it as ``with reading(sessions) as session:``; the transaction begins at
    once (its snapshot is taken at the first read) and ends when the session closes.
    Nothing may be written through it.
    """
    session = sessions()
    try:
        session.connection(execution_options={READ_ONLY_OPTION: True})
    except BaseException:
        session.close()
        raise
    return session
