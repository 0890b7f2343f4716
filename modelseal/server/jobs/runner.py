"""The JobRunner protocol and the in-process runner (a thread pool with a bounded queue).

The in-process runner keeps no queue outside memory: jobs still queued or running
when the process stops are marked failed (``interrupted``) at the next start, and
the device asks again. A distributed runner (a PostgreSQL- or broker-backed queue)
implements the same protocol.

Admission comes before anything is recorded: a caller first takes a
:class:`JobSlot` (which fails with :class:`QueueFullError` when the queue is
full), then writes its job row, then submits into the slot. A refused request
therefore leaves no job row behind, and a slot that is never used is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import structlog

from modelseal.server.errors import QueueFullError, ShuttingDownError

__all__ = ["InProcessJobRunner", "JobRunner", "JobSlot"]

_log = structlog.get_logger("modelseal.server.jobs")


@runtime_checkable
class JobSlot(Protocol):
    """One place in a runner's queue, held until a job is submitted into it or it is released."""

    def submit(self, name: str, job: Callable[[], None]) -> None:
        """Schedule ``job`` in this slot (once); ``name`` is for logs only.

        Raises:
            ShuttingDownError: The runner stopped since the slot was reserved.
        """
        ...

    def release(self) -> None:
        """Give the place back if nothing was submitted; a no-op afterwards."""
        ...


@runtime_checkable
class JobRunner(Protocol):
    """Runs zero-argument job callables somewhere else than the caller's thread."""

    def reserve(self) -> JobSlot:
        """Take a place in the queue for one job.

        Raises:
            QueueFullError: The queue is full; nothing was reserved.
            ShuttingDownError: The runner no longer takes jobs.
        """
        ...

    def submit(self, name: str, job: Callable[[], None]) -> None:
        """Reserve a place and schedule ``job`` in it; ``name`` is for logs only.

        Raises:
            QueueFullError: The queue is full; nothing was scheduled.
            ShuttingDownError: The runner no longer takes jobs.
        """
        ...

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop accepting jobs; with ``wait``, finish those already scheduled."""
        ...


class _InProcessSlot:
    """A reserved place in an :class:`InProcessJobRunner`'s queue."""

    __slots__ = ("_open", "_runner")

    def __init__(self, runner: InProcessJobRunner) -> None:
        self._runner = runner
        self._open = True

    def submit(self, name: str, job: Callable[[], None]) -> None:
        if not self._open:
            raise RuntimeError("this job slot has been used or released")
        self._open = False
        self._runner._start(name, job)

    def release(self) -> None:
        if self._open:
            self._open = False
            self._runner._give_back()


class InProcessJobRunner:
    """A ThreadPoolExecutor-backed :class:`JobRunner` whose queue holds at most ``max_queued``.

    A job counts as queued from its reservation until a worker thread starts it;
    running jobs (at most ``workers``) do not count.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        max_queued: int | None = None,
        retry_after_seconds: int = 1,
    ) -> None:
        """Create a runner.

        Args:
            workers: Threads running jobs (started lazily).
            max_queued: Jobs allowed to wait for a thread; ``None`` is unbounded.
            retry_after_seconds: The delay a :class:`QueueFullError` suggests.
        """
        if max_queued is not None and max_queued < 1:
            raise ValueError(f"max_queued must be >= 1 or None, got {max_queued}")
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ms-job")
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[Future[None]] = set()
        self._queued = 0
        self._max_queued = max_queued
        self._retry_after_seconds = retry_after_seconds

    def reserve(self) -> JobSlot:
        """Take a place in the queue.

        Raises:
            QueueFullError: ``max_queued`` jobs are already waiting.
            ShuttingDownError: The runner is shut down.
        """
        with self._lock:
            if self._closed:
                raise ShuttingDownError("the job runner is shut down", self._retry_after_seconds)
            if self._max_queued is not None and self._queued >= self._max_queued:
                raise QueueFullError(
                    f"the job queue is full ({self._max_queued} jobs waiting); retry later",
                    self._retry_after_seconds,
                )
            self._queued += 1
        return _InProcessSlot(self)

    def submit(self, name: str, job: Callable[[], None]) -> None:
        """Reserve a place and schedule ``job``; failures are logged, never raised to the caller.

        Raises:
            QueueFullError: The queue is full.
            ShuttingDownError: The runner is shut down.
        """
        self.reserve().submit(name, job)

    def _start(self, name: str, job: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                self._queued -= 1
                raise ShuttingDownError("the job runner is shut down", self._retry_after_seconds)
            future = self._executor.submit(self._run, name, job)
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _give_back(self) -> None:
        with self._lock:
            self._queued -= 1

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _run(self, name: str, job: Callable[[], None]) -> None:
        with self._lock:
            self._queued -= 1
        try:
            job()
        except Exception:  # noqa: BLE001 - the job boundary: log and keep the worker alive
            _log.exception("job_crashed", job=name)

    def pending(self) -> int:
        """Jobs scheduled or running."""
        with self._lock:
            return len(self._pending)

    def queued(self) -> int:
        """Places taken by jobs not yet started (reserved or waiting for a thread)."""
        with self._lock:
            return self._queued

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the pool; running jobs finish, queued ones run too when ``wait``."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
