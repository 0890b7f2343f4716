"""Wiring: build every service of one server instance from its settings.

Used by :func:`modelseal.server.app.create_app` and by ``modelseal admin``.

Data directory layout (embedded defaults; mode 0700 throughout)::

    <data_dir>/modelseal.db     SQLite database (unless database_url points elsewhere)
    <data_dir>/blobs/<key>      sealed packages, ciphertext only, mode 0600
    <data_dir>/blobs/.tmp-*     packages being written (renamed into place when whole)
    <data_dir>/keyring/         issuer keys and state.json (see services.keyring)

Nothing here is backed up, and nothing here ever holds a plaintext model.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine, make_url

from modelseal.keys import SignatureAlgorithm
from modelseal.server.clock import Clock, SystemClock
from modelseal.server.db.migrate import is_at_head, upgrade
from modelseal.server.db.session import SessionFactory, make_engine, make_session_factory
from modelseal.server.errors import SchemaOutdatedError
from modelseal.server.generators import Generator, load_generator
from modelseal.server.jobs import InProcessJobRunner, JobRunner
from modelseal.server.metrics import Metrics
from modelseal.server.services.accounts import (
    AccountService,
    Authenticator,
    OIDCAuthenticator,
    TokenAuthenticator,
)
from modelseal.server.services.devices import DeviceService
from modelseal.server.services.downloads import DownloadService
from modelseal.server.services.events import EventService
from modelseal.server.services.issuance import IssuanceService
from modelseal.server.services.keyring import Keyring
from modelseal.server.services.links import LinkSigner
from modelseal.server.services.sweeper import Sweeper, SweepService
from modelseal.server.settings import Settings, decode_link_key
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
    runner: JobRunner
    events: EventService
    accounts: AccountService
    authenticator: Authenticator
    devices: DeviceService
    downloads: DownloadService
    issuance: IssuanceService
    sweep: SweepService
    sweeper: Sweeper

    def close(self) -> None:
        """Stop background work and release the database."""
        self.sweeper.stop()
        self.runner.shutdown(wait=True)
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


def _link_key(settings: Settings) -> bytes:
    if settings.link_signing_key is not None:
        return decode_link_key(settings.link_signing_key.get_secret_value())
    # Dev only (production refuses to load without a key): links die with the process.
    _log.warning("link_signing_key_generated", detail="dev mode: links last one process")
    return secrets.token_bytes(32)


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
    keyring = Keyring(
        settings.keyring_dir,
        clock,
        default_alg=SignatureAlgorithm(settings.issuer_key_alg),
        retire_after_seconds=settings.max_package_ttl_seconds
        + settings.issuer_retire_leeway_seconds,
    )
    keyring.ensure()
    runner = (
        job_runner
        if job_runner is not None
        else InProcessJobRunner(
            settings.job_workers,
            max_queued=settings.max_queued_jobs,
            retry_after_seconds=settings.retry_after_seconds,
        )
    )
    events = EventService(sessions, clock)
    authenticator: Authenticator
    if settings.auth.mode == "oidc":
        authenticator = OIDCAuthenticator(sessions, settings.auth, clock)
    else:
        authenticator = TokenAuthenticator(sessions, settings.auth)
    devices = DeviceService(sessions, events, blobs, clock)
    downloads = DownloadService(
        sessions, settings, LinkSigner(_link_key(settings)), blobs, events, metrics, clock
    )
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
    )
    sweep = SweepService(sessions, settings, blobs, keyring, clock)
    return Services(
        settings=settings,
        clock=clock,
        engine=engine,
        sessions=sessions,
        metrics=metrics,
        blobs=blobs,
        keyring=keyring,
        runner=runner,
        events=events,
        accounts=AccountService(sessions, settings.auth, clock),
        authenticator=authenticator,
        devices=devices,
        downloads=downloads,
        issuance=issuance,
        sweep=sweep,
        sweeper=Sweeper(sweep, settings.sweep_interval_seconds),
    )
