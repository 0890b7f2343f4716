"""The attestation service: challenges, verification at enrollment, records and policy.

Flow (``docs/ATTESTATION.md``):

1. The app asks ``POST /v1/attestation/challenge``: 32 random bytes, bound to the
   caller, single-use, valid ``attestation.challenge_ttl_seconds``.
2. It registers its device with ``attestation: {platform, evidence, challenge_id}``,
   the evidence being over ``client_data(challenge, device key)``.
3. :meth:`AttestationService.verify_enrollment` consumes the challenge (in its own
   transaction, so that a failed attempt still burns it), verifies, and on failure
   records an ``attestation_failed`` event (a fraud stop factor) before raising.
4. :meth:`AttestationService.record` stores the result on the new device, inside the
   registration's transaction, with ``attestation_weak`` events for fraud signals.
5. At each IML request, :meth:`AttestationService.enforce` applies the model's policy
   to the device's latest result (refuse / suspicious / allow).
6. App Attest devices may also assert per request
   (:meth:`AttestationService.verify_assertion`): the counter is advanced with a
   compare-and-set update, so two concurrent assertions cannot both pass.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from modelseal.attestation.android_config import build_android_verifier
from modelseal.attestation.apple import PLATFORM as APPLE_PLATFORM
from modelseal.attestation.apple import AppleAppAttestVerifier
from modelseal.attestation.base import (
    AttestationConfigError,
    AttestationCounterError,
    AttestationError,
    AttestationKeyMismatchError,
    AttestationMalformedError,
    AttestationRequiredError,
    AttestationResult,
    AttestationUnsupportedError,
    ChallengeExpiredError,
    ChallengeInvalidError,
    ChallengeReplayedError,
    VerifierRegistry,
    client_data,
    load_roots,
)
from modelseal.attestation.dev import PLATFORM as DEV_PLATFORM
from modelseal.attestation.dev import InsecureDevVerifier
from modelseal.attestation.play_integrity import PlayIntegrityVerifier
from modelseal.attestation.revocation import RevocationUnavailableError
from modelseal.keys import RecipientPublicKey, jwk_to_key
from modelseal.server.clock import Clock
from modelseal.server.db.attestation_models import (
    AppAttestKey,
    AttestationChallenge,
    DeviceAttestation,
)
from modelseal.server.db.models import Device
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import ConfigurationError
from modelseal.server.services.accounts import Principal
from modelseal.server.services.audit import AuditLog
from modelseal.server.services.events import EventService
from modelseal.server.settings import AttestationPolicy, ModelSpec, Settings

__all__ = [
    "EVENT_FAILED",
    "EVENT_MISSING",
    "EVENT_REPLAYED",
    "EVENT_WEAK",
    "LEVEL_ORDER",
    "AttestationIn",
    "AttestationService",
    "AttestationStatus",
    "ChallengeView",
    "VerifiedAttestation",
    "attestation_statuses",
    "build_attestation_service",
    "build_registry",
    "satisfies",
]

_log = structlog.get_logger("modelseal.server.attestation")

# Fraud event types (modelseal.fraud.events.ServerEventType spells the same strings).
EVENT_FAILED = "attestation_failed"
EVENT_MISSING = "attestation_missing"
EVENT_REPLAYED = "attestation_counter_replayed"
EVENT_WEAK = "attestation_weak"
_AUDIT_VERIFIED = "attestation.verified"
_AUDIT_FAILED = "attestation.failed"

CHALLENGE_BYTES = 32
# Used and expired challenges are kept this long (replays are told apart from unknown ids).
CHALLENGE_RETENTION_SECONDS = 86_400
MAX_EVIDENCE_BYTES = 64 * 1024

# Levels of each platform, weakest first: a requirement "platform:level" is met by that
# level or any stronger one. Platforms not listed match their level exactly.
LEVEL_ORDER: Mapping[str, tuple[str, ...]] = {
    "apple-appattest": ("development", "production"),
    "android-key": ("software", "tee", "strongbox"),
    "play-integrity": ("none", "basic", "device", "strong"),
    "insecure-dev": ("insecure-dev",),
}

Purpose = Literal["enroll", "assertion"]

# Refusals caused by the server, not by the evidence (see AttestationService._failed).
_SERVER_SIDE_ERRORS = (RevocationUnavailableError, AttestationConfigError)


@dataclass(frozen=True, slots=True)
class ChallengeView:
    """A challenge as the API returns it."""

    challenge_id: str
    challenge: str  # base64url, no padding
    expires_at: int


@dataclass(frozen=True, slots=True)
class AttestationIn:
    """Attestation evidence as the app sends it."""

    platform: str
    evidence: bytes
    challenge_id: str


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """A verified result and the challenge it consumed.

    Attributes:
        result: What the verifier established.
        challenge_id: The challenge the evidence answered.
        recorded: True for the retry of an enrollment that already succeeded with this
            challenge: the result is the stored one, and nothing is recorded again.
    """

    result: AttestationResult
    challenge_id: str
    recorded: bool = False


@dataclass(frozen=True, slots=True)
class AttestationStatus:
    """A device's latest verified attestation, as device listings show it."""

    platform: str
    level: str
    verified_at: int
    signals: tuple[str, ...] = ()


_STATUS_BATCH = 500


def attestation_statuses(
    session: Session, device_pks: Sequence[int]
) -> dict[int, AttestationStatus]:
    """The latest verified attestation of each device in ``device_pks`` (by primary key)."""
    statuses: dict[int, AttestationStatus] = {}
    pks = list(dict.fromkeys(device_pks))
    for start in range(0, len(pks), _STATUS_BATCH):
        batch = pks[start : start + _STATUS_BATCH]
        latest = (
            select(func.max(DeviceAttestation.id))
            .where(DeviceAttestation.device_pk.in_(batch))
            .group_by(DeviceAttestation.device_pk)
        )
        for row in session.scalars(
            select(DeviceAttestation).where(DeviceAttestation.id.in_(latest))
        ):
            statuses[row.device_pk] = AttestationStatus(
                row.platform, row.level, row.verified_at, tuple(row.signals)
            )
    return statuses


def satisfies(policy: AttestationPolicy, platform: str | None, level: str | None) -> bool:
    """Whether a device attested as (``platform``, ``level``) meets ``policy``."""
    if not policy.required:
        return True
    if platform is None or level is None:
        return False
    for requirement in policy.required:
        want_platform, _, want_level = requirement.partition(":")
        if want_platform != platform:
            continue
        if not want_level:
            return True
        order = LEVEL_ORDER.get(platform)
        if order is None or want_level not in order or level not in order:
            if level == want_level:
                return True
            continue
        if order.index(level) >= order.index(want_level):
            return True
    return False


def build_registry(settings: Settings) -> VerifierRegistry:
    """The verifiers the settings enable.

    Raises:
        AttestationConfigError: A platform's settings are unusable (roots, keys), or
            the insecure-dev verifier in production mode.
    """
    config = settings.attestation
    registry = VerifierRegistry()
    production = settings.mode == "production"
    if config.insecure_dev:
        registry.register(InsecureDevVerifier(production=production))
    if config.apple is not None:
        registry.register(
            AppleAppAttestVerifier(
                config.apple.app_ids,
                roots=load_roots(config.apple.roots),
                environments=tuple(config.apple.environments),
            )
        )
    play = config.play_integrity
    if play is not None:
        decryption_key = None
        verification_key = None
        backend_key = None
        if play.decryption_key is not None:
            try:
                decryption_key = base64.b64decode(
                    play.decryption_key.get_secret_value(), validate=True
                )
            except ValueError:
                raise AttestationConfigError(
                    "play_integrity.decryption_key must be base64"
                ) from None
        if play.verification_key is not None:
            key = PlayIntegrityVerifier.load_public_key(play.verification_key.encode())
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise AttestationConfigError("play_integrity.verification_key must be P-256")
            verification_key = key
        if play.backend_key_file is not None:
            try:
                pem = play.backend_key_file.read_bytes()
            except OSError:
                raise AttestationConfigError(
                    "cannot read play_integrity.backend_key_file"
                ) from None
            backend_key = PlayIntegrityVerifier.load_public_key(pem)
        registry.register(
            PlayIntegrityVerifier(
                play.package_names,
                decryption_key=decryption_key,
                verification_key=verification_key,
                backend_key=backend_key,
                max_age_seconds=play.max_age_seconds,
            )
        )
    if config.android is not None:
        registry.register(build_android_verifier(config.android, production=production))
    return registry


class AttestationService:
    """Issues challenges, verifies and records attestations, enforces model policies."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        events: EventService,
        clock: Clock,
        registry: VerifierRegistry,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        """Wire the service; ``audit`` (an AuditLog) records results in their transaction."""
        self._sessions = sessions
        self._settings = settings
        self._events = events
        self._clock = clock
        self._registry = registry
        self._audit = audit

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms this server verifies."""
        return self._registry.platforms

    # --- challenges ---------------------------------------------------------------------

    def issue_challenge(self, principal: Principal, purpose: Purpose = "enroll") -> ChallengeView:
        """A fresh single-use challenge for the caller.

        The caller's challenges that expired more than a day ago are deleted in the same
        transaction, so the table stays the size of recent traffic.
        """
        now = int(self._clock())
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        row = AttestationChallenge(
            id="ac_" + secrets.token_hex(16),
            user_id=principal.user_id,
            challenge=challenge,
            purpose=purpose,
            created_at=now,
            expires_at=now + self._settings.attestation.challenge_ttl_seconds,
        )
        with self._sessions.begin() as session:
            session.execute(
                delete(AttestationChallenge).where(
                    AttestationChallenge.user_id == principal.user_id,
                    AttestationChallenge.expires_at < now - CHALLENGE_RETENTION_SECONDS,
                )
            )
            session.add(row)
        return ChallengeView(
            row.id, base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(), row.expires_at
        )

    def _consume(
        self, principal: Principal, challenge_id: str, purpose: Purpose, device_id: str | None
    ) -> bytes:
        """Mark the challenge used (compare-and-set) and return its bytes.

        Raises:
            ChallengeInvalidError: Unknown, another user's, or for another purpose.
            ChallengeReplayedError: Already used.
            ChallengeExpiredError: Past its expiry.
        """
        now = int(self._clock())
        with self._sessions.begin() as session:
            claimed = session.execute(
                update(AttestationChallenge)
                .where(
                    AttestationChallenge.id == challenge_id,
                    AttestationChallenge.user_id == principal.user_id,
                    AttestationChallenge.purpose == purpose,
                    AttestationChallenge.used_at.is_(None),
                    AttestationChallenge.expires_at > now,
                )
                .values(used_at=now)
            )
            row = session.get(AttestationChallenge, challenge_id)
            if getattr(claimed, "rowcount", 0) == 1 and row is not None:
                return bytes(row.challenge)
            other_user = row is not None and row.user_id != principal.user_id
            replayed = row is not None and not other_user and row.used_at is not None
            expired = row is not None and not other_user and row.expires_at <= now
        if other_user or replayed:
            # Another user's challenge, or one used before: a relay or a replay.
            reason = "attestation_challenge_replayed" if replayed else "cross_user_challenge"
            self._events.record(
                EVENT_FAILED,
                user_id=principal.user_id,
                device_id=device_id,
                details={"code": reason, "challenge_id": challenge_id[:64]},
            )
        if replayed:
            raise ChallengeReplayedError("the attestation challenge has already been used")
        if expired:
            raise ChallengeExpiredError("the attestation challenge has expired")
        raise ChallengeInvalidError("unknown attestation challenge")

    # --- enrollment -----------------------------------------------------------------------

    def verify_enrollment(
        self,
        principal: Principal,
        device_id: str,
        device_key: RecipientPublicKey,
        attestation: AttestationIn,
    ) -> VerifiedAttestation:
        """Consume the challenge and verify the evidence for ``device_key``.

        The same enrollment sent again after it succeeded (a lost response) gets the
        stored result back instead of a replay refusal (:meth:`_enrolled_with`).

        Raises:
            AttestationUnsupportedError: The platform is not configured.
            ChallengeInvalidError: The challenge is unknown, used, expired or not the caller's.
            AttestationError: The evidence was refused (an ``attestation_failed`` event
                is recorded first).
        """
        verifier = self._registry.get(attestation.platform)
        retried = self._enrolled_with(principal, device_id, device_key, attestation)
        if retried is not None:
            return retried
        challenge = self._consume(principal, attestation.challenge_id, "enroll", device_id)
        try:
            if len(attestation.evidence) > MAX_EVIDENCE_BYTES:
                raise AttestationMalformedError("attestation evidence is too large")
            result = verifier.verify(
                attestation.evidence,
                challenge=challenge,
                device_key=device_key,
                now=int(self._clock()),
            )
            if result.platform == APPLE_PLATFORM and result.key_id is not None:
                with self._sessions() as session:
                    known = session.get(AppAttestKey, result.key_id)
                if known is not None:
                    # Apple attests a key once: a second attestation is a replay or a clone.
                    raise AttestationKeyMismatchError("this App Attest key is already attested")
        except AttestationError as exc:
            self._failed(principal, device_id, attestation.platform, exc)
            raise
        return VerifiedAttestation(result, attestation.challenge_id)

    def _enrolled_with(
        self,
        principal: Principal,
        device_id: str,
        device_key: RecipientPublicKey,
        attestation: AttestationIn,
    ) -> VerifiedAttestation | None:
        """The stored result if this exact enrollment already succeeded with this challenge.

        A client whose registration went through but whose response was lost sends the
        same body again. Its challenge is used, yet this is no replay: the same user,
        device id, key and platform were verified with it. Anything else with a used
        challenge stays a replay (:meth:`_consume`).
        """
        with self._sessions() as session:
            row = session.scalars(
                select(DeviceAttestation)
                .join(Device, Device.id == DeviceAttestation.device_pk)
                .where(
                    Device.user_id == principal.user_id,
                    Device.device_id == device_id,
                    Device.kid == device_key.kid,
                    Device.revoked_at.is_(None),
                    DeviceAttestation.challenge_id == attestation.challenge_id,
                    DeviceAttestation.platform == attestation.platform,
                )
                .limit(1)
            ).first()
            if row is None:
                return None
            result = AttestationResult(
                platform=row.platform,
                level=row.level,
                key_id=row.key_id,
                facts=dict(row.facts),
                signals=tuple(row.signals),
            )
        return VerifiedAttestation(result, attestation.challenge_id, recorded=True)

    def _failed(
        self, principal: Principal, device_id: str | None, platform: str, exc: AttestationError
    ) -> None:
        details = {"platform": platform[:32], "code": exc.code}
        # A server-side failure (the status list unreachable, a bad configuration) says
        # nothing about the device: audited, but never a fraud event, which would make
        # every user who enrolls during an outage malicious for good.
        server_side = isinstance(exc, _SERVER_SIDE_ERRORS)
        event = EVENT_REPLAYED if isinstance(exc, AttestationCounterError) else EVENT_FAILED
        with self._sessions.begin() as session:
            if not server_side:
                self._events.add(
                    session, event, user_id=principal.user_id, device_id=device_id, details=details
                )
            if self._audit is not None:
                self._audit.append(
                    session,
                    _AUDIT_FAILED,
                    actor=f"user:{principal.user_id}",
                    user_id=principal.user_id,
                    device_id=device_id,
                    details=details,
                )
        (_log.warning if server_side else _log.info)(
            "attestation_refused", platform=platform[:32], code=exc.code
        )

    def record(self, session: Session, device: Device, verified: VerifiedAttestation) -> None:
        """Store ``verified`` on ``device`` inside the caller's transaction.

        Also adds an ``attestation_weak`` event per fraud signal and an
        ``attestation.verified`` audit entry, in the same transaction.
        """
        if verified.recorded:
            return
        result = verified.result
        now = int(self._clock())
        facts = {k: v for k, v in result.facts.items() if k != "public_key"}
        session.add(
            DeviceAttestation(
                device_pk=device.id,
                platform=result.platform,
                level=result.level,
                key_id=result.key_id,
                facts=facts,
                signals=list(result.signals),
                challenge_id=verified.challenge_id,
                verified_at=now,
            )
        )
        if result.platform == APPLE_PLATFORM and result.key_id is not None:
            public_key = base64.b64decode(str(result.facts["public_key"]))
            session.add(
                AppAttestKey(
                    key_id=result.key_id,
                    device_pk=device.id,
                    app_id=str(result.facts["app_id"]),
                    public_key=public_key,
                    sign_count=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        for signal in result.signals:
            self._events.add(
                session,
                EVENT_WEAK,
                user_id=device.user_id,
                device_id=device.device_id,
                details={"platform": result.platform, "signal": signal},
            )
        if self._audit is not None:
            self._audit.append(
                session,
                _AUDIT_VERIFIED,
                actor=f"user:{device.user_id}",
                user_id=device.user_id,
                device_id=device.device_id,
                details={
                    "platform": result.platform,
                    "level": result.level,
                    "signals": list(result.signals),
                },
            )

    @staticmethod
    def latest(session: Session, device: Device) -> DeviceAttestation | None:
        """The device's most recent verified attestation, if any."""
        return session.scalars(
            select(DeviceAttestation)
            .where(DeviceAttestation.device_pk == device.id)
            .order_by(DeviceAttestation.id.desc())
            .limit(1)
        ).first()

    # --- policy ---------------------------------------------------------------------------

    def policy_for(self, spec: ModelSpec) -> AttestationPolicy:
        """The model's policy, or the default one."""
        return spec.attestation or self._settings.attestation.default_policy

    def enforce(
        self, session: Session, principal: Principal, device: Device, spec: ModelSpec
    ) -> None:
        """Apply ``spec``'s policy to ``device`` inside the IML request's transaction.

        ``suspicious`` adds an ``attestation_missing`` event to the transaction; ``refuse``
        raises (the caller records the refusal with :meth:`refused` after rollback).

        Raises:
            AttestationRequiredError: The policy refuses a device without a sufficient
                attestation.
        """
        policy = self.policy_for(spec)
        if policy.assertion_max_age_seconds is not None:
            self._spend_assertion(session, device, spec, policy.assertion_max_age_seconds)
        if not policy.required:
            return
        latest = self.latest(session, device)
        platform, level = (latest.platform, latest.level) if latest else (None, None)
        if platform == DEV_PLATFORM and self._settings.mode == "production":
            # A development result recorded before a switch to production proves nothing.
            platform = level = None
        if satisfies(policy, platform, level):
            return
        if policy.on_missing == "allow":
            return
        if policy.on_missing == "suspicious":
            self._events.add(
                session,
                EVENT_MISSING,
                user_id=principal.user_id,
                device_id=device.device_id,
                details={"model_id": spec.id, "action": "suspicious"},
            )
            return
        raise AttestationRequiredError(
            f"model {spec.id!r} requires a device attestation: one of {policy.required}"
        )

    def _spend_assertion(
        self, session: Session, device: Device, spec: ModelSpec, max_age_seconds: int
    ) -> None:
        """Spend the App Attest device's fresh assertion (compare-and-set), if it has a key.

        Raises:
            AttestationRequiredError: The device has an App Attest key and no unspent
                assertion younger than ``max_age_seconds``.
        """
        has_key = session.scalars(
            select(AppAttestKey.key_id).where(AppAttestKey.device_pk == device.id).limit(1)
        ).first()
        if has_key is None:
            return  # not an App Attest device: the platform cannot assert per request
        now = int(self._clock())
        spent = session.execute(
            update(AppAttestKey)
            .where(
                AppAttestKey.device_pk == device.id,
                AppAttestKey.unspent_assertion_at.is_not(None),
                AppAttestKey.unspent_assertion_at >= now - max_age_seconds,
            )
            .values(unspent_assertion_at=None)
        )
        if getattr(spent, "rowcount", 0) < 1:
            raise AttestationRequiredError(
                f"model {spec.id!r} requires a fresh App Attest assertion for each request"
            )

    def refused(self, principal: Principal, device_id: str, model_id: str) -> None:
        """Record an IML request refused for want of attestation (own transaction)."""
        self._events.record(
            EVENT_MISSING,
            user_id=principal.user_id,
            device_id=device_id,
            details={"model_id": model_id, "action": "refuse"},
        )

    # --- App Attest assertions --------------------------------------------------------------

    def verify_assertion(
        self, principal: Principal, device: Device, challenge_id: str, assertion: bytes
    ) -> int:
        """Verify a per-request App Attest assertion by ``device`` and advance its counter.

        The assertion is over ``client_data(challenge, device key)`` of an
        ``assertion`` challenge; the counter is stored with a compare-and-set update.

        Returns:
            The new counter.

        Raises:
            AttestationUnsupportedError: App Attest is not configured, or the device has
                no attested App Attest key.
            ChallengeInvalidError: The challenge is unknown, used, expired or not the caller's.
            AttestationError: The assertion was refused (an event is recorded first).
        """
        if APPLE_PLATFORM not in self._registry:
            raise AttestationUnsupportedError("App Attest is not configured on this server")
        verifier = self._registry.get(APPLE_PLATFORM)
        if not isinstance(verifier, AppleAppAttestVerifier):
            raise AttestationConfigError("the apple-appattest verifier cannot verify assertions")
        with self._sessions() as session:
            # The latest attested key: a reinstalled app re-attests with a new key, and
            # the old one cannot sign any more.
            key = session.scalars(
                select(AppAttestKey)
                .where(AppAttestKey.device_pk == device.id)
                .order_by(AppAttestKey.created_at.desc(), AppAttestKey.key_id)
                .limit(1)
            ).first()
            if key is None:
                raise AttestationUnsupportedError("the device has no attested App Attest key")
            key_id, public_key, app_id, stored = (
                key.key_id,
                bytes(key.public_key),
                key.app_id,
                key.sign_count,
            )
        challenge = self._consume(principal, challenge_id, "assertion", device.device_id)
        device_key = jwk_to_key(device.public_jwk)
        if not isinstance(device_key, RecipientPublicKey):
            raise AttestationConfigError("the stored device key is not a recipient key")
        try:
            checked = verifier.verify_assertion(
                assertion,
                client_data=client_data(challenge, device_key),
                public_key=public_key,
                app_id=app_id,
                stored_count=stored,
            )
            with self._sessions.begin() as session:
                advanced = session.execute(
                    update(AppAttestKey)
                    .where(
                        AppAttestKey.key_id == key_id,
                        AppAttestKey.sign_count < checked.sign_count,
                    )
                    .values(
                        sign_count=checked.sign_count,
                        updated_at=int(self._clock()),
                        unspent_assertion_at=int(self._clock()),
                    )
                )
                if getattr(advanced, "rowcount", 0) != 1:
                    raise AttestationCounterError("the assertion counter did not increase")
        except AttestationError as exc:
            self._failed(principal, device.device_id, APPLE_PLATFORM, exc)
            raise
        return checked.sign_count


def build_attestation_service(
    sessions: SessionFactory,
    settings: Settings,
    events: EventService,
    clock: Clock,
    *,
    audit: AuditLog | None = None,
) -> AttestationService:
    """The service with the verifiers the settings enable.

    Raises:
        ConfigurationError: The attestation settings are unusable.
    """
    try:
        registry = build_registry(settings)
    except AttestationConfigError as exc:
        raise ConfigurationError(f"attestation: {exc.message}") from None
    return AttestationService(sessions, settings, events, clock, registry, audit=audit)
