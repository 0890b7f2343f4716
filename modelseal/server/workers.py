"""Several server processes: the app factory uvicorn's worker processes call.

``modelseal server --workers N`` (N > 1) loads and checks the settings, prepares
the data directory, database and keys once in the parent process
(:func:`prepare`), then hands uvicorn the import string :data:`APP_FACTORY`. Each
worker process calls :func:`create_app_from_env`, which reads the same settings
from the environment (``MODELSEAL_CONFIG`` names the config file, ``MODELSEAL_*``
variables override it) and builds its own services: its own connection pool, job
runner (registered in ``job_runners``, see :mod:`modelseal.server.jobs.registry`),
sweeper, token cache and metrics.

What the processes share is on disk or in the database: the database, the blob
directory, the keyring, and in dev mode the link key under ``data_dir``.
"""

from __future__ import annotations

from fastapi import FastAPI

from modelseal.server.settings import Settings, load_settings

__all__ = ["APP_FACTORY", "create_app_from_env", "prepare"]

APP_FACTORY = "modelseal.server.workers:create_app_from_env"


def prepare(settings: Settings) -> None:
    """Do once, before the workers start, what each would otherwise race to do first.

    Creates the data directory, upgrades the schema (dev mode), creates the first
    keys and the dev secrets, then releases everything.

    Raises:
        ConfigurationError: The settings, generators, keys or schema are not usable.
    """
    from modelseal.server.container import build_services

    build_services(settings).close()


def create_app_from_env() -> FastAPI:
    """Build one worker process's app from ``MODELSEAL_CONFIG`` and ``MODELSEAL_*`` variables.

    Raises:
        ConfigurationError: The settings are not usable (the worker exits).
    """
    from modelseal.server.app import create_app
    from modelseal.server.logging import configure_logging

    configure_logging()
    return create_app(load_settings())
