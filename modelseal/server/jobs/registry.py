"""The runner registry: which server processes are alive, so a start-up fails only dead ones' jobs.

With the in-process runner a job lives in the memory of the process that queued it:
if that process dies, nobody will ever run the job, and it must be failed
(``interrupted``) so the device asks again. With several server processes on one
database (``modelseal server --workers N``, or several machines) a starting process
must not fail the jobs of the others. So:

* every server process registers a runner (a random id) in ``job_runners`` and
  refreshes its ``heartbeat_at`` every :data:`HEARTBEAT_SECONDS`;
* each job records the runner that queued it (``jobs.runner_id``);
* a runner is **dead** when its row is gone (it stopped after draining its queue, or
  was reaped), or when it ran on this machine and its process no longer exists
  (same ``node``, and no process with its pid and start time), or, for a runner on
  another machine, when its heartbeat is older than :data:`STALE_AFTER_SECONDS`;
* at start-up and on every heartbeat, each process fails the queued and running jobs
  of dead runners (and jobs without a runner, from before runners were recorded),
  and deletes dead runners' rows.

Heartbeats use the wall clock, not the service clock: they are about processes,
not about the business time tests move around.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from modelseal.server.db.runner_models import JobRunnerRow
from modelseal.server.db.session import SessionFactory

__all__ = ["HEARTBEAT_SECONDS", "STALE_AFTER_SECONDS", "RunnerRegistry"]

_log = structlog.get_logger("modelseal.server.jobs")

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 60


def _node_tag() -> str | None:
    """A hash naming this machine's process table (None where it cannot be told).

    Host name, kernel boot id and PID namespace together: two containers with the
    same host name on one kernel still differ by their PID namespace.
    """
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    material = "\n".join((socket.gethostname(), boot_id, pid_namespace))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _process_started(pid: int) -> tuple[int, str] | None:
    """Start time (clock ticks since boot) and state of process ``pid``, or None if none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19]), fields[0]
    except (IndexError, ValueError):
        return None


class RunnerRegistry:
    """This process's runner row, its heartbeat thread, and the liveness of the others."""

    def __init__(
        self,
        sessions: SessionFactory,
        *,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_after_seconds: int = STALE_AFTER_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        """Create an unregistered registry with a fresh runner id."""
        self.runner_id = "r_" + secrets.token_hex(12)
        self._sessions = sessions
        self._heartbeat_seconds = heartbeat_seconds
        self._stale_after = stale_after_seconds
        self._now = now
        self._node = _node_tag()
        self._pid = os.getpid()
        started = _process_started(self._pid) if self._node is not None else None
        self._process_started = started[0] if started is not None else None
        self._registered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def node(self) -> str | None:
        """This machine's process-table tag (None where it cannot be told)."""
        return self._node

    def register(self) -> None:
        """Insert (or refresh) this process's runner row."""
        now = int(self._now())
        with self._sessions.begin() as session:
            row = session.get(JobRunnerRow, self.runner_id)
            if row is None:
                session.add(
                    JobRunnerRow(
                        id=self.runner_id,
                        host=socket.gethostname()[:255],
                        node=self._node,
                        pid=self._pid,
                        process_started=self._process_started,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            else:
                row.heartbeat_at = now
        self._registered = True

    def beat(self) -> None:
        """Refresh the heartbeat; re-register if another process reaped this runner."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(JobRunnerRow)
                .where(JobRunnerRow.id == self.runner_id)
                .values(heartbeat_at=int(self._now()))
            )
            refreshed = bool(getattr(result, "rowcount", 0))
        if not refreshed:
            _log.warning("job_runner_reregistered", runner_id=self.runner_id)
            self.register()

    def is_alive(self, row: JobRunnerRow, now: int) -> bool:
        """Whether ``row``'s process can still run its jobs."""
        if row.id == self.runner_id:
            return True
        if self._node is not None and row.node == self._node:
            found = _process_started(row.pid)
            if found is None:
                return False
            started, state = found
            if state in ("Z", "X"):
                return False
            return row.process_started is None or started == row.process_started
        return row.heartbeat_at >= now - self._stale_after

    def live_runners(self, session: Session) -> list[str]:
        """Ids of live runners (this one included); deletes the rows of dead ones.

        Call it inside a write transaction: the caller then fails the dead ones' jobs
        in the same transaction.
        """
        now = int(self._now())
        live: list[str] = []
        dead: list[str] = []
        for row in session.scalars(select(JobRunnerRow)):
            (live if self.is_alive(row, now) else dead).append(row.id)
        if dead:
            session.execute(delete(JobRunnerRow).where(JobRunnerRow.id.in_(dead)))
            _log.warning("job_runners_dead", runners=dead)
        if self.runner_id not in live:
            live.append(self.runner_id)
        return live

    def start(self, on_beat: Callable[[], object] | None = None) -> None:
        """Start the heartbeat thread; ``on_beat`` runs after each heartbeat (errors logged)."""
        if self._thread is not None:
            return
        if not self._registered:
            self.register()
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(on_beat,), name="ms-runner-heartbeat", daemon=True
        )
        self._thread.start()

    def _loop(self, on_beat: Callable[[], object] | None) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            try:
                self.beat()
                if on_beat is not None:
                    on_beat()
            except Exception:  # noqa: BLE001 - keep beating; the database may come back
                _log.exception("job_runner_heartbeat_failed", runner_id=self.runner_id)

    def stop(self) -> None:
        """Stop the heartbeat and delete this runner's row (call after the job queue drained)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if not self._registered:
            return
        try:
            with self._sessions.begin() as session:
                session.execute(delete(JobRunnerRow).where(JobRunnerRow.id == self.runner_id))
        except Exception:  # noqa: BLE001 - shutting down: a stale row is reaped by the next start
            _log.exception("job_runner_deregister_failed", runner_id=self.runner_id)
        self._registered = False
