"""The sweeper: deletes stored packages past their blob TTL, and retires old issuer keys.

Runs periodically in the server (``sweep_interval_seconds``, default hourly) and once
with ``modelseal admin sweep``. Stored packages are never backed up, so deleting
them here and on acknowledgement is the end of them on the server side.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog
from sqlalchemy import select

from modelseal.server.clock import Clock
from modelseal.server.db.models import Issuance
from modelseal.server.db.session import SessionFactory
from modelseal.server.services.abuse import expire_addresses
from modelseal.server.services.audit import SYSTEM_ACTOR, AuditAction, AuditLog
from modelseal.server.services.examples import delete_expired_examples
from modelseal.server.services.keyring import Keyring
from modelseal.server.settings import Settings
from modelseal.server.storage import BlobStore

__all__ = ["SweepReport", "SweepService", "Sweeper"]

_log = structlog.get_logger("modelseal.server.sweeper")
_ORPHAN_GRACE_SECONDS = 600


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep removed."""

    expired: int
    orphans: int
    retired_keys: int
    examples: int = 0
    addresses: int = 0


class SweepService:
    """One sweep pass."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        blobs: BlobStore,
        keyring: Keyring,
        clock: Clock,
        *,
        audit: AuditLog,
    ) -> None:
        """Wire the service; each deleted package is audited in its transaction."""
        self._audit = audit
        self._sessions = sessions
        self._settings = settings
        self._blobs = blobs
        self._keyring = keyring
        self._clock = clock

    def run_once(self) -> SweepReport:
        """Delete expired packages, orphaned blobs and temp files; retire old keys."""
        now = int(self._clock())
        expired = 0
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(Issuance).where(
                    Issuance.deleted_at.is_(None), Issuance.blob_expires_at <= now
                )
            )
            swept = list(rows)
            for issuance in swept:
                self._blobs.delete(issuance.blob_key)
                issuance.deleted_at = now
                issuance.deleted_reason = "swept"
                expired += 1
            # Audited last: appending holds the log's lock until commit.
            for issuance in swept:
                self._audit.append(
                    session,
                    AuditAction.ISSUANCE_DELETED,
                    actor=SYSTEM_ACTOR,
                    user_id=issuance.user_id,
                    model_id=issuance.model_id,
                    details={"jti": issuance.jti, "reason": "swept"},
                )
        with self._sessions.begin() as session:
            # Uploaded examples past their retention, and those of disabled users.
            examples = delete_expired_examples(session, now)
        # Blobs no row points at (a crash between write and commit) go once older than
        # any TTL could keep them.
        max_ttl = max((m.blob_ttl_seconds for m in self._settings.models), default=3600)
        orphans = len(self._blobs.sweep(max_ttl + _ORPHAN_GRACE_SECONDS, now))
        retired = len(self._keyring.prune())
        # Client addresses past their retention (address uses, ``ip`` in event details).
        addresses = expire_addresses(self._sessions, self._settings.abuse, now)
        report = SweepReport(expired, orphans, retired, examples, addresses)
        _log.info(
            "sweep",
            expired=expired,
            orphans=orphans,
            retired_keys=retired,
            examples=examples,
            addresses=addresses,
        )
        return report


class Sweeper:
    """Runs :class:`SweepService` every ``interval_seconds`` in a daemon thread."""

    def __init__(self, service: SweepService, interval_seconds: int) -> None:
        """Create a stopped sweeper."""
        self._service = service
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread (no-op for an interval of 0)."""
        if self._interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="ms-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._service.run_once()
            except Exception:  # noqa: BLE001 - keep sweeping; the next pass may succeed
                _log.exception("sweep_failed")

    def stop(self) -> None:
        """Stop and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
