"""Several server processes on one data directory: real uvicorn processes on loopback.

* a flow started on one process completes, and its link downloads on another (one
  dev link key per data directory);
* restarting one process does not fail the job another process is running;
* the jobs of a process that died are failed (``interrupted``) at the next start;
* ``modelseal server --workers 2`` runs two registered worker processes on one port, and
  replaces one that dies (its job fails as ``interrupted``);
* the runner registry's liveness rules, in process;
* SQLite transactions: reads do not wait for writers and cannot write; writers queue.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError

from modelseal.envelope import OpenPolicy, open_bytes
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk, parse_jwks
from modelseal.server import workers
from modelseal.server.container import Services, build_services
from modelseal.server.db.models import Job
from modelseal.server.db.runner_models import JobRunnerRow
from modelseal.server.db.session import SessionFactory, make_engine, make_session_factory, reading
from modelseal.server.generators import GenerationRequest, deterministic_test_generator
from modelseal.server.jobs.registry import RunnerRegistry
from modelseal.server.services.accounts import Principal
from modelseal.server.settings import load_settings

from .conftest import TEST_GENERATOR, make_settings

GATED_GENERATOR = "tests.server.test_workers:gated_generator"
REPO_ROOT = Path(__file__).resolve().parents[2]


def gated_generator(request: GenerationRequest) -> bytearray:
    """Test hook: wait (at most 60 s) until the file ``options.gate`` exists, then generate."""
    gate = Path(str(request.options["gate"]))
    deadline = time.monotonic() + 60
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("gate never opened")
        time.sleep(0.02)
    return deterministic_test_generator(request)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One ``modelseal server`` process (or the parent of its workers) on a free loopback port."""

    def __init__(self, config: Path, log_path: Path, *extra: str) -> None:
        self.config = config
        self.log_path = log_path
        self.extra = extra
        self.base = ""
        self._log: IO[str] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
        for _attempt in range(3):
            port = _free_port()
            self._log = self.log_path.open("a")
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modelseal.server",
                    "server",
                    "--config",
                    str(self.config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *self.extra,
                ],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO_ROOT,
            )
            self.base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            self.kill()
            if "address already in use" not in self.log_path.read_text().lower():
                raise AssertionError(f"server did not start:\n{self.log_path.read_text()[-4000:]}")
        raise AssertionError("no free port after three attempts")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int:
        """SIGINT, as an operator's Ctrl-C or a service manager would; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._close_log()
        return code

    def kill(self) -> None:
        """SIGKILL: the process dies with its queue (and is reaped, as a supervisor would)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _write_config(tmp_path: Path, gate: Path) -> Path:
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "sweep_interval_seconds = 0\n"
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
        "options = { size_bytes = 70000 }\n"
        f'[[models]]\nid = "gated"\ngenerator = "{GATED_GENERATOR}"\n'
        f'options = {{ size_bytes = 1000, gate = "{gate}" }}\n'
    )
    return config


def _provision(config: Path) -> tuple[str, RecipientPrivateKey]:
    """A user and a registered device, made in process before any server starts."""
    services = build_services(load_settings(config))
    try:
        info, token = services.accounts.create_user("alice")
        key = RecipientPrivateKey.generate(KEM.X25519)
        principal = Principal(user_id=info.id, subject=info.subject, name=info.name)
        services.devices.register(principal, "phone", "1", key_to_jwk(key.public_key()))
    finally:
        services.close()
    return token, key


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _request(base: str, token: str, model_id: str) -> str:
    response = httpx.post(
        f"{base}/v1/imls",
        json={"model_id": model_id, "device_id": "phone"},
        headers=_auth(token),
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _job(base: str, token: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/jobs/{job_id}", headers=_auth(token), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _wait(base: str, token: str, job_id: str, until: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body = _job(base, token, job_id)
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, f"job {job_id} stuck in {body['status']}"
        time.sleep(0.02)


def _download_and_open(base: str, token: str, job: dict[str, Any], key: RecipientPrivateKey) -> int:
    headers = {**_auth(token), "X-Modelseal-Device": "phone"}
    response = httpx.get(f"{base}{job['download_url']}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    jwks = httpx.get(f"{base}/.well-known/modelseal/issuer-jwks.json", timeout=30).json()
    opened = open_bytes(
        response.content, key, OpenPolicy(issuers=parse_jwks(jwks), audience="phone")
    )
    return len(opened.plaintext)


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    """Every server process a test starts; killed at the end whatever happened."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


def test_two_processes_serve_one_data_dir(tmp_path: Path, processes: list[ServerProcess]) -> None:
    gate = tmp_path / "gate"
    config = _write_config(tmp_path, gate)
    token, key = _provision(config)
    a = ServerProcess(config, tmp_path / "a.log")
    b = ServerProcess(config, tmp_path / "b.log")
    processes += [a, b]
    a.start()
    b.start()

    # A flow started on A completes; B answers the poll and mints the link; A serves it.
    job_id = _request(a.base, token, "m1")
    job = _wait(b.base, token, job_id, {"ready", "failed"})
    assert job["status"] == "ready", job
    assert _download_and_open(a.base, token, job, key) == 70000
    # And the other way round.
    job_id = _request(b.base, token, "m1")
    job = _wait(a.base, token, job_id, {"ready", "failed"})
    assert job["status"] == "ready", job
    assert _download_and_open(b.base, token, job, key) == 70000

    # A runs a job (held at the gate) while B restarts: B's start-up leaves it alone.
    running = _request(a.base, token, "gated")
    assert _wait(b.base, token, running, {"running", "failed"})["status"] == "running"
    assert b.stop() == 0
    b.start()
    assert _job(b.base, token, running)["status"] == "running"
    gate.touch()
    job = _wait(b.base, token, running, {"ready", "failed"})
    assert job["status"] == "ready", job
    assert _download_and_open(b.base, token, job, key) == 1000

    # A dies with a job in progress: at the next start it is failed (the device asks again).
    gate.unlink()
    doomed = _request(a.base, token, "gated")
    assert _wait(b.base, token, doomed, {"running", "failed"})["status"] == "running"
    a.kill()
    c = ServerProcess(config, tmp_path / "c.log")
    processes.append(c)
    c.start()
    job = _job(c.base, token, doomed)
    assert (job["status"], job["error_code"]) == ("failed", "interrupted"), job
    assert b.stop() == 0
    assert c.stop() == 0


def test_workers_option_runs_registered_processes_on_one_port(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    config = _write_config(tmp_path, tmp_path / "gate")
    token, key = _provision(config)
    server = ServerProcess(config, tmp_path / "server.log", "--workers", "2")
    processes.append(server)
    server.start()
    settings = load_settings(config)
    services = build_services(settings)
    try:
        # Both workers register (the second may still be starting when the first answers).
        deadline = time.monotonic() + 60
        while len(_runners(services)) < 2:
            assert time.monotonic() < deadline, "the second worker never registered"
            time.sleep(0.1)
        pids = {row.pid for row in _runners(services)}
        assert len(pids) == 2
        assert server.pid not in pids
        # New connections land on either worker; every flow completes wherever it goes.
        for _ in range(6):
            job_id = _request(server.base, token, "m1")
            job = _wait(server.base, token, job_id, {"ready", "failed"})
            assert job["status"] == "ready", job
            assert _download_and_open(server.base, token, job, key) == 70000
        # Each worker has its own SO_REUSEPORT socket: new connections spread over both
        # (16 requests all on one worker: probability 2^-15).
        for _ in range(10):
            _request(server.base, token, "m1")
        with services.sessions() as session:
            owners = set(session.scalars(select(Job.runner_id)))
        assert owners == {row.id for row in _runners(services)}
        # A worker dies with a job in progress (the gate file does not exist): the parent
        # starts a new one, and the job is failed rather than left running for ever.
        doomed = _request(server.base, token, "gated")
        assert _wait(server.base, token, doomed, {"running", "failed"})["status"] == "running"
        with services.sessions() as session:
            owner = session.get(Job, doomed).runner_id  # type: ignore[union-attr]
        victim = next(row for row in _runners(services) if row.id == owner)
        os.kill(victim.pid, signal.SIGKILL)
        job = _wait(server.base, token, doomed, {"ready", "failed"})
        assert (job["status"], job["error_code"]) == ("failed", "interrupted"), job
        deadline = time.monotonic() + 60
        while len({row.pid for row in _runners(services)} - {victim.pid}) < 2:
            assert time.monotonic() < deadline, "no worker replaced the dead one"
            time.sleep(0.1)
        assert server.stop() == 0
        assert _runners(services) == []  # a clean stop deregisters every worker
    finally:
        services.close()
    assert (tmp_path / "data" / "secrets" / "link.key").stat().st_mode & 0o777 == 0o600


def _runners(services: Services) -> list[JobRunnerRow]:
    with services.sessions() as session:
        return list(session.scalars(select(JobRunnerRow)))


def _add_job(services: Services, runner_id: str | None) -> str:
    job_id = "j_" + os.urandom(8).hex()
    with services.sessions.begin() as session:
        session.add(
            Job(
                id=job_id,
                user_id=1,
                device_pk=1,
                model_id="m1",
                status="running",
                created_at=0,
                runner_id=runner_id,
            )
        )
    return job_id


def test_registry_fails_only_jobs_of_dead_runners(tmp_path: Path) -> None:
    services = build_services(make_settings(tmp_path / "data"))
    try:
        info, _ = services.accounts.create_user("alice")
        principal = Principal(user_id=info.id, subject=info.subject, name=info.name)
        key = RecipientPrivateKey.generate(KEM.X25519)
        services.devices.register(principal, "phone", "1", key_to_jwk(key.public_key()))
        me = services.runners
        me.register()
        other = RunnerRegistry(services.sessions)
        other.register()  # same process: alive while it has a row
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        exited = subprocess.Popen([sys.executable, "-c", "pass"])
        exited.wait()
        try:
            rows = {
                "live_local": _foreign_row(services, pid=sleeper.pid, node=me, heartbeat=0),
                "dead_local": _foreign_row(services, pid=exited.pid, node=me, heartbeat=None),
                "remote_fresh": _foreign_row(services, pid=1, node=None, heartbeat=None),
                "remote_stale": _foreign_row(services, pid=1, node=None, heartbeat=0),
            }
            jobs = {name: _add_job(services, runner) for name, runner in rows.items()}
            jobs["mine"] = _add_job(services, me.runner_id)
            jobs["other"] = _add_job(services, other.runner_id)
            jobs["no_runner"] = _add_job(services, None)
            jobs["unknown_runner"] = _add_job(services, "r_gone")
            assert services.issuance.fail_interrupted() == 4
            with services.sessions() as session:
                status = {
                    name: session.get(Job, job_id).status  # type: ignore[union-attr]
                    for name, job_id in jobs.items()
                }
            assert status == {
                "live_local": "running",
                "dead_local": "failed",
                "remote_fresh": "running",
                "remote_stale": "failed",
                "mine": "running",
                "other": "running",
                "no_runner": "failed",
                "unknown_runner": "failed",
            }
            # Dead runners' rows are gone; the live ones stay.
            assert {row.id for row in _runners(services)} == {
                me.runner_id,
                other.runner_id,
                rows["live_local"],
                rows["remote_fresh"],
            }
            # A stopped runner deregisters: its jobs (if any were left) go at the next check.
            other.stop()
            assert services.issuance.fail_interrupted() == 1
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        services.close()


def _foreign_row(
    services: Services, *, pid: int, node: RunnerRegistry | None, heartbeat: int | None
) -> str:
    """A runner row as another process would write it (``node``: on this machine)."""
    runner_id = "r_" + os.urandom(12).hex()
    now = int(time.time())
    with services.sessions.begin() as session:
        session.add(
            JobRunnerRow(
                id=runner_id,
                host="elsewhere" if node is None else socket.gethostname(),
                node=None if node is None else node.node,
                pid=pid,
                process_started=None,
                started_at=now,
                heartbeat_at=now if heartbeat is None else heartbeat,
            )
        )
    return runner_id


# --- SQLite transactions (db/session.py) -------------------------------------------------


def _counter_engine(tmp_path: Path) -> tuple[Engine, SessionFactory]:
    engine = make_engine(f"sqlite:///{tmp_path / 'counter.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    return engine, make_session_factory(engine)


def test_reads_neither_wait_for_nor_see_an_open_write(tmp_path: Path) -> None:
    engine, sessions = _counter_engine(tmp_path)
    writing, release = threading.Event(), threading.Event()

    def writer() -> None:
        with sessions.begin() as session:
            session.execute(text("UPDATE counter SET n = 1"))
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        started = time.monotonic()
        with reading(sessions) as session:
            assert session.execute(text("SELECT n FROM counter")).scalar_one() == 0
        assert time.monotonic() - started < 1.0  # a write transaction would wait 30 s
    finally:
        release.set()
        thread.join()
    with reading(sessions) as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 1
    engine.dispose()


def test_a_reading_session_cannot_write(tmp_path: Path) -> None:
    engine, sessions = _counter_engine(tmp_path)
    with reading(sessions) as session, pytest.raises(OperationalError, match="readonly"):
        session.execute(text("UPDATE counter SET n = 5"))
    # The pooled connection is writable again for the next (write) transaction.
    with sessions.begin() as session:
        session.execute(text("UPDATE counter SET n = 6"))
    with reading(sessions) as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 6
    engine.dispose()


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    engine, sessions = _counter_engine(tmp_path)
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            for _ in range(10):
                with sessions.begin() as session:
                    n = session.execute(text("SELECT n FROM counter")).scalar_one()
                    session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with reading(sessions) as session:
        assert session.execute(text("SELECT n FROM counter")).scalar_one() == 160
    engine.dispose()


def test_worker_sockets_are_tcp_so_asyncio_disables_nagle() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it each small
    # response waited about 40 ms for a delayed ACK (the 2-worker benchmark showed it).
    port = _free_port()
    first = workers._listen("127.0.0.1", port, reuse_port=True)
    second = workers._listen("127.0.0.1", port, reuse_port=True)  # SO_REUSEPORT: same port
    try:
        assert first.proto == second.proto == socket.IPPROTO_TCP
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        first.close()
        second.close()
