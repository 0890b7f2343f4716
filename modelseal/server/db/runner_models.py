"""The job runners table: which server processes are alive to finish their jobs.

Each server process registers one row when it starts and refreshes ``heartbeat_at``
while it runs (:mod:`modelseal.server.jobs.registry`); jobs name the runner that
queued them in ``jobs.runner_id``. No secrets here: ``node`` is a hash that tells
whether two processes share a machine (and so a process table).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from modelseal.server.db.models import Base

__all__ = ["JobRunnerRow"]


class JobRunnerRow(Base):
    """One live (or crashed, not yet reaped) server process that runs jobs."""

    __tablename__ = "job_runners"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    node: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int] = mapped_column(Integer)
    process_started: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[int] = mapped_column(BigInteger)
    heartbeat_at: Mapped[int] = mapped_column(BigInteger)
