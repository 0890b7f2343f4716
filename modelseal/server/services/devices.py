"""Devices: public keys pinned to (user, device id).

A key (by FORMAT §6 kid) belongs to exactly one device of one user, forever: the
same key presented again for another device or user is refused and recorded as a
``same_key_other_device`` event (a cloned app or a key-sharing farm). A device id
keeps the key it was registered with; rotation means revoking the device and
registering a new device id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.attestation.base import AttestationUnsupportedError
from modelseal.errors import KeyFormatError
from modelseal.keys import RecipientPrivateKey, RecipientPublicKey, jwk_to_key, key_to_jwk
from modelseal.server.clock import Clock
from modelseal.server.db.models import Device, Issuance, User
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import (
    DeviceKeyPinnedError,
    DeviceRevokedError,
    KeyAlreadyRegisteredError,
    NotFoundError,
)
from modelseal.server.services.accounts import Principal
from modelseal.server.services.attestation import (
    AttestationIn,
    AttestationService,
    AttestationStatus,
    VerifiedAttestation,
    attestation_statuses,
)
from modelseal.server.services.audit import AuditAction, AuditLog, admin_actor, user_actor
from modelseal.server.services.events import EventService, EventType
from modelseal.server.storage import BlobStore

__all__ = ["DEVICE_ID_PATTERN", "DeviceInfo", "DeviceService", "parse_device_key"]

DEVICE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_CHECK_INFO = b"modelseal/1 device-key-check"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A registered device as the API and operators see it."""

    device_id: str
    kid: str
    kem: str
    app_version: str
    created_at: int
    revoked_at: int | None
    public_key: Mapping[str, Any]
    user_id: int
    attestation: AttestationStatus | None = None

    @property
    def status(self) -> str:
        """``active`` or ``revoked``."""
        return "active" if self.revoked_at is None else "revoked"


def _info(device: Device, attestation: AttestationStatus | None = None) -> DeviceInfo:
    return DeviceInfo(
        device_id=device.device_id,
        kid=device.kid,
        kem=device.kem,
        app_version=device.app_version,
        created_at=device.created_at,
        revoked_at=device.revoked_at,
        public_key=dict(device.public_jwk),
        user_id=device.user_id,
        attestation=attestation,
    )


def _attested_info(session: Session, device: Device) -> DeviceInfo:
    """``_info`` with the device's latest attestation (recorded in ``session`` or before)."""
    return _info(device, attestation_statuses(session, [device.id]).get(device.id))


def parse_device_key(jwk: object) -> RecipientPublicKey:
    """Parse a device public JWK of any FORMAT KEM and check it can receive a package.

    Raises:
        KeyFormatError: Not a JWK, not a recipient public key, carries private members,
            or is a point HPKE refuses (such as a low-order X25519 point).
    """
    if not isinstance(jwk, Mapping):
        raise KeyFormatError("public_key must be a JWK object")
    try:
        key = jwk_to_key(jwk)
    except (TypeError, ValueError):
        # jwk_to_key lets some wrongly typed members (e.g. a list as 'alg') escape.
        raise KeyFormatError("public_key is not a valid JWK") from None
    if isinstance(key, RecipientPrivateKey):
        raise KeyFormatError("public_key carries private key members; send the public key only")
    if not isinstance(key, RecipientPublicKey):
        raise KeyFormatError("public_key must be a device (HPKE recipient) key")
    # Sealing a throwaway DEK exercises exactly what issuance will do with this key,
    # so keys HPKE would refuse later are refused now, at registration.
    key.hpke_seal(os.urandom(32), _CHECK_INFO)
    return key


class DeviceService:
    """Registers, lists and revokes devices."""

    def __init__(
        self,
        sessions: SessionFactory,
        events: EventService,
        blobs: BlobStore,
        clock: Clock,
        *,
        audit: AuditLog,
        attestation: AttestationService | None = None,
    ) -> None:
        """Wire the service; registrations and revocations are audited in their transaction."""
        self._audit = audit
        self._attestation = attestation
        self._sessions = sessions
        self._events = events
        self._blobs = blobs
        self._clock = clock

    def register(
        self,
        principal: Principal,
        device_id: str,
        app_version: str,
        public_key: object,
        attestation: AttestationIn | None = None,
    ) -> tuple[DeviceInfo, bool]:
        """Pin ``public_key`` to (caller, ``device_id``), with an optional attestation.

        An attestation is verified before anything is stored (its challenge is used up
        even if it fails) and recorded on the device (``docs/ATTESTATION.md``).

        Returns:
            The device and whether it was created (False: the same registration again).

        Raises:
            KeyFormatError: The key is unusable.
            KeyAlreadyRegisteredError: The key is pinned to another device or user.
            DeviceKeyPinnedError: The device id is pinned to another key, or was revoked.
            AttestationError: The attestation or its challenge was refused.
        """
        if not DEVICE_ID_PATTERN.fullmatch(device_id):
            raise ValueError(f"device_id must match {DEVICE_ID_PATTERN.pattern}")
        key = parse_device_key(public_key)
        verified: VerifiedAttestation | None = None
        if attestation is not None:
            if self._attestation is None:
                raise AttestationUnsupportedError("attestation is not configured on this server")
            verified = self._attestation.verify_enrollment(principal, device_id, key, attestation)
        for _attempt in range(2):
            try:
                return self._register_once(principal, device_id, app_version, key, verified)
            except IntegrityError:
                continue  # a concurrent registration won a unique constraint; re-evaluate
        raise KeyAlreadyRegisteredError("the key is already registered")

    def _register_once(
        self,
        principal: Principal,
        device_id: str,
        app_version: str,
        key: RecipientPublicKey,
        verified: VerifiedAttestation | None = None,
    ) -> tuple[DeviceInfo, bool]:
        reuse: Device | None = None
        with self._sessions.begin() as session:
            mine = self._find(session, principal.user_id, device_id)
            if mine is not None:
                if mine.revoked_at is not None:
                    raise DeviceKeyPinnedError(
                        "this device id was revoked; register the device under a new id"
                    )
                if mine.kid != key.kid:
                    raise DeviceKeyPinnedError(
                        "this device id is pinned to another key; revoke it and register "
                        "a new device id to rotate"
                    )
                if verified is not None and self._attestation is not None:
                    self._attestation.record(session, mine, verified)
                return _attested_info(session, mine), False
            reuse = session.scalars(select(Device).where(Device.kid == key.kid)).first()
            if reuse is None:
                device = Device(
                    user_id=principal.user_id,
                    device_id=device_id,
                    kid=key.kid,
                    kem=key.kem.label,
                    public_jwk=key_to_jwk(key),
                    app_version=app_version,
                    created_at=int(self._clock()),
                )
                session.add(device)
                session.flush()
                if verified is not None and self._attestation is not None:
                    self._attestation.record(session, device, verified)
                self._events.add(
                    session,
                    EventType.DEVICE_REGISTERED,
                    user_id=principal.user_id,
                    device_id=device_id,
                    details={"kid": key.kid, "kem": key.kem.label, "app_version": app_version},
                )
                self._audit.append(
                    session,
                    AuditAction.DEVICE_REGISTERED,
                    actor=user_actor(principal.user_id),
                    user_id=principal.user_id,
                    device_id=device_id,
                    details={"kid": key.kid, "kem": key.kem.label, "app_version": app_version},
                )
                if verified is None:
                    return _info(device), True
                return _attested_info(session, device), True
            other_user = reuse.user_id != principal.user_id
            other_device = reuse.device_id
        self._events.record(
            EventType.SAME_KEY_OTHER_DEVICE,
            user_id=principal.user_id,
            device_id=device_id,
            details={
                "kid": key.kid,
                "other_user": other_user,
                # Another user's device id is not theirs to learn, but operators may.
                "pinned_device_id": other_device,
            },
        )
        raise KeyAlreadyRegisteredError("this public key is already registered to a device")

    @staticmethod
    def _find(session: Session, user_id: int, device_id: str) -> Device | None:
        return session.scalars(
            select(Device).where(Device.user_id == user_id, Device.device_id == device_id)
        ).first()

    def require_active(self, session: Session, principal: Principal, device_id: str) -> Device:
        """The caller's device ``device_id``, which must not be revoked.

        Raises:
            NotFoundError: The caller has no such device.
            DeviceRevokedError: The device is revoked.
        """
        device = self._find(session, principal.user_id, device_id)
        if device is None:
            raise NotFoundError("no such device")
        if device.revoked_at is not None:
            raise DeviceRevokedError("the device is revoked")
        return device

    def list_for(self, principal: Principal) -> list[DeviceInfo]:
        """The caller's devices, revoked ones included."""
        with self._sessions() as session:
            rows = list(
                session.scalars(
                    select(Device).where(Device.user_id == principal.user_id).order_by(Device.id)
                )
            )
            statuses = attestation_statuses(session, [d.id for d in rows])
            return [_info(d, statuses.get(d.id)) for d in rows]

    def revoke(self, principal: Principal, device_id: str) -> DeviceInfo:
        """Revoke the caller's device; its undelivered packages are deleted at once.

        Raises:
            NotFoundError: The caller has no such device.
        """
        with self._sessions.begin() as session:
            device = self._find(session, principal.user_id, device_id)
            if device is None:
                raise NotFoundError("no such device")
            return self._revoke(session, device, user_actor(principal.user_id))

    def _revoke(self, session: Session, device: Device, actor: str) -> DeviceInfo:
        now = int(self._clock())
        newly_revoked = device.revoked_at is None
        if device.revoked_at is None:
            device.revoked_at = now
            self._events.add(
                session,
                EventType.DEVICE_REVOKED,
                user_id=device.user_id,
                device_id=device.device_id,
                details={"kid": device.kid},
            )
        pending = session.scalars(
            select(Issuance).where(Issuance.device_pk == device.id, Issuance.deleted_at.is_(None))
        )
        deleted = list(pending)
        for issuance in deleted:
            self._blobs.delete(issuance.blob_key)
            issuance.deleted_at = now
            issuance.deleted_reason = "revoked"
        # Audited last: appending holds the log's lock until commit.
        for issuance in deleted:
            self._audit.append(
                session,
                AuditAction.ISSUANCE_DELETED,
                actor=actor,
                user_id=device.user_id,
                device_id=device.device_id,
                model_id=issuance.model_id,
                details={"jti": issuance.jti, "reason": "revoked"},
            )
        if newly_revoked:
            self._audit.append(
                session,
                AuditAction.DEVICE_REVOKED,
                actor=actor,
                user_id=device.user_id,
                device_id=device.device_id,
                details={"kid": device.kid},
            )
        return _info(device)

    # --- operator views -----------------------------------------------------------------

    def list_all(self, user_name: str | None = None) -> list[tuple[str | None, DeviceInfo]]:
        """All devices (optionally of one user), with their owner's name."""
        with self._sessions() as session:
            query = select(Device, User).join(User, User.id == Device.user_id).order_by(Device.id)
            if user_name is not None:
                query = query.where(User.name == user_name)
            rows = [(device, user) for device, user in session.execute(query)]
            statuses = attestation_statuses(session, [device.id for device, _ in rows])
            return [(user.name, _info(device, statuses.get(device.id))) for device, user in rows]

    def admin_revoke(
        self, kid_or_device_id: str, user_name: str | None = None, *, actor: str | None = None
    ) -> DeviceInfo:
        """Revoke a device by kid, or by device id (with ``user_name`` if ambiguous).

        ``actor`` names the operator in the audit log (default: the OS user).

        Raises:
            NotFoundError: No device, or more than one, matches.
        """
        with self._sessions.begin() as session:
            query = select(Device).join(User, User.id == Device.user_id)
            by_kid = session.scalars(query.where(Device.kid == kid_or_device_id)).all()
            matches = list(by_kid)
            if not matches:
                query = query.where(Device.device_id == kid_or_device_id)
                if user_name is not None:
                    query = query.where(User.name == user_name)
                matches = list(session.scalars(query).all())
            if len(matches) != 1:
                raise NotFoundError(
                    f"{len(matches)} devices match {kid_or_device_id!r}; give a kid or a user"
                )
            return self._revoke(session, matches[0], actor or admin_actor())
