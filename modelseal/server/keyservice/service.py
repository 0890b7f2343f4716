"""The key service: the server's signing keys by purpose, their lifecycle, and audit.

Lifecycle of one key (states only move forward)::

    created --activate--> active --(another key activated, or retire)--> retiring
    retiring --(retiring_until passed: prune)--> retired
    created --retire--> retired
    created | active | retiring --revoke--> revoked

* ``created``: generated, not yet signing. An issuer key is already published, so
  devices can pin it before it signs anything (docs/KEY_SERVICE.md).
* ``active``: the one key of its purpose that signs now.
* ``retiring``: no longer signs, still verifies until ``retiring_until``: the
  longest package (or link) lifetime plus a leeway, so whatever it signed stays
  checkable.
* ``retired``: published no more; its private half is destroyed.
* ``revoked``: withdrawn at once (suspected compromise); its private half is
  destroyed and its kid is listed in the JWK Set's ``revoked`` member, so devices
  refuse packages it signed, stored ones included, once they refresh their pins.

States live in the ``managed_keys`` table; every transition is written in one
transaction with its audit entry (and, for an issuer rotation, the
``issuer_key_rotated`` event), so a key change without its audit entry cannot be
committed. Private halves are destroyed only after that commit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelseal.errors import KeyFormatError, ModelSealError
from modelseal.keys import IssuerPublicKey, key_to_jwk
from modelseal.keys.jwk import jwk_to_key
from modelseal.keys.pkcs11 import TokenError
from modelseal.server.clock import Clock
from modelseal.server.db.key_models import ManagedKey
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice.base import (
    KeyBackend,
    KeyNotFoundError,
    KeyPurpose,
    KeyState,
    KeyStateError,
    KeyUnsupportedError,
    MACKey,
    ManagedSigner,
    allowed_algs,
)
from modelseal.server.keyservice.legacy import LEGACY_STATE_FILE, mark_imported, read_legacy_keyring
from modelseal.server.keyservice.local import StaticMACKey
from modelseal.server.services.audit import AuditAction, AuditLog
from modelseal.server.services.events import EventService, EventType

__all__ = ["SYSTEM_ACTOR", "KeyInfo", "KeyService"]

_log = structlog.get_logger("modelseal.server.keys")
SYSTEM_ACTOR = "system"
_REVOKE_REASON_CHARS = 256

KEY_CREATED = AuditAction.KEY_CREATED
KEY_ACTIVATED = AuditAction.KEY_ACTIVATED
KEY_RETIRED = AuditAction.KEY_RETIRED
KEY_REVOKED = AuditAction.KEY_REVOKED


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One managed key as the service reports it (public facts only)."""

    purpose: KeyPurpose
    kid: str
    backend: str
    alg: str
    state: KeyState
    created_at: int
    activated_at: int | None
    retiring_until: int | None
    retired_at: int | None
    revoked_at: int | None
    revoke_reason: str | None

    @classmethod
    def of(cls, row: ManagedKey) -> KeyInfo:
        """Snapshot a row."""
        return cls(
            purpose=KeyPurpose(row.purpose),
            kid=row.kid,
            backend=row.backend,
            alg=row.alg,
            state=KeyState(row.state),
            created_at=row.created_at,
            activated_at=row.activated_at,
            retiring_until=row.retiring_until,
            retired_at=row.retired_at,
            revoked_at=row.revoked_at,
            revoke_reason=row.revoke_reason,
        )


class KeyService:
    """Signing keys by purpose over one backend; lifecycle in the database."""

    def __init__(
        self,
        sessions: SessionFactory,
        backend: KeyBackend,
        clock: Clock,
        *,
        retire_after_seconds: Mapping[KeyPurpose, int],
        default_algs: Mapping[KeyPurpose, str],
        events: EventService | None = None,
        audit: AuditLog | None = None,
        static_link_key: StaticMACKey | None = None,
        legacy_dir: str | os.PathLike[str] | None = None,
        reads: SessionFactory | None = None,
        on_close: Callable[[], None] | None = None,
        other_backends: Sequence[KeyBackend] = (),
    ) -> None:
        """Wire the service.

        Args:
            sessions: Database sessions.
            backend: Where keys are generated and used.
            clock: Time source.
            retire_after_seconds: Per purpose, how long a key retiring stays
                valid: the longest lifetime of what it signs plus a leeway.
            default_algs: Per purpose, the algorithm of keys made automatically.
            events: Where the ``issuer_key_rotated`` event goes.
            audit: The audit log (see also :meth:`attach_audit`).
            static_link_key: The configured link key; link keys are then not managed.
            legacy_dir: A keyring directory whose pre-key-service ``state.json`` is
                imported once.
            reads: Sessions for the lookups made while signing. Signing happens
                inside other services' transactions (a link is minted in the
                transaction that records it), and on SQLite every transaction of
                ``sessions`` takes the write lock, so these must not: give an
                autocommit engine there (:func:`build_key_service` does).
            on_close: Called by :meth:`close` after the backend is released.
            other_backends: Backends of keys made before a change of ``backend`` (the
                local keyring after a move to a token): their keys keep verifying and
                are destroyed there, but no new key is made there and :meth:`ensure`
                replaces an active key of theirs.
        """
        self._sessions = sessions
        self._reads = reads if reads is not None else sessions
        self._on_close = on_close
        # Public halves read from the backend, by (kid, handle); they never change.
        self._public_cache: dict[tuple[str, str], IssuerPublicKey] = {}
        self._backend = backend
        self._backends = {other.name: other for other in other_backends}
        self._backends[backend.name] = backend
        self._clock = clock
        self._retire_after = dict(retire_after_seconds)
        self._default_algs = dict(default_algs)
        self._events = events
        self._audit = audit
        self._static_link = static_link_key
        self._legacy_dir = Path(legacy_dir) if legacy_dir is not None else None

    def attach_audit(self, audit: AuditLog) -> None:
        """Write every later key change to ``audit`` (for wiring after construction)."""
        self._audit = audit

    @property
    def backend(self) -> KeyBackend:
        """The key backend."""
        return self._backend

    def managed_purposes(self) -> tuple[KeyPurpose, ...]:
        """Purposes whose keys this service manages (link keys only without a static key)."""
        if self._static_link is not None:
            return (KeyPurpose.ISSUER, KeyPurpose.CHECKPOINT)
        return (KeyPurpose.ISSUER, KeyPurpose.LINK, KeyPurpose.CHECKPOINT)

    # --- helpers ----------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._clock())

    def _backend_of(self, name: str, kid: str) -> KeyBackend:
        backend = self._backends.get(name)
        if backend is None:
            raise KeyNotFoundError(
                f"key {kid} lives in the {name} backend, which is not configured"
            )
        return backend

    def _record(
        self, session: Session, action: AuditAction, row: ManagedKey, actor: str, **extra: Any
    ) -> None:
        details: dict[str, Any] = {
            "purpose": row.purpose,
            "kid": row.kid,
            "alg": row.alg,
            "backend": row.backend,
            "state": row.state,
            **extra,
        }
        if self._audit is not None:
            self._audit.append(session, action, actor=actor, details=details)
        _log.info(str(action).replace(".", "_"), actor=actor, purpose=row.purpose, kid=row.kid)

    def _check_purpose(self, purpose: KeyPurpose | str) -> KeyPurpose:
        try:
            value = KeyPurpose(purpose)
        except ValueError:
            raise KeyUnsupportedError(
                f"purpose must be one of {', '.join(p.value for p in KeyPurpose)}, got {purpose!r}"
            ) from None
        if value not in self.managed_purposes():
            raise KeyUnsupportedError(
                "link keys come from settings.link_signing_key on this server; "
                "rotate them by changing that setting"
            )
        return value

    @staticmethod
    def _lock(session: Session, purpose: KeyPurpose) -> None:
        """Lock every key row of ``purpose`` until commit (PostgreSQL ``FOR UPDATE``).

        Two concurrent activations would otherwise each retire the key they saw as
        active and leave two active keys. SQLite needs no lock: every transaction
        there is ``BEGIN IMMEDIATE`` and runs alone.
        """
        session.execute(
            select(ManagedKey.id).where(ManagedKey.purpose == str(purpose)).with_for_update()
        ).all()

    @staticmethod
    def _row(session: Session, purpose: KeyPurpose, kid: str) -> ManagedKey:
        row = session.scalars(
            select(ManagedKey).where(ManagedKey.purpose == str(purpose), ManagedKey.kid == kid)
        ).one_or_none()
        if row is None:
            raise KeyNotFoundError(f"no {purpose} key {kid!r}")
        return row

    @staticmethod
    def _rows(session: Session, purpose: KeyPurpose, *states: KeyState) -> list[ManagedKey]:
        query = select(ManagedKey).where(ManagedKey.purpose == str(purpose))
        if states:
            query = query.where(ManagedKey.state.in_([str(s) for s in states]))
        return list(session.scalars(query.order_by(ManagedKey.id)))

    def _expire_rows(self, session: Session, now: int, actor: str) -> list[ManagedKey]:
        """Move retiring keys past their date to retired (caller destroys them after commit)."""
        done = []
        rows = session.scalars(
            select(ManagedKey).where(ManagedKey.state == str(KeyState.RETIRING))
        ).all()
        for row in rows:
            if row.retiring_until is not None and now >= row.retiring_until:
                row.state = str(KeyState.RETIRED)
                row.retired_at = now
                self._record(session, KEY_RETIRED, row, actor, automatic=True)
                done.append(row)
        return done

    def _destroy(self, infos: Sequence[KeyInfo], handles: Mapping[str, str]) -> None:
        for info in infos:
            try:
                self._backend_of(info.backend, info.kid).destroy(
                    info.purpose, info.kid, handles[info.kid]
                )
            except (ModelSealError, OSError) as exc:  # committed already: report, go on
                _log.error(
                    "key_destroy_failed",
                    purpose=str(info.purpose),
                    kid=info.kid,
                    error=type(exc).__name__,
                )

    # --- lifecycle --------------------------------------------------------------------------

    def ensure(self) -> None:
        """Import a pre-key-service keyring once; give every managed purpose an active key."""
        self._import_legacy()
        for purpose in self.managed_purposes():
            with self._reads() as session:
                active = self._rows(session, purpose, KeyState.ACTIVE)
                current = [row for row in active if row.backend == self._backend.name]
            if not current:
                # No key yet, or the active key is in a backend no longer in use.
                self.rotate(purpose, actor=SYSTEM_ACTOR)

    def list_keys(self, purpose: KeyPurpose | str | None = None) -> list[KeyInfo]:
        """Every managed key (of ``purpose``), oldest first."""
        with self._reads() as session:
            query = select(ManagedKey).order_by(ManagedKey.id)
            if purpose is not None:
                query = query.where(ManagedKey.purpose == str(KeyPurpose(purpose)))
            return [KeyInfo.of(row) for row in session.scalars(query)]

    def create(self, purpose: KeyPurpose | str, alg: str | None = None, *, actor: str) -> KeyInfo:
        """Generate a key in the backend, state ``created`` (audited).

        Raises:
            KeyUnsupportedError: Purpose not managed here, or algorithm not allowed.
            TokenError: The PKCS#11 token failed.
        """
        kind = self._check_purpose(purpose)
        algorithm = alg or self._default_algs[kind]
        if algorithm not in allowed_algs(kind):
            raise KeyUnsupportedError(
                f"{kind} keys must use one of {sorted(allowed_algs(kind))}, got {algorithm!r}"
            )
        made = self._backend.generate(kind, algorithm)
        try:
            with self._sessions.begin() as session:
                row = ManagedKey(
                    purpose=str(kind),
                    kid=made.kid,
                    backend=self._backend.name,
                    alg=made.alg,
                    state=str(KeyState.CREATED),
                    handle=made.handle,
                    public_jwk=dict(made.public_jwk) if made.public_jwk is not None else None,
                    created_at=self._now(),
                )
                session.add(row)
                session.flush()
                self._record(session, KEY_CREATED, row, actor)
                info = KeyInfo.of(row)
        except BaseException:
            self._backend.destroy(kind, made.kid, made.handle)
            raise
        return info

    def activate(self, purpose: KeyPurpose | str, kid: str, *, actor: str) -> KeyInfo:
        """Make ``kid`` the active key; the previous active key starts retiring (audited).

        Raises:
            KeyNotFoundError: No such key.
            KeyStateError: The key is not ``created``.
        """
        kind = self._check_purpose(purpose)
        with self._sessions.begin() as session:
            self._lock(session, kind)
            row = self._row(session, kind, kid)
            if row.state != KeyState.CREATED:
                raise KeyStateError(f"only a created key can be activated; {kid} is {row.state}")
            now = self._now()
            previous = self._rows(session, kind, KeyState.ACTIVE)
            for old in previous:
                old.state = str(KeyState.RETIRING)
                old.retiring_until = now + self._retire_after[kind]
                self._record(
                    session, KEY_RETIRED, old, actor, retiring_until=old.retiring_until, by=kid
                )
            session.flush()
            row.state = str(KeyState.ACTIVE)
            row.activated_at = now
            self._record(session, KEY_ACTIVATED, row, actor)
            if kind is KeyPurpose.ISSUER and self._events is not None:
                self._events.add(
                    session,
                    EventType.ISSUER_KEY_ROTATED,
                    details={
                        "kid": row.kid,
                        "alg": row.alg,
                        "previous": [old.kid for old in previous],
                        "actor": actor,
                    },
                )
            return KeyInfo.of(row)

    def rotate(self, purpose: KeyPurpose | str, alg: str | None = None, *, actor: str) -> KeyInfo:
        """Create a key and activate it at once.

        Raises:
            As :meth:`create` and :meth:`activate`.
        """
        created = self.create(purpose, alg, actor=actor)
        return self.activate(created.purpose, created.kid, actor=actor)

    def retire(self, purpose: KeyPurpose | str, kid: str, *, actor: str) -> KeyInfo:
        """Retire a key: a created key at once, a retiring key now rather than later.

        The active key is retired by activating another one, so that something
        always signs.

        Raises:
            KeyNotFoundError: No such key.
            KeyStateError: The key is active, retired or revoked.
        """
        kind = self._check_purpose(purpose)
        with self._sessions.begin() as session:
            self._lock(session, kind)
            row = self._row(session, kind, kid)
            if row.state == KeyState.ACTIVE:
                raise KeyStateError(
                    f"{kid} is the active {kind} key: activate another key to retire it"
                )
            if row.state not in (KeyState.CREATED, KeyState.RETIRING):
                raise KeyStateError(f"{kid} is already {row.state}")
            now = self._now()
            row.state = str(KeyState.RETIRED)
            row.retired_at = now
            self._record(session, KEY_RETIRED, row, actor)
            info, handle = KeyInfo.of(row), row.handle
        self._destroy([info], {kid: handle})
        return info

    def revoke(
        self,
        purpose: KeyPurpose | str,
        kid: str,
        *,
        actor: str,
        reason: str,
        force: bool = False,
    ) -> KeyInfo:
        """Withdraw a key at once and destroy its private half (audited).

        Args:
            purpose: The key's purpose.
            kid: The key.
            actor: Who revokes.
            reason: Why (kept in the row and the audit entry; no secrets).
            force: Required to revoke the active key: nothing of that purpose signs
                until another key is activated.

        Raises:
            KeyNotFoundError: No such key.
            KeyStateError: Retired or revoked already, or active without ``force``.
        """
        kind = self._check_purpose(purpose)
        reason = reason.strip()[:_REVOKE_REASON_CHARS] or "unspecified"
        with self._sessions.begin() as session:
            self._lock(session, kind)
            row = self._row(session, kind, kid)
            if row.state in (KeyState.RETIRED, KeyState.REVOKED):
                raise KeyStateError(f"{kid} is already {row.state}")
            if row.state == KeyState.ACTIVE and not force:
                raise KeyStateError(
                    f"{kid} is the active {kind} key: activate another key first, "
                    "or revoke with force (nothing signs until a new key is activated)"
                )
            was = row.state
            row.state = str(KeyState.REVOKED)
            row.revoked_at = self._now()
            row.revoke_reason = reason
            self._record(session, KEY_REVOKED, row, actor, reason=reason, previous_state=was)
            info, handle = KeyInfo.of(row), row.handle
        self._destroy([info], {kid: handle})
        return info

    def prune(self, *, actor: str = SYSTEM_ACTOR) -> list[str]:
        """Retire every retiring key past its date and destroy its private half.

        Returns:
            The kids retired.
        """
        with self._sessions.begin() as session:
            rows = self._expire_rows(session, self._now(), actor)
            infos = [KeyInfo.of(row) for row in rows]
            handles = {row.kid: row.handle for row in rows}
        self._destroy(infos, handles)
        return [info.kid for info in infos]

    # --- use --------------------------------------------------------------------------------

    def _active_row(self, purpose: KeyPurpose) -> tuple[str, str, str]:
        with self._reads() as session:
            active = self._rows(session, purpose, KeyState.ACTIVE)
            if len(active) != 1:
                raise ConfigurationError(f"there must be exactly one active {purpose} key")
            return active[0].kid, active[0].handle, active[0].backend

    def signer(self, purpose: KeyPurpose) -> ManagedSigner:
        """The active key of an asymmetric purpose.

        Raises:
            ConfigurationError: No active key, or it is unusable.
            KeyUnsupportedError: ``purpose`` is ``link``.
        """
        if purpose is KeyPurpose.LINK:
            raise KeyUnsupportedError("link keys are MAC keys")
        kid, handle, backend = self._active_row(purpose)
        try:
            return self._backend_of(backend, kid).signer(purpose, kid, handle)
        except KeyNotFoundError as exc:
            raise ConfigurationError(f"active {purpose} key: {exc.message}") from None

    def issuer_signer(self) -> ManagedSigner:
        """The key that signs new packages."""
        return self.signer(KeyPurpose.ISSUER)

    def checkpoint_signer(self) -> ManagedSigner:
        """The key that signs audit checkpoints."""
        return self.signer(KeyPurpose.CHECKPOINT)

    def _live_rows(self, session: Session, purpose: KeyPurpose, now: int) -> list[ManagedKey]:
        return [
            row
            for row in self._rows(
                session, purpose, KeyState.CREATED, KeyState.ACTIVE, KeyState.RETIRING
            )
            if row.state != KeyState.RETIRING
            or (row.retiring_until is not None and now < row.retiring_until)
        ]

    def published_issuer_keys(self) -> list[IssuerPublicKey]:
        """Issuer keys devices should pin: created, active, and retiring within their window.

        The database only says which kids to publish. Each public key is read from the
        backend, whose private half it must be, and never from the row: someone who can
        write the database but not the keyring or the token cannot get a key of their
        own into the JWK Set. A kid the backend does not hold is left out and logged.
        """
        now = self._now()
        with self._reads() as session:
            rows = self._live_rows(session, KeyPurpose.ISSUER, now)
            wanted = [(row.kid, row.handle, row.backend) for row in rows]
        keys = []
        for kid, handle, backend in wanted:
            key = self._public_of(kid, handle, backend)
            if key is not None:
                keys.append(key)
        return keys

    def _public_of(self, kid: str, handle: str, backend: str) -> IssuerPublicKey | None:
        cached = self._public_cache.get((kid, handle))
        if cached is not None:
            return cached
        try:
            signer = self._backend_of(backend, kid).signer(KeyPurpose.ISSUER, kid, handle)
            public = signer.public_key()
        except (KeyNotFoundError, ConfigurationError, TokenError, KeyFormatError) as exc:
            _log.error("issuer_key_unusable", kid=kid, error=exc.code)
            return None
        if public.kid != kid:
            _log.error("issuer_key_unusable", kid=kid, error="kid_mismatch")
            return None
        self._public_cache[(kid, handle)] = public
        return public

    def revoked_kids(self, purpose: KeyPurpose = KeyPurpose.ISSUER) -> list[str]:
        """Kids of revoked keys of ``purpose``, oldest first."""
        with self._reads() as session:
            return [row.kid for row in self._rows(session, purpose, KeyState.REVOKED)]

    def issuer_jwks(self) -> dict[str, Any]:
        """The issuer JWK Set: valid public keys, plus the kids revoked (``revoked``).

        RFC 7517 §5 lets a JWK Set carry other members, which parsers ignore; modelseal
        devices read ``revoked`` to refuse stored packages signed by those keys.
        """
        return {
            "keys": [key_to_jwk(key) for key in self.published_issuer_keys()],
            "revoked": self.revoked_kids(KeyPurpose.ISSUER),
        }

    def checkpoint_public_keys(self) -> list[tuple[KeyInfo, IssuerPublicKey]]:
        """Every checkpoint key ever made that was not revoked, with its public half."""
        with self._reads() as session:
            rows = [
                row
                for row in self._rows(session, KeyPurpose.CHECKPOINT)
                if row.state != KeyState.REVOKED and row.public_jwk is not None
            ]
            pairs = [(KeyInfo.of(row), row.public_jwk) for row in rows]
        out = []
        for info, document in pairs:
            key = jwk_to_key(document or {})
            if isinstance(key, IssuerPublicKey):
                out.append((info, key))
        return out

    def link_keys(self) -> tuple[MACKey, list[MACKey]]:
        """The link key that mints, and every link key that still verifies (it first).

        Raises:
            ConfigurationError: No active link key, or it is unusable.
        """
        if self._static_link is not None:
            return self._static_link, [self._static_link]
        now = self._now()
        with self._reads() as session:
            rows = self._live_rows(session, KeyPurpose.LINK, now)
            live = [(row.kid, row.handle, row.state, row.backend) for row in rows]
        active = [entry for entry in live if entry[2] == KeyState.ACTIVE]
        if len(active) != 1:
            raise ConfigurationError("there must be exactly one active link key")
        kid, handle, _, backend = active[0]
        try:
            minting = self._backend_of(backend, kid).mac_key(kid, handle)
            verifying = [minting] + [
                self._backend_of(backend, kid).mac_key(kid, handle)
                for kid, handle, state, backend in live
                if state == KeyState.RETIRING
            ]
        except KeyNotFoundError as exc:
            raise ConfigurationError(f"link key: {exc.message}") from None
        return minting, verifying

    # --- pre-key-service keyrings -----------------------------------------------------------

    def _import_legacy(self) -> None:
        """Import the ``state.json`` of a keyring made before the key service, once."""
        if self._legacy_dir is None or self._backend.name != "local":
            return
        with self._reads() as session:
            if self._rows(session, KeyPurpose.ISSUER):
                return
        rows = read_legacy_keyring(self._legacy_dir)
        if rows is None:
            return
        with self._sessions.begin() as session:
            for row in rows:
                session.add(row)
                session.flush()
                self._record(
                    session, KEY_CREATED, row, SYSTEM_ACTOR, imported_from=LEGACY_STATE_FILE
                )
        mark_imported(self._legacy_dir)
        _log.info("keyring_imported", keys=len(rows))

    def close(self) -> None:
        """Release the backends (and the read engine)."""
        try:
            for backend in self._backends.values():
                backend.close()
        finally:
            if self._on_close is not None:
                self._on_close()
