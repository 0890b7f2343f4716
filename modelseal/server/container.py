"""Wiring: build every service of one server instance from its settings.

Used by :func:`modelseal.server.app.create_app` and by ``modelseal admin``.

Data directory layout (embedded defaults; mode 0700 throughout)::

    <data_dir>/modelseal.db     SQLite database (unless database_url points elsewhere)
    <data_dir>/blobs/<key>      sealed packages, ciphertext only, mode 0600
    <data_dir>/blobs/.tmp-*     packages being written (renamed into place when whole)
    <data_dir>/keyring/         local signing keys (see keyservice.local; states in the DB)

Nothing here is backed up, and nothing here ever holds a plaintext model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine, make_url

from modelseal.audit.note import note_signer_for
from modelseal.server.clock import Clock, SystemClock
from modelseal.server.db.migrate import is_at_head, upgrade
from modelseal.server.db.session import SessionFactory, make_engine, make_session_factory
from modelseal.server.errors import SchemaOutdatedError
from modelseal.server.generators import Generator, load_generator, with_user_data
from modelseal.server.jobs import InProcessJobRunner, JobRunner
from modelseal.server.jobs.registry import RunnerRegistry
from modelseal.server.keyservice import KeyService, build_key_service
from modelseal.server.metrics import Metrics
from modelseal.server.services.abuse import AbuseService
from modelseal.server.services.accounts import (
    AccountService,
    Authenticator,
    OIDCAuthenticator,
    TokenAuthenticator,
)
from modelseal.server.services.attestation import AttestationService, build_attestation_service
from modelseal.server.services.audit import AuditLog
from modelseal.server.services.devices import DeviceService
from modelseal.server.services.downloads import DownloadService
from modelseal.server.services.events import EventService
from modelseal.server.services.examples import ExamplesService, examples_key
from modelseal.server.services.issuance import IssuanceService
from modelseal.server.services.keyring import Keyring
from modelseal.server.services.links import LinkSigner
from modelseal.server.services.sweeper import Sweeper, SweepService
from modelseal.server.services.watermarking import WatermarkingService
from modelseal.server.settings import Settings
from modelseal.server.storage import BlobStore, LocalDirBlobStore

__all__ = ["Services", "build_services", "open_database"]

_log = structlog.get_logger("modelseal.server")


@dataclass(slots=True)
class Services:
    """Everything one server instance runs on."""

    settings: Settings
    clock: Clock
    engine: Engine
    sessions: SessionFactory
    metrics: Metrics
    blobs: BlobStore
    keyring: Keyring
    keys: KeyService
    audit: AuditLog
    runner: JobRunner
    runners: RunnerRegistry
    events: EventService
    accounts: AccountService
    authenticator: Authenticator
    devices: DeviceService
    attestation: AttestationService
    downloads: DownloadService
    issuance: IssuanceService
    sweep: SweepService
    sweeper: Sweeper
    watermarking: WatermarkingService
    abuse: AbuseService
    examples: ExamplesService

    def close(self) -> None:
        """Stop background work and release the database."""
        self.sweeper.stop()
        self.runner.shutdown(wait=True)
        self.runners.stop()
        self.audit.stop()
        self.keys.close()
        self.engine.dispose()


def open_database(settings: Settings) -> Engine:
    """Open the database; dev mode upgrades it to head, production refuses a stale schema.

    Raises:
        SchemaOutdatedError: Production mode and the schema is not at head.
    """
    url = settings.resolved_database_url
    _private_sqlite_file(url)
    engine = make_engine(url)
    if settings.mode == "dev":
        upgrade(engine)
    elif not is_at_head(engine):
        engine.dispose()
        raise SchemaOutdatedError(
            "the database schema is behind this version; run `modelseal admin db upgrade`"
        )
    return engine


def _private_sqlite_file(url: str) -> None:
    """Create a SQLite database file with mode 0600 (its -wal/-shm files inherit it)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database or "")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    os.chmod(path, 0o600)


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    blob_store: BlobStore | None = None,
    job_runner: JobRunner | None = None,
) -> Services:
    """Build every service; creates the data directory, database schema (dev) and keyring.

    Raises:
        ConfigurationError: A generator cannot be loaded, the keyring is broken, or
            (production) the schema is behind.
    """
    clock = clock or SystemClock()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    generators: dict[str, Generator] = {
        spec.id: load_generator(spec.generator) for spec in settings.models
    }
    engine = open_database(settings)
    sessions = make_session_factory(engine)
    metrics = Metrics()
    blobs = blob_store if blob_store is not None else LocalDirBlobStore(settings.blob_dir)
    runner = (
        job_runner
        if job_runner is not None
        else InProcessJobRunner(
            settings.job_workers,
            max_queued=settings.max_queued_jobs,
            retry_after_seconds=settings.retry_after_seconds,
        )
    )
    runners = RunnerRegistry(sessions)
    events = EventService(sessions, clock)
    audit = AuditLog(
        sessions,
        settings,
        clock,
        signer=lambda: note_signer_for(audit.origin, keys.checkpoint_signer()),
    )
    audit.ensure()
    keys = build_key_service(settings, sessions, clock, events=events, audit=audit)
    keyring = Keyring(keys)
    authenticator: Authenticator
    if settings.auth.mode == "oidc":
        authenticator = OIDCAuthenticator(sessions, settings.auth, clock)
    else:
        authenticator = TokenAuthenticator(sessions, settings.auth)
    attestation = build_attestation_service(sessions, settings, events, clock, audit=audit)
    devices = DeviceService(sessions, events, blobs, clock, audit=audit, attestation=attestation)
    abuse = AbuseService(sessions, settings, events, metrics, clock, audit=audit)
    downloads = DownloadService(
        sessions,
        settings,
        LinkSigner(keys.link_keys),
        blobs,
        events,
        metrics,
        clock,
        abuse=abuse,
        audit=audit,
    )
    watermarking = WatermarkingService(sessions, settings)
    examples = ExamplesService(
        sessions, settings.examples, examples_key(settings.examples, settings.keyring_dir), clock
    )
    generators = {k: with_user_data(g, examples.user_data) for k, g in generators.items()}
    issuance = IssuanceService(
        sessions,
        settings,
        generators,
        keyring,
        blobs,
        runner,
        devices,
        downloads,
        events,
        metrics,
        clock,
        watermarking=watermarking,
        abuse=abuse,
        audit=audit,
        attestation=attestation,
        runners=runners,
    )
    sweep = SweepService(sessions, settings, blobs, keyring, clock, audit=audit)
    return Services(
        settings=settings,
        clock=clock,
        engine=engine,
        sessions=sessions,
        metrics=metrics,
        blobs=blobs,
        keyring=keyring,
        keys=keys,
        audit=audit,
        runner=runner,
        runners=runners,
        events=events,
        accounts=AccountService(sessions, settings.auth, clock, audit=audit),
        authenticator=authenticator,
        devices=devices,
        attestation=attestation,
        downloads=downloads,
        issuance=issuance,
        sweep=sweep,
        sweeper=Sweeper(sweep, settings.sweep_interval_seconds),
        watermarking=watermarking,
        examples=examples,
        abuse=abuse,
    )
