"""The operators' side of the fraud verdicts: list, explain, override, clear.

:class:`FraudOperations` is a base of :class:`~modelseal.server.services.abuse.AbuseService`
(one service, one ``services.abuse``); it is kept here so that the policy applied to every
request and the operators' tools read apart. Every override is kept in ``fraud_overrides``
(never deleted), recorded as a ``fraud_override`` event and appended to the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelseal.fraud import RuleSet, Verdict
from modelseal.server.clock import Clock
from modelseal.server.db.abuse_models import FraudOverride, FraudVerdict
from modelseal.server.db.models import User
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import NotFoundError, OverrideInvalidError
from modelseal.server.services.events import EventService, EventType

__all__ = ["AuditSink", "FraudOperations", "OverrideInfo", "VerdictInfo", "user_ref"]

_log = structlog.get_logger("modelseal.server.abuse")


class AuditSink(Protocol):
    """The audit log's append (``modelseal.server.services.audit.AuditLog``)."""

    def append(
        self,
        session: Session,
        action: Any,
        *,
        actor: str,
        user_id: int | None = None,
        device_id: str | None = None,
        model_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one entry inside ``session``'s transaction."""
        ...


@dataclass(frozen=True, slots=True)
class OverrideInfo:
    """An operator's verdict override."""

    id: int
    verdict: Verdict
    reason: str
    actor: str
    created_at: int
    expires_at: int | None
    cleared_at: int | None


@dataclass(frozen=True, slots=True)
class VerdictInfo:
    """A user's verdict as operators see it.

    Attributes:
        verdict: The verdict in force (the override's, else the computed one).
        computed: The verdict computed from events (``ok`` with no events).
        override: The active override, if any.
    """

    user_id: int
    user_name: str | None
    verdict: Verdict
    computed: Verdict
    score: float
    rules_version: str
    fired: tuple[Mapping[str, Any], ...]
    computed_at: int | None
    override: OverrideInfo | None

    def explain(self) -> str:
        """A few lines for people: verdict, override, then each fired rule and its events."""
        who = self.user_name or f"id:{self.user_id}"
        lines = [f"{who}: {self.verdict} (computed {self.computed}, score {self.score:g})"]
        if self.override is not None:
            until = "" if self.override.expires_at is None else f" until {self.override.expires_at}"
            lines.append(
                f"  override: {self.override.verdict} by {self.override.actor}{until}: "
                f"{self.override.reason}"
            )
        lines.append(f"  rules {self.rules_version}")
        for rule in self.fired:
            events = ",".join(str(e) for e in rule.get("event_ids", ()))
            lines.append(
                f"  - {rule.get('rule_id')} [{rule.get('kind')}, {rule.get('points', 0):g} pts] "
                f"{rule.get('description')} (events {events})"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """JSON form for the admin API and ``--json``."""
        return {
            "user_id": self.user_id,
            "user": self.user_name,
            "verdict": str(self.verdict),
            "computed": str(self.computed),
            "score": self.score,
            "rules_version": self.rules_version,
            "fired": [dict(rule) for rule in self.fired],
            "computed_at": self.computed_at,
            "override": None
            if self.override is None
            else {
                "verdict": str(self.override.verdict),
                "reason": self.override.reason,
                "actor": self.override.actor,
                "created_at": self.override.created_at,
                "expires_at": self.override.expires_at,
            },
        }


def user_ref(session: Session, ref: str) -> User:
    """The user named ``ref``, or with database id ``N`` for ``ref = "id:N"``.

    Raises:
        NotFoundError: No such user.
    """
    user: User | None
    if ref.startswith("id:") and ref[3:].isdigit():
        user = session.get(User, int(ref[3:]))
    else:
        user = session.scalars(select(User).where(User.name == ref)).first()
    if user is None:
        raise NotFoundError(f"no user {ref!r}")
    return user


class FraudOperations:
    """List, explain and override verdicts (mixed into ``AbuseService``)."""

    _sessions: SessionFactory
    _clock: Clock
    _events: EventService
    _audit: AuditSink | None
    rules: RuleSet

    def verdict_of(self, session: Session, user_id: int) -> Verdict:
        """The verdict in force (implemented by ``AbuseService``)."""
        raise NotImplementedError

    def _recompute(self, session: Session, user_id: int) -> FraudVerdict:
        raise NotImplementedError

    def _active_override(self, session: Session, user_id: int, now: int) -> FraudOverride | None:
        return session.scalars(
            select(FraudOverride)
            .where(FraudOverride.user_id == user_id, FraudOverride.cleared_at.is_(None))
            .where((FraudOverride.expires_at.is_(None)) | (FraudOverride.expires_at > now))
            .order_by(FraudOverride.id.desc())
            .limit(1)
        ).first()

    def _info(self, session: Session, user: User) -> VerdictInfo:
        now = int(self._clock())
        override = self._active_override(session, user.id, now)
        effective = self.verdict_of(session, user.id)
        row = session.get(FraudVerdict, user.id)
        computed = Verdict(row.verdict) if row is not None else Verdict.OK
        return VerdictInfo(
            user_id=user.id,
            user_name=user.name,
            verdict=effective,
            computed=computed,
            score=row.score if row is not None else 0.0,
            rules_version=row.rules_version if row is not None else self.rules.version,
            fired=tuple(row.fired) if row is not None else (),
            computed_at=row.computed_at if row is not None else None,
            override=_override_info(override) if override is not None else None,
        )

    def list_verdicts(
        self, verdict: Verdict | None = None, *, limit: int = 100
    ) -> list[VerdictInfo]:
        """Users whose verdict is not ``ok`` (or is ``verdict``) or who have an active
        override, worst first; at most ``limit`` computed verdicts are read."""
        now = int(self._clock())
        with self._sessions.begin() as session:
            computed = select(FraudVerdict.user_id).order_by(FraudVerdict.score.desc())
            if verdict is None:
                computed = computed.where(FraudVerdict.verdict != str(Verdict.OK))
            else:
                computed = computed.where(FraudVerdict.verdict == str(verdict))
            ids = set(session.scalars(computed.limit(limit)))
            ids |= set(
                session.scalars(
                    select(FraudOverride.user_id)
                    .where(FraudOverride.cleared_at.is_(None))
                    .where((FraudOverride.expires_at.is_(None)) | (FraudOverride.expires_at > now))
                )
            )
            users = session.scalars(select(User).where(User.id.in_(ids))).all()
            infos = [self._info(session, user) for user in users]
        if verdict is not None:
            infos = [info for info in infos if info.verdict == verdict]
        infos.sort(key=lambda info: (-info.verdict.rank, -info.score, info.user_id))
        return infos[:limit]

    def explain(self, ref: str) -> VerdictInfo:
        """The verdict of the user ``ref`` (name or ``id:N``), recomputed now.

        Raises:
            NotFoundError: No such user.
        """
        with self._sessions.begin() as session:
            user = user_ref(session, ref)
            self._recompute(session, user.id)
            return self._info(session, user)

    def override(
        self,
        ref: str,
        verdict: Verdict,
        *,
        reason: str,
        actor: str,
        expires_at: int | None = None,
    ) -> VerdictInfo:
        """Set an operator verdict for ``ref``; recorded as an event and in the audit log.

        Overriding to ``ok`` also clears a sticky computed ``malicious``: the computed
        verdict is recomputed from the events from now on.

        Raises:
            NotFoundError: No such user.
            OverrideInvalidError: Empty reason, or an expiry in the past.
        """
        reason = reason.strip()
        if not reason:
            raise OverrideInvalidError("an override needs a reason")
        now = int(self._clock())
        if expires_at is not None and expires_at <= now:
            raise OverrideInvalidError(f"expires_at {expires_at} is not in the future")
        with self._sessions.begin() as session:
            user = user_ref(session, ref)
            for active in session.scalars(
                select(FraudOverride).where(
                    FraudOverride.user_id == user.id, FraudOverride.cleared_at.is_(None)
                )
            ):
                active.cleared_at = now
            session.add(
                FraudOverride(
                    user_id=user.id,
                    verdict=str(verdict),
                    reason=reason[:1024],
                    actor=actor[:128],
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            if verdict != Verdict.MALICIOUS:
                row = session.get(FraudVerdict, user.id)
                if row is not None and row.verdict == Verdict.MALICIOUS:
                    row.verdict = str(Verdict.OK)  # unstick; recomputed just below
            self._record_override(session, user.id, str(verdict), reason, actor, expires_at)
            if verdict != Verdict.MALICIOUS:
                self._recompute(session, user.id)
            return self._info(session, user)

    def clear_override(self, ref: str, *, reason: str, actor: str) -> VerdictInfo:
        """End the active override of ``ref``; the computed verdict applies again.

        Raises:
            NotFoundError: No such user, or no active override.
        """
        now = int(self._clock())
        with self._sessions.begin() as session:
            user = user_ref(session, ref)
            active = list(
                session.scalars(
                    select(FraudOverride).where(
                        FraudOverride.user_id == user.id, FraudOverride.cleared_at.is_(None)
                    )
                )
            )
            if not active:
                raise NotFoundError(f"{ref!r} has no active override")
            for override in active:
                override.cleared_at = now
            self._record_override(session, user.id, "cleared", reason.strip(), actor, None)
            return self._info(session, user)

    def overrides(self, ref: str) -> list[OverrideInfo]:
        """Every override of ``ref``, newest first (the record of operator decisions).

        Raises:
            NotFoundError: No such user.
        """
        with self._sessions() as session:
            user = user_ref(session, ref)
            rows = session.scalars(
                select(FraudOverride)
                .where(FraudOverride.user_id == user.id)
                .order_by(FraudOverride.id.desc())
            )
            return [_override_info(row) for row in rows]

    def _record_override(
        self,
        session: Session,
        user_id: int,
        verdict: str,
        reason: str,
        actor: str,
        expires_at: int | None,
    ) -> None:
        details = {"verdict": verdict, "reason": reason[:256], "expires_at": expires_at}
        self._events.add(
            session,
            EventType.FRAUD_OVERRIDE,
            user_id=user_id,
            details={**details, "actor": actor[:128]},
        )
        _log.warning("fraud_override", user_id=user_id, verdict=verdict, actor=actor)
        if self._audit is not None:
            self._audit.append(
                session, "fraud.override", actor=actor, user_id=user_id, details=details
            )


def _override_info(row: FraudOverride) -> OverrideInfo:
    return OverrideInfo(
        row.id,
        Verdict(row.verdict),
        row.reason,
        row.actor,
        row.created_at,
        row.expires_at,
        row.cleared_at,
    )
