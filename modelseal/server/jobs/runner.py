"""The JobRunner protocol and the in-process runner (a thread pool).

The in-process runner keeps no queue outside memory: jobs still queued or running
when the process stops are marked failed (``interrupted``) at the next start, and
the device asks again. A distributed runner (a PostgreSQL- or broker-backed queue)
implements the same protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import structlog

__all__ = ["InProcessJobRunner", "JobRunner"]

_log = structlog.get_logger("modelseal.server.jobs")


@runtime_checkable
class JobRunner(Protocol):
    """Runs zero-argument job callables somewhere else than the caller's thread."""

    def submit(self, name: str, job: Callable[[], None]) -> None:
        """Schedule ``job``; ``name`` is for logs only."""
        ...

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop accepting jobs; with ``wait``, finish those already scheduled."""
        ...


class InProcessJobRunner:
    """A ThreadPoolExecutor-backed :class:`JobRunner`."""

    def __init__(self, workers: int = 2) -> None:
        """Create a runner with ``workers`` threads (started lazily)."""
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ms-job")
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[Future[None]] = set()

    def submit(self, name: str, job: Callable[[], None]) -> None:
        """Schedule ``job``; failures are logged, never raised to the submitter."""
        with self._lock:
            if self._closed:
                raise RuntimeError("job runner is shut down")
            future = self._executor.submit(self._run, name, job)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    @staticmethod
    def _run(name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # noqa: BLE001 - the job boundary: log and keep the worker alive
            _log.exception("job_crashed", job=name)

    def pending(self) -> int:
        """Jobs scheduled or running."""
        with self._lock:
            return len(self._pending)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the pool; running jobs finish, queued ones run too when ``wait``."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
