"""The events service: security-relevant facts, from the server or reported by the app.

Events feed the fraud verdicts (:mod:`modelseal.server.services.abuse`): each added event
of a type the rules use triggers a recomputation of its user's verdict, in the same
transaction, through the listeners registered with :meth:`EventService.subscribe`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelseal.server.clock import Clock
from modelseal.server.db.models import Event
from modelseal.server.db.session import SessionFactory

__all__ = ["EventRecord", "EventService", "EventSource", "EventType"]

_log = structlog.get_logger("modelseal.server.events")


class EventSource(StrEnum):
    """Who reported the event."""

    SERVER = "server"
    APP = "app"


class EventType(StrEnum):
    """Event types recorded so far."""

    ACCESS_ERROR = "access_error"
    SAME_KEY_OTHER_DEVICE = "same_key_other_device"
    DEVICE_REGISTERED = "device_registered"
    DEVICE_REVOKED = "device_revoked"
    ISSUANCE_ACKED = "issuance_acked"
    ISSUER_KEY_ROTATED = "issuer_key_rotated"
    # Abuse controls (issue 6); the names are the fraud engine's ServerEventType values.
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    API_VERSION_OBSOLETE = "api_version_obsolete"
    API_VERSION_INVALID = "api_version_invalid"
    ATTESTATION_FAILED = "attestation_failed"
    ATTESTATION_MISSING = "attestation_missing"
    HONEY_TOKEN_USED = "honey_token_used"  # noqa: S105 - an event type, not a secret
    CREDENTIAL_FAILURE = "credential_failure"
    IML_REQUESTED = "iml_requested"
    FRAUD_OVERRIDE = "fraud_override"
    LINKED_ACCOUNT_BLOCKED = "linked_account_blocked"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event."""

    id: int
    type: str
    user_id: int | None
    device_id: str | None
    source: str
    details: Mapping[str, Any]
    created_at: int


class EventService:
    """Writes and lists events."""

    def __init__(self, sessions: SessionFactory, clock: Clock) -> None:
        """Use ``sessions`` for storage and ``clock`` for timestamps."""
        self._sessions = sessions
        self._clock = clock
        self._listeners: list[Callable[[Session, Event], None]] = []

    def subscribe(self, listener: Callable[[Session, Event], None]) -> None:
        """Call ``listener(session, event)`` after each event is added, in its transaction.

        The fraud verdicts use it to recompute a user's verdict when an event arrives.
        """
        self._listeners.append(listener)

    def add(
        self,
        session: Session,
        type_: EventType | str,
        *,
        user_id: int | None = None,
        device_id: str | None = None,
        source: EventSource = EventSource.SERVER,
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        """Add an event inside the caller's transaction (``ip``: the client address, if any)."""
        stored = dict(details or {})
        if ip is not None:
            stored["ip"] = ip
        event = Event(
            type=str(type_),
            user_id=user_id,
            device_id=device_id,
            source=str(source),
            details=stored,
            created_at=int(self._clock()),
        )
        session.add(event)
        _log.info("event", type=str(type_), user_id=user_id, source=str(source))
        for listener in self._listeners:
            listener(session, event)

    def record(
        self,
        type_: EventType | str,
        *,
        user_id: int | None = None,
        device_id: str | None = None,
        source: EventSource = EventSource.SERVER,
        details: Mapping[str, Any] | None = None,
        ip: str | None = None,
    ) -> None:
        """Record an event in its own transaction (used after a refused request)."""
        with self._sessions.begin() as session:
            self.add(
                session,
                type_,
                user_id=user_id,
                device_id=device_id,
                source=source,
                details=details,
                ip=ip,
            )

    def recent(self, *, type_: str | None = None, limit: int = 100) -> list[EventRecord]:
        """Most recent events first."""
        with self._sessions() as session:
            query = select(Event).order_by(Event.id.desc()).limit(limit)
            if type_ is not None:
                query = query.where(Event.type == type_)
            return [
                EventRecord(e.id, e.type, e.user_id, e.device_id, e.source, e.details, e.created_at)
                for e in session.scalars(query)
            ]
