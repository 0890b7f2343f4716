"""Several server processes on one port: ``modelseal server --workers N``.

The parent process loads and checks the settings, prepares the data directory,
schema (dev mode), keys and dev secrets once (:func:`prepare`), binds one listening
socket per worker, and starts N worker processes (``spawn``). Each worker builds its
own app with :func:`create_app_from_env` from the same settings (``MODELSEAL_CONFIG``
names the config file, ``MODELSEAL_*`` variables override it), with its own
connection pool, job runner (registered in ``job_runners``, see
:mod:`modelseal.server.jobs.registry`), sweeper, token cache and metrics, and serves
its socket under uvicorn.

Each worker has a socket of its own, all bound to the same address with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers. (With one
shared socket, as ``uvicorn --workers`` does, whichever process is awake accepts: a
few keep-alive connections can all land on one worker while the other idles.) Where
``SO_REUSEPORT`` is missing, the workers share one socket.

The parent restarts a worker that dies (its jobs are failed as ``interrupted`` when
the new one starts), and on SIGINT or SIGTERM asks every worker to stop gracefully
(finish requests in progress and queued jobs), then exits. A worker that dies before
its app was built is a start-up failure: the parent stops everything and exits with
status 1 rather than restart it in a loop.

What the processes share is on disk or in the database: the database, the blob
directory, the keyring, and in dev mode the link key under ``data_dir``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.context import SpawnProcess
from typing import Any

import structlog
from fastapi import FastAPI

from modelseal.server.settings import Settings, load_settings

__all__ = ["APP_FACTORY", "create_app_from_env", "prepare", "serve"]

APP_FACTORY = "modelseal.server.workers:create_app_from_env"
STOP_TIMEOUT_SECONDS = 90.0

_log = structlog.get_logger("modelseal.server")
_spawn = multiprocessing.get_context("spawn")
# In a worker process: set once its app is built (see _worker).
_app_built: Any = None


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
    app = create_app(load_settings())
    if _app_built is not None:
        _app_built.set()
    return app


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and without it
    # Nagle's algorithm and delayed ACKs add about 40 ms to each small response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker(uvicorn_options: dict[str, Any], sock: socket.socket, app_built: Any) -> None:
    """A worker process: serve ``sock`` until SIGINT or SIGTERM."""
    import uvicorn

    global _app_built
    _app_built = app_built
    config = uvicorn.Config(APP_FACTORY, factory=True, **uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])


def serve(host: str, port: int, workers: int, uvicorn_options: dict[str, Any]) -> int:
    """Run ``workers`` worker processes on ``host:port`` until SIGINT or SIGTERM.

    Call :func:`prepare` first, with ``MODELSEAL_CONFIG`` (and any ``MODELSEAL_*``
    overrides) set in the environment the workers inherit.

    Args:
        host: Bind address.
        port: Bind port (0 is refused: every worker must serve the same port).
        workers: Number of worker processes (>= 2).
        uvicorn_options: Keyword arguments of ``uvicorn.Config`` (TLS, proxy headers, logs).

    Returns:
        The exit status: 0 after a requested stop, 1 after a worker failed to start.

    Raises:
        OSError: The address cannot be bound.
    """
    if port == 0:
        raise ValueError("--workers needs a fixed port")
    reuse_port = hasattr(socket, "SO_REUSEPORT")
    count = workers if reuse_port else 1
    sockets = [_listen(host, port, reuse_port=reuse_port) for _ in range(count)]
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _signum, _frame: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    processes: list[tuple[SpawnProcess, Any]] = []

    def start(index: int) -> tuple[SpawnProcess, Any]:
        app_built = _spawn.Event()
        process = _spawn.Process(
            target=_worker,
            args=(uvicorn_options, sockets[index % len(sockets)], app_built),
            name=f"modelseal-worker-{index}",
        )
        process.start()
        _log.info("worker_started", worker=index, pid=process.pid)
        return process, app_built

    status = 0
    try:
        processes.extend(start(index) for index in range(workers))
        while not stop.wait(0.5):
            for index, (process, app_built) in enumerate(processes):
                if process.is_alive():
                    continue
                process.join()
                _log.error("worker_died", worker=index, pid=process.pid, code=process.exitcode)
                if not app_built.is_set():
                    _log.error("worker_start_failed", worker=index, detail="stopping the server")
                    status = 1
                    stop.set()
                    break
                processes[index] = start(index)
    finally:
        for process, _ in processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process, _ in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for sock in sockets:
            sock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
