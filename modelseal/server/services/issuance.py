"""Issuance: IML requests, the worker that generates and seals, job status, acknowledgement.

The worker holds the plaintext model only in memory: the generator's result is
sealed into a preallocated buffer, a ``bytearray`` result is zeroed, every
reference is dropped, and only the ciphertext goes to the blob store.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import ColumnElement, CursorResult, Result, select, update
from sqlalchemy.orm import Session

from modelseal.attestation.base import AttestationRequiredError
from modelseal.envelope import Claims, IssueTo, seal_into, sealed_size
from modelseal.errors import ModelSealError
from modelseal.keys import RecipientPublicKey, jwk_to_key
from modelseal.server.clock import Clock
from modelseal.server.db.models import Device, Issuance, Job, User
from modelseal.server.db.session import SessionFactory, reading
from modelseal.server.errors import (
    DeviceRevokedError,
    NotFoundError,
    OverloadedError,
    QuotaExceededError,
    UnknownModelError,
)
from modelseal.server.generators import GenerationRequest, Generator
from modelseal.server.jobs import JobRunner
from modelseal.server.metrics import Metrics
from modelseal.server.services.accounts import Principal
from modelseal.server.services.attestation import AttestationService
from modelseal.server.services.audit import SYSTEM_ACTOR, AuditAction, AuditLog, user_actor
from modelseal.server.services.devices import DeviceService
from modelseal.server.services.downloads import DownloadService
from modelseal.server.services.events import EventService, EventType
from modelseal.server.services.keyring import Keyring
from modelseal.server.settings import Settings
from modelseal.server.storage import BlobStore, new_blob_key

if TYPE_CHECKING:
    from modelseal.server.jobs.registry import RunnerRegistry
    from modelseal.server.services.abuse import AbuseService
    from modelseal.server.services.watermarking import WatermarkingService

__all__ = ["IssuanceInfo", "IssuanceService", "JobStatus", "JobView"]

_log = structlog.get_logger("modelseal.server.issuance")


def _rowcount(result: Result[Any]) -> int:
    # UPDATE statements return a CursorResult, which has the affected row count.
    return int(cast(CursorResult[Any], result).rowcount or 0)


class JobStatus:
    """Job states."""

    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as its owner sees it."""

    job_id: str
    status: str
    model_id: str
    device_id: str
    created_at: int
    error_code: str | None = None
    jti: str | None = None
    download_url: str | None = None
    link_expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class IssuanceInfo:
    """An issuance as operators see it."""

    jti: str
    user_name: str | None
    user_subject: str
    device_id: str
    model_id: str
    package_id: str
    issuer_kid: str
    size: int
    created_at: int
    expires_at: int
    deleted_at: int | None
    deleted_reason: str | None


class IssuanceService:
    """Requests, runs and tracks IML issuance."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        generators: Mapping[str, Generator],
        keyring: Keyring,
        blobs: BlobStore,
        runner: JobRunner,
        devices: DeviceService,
        downloads: DownloadService,
        events: EventService,
        metrics: Metrics,
        clock: Clock,
        watermarking: WatermarkingService | None = None,
        abuse: AbuseService | None = None,
        *,
        audit: AuditLog,
        attestation: AttestationService | None = None,
        runners: RunnerRegistry | None = None,
    ) -> None:
        """Wire the service; ``watermarking`` marks and binds issuances (docs/WATERMARK.md).

        Requests, issuances, failures and acks are written to ``audit`` in the same
        transaction as the change they record.
        """
        self._audit = audit
        self._sessions = sessions
        self._settings = settings
        self._generators = generators
        self._keyring = keyring
        self._blobs = blobs
        self._runner = runner
        self._devices = devices
        self._downloads = downloads
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._watermarking = watermarking
        # Abuse controls (issue 6): honey models, blocked accounts, per-user quotas.
        self._abuse = abuse
        # Device attestation policy per model (issue 7).
        self._attestation = attestation
        # Which process's queue holds a job, so that no process fails another's jobs.
        self._runners = runners

    # --- requests -----------------------------------------------------------------------

    def request(self, principal: Principal, model_id: str, device_id: str) -> JobView:
        """Queue an IML for the caller's device.

        Raises:
            UnknownModelError: No such model.
            QueueFullError: The job queue is full; no job was created.
            ShuttingDownError: The process is stopping; no job is left queued.
            NotFoundError: The caller has no such device.
            DeviceRevokedError: The device is revoked.
            AccountBlockedError: The caller's fraud verdict is ``malicious``.
            QuotaExceededError: The caller's quota for the model is used up this period.
        """
        abuse = self._abuse
        if abuse is not None and abuse.is_honey_model(model_id):
            abuse.honey_model_requested(principal, model_id, device_id)
        spec = self._settings.model(model_id)
        if spec is None or model_id not in self._generators:
            raise UnknownModelError(f"unknown model {model_id!r}")
        # A place in the queue first: a refused request leaves no job row behind,
        # and costs no database write while the server is overloaded.
        try:
            slot = self._runner.reserve()
        except OverloadedError as exc:
            self._metrics.rejected_requests_total.labels(reason=exc.code).inc()
            raise
        try:
            try:
                with self._sessions.begin() as session:
                    verdict = (
                        abuse.require_not_blocked(session, principal.user_id) if abuse else None
                    )
                    device = self._devices.require_active(session, principal, device_id)
                    if self._attestation is not None:
                        self._attestation.enforce(session, principal, device, spec)
                    if abuse is not None and verdict is not None:
                        # In this transaction: a refused job takes nothing, a job takes one unit.
                        abuse.take_quota(session, principal, spec, verdict)
                    job = Job(
                        id="j_" + secrets.token_hex(16),
                        user_id=principal.user_id,
                        device_pk=device.id,
                        model_id=model_id,
                        status=JobStatus.QUEUED,
                        created_at=int(self._clock()),
                        runner_id=self._runners.runner_id if self._runners is not None else None,
                    )
                    session.add(job)
                    view = JobView(job.id, job.status, model_id, device_id, job.created_at)
                    if abuse is not None:
                        self._events.add(
                            session,
                            EventType.IML_REQUESTED,
                            user_id=principal.user_id,
                            device_id=device_id,
                            details={"model_id": model_id, "job_id": job.id},
                        )
                    self._audit.append(
                        session,
                        AuditAction.IML_REQUESTED,
                        actor=user_actor(principal.user_id),
                        user_id=principal.user_id,
                        device_id=device_id,
                        model_id=model_id,
                        details={"job_id": job.id},
                    )
            except AttestationRequiredError:
                if self._attestation is not None:
                    self._attestation.refused(principal, device_id, model_id)
                raise
            except QuotaExceededError as exc:
                if abuse is not None:
                    abuse.quota_refused(principal, exc, model_id)
                raise
            job_id = view.job_id
            try:
                slot.submit(job_id, lambda: self.run(job_id))
            except BaseException as exc:
                # A runner that stopped since the reservation refuses the slot: never
                # leave the row queued for a worker that will not come.
                code = exc.code if isinstance(exc, ModelSealError) else "not_scheduled"
                self._finish(job_id, JobStatus.FAILED, error_code=code)
                if isinstance(exc, OverloadedError):
                    self._metrics.rejected_requests_total.labels(reason=code).inc()
                raise
        finally:
            slot.release()
        return view

    def run(self, job_id: str) -> None:
        """Generate, seal and store one job (runs in a worker)."""
        with self._sessions.begin() as session:
            claimed = _rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.RUNNING, started_at=int(self._clock()))
                )
            )
        if claimed != 1:
            return  # another worker has it, or it is no longer queued
        started = time.monotonic()
        self._metrics.jobs_in_flight.inc()
        try:
            jti = self._generate_and_store(job_id)
        except ModelSealError as exc:
            self._finish(job_id, JobStatus.FAILED, error_code=exc.code)
            _log.warning("job_failed", job_id=job_id, error_code=exc.code)
        except Exception:  # noqa: BLE001 - worker boundary: a generator bug must fail the job
            self._finish(job_id, JobStatus.FAILED, error_code="generation_failed")
            _log.exception("job_failed", job_id=job_id, error_code="generation_failed")
        else:
            _log.info("job_ready", job_id=job_id, jti=jti)
        finally:
            self._metrics.jobs_in_flight.dec()
            self._metrics.job_latency_seconds.observe(time.monotonic() - started)

    def _finish(self, job_id: str, status: str, *, error_code: str | None = None) -> None:
        with self._sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is not None:
                # Atomic, so that of concurrent failures of one job exactly one refunds,
                # and only a job that never became ready (no package was sealed) does.
                refund = (
                    status == JobStatus.FAILED
                    and _rowcount(
                        session.execute(
                            update(Job)
                            .where(
                                Job.id == job_id,
                                Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                            )
                            .values(status=status)
                            .execution_options(synchronize_session=False)
                        )
                    )
                    == 1
                )
                job.status = status
                job.error_code = error_code
                job.finished_at = int(self._clock())
                if status == JobStatus.FAILED:
                    self._audit.append(
                        session,
                        AuditAction.IML_FAILED,
                        actor=SYSTEM_ACTOR,
                        user_id=job.user_id,
                        model_id=job.model_id,
                        details={"job_id": job_id, "error_code": error_code},
                    )
                if refund and self._abuse is not None:
                    # No package was sealed: the request's quota unit comes back.
                    self._abuse.refund_quota(session, job.user_id, job.model_id, job.created_at)

    def _generate_and_store(self, job_id: str) -> str:
        with self._sessions() as session:
            job = session.get(Job, job_id)
            device = session.get(Device, job.device_pk) if job is not None else None
            user = session.get(User, job.user_id) if job is not None else None
            if job is None or device is None or user is None:
                raise NotFoundError("job vanished")
            if device.revoked_at is not None:
                raise DeviceRevokedError("the device is revoked")
            if self._abuse is not None:
                # Blocked while queued: nothing is generated for a blocked account.
                self._abuse.require_not_blocked(session, user.id)
            model_id, device_pk, user_pk = job.model_id, device.id, user.id
            device_id, subject, public_jwk = device.device_id, user.subject, device.public_jwk
        spec = self._settings.model(model_id)
        if spec is None:
            raise UnknownModelError(f"unknown model {model_id!r}")
        recipient = jwk_to_key(public_jwk)
        if not isinstance(recipient, RecipientPublicKey):
            raise NotFoundError("device key vanished")
        signer = self._keyring.active_signer()
        now = int(self._clock())
        jti = secrets.token_hex(16)
        claims = Claims(
            iss=self._settings.issuer_id,
            sub=subject,
            aud=device_id,
            mid=model_id,
            jti=jti,
            iat=now,
            exp=now + spec.package_ttl_seconds,
            lexp=now + spec.licence_seconds if spec.licence_seconds is not None else None,
        )
        to = IssueTo(recipient=recipient, signer=signer, claims=claims)
        request = GenerationRequest(subject, model_id, device_id, jti, dict(spec.options))
        prepare: Callable[[bytes | bytearray], bytearray] | None = None
        watermarking = self._watermarking
        if watermarking is not None and watermarking.applies(spec):
            # Mark and bind the plaintext just before it is sealed.
            def prepare(plaintext: bytes | bytearray) -> bytearray:
                return watermarking.prepare(
                    plaintext, spec.ctype, spec, jti=jti, device_id=device_id
                )

        sealed = self._seal(self._generators[model_id], request, to, spec.ctype, prepare)
        package_id, ciphertext = sealed
        blob_key = new_blob_key()
        self._blobs.put(blob_key, ciphertext)
        try:
            with self._sessions.begin() as session:
                session.add(
                    Issuance(
                        jti=jti,
                        user_id=user_pk,
                        device_pk=device_pk,
                        model_id=model_id,
                        package_id=package_id,
                        issuer_kid=signer.kid,
                        blob_key=blob_key,
                        size=len(ciphertext),
                        created_at=now,
                        expires_at=claims.exp,
                        licence_expires_at=claims.lexp,
                        blob_expires_at=now + spec.blob_ttl_seconds,
                    )
                )
                session.flush()
                if watermarking is not None:
                    watermarking.record(
                        session,
                        spec,
                        jti=jti,
                        user_subject=subject,
                        device_id=device_id,
                        issued_at=now,
                    )
                job = session.get(Job, job_id)
                if job is not None:
                    job.status = JobStatus.READY
                    job.jti = jti
                    job.finished_at = int(self._clock())
                # In the issuance's own transaction: no issuance without its entry.
                self._audit.append(
                    session,
                    AuditAction.IML_ISSUED,
                    actor=SYSTEM_ACTOR,
                    user_id=user_pk,
                    device_id=device_id,
                    model_id=model_id,
                    details={
                        "jti": jti,
                        "job_id": job_id,
                        "package_id": package_id,
                        "issuer_kid": signer.kid,
                        "size": len(ciphertext),
                        "expires_at": claims.exp,
                        "licence_expires_at": claims.lexp,
                    },
                )
        except BaseException:
            self._blobs.delete(blob_key)
            raise
        self._metrics.issuances_total.labels(model=model_id).inc()
        return jti

    @staticmethod
    def _seal(
        generator: Generator,
        request: GenerationRequest,
        to: IssueTo,
        ctype: str,
        prepare: Callable[[bytes | bytearray], bytearray] | None = None,
    ) -> tuple[str, bytearray]:
        plaintext = generator(request)
        try:
            if not isinstance(plaintext, bytes | bytearray):
                raise TypeError(f"generator returned {type(plaintext).__name__}, not bytes")
            if prepare is not None:
                generated = plaintext
                try:
                    plaintext = prepare(generated)
                finally:
                    if isinstance(generated, bytearray):
                        generated[:] = bytes(len(generated))
                    del generated
            out = bytearray(sealed_size(to, len(plaintext), ctype))
            result = seal_into(plaintext, out, to, ctype=ctype)
        finally:
            if isinstance(plaintext, bytearray):
                # Zero in place (same length, so the buffer is not reallocated).
                plaintext[:] = bytes(len(plaintext))
            del plaintext
        return result.package_id, out

    # --- status, acknowledgement ------------------------------------------------------------

    def _own_job(self, session: Session, principal: Principal, job_id: str) -> Job:
        job = session.get(Job, job_id)
        if job is None or job.user_id != principal.user_id:
            raise NotFoundError("no such job")
        return job

    def get_job(self, principal: Principal, job_id: str) -> JobView:
        """The caller's job; a ready job comes with a download link.

        Raises:
            NotFoundError: No such job, or not the caller's.
        """
        # Most polls find the job still at work: answer those from a read, which on
        # SQLite neither waits for nor blocks writers. Only a ready job needs the write
        # transaction below (it may mint a link).
        with reading(self._sessions) as session:
            job = self._own_job(session, principal, job_id)
            device = session.get(Device, job.device_pk)
            if device is None:
                raise NotFoundError("no such job")
            if job.status != JobStatus.READY or job.jti is None or device.revoked_at is not None:
                return JobView(
                    job.id,
                    job.status,
                    job.model_id,
                    device.device_id,
                    job.created_at,
                    error_code=job.error_code,
                    jti=job.jti,
                )
        with self._sessions.begin() as session:
            job = self._own_job(session, principal, job_id)
            device = session.get(Device, job.device_pk)
            if device is None:
                raise NotFoundError("no such job")
            view = JobView(
                job.id,
                job.status,
                job.model_id,
                device.device_id,
                job.created_at,
                error_code=job.error_code,
                jti=job.jti,
            )
            if job.status != JobStatus.READY or job.jti is None or device.revoked_at is not None:
                return view
            issuance = session.get(Issuance, job.jti)
            if issuance is None or issuance.deleted_at is not None:
                return view
            link = self._downloads.link_for(session, issuance, principal, device)
            return JobView(
                view.job_id,
                view.status,
                view.model_id,
                view.device_id,
                view.created_at,
                jti=view.jti,
                download_url=link.url,
                link_expires_at=link.expires_at,
            )

    def ack(self, principal: Principal, jti: str) -> None:
        """The device has the package: delete the stored ciphertext at once (idempotent).

        Raises:
            NotFoundError: No such issuance, or not the caller's.
        """
        with self._sessions.begin() as session:
            issuance = session.get(Issuance, jti)
            if issuance is None or issuance.user_id != principal.user_id:
                raise NotFoundError("no such issuance")
            if issuance.acked_at is not None:
                return
            now = int(self._clock())
            issuance.acked_at = now
            if issuance.deleted_at is None:
                self._blobs.delete(issuance.blob_key)
                issuance.deleted_at = now
                issuance.deleted_reason = "acked"
            device = session.get(Device, issuance.device_pk)
            self._events.add(
                session,
                EventType.ISSUANCE_ACKED,
                user_id=principal.user_id,
                device_id=device.device_id if device is not None else None,
                details={"jti": jti},
            )
            self._audit.append(
                session,
                AuditAction.ISSUANCE_ACKED,
                actor=user_actor(principal.user_id),
                user_id=principal.user_id,
                device_id=device.device_id if device is not None else None,
                model_id=issuance.model_id,
                details={"jti": jti, "deleted_reason": issuance.deleted_reason},
            )

    def fail_interrupted(self) -> int:
        """Mark jobs left queued or running by a process that is gone as failed.

        Without a runner registry every queued or running job is failed (one process
        per database). With one, only jobs of dead runners and jobs that name no runner
        (see :mod:`modelseal.server.jobs.registry`): other live processes keep theirs.
        """
        with self._sessions.begin() as session:
            unfinished: ColumnElement[bool] = Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
            if self._runners is not None:
                live = self._runners.live_runners(session)
                unfinished = unfinished & (Job.runner_id.is_(None) | Job.runner_id.not_in(live))
            jobs = list(session.scalars(select(Job).where(unfinished).with_for_update()))
            now = int(self._clock())
            for job in jobs:
                job.status = JobStatus.FAILED
                job.error_code = "interrupted"
                job.finished_at = now
            session.flush()
            for job in jobs:  # in this transaction: no failed job without its entry
                self._audit.append(
                    session,
                    AuditAction.IML_FAILED,
                    actor=SYSTEM_ACTOR,
                    user_id=job.user_id,
                    model_id=job.model_id,
                    details={"job_id": job.id, "error_code": "interrupted"},
                )
            return len(jobs)

    def recent(self, *, limit: int = 100) -> list[IssuanceInfo]:
        """Recent issuances, newest first (operators)."""
        with self._sessions() as session:
            rows = session.execute(
                select(Issuance, User, Device)
                .join(User, User.id == Issuance.user_id)
                .join(Device, Device.id == Issuance.device_pk)
                .order_by(Issuance.created_at.desc())
                .limit(limit)
            )
            return [
                IssuanceInfo(
                    i.jti,
                    u.name,
                    u.subject,
                    d.device_id,
                    i.model_id,
                    i.package_id,
                    i.issuer_kid,
                    i.size,
                    i.created_at,
                    i.expires_at,
                    i.deleted_at,
                    i.deleted_reason,
                )
                for i, u, d in rows
            ]
