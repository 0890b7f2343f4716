"""Per-user IML quotas: a counter per (user, model, period), taken atomically.

A quota is business state, so it lives in the database, not in the rate limiter.
Taking one unit is two statements inside the caller's transaction:

1. ``INSERT`` the period's counter row with ``used = 0``, ignoring a unique-key
   conflict (``ON CONFLICT DO NOTHING``): whichever request comes first creates it.
2. ``UPDATE ... SET used = used + 1 WHERE ... AND used < :limit`` and read the row
   count. PostgreSQL re-checks the ``WHERE`` against the latest committed row after
   waiting for a concurrent writer's lock; SQLite serialises writers
   (``BEGIN IMMEDIATE``). Either way, at most ``limit`` updates ever match, however
   many requests race.

Periods are fixed windows aligned to the Unix epoch, so every process agrees on
when one starts (``period_start = now - now % period_seconds``).

Refunds: a unit is given back when its job ends ``failed`` (generation error,
device revoked meanwhile, the runner refused the job). A failed job never sealed a
package, so a refund never lets anyone hold more packages than the quota; without
it a server fault would cost honest users their quota. Jobs that a crashed process
left unfinished (``fail_interrupted``) are not refunded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from modelseal.server.db.abuse_models import QuotaCounter
from modelseal.server.errors import QuotaExceededError
from modelseal.server.settings import QuotaPolicy

__all__ = ["QuotaService", "QuotaUse", "period_bounds"]


def period_bounds(now: int, period_seconds: int) -> tuple[int, int]:
    """The ``(start, end)`` of the period holding ``now`` (end exclusive)."""
    start = now - now % period_seconds
    return start, start + period_seconds


def _counter(user_id: int, model_id: str, start: int) -> tuple[ColumnElement[bool], ...]:
    """The ``WHERE`` terms selecting one counter row: this user, model and period."""
    return (
        QuotaCounter.user_id == user_id,
        QuotaCounter.model_id == model_id,
        QuotaCounter.period_start == start,
    )


@dataclass(frozen=True, slots=True)
class QuotaUse:
    """One user's use of one model's quota in the current period."""

    model_id: str
    used: int
    limit: int
    period_start: int
    resets_at: int


class QuotaService:
    """Takes, refunds and reports quota units (no transactions of its own)."""

    def take(
        self,
        session: Session,
        *,
        user_id: int,
        model_id: str,
        policy: QuotaPolicy,
        suspicious: bool,
        now: int,
    ) -> QuotaUse:
        """Take one unit of ``model_id``'s quota for ``user_id`` in the caller's transaction.

        Raises:
            QuotaExceededError: The period's limit is reached; nothing was taken. The
                error carries the period's end (``resets_at``) and the seconds until then.
        """
        limit = policy.limit_for(suspicious)
        start, end = period_bounds(now, policy.period_seconds)
        self._ensure_row(session, user_id, model_id, start)
        taken = cast(
            CursorResult[Any],
            session.execute(
                update(QuotaCounter)
                .where(*_counter(user_id, model_id, start), QuotaCounter.used < limit)
                .values(used=QuotaCounter.used + 1)
                .execution_options(synchronize_session=False)
            ),
        ).rowcount
        if taken != 1:
            raise QuotaExceededError(
                f"quota of {limit} {model_id!r} IMLs per {policy.period_seconds} s reached; "
                f"it resets at {end}",
                retry_after_seconds=end - now,
                resets_at=end,
            )
        used = session.scalar(select(QuotaCounter.used).where(*_counter(user_id, model_id, start)))
        return QuotaUse(model_id, int(used or 0), limit, start, end)

    @staticmethod
    def _ensure_row(session: Session, user_id: int, model_id: str, start: int) -> None:
        values = {"user_id": user_id, "model_id": model_id, "period_start": start, "used": 0}
        if session.get_bind().dialect.name == "postgresql":
            session.execute(pg_insert(QuotaCounter).values(**values).on_conflict_do_nothing())
        else:
            session.execute(sqlite_insert(QuotaCounter).values(**values).on_conflict_do_nothing())

    def refund(
        self, session: Session, *, user_id: int, model_id: str, policy: QuotaPolicy, taken_at: int
    ) -> None:
        """Give back the unit a request took at ``taken_at`` (never below zero)."""
        start, _ = period_bounds(taken_at, policy.period_seconds)
        session.execute(
            update(QuotaCounter)
            .where(*_counter(user_id, model_id, start), QuotaCounter.used > 0)
            .values(used=QuotaCounter.used - 1)
            .execution_options(synchronize_session=False)
        )

    def usage(
        self,
        session: Session,
        *,
        user_id: int,
        model_id: str,
        policy: QuotaPolicy,
        suspicious: bool,
        now: int,
    ) -> QuotaUse:
        """The current period's use, without taking anything."""
        start, end = period_bounds(now, policy.period_seconds)
        used = session.scalar(select(QuotaCounter.used).where(*_counter(user_id, model_id, start)))
        return QuotaUse(model_id, int(used or 0), policy.limit_for(suspicious), start, end)
