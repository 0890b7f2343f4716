"""The ASGI application: routers, middleware and error mapping, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelseal import __version__
from modelseal.server.api import (
    admin,
    attestation,
    devices,
    downloads,
    events,
    examples,
    imls,
    public,
)
from modelseal.server.api.errors import install_error_handlers
from modelseal.server.api.middleware import (
    BodyGuardMiddleware,
    InFlightLimitMiddleware,
    RequestContextMiddleware,
)
from modelseal.server.clock import Clock
from modelseal.server.container import Services, build_services
from modelseal.server.errors import OverloadedError
from modelseal.server.jobs import JobRunner
from modelseal.server.settings import Settings
from modelseal.server.storage import BlobStore

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    blob_store: BlobStore | None = None,
    job_runner: JobRunner | None = None,
    services: Services | None = None,
) -> FastAPI:
    """Build the issuance server.

    Building it prepares the data directory, the database (dev: upgraded to head;
    production: refused if behind) and the keyring, registers this process's job
    runner, and fails jobs that dead processes left unfinished (other live server
    processes on the same database keep theirs). The sweeper and the runner's
    heartbeat start with the app's lifespan.

    Raises:
        ConfigurationError: Settings, generators, keyring or schema are not usable.
    """
    if services is None:
        services = build_services(
            settings, clock=clock, blob_store=blob_store, job_runner=job_runner
        )
    services.runners.register()
    services.issuance.fail_interrupted()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        services.sweeper.start()
        services.audit.start()
        services.runners.start(on_beat=services.issuance.fail_interrupted)
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="modelseal issuance server",
        version=__version__,
        lifespan=lifespan,
        # The API schema and its browser are development aids: production serves neither.
        docs_url="/docs" if settings.mode == "dev" else None,
        openapi_url="/openapi.json" if settings.mode == "dev" else None,
        redoc_url=None,
    )
    app.state.services = services
    for module in (devices, imls, downloads, public, examples, events, admin, attestation):
        app.include_router(module.router)
    install_error_handlers(app)
    # Outermost last: request id and log line, then load shedding (before any body is
    # read), then the body guard.
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes)
    overloaded = services.metrics.rejected_requests_total.labels(reason=OverloadedError.code)
    app.add_middleware(
        InFlightLimitMiddleware,
        limit=settings.max_in_flight_requests,
        new_work_limit=min(settings.max_working_iml_requests, settings.max_in_flight_requests),
        retry_after_seconds=settings.retry_after_seconds,
        on_refusal=overloaded.inc,
    )
    app.add_middleware(RequestContextMiddleware)
    return app
