"""Issuance server benchmark: issue -> ready -> download of a 1 MiB model over loopback HTTP.

What runs:

* a real ``modelseal server`` (uvicorn, dev mode, SQLite, local blob directory, in-process job
  runner) in its own process, started through this file's ``_serve`` mode: the same Typer
  command as ``python -m modelseal.server server`` plus an idle stack-sampler thread that only
  wakes for the profile phase (``SIGUSR1`` starts it, ``SIGUSR2`` stops it and writes counts);
  with ``--workers N`` (N > 1) that process is uvicorn's supervisor and N worker processes
  serve the port: server CPU is then the sum over the process tree, the profile phase is
  skipped (the sampler sees only the supervisor) and job metrics are not read (each
  ``/metrics`` scrape answers from one worker);
* a load generator in another process (this file's ``_load`` mode): asyncio and one
  ``httpx.AsyncClient``; every *flow* is ``POST /v1/imls``, ``GET /v1/jobs/{id}`` every
  ``--poll-ms`` until ready, a streamed ``GET`` of the download link, then ``POST .../ack``
  (after the clock stops, as a device would);
* many users, each with one registered X25519 device, created before the server starts.

Phases: *warm-up*; *sustained* (closed loop: ``--concurrency`` flows in flight, new flow as soon
as one ends, for ``--duration`` seconds); *profile* (the same load with the sampler on, so its
cost stays out of the sustained figures); *overload* (open loop: flows started at a fixed rate
of ``--overload-factor`` times the sustained throughput, whatever the server answers). Every
status code is counted; a 429 or 503 must carry ``Retry-After`` and is then honoured.

Run from the repository root::

    .venv/bin/python benchmarks/bench_server.py                    # 60 s phases
    .venv/bin/python benchmarks/bench_server.py --duration 30      # shorter, on a busy machine
    .venv/bin/python benchmarks/bench_server.py --workers 2        # two server processes

Results go to ``benchmarks/out/bench_server-<UTC time>.json`` and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from _rss import cpu_busy_seconds, own_cpu_seconds, wait_until_quiet
from prometheus_client.parser import text_string_to_metric_families

from modelseal.envelope import OpenPolicy, open_bytes
from modelseal.keys import KEM, RecipientPrivateKey, jwk_to_key, key_to_jwk, parse_jwks
from modelseal.server.container import build_services
from modelseal.server.logging import configure_logging
from modelseal.server.services.accounts import Principal
from modelseal.server.settings import load_settings

MODEL_ID = "bench-1mib"
MODEL_SIZE_BYTES = 1 << 20
GENERATOR = "modelseal.server.generators:deterministic_test_generator"
OUT_DIR = Path(__file__).resolve().parent / "out"
ALLOWED_STATUSES = frozenset({200, 201, 202, 204, 206, 429, 503})
SAMPLES_ENV = "MODELSEAL_BENCH_SAMPLES"
FLOW_TIMEOUT_SECONDS = 60.0
DRAIN_SECONDS = 60.0
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


# --- the profiled server (``_serve`` mode) ----------------------------------------------------

# Innermost matching frame wins, so a database call made by a service counts as database.
_CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("/modelseal/server/generators.py", "generating"),
    ("/modelseal/envelope/", "sealing"),
    ("/modelseal/keys/", "sealing"),
    ("/cryptography/", "sealing"),
    ("/modelseal/server/storage/", "blob store"),
    ("/sqlalchemy/", "database"),
    ("/sqlite3/", "database"),
    ("/psycopg/", "database"),
    ("/argon2/", "authentication"),
    ("/jwt/", "authentication"),
    ("/modelseal/server/services/accounts.py", "authentication"),
    ("/structlog/", "logging"),
    ("/modelseal/server/logging.py", "logging"),
    ("/logging/", "logging"),
    ("/prometheus_client/", "metrics"),
    ("/uvicorn/", "http"),
    ("/h11/", "http"),
    ("/starlette/", "http"),
    ("/fastapi/", "http"),
    ("/pydantic", "http"),
    ("/anyio/", "http"),
    ("/asyncio/", "http"),
    ("/modelseal/server/api/", "http"),
    # Queueing for the write lock (db/session.py) and the runner registry's queries.
    ("/modelseal/server/db/", "database"),
    ("/modelseal/server/", "service logic"),
)
# Where a thread parks when it has nothing to do.
_IDLE_FRAMES = frozenset(
    {
        ("selectors.py", "select"),
        ("threading.py", "wait"),
        ("queue.py", "get"),
        ("thread.py", "_worker"),
    }
)


def classify(frame: FrameType) -> tuple[str, str]:
    """The category of one thread's stack (or ``idle``), and a short where-detail."""
    innermost = (os.path.basename(frame.f_code.co_filename), frame.f_code.co_name)
    stack: list[tuple[str, str]] = []
    current: FrameType | None = frame
    while current is not None:
        stack.append((current.f_code.co_filename.replace(os.sep, "/"), current.f_code.co_name))
        current = current.f_back
    # A wait inside SQLAlchemy is a wait for a pooled connection, not idleness.
    if innermost in _IDLE_FRAMES and not any("/sqlalchemy/" in path for path, _ in stack):
        return "idle", ""
    ours = next(
        (
            f"{path.rsplit('/modelseal/', 1)[1]}:{name}"
            for path, name in stack
            if "/modelseal/" in path
        ),
        "-",
    )
    detail = f"{ours} > {innermost[0]}:{innermost[1]}"
    for path, _ in stack:
        for needle, category in _CATEGORY_RULES:
            if needle in path:
                return category, detail
    return "other", detail


class Sampler:
    """Counts, every ``interval_seconds``, what each server thread is doing."""

    def __init__(self, out: Path, interval_seconds: float = 0.005) -> None:
        self._out = out
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counts: dict[str, collections.Counter[str]] = {}
        self._details: collections.Counter[str] = collections.Counter()
        self._samples = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        me = threading.get_ident()
        started = time.perf_counter()
        while not self._stop.is_set():
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                group = _thread_group(names.get(ident, "?"))
                category, detail = classify(frame)
                self._counts.setdefault(group, collections.Counter())[category] += 1
                if category != "idle":
                    self._details[f"{category} | {group} | {detail}"] += 1
            self._samples += 1
            time.sleep(self._interval)
        document = {
            "samples": self._samples,
            "seconds": time.perf_counter() - started,
            "counts": {group: dict(counter) for group, counter in self._counts.items()},
            "top": self._details.most_common(40),
        }
        tmp = self._out.with_suffix(".tmp")
        tmp.write_text(json.dumps(document))
        tmp.replace(self._out)


def _thread_group(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("ms-job"):
        return "job workers"
    if name.startswith("AnyIO worker"):
        return "request threads"
    return "other threads"


def serve(argv: list[str]) -> None:
    """Run ``modelseal server`` with a sampler that SIGUSR1 starts and SIGUSR2 stops."""
    sampler = Sampler(Path(os.environ[SAMPLES_ENV]))
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: sampler.start())
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: sampler.stop())
    from modelseal.server.__main__ import cli

    cli(["server", *argv])


# --- the load generator (``_load`` mode) ------------------------------------------------------


@dataclass
class Recorder:
    """What one load phase saw."""

    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    missing_retry_after: int = 0
    latencies: list[float] = field(default_factory=list)
    post_seconds: list[float] = field(default_factory=list)
    wait_seconds: list[float] = field(default_factory=list)
    download_seconds: list[float] = field(default_factory=list)
    polls: int = 0
    completed: int = 0
    refused_flows: int = 0
    failed_jobs: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_downloaded: int = 0
    started_flows: int = 0
    skipped_arrivals: int = 0
    sample: bytes | None = None
    sample_device: str = ""

    def status(self, what: str, response: httpx.Response) -> None:
        self.statuses[f"{what} {response.status_code}"] += 1
        if response.status_code in (429, 503) and not response.headers.get("Retry-After"):
            self.missing_retry_after += 1


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.05, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


async def flow(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    rec: Recorder,
    poll_seconds: float,
    window: tuple[float, float],
) -> None:
    """One issuance: request, poll until ready, download; ack after the clock stops."""
    auth = {"Authorization": f"Bearer {user['token']}"}
    started = time.perf_counter()
    rec.started_flows += 1
    response = await client.post(
        "/v1/imls", json={"model_id": MODEL_ID, "device_id": user["device_id"]}, headers=auth
    )
    rec.status("POST /v1/imls", response)
    if response.status_code != 202:
        rec.refused_flows += 1
        if response.status_code in (429, 503):
            # A well-behaved client waits as told before it asks again.
            await asyncio.sleep(_retry_after(response))
        return
    posted = time.perf_counter()
    job_id = response.json()["job_id"]
    while True:
        await asyncio.sleep(poll_seconds)
        response = await client.get(f"/v1/jobs/{job_id}", headers=auth)
        rec.status("GET /v1/jobs/{id}", response)
        rec.polls += 1
        if response.status_code in (429, 503):
            await asyncio.sleep(_retry_after(response))
            continue
        job = response.json()
        if job["status"] == "ready":
            break
        if job["status"] == "failed":
            rec.failed_jobs += 1
            rec.errors[f"job failed: {job['error_code']}"] += 1
            return
        if time.perf_counter() - started > FLOW_TIMEOUT_SECONDS:
            rec.errors["job never ready"] += 1
            return
    ready = time.perf_counter()
    headers = {**auth, "X-Modelseal-Device": user["device_id"]}
    while True:
        async with client.stream("GET", job["download_url"], headers=headers) as download:
            rec.status("GET /v1/downloads/{token}", download)
            if download.status_code in (429, 503):
                await asyncio.sleep(_retry_after(download))
                continue
            if download.status_code != 200:
                rec.errors[f"download {download.status_code}"] += 1
                return
            keep = rec.sample is None
            pieces: list[bytes] = []
            size = 0
            async for piece in download.aiter_raw():
                size += len(piece)
                if keep:
                    pieces.append(piece)
        break
    done = time.perf_counter()
    rec.bytes_downloaded += size
    if window[0] <= done <= window[1]:
        rec.completed += 1
        rec.latencies.append(done - started)
        rec.post_seconds.append(posted - started)
        rec.wait_seconds.append(ready - posted)
        rec.download_seconds.append(done - ready)
    if keep and rec.sample is None:
        rec.sample, rec.sample_device = b"".join(pieces), user["device_id"]
    while True:
        response = await client.post(f"/v1/issuances/{job['jti']}/ack", headers=auth)
        rec.status("POST /v1/issuances/{jti}/ack", response)
        if response.status_code not in (429, 503):
            return
        await asyncio.sleep(_retry_after(response))


async def guarded(coro: Any, rec: Recorder) -> None:
    try:
        await coro
    except httpx.HTTPError as exc:
        rec.errors[type(exc).__name__] += 1


async def run_phase(spec: dict[str, Any]) -> Recorder:
    """Run one phase as ``spec`` says; returns what it recorded."""
    users: list[dict[str, Any]] = spec["users"]
    rec = Recorder()
    limits = httpx.Limits(
        max_connections=spec["connections"], max_keepalive_connections=spec["connections"]
    )
    timeout = httpx.Timeout(FLOW_TIMEOUT_SECONDS)
    poll = spec["poll_ms"] / 1000
    async with httpx.AsyncClient(base_url=spec["base"], limits=limits, timeout=timeout) as client:
        start = time.perf_counter() + 0.2
        end = start + spec["duration"]
        window = (start, end)
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        if spec["mode"] == "closed":

            async def worker(slot: int) -> None:
                turn = 0
                mine = users[slot :: spec["concurrency"]] or users
                while time.perf_counter() < end:
                    index = turn % len(mine)
                    await guarded(flow(client, mine[index], rec, poll, window), rec)
                    turn += 1

            await asyncio.wait_for(
                asyncio.gather(*(worker(i) for i in range(spec["concurrency"]))),
                spec["duration"] + DRAIN_SECONDS,
            )
        else:
            interval = 1.0 / spec["rate"]
            tasks: set[asyncio.Task[None]] = set()
            arrival = 0
            while True:
                due = start + arrival * interval
                if due >= end:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(tasks) >= spec["max_outstanding"]:
                    rec.skipped_arrivals += 1
                else:
                    user = users[arrival % len(users)]
                    task = asyncio.create_task(guarded(flow(client, user, rec, poll, window), rec))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                arrival += 1
            if tasks:
                await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
    return rec


def load(spec_path: Path, out_path: Path) -> None:
    """The ``_load`` mode: run the phase in ``spec_path``, write results to ``out_path``."""
    spec = json.loads(spec_path.read_text())
    cpu_before = own_cpu_seconds()[1]
    rec = asyncio.run(run_phase(spec))
    cpu = own_cpu_seconds()[1] - cpu_before
    opened = None
    if rec.sample is not None:
        # One package per phase is opened as its device would: proof the bytes are right.
        user = next(u for u in spec["users"] if u["device_id"] == rec.sample_device)
        key = jwk_to_key(user["device_key"])
        if not isinstance(key, RecipientPrivateKey):
            raise TypeError("device key is not a recipient private key")
        jwks = httpx.get(f"{spec['base']}/.well-known/modelseal/issuer-jwks.json").json()
        policy = OpenPolicy(issuers=parse_jwks(jwks), audience=user["device_id"])
        package = open_bytes(rec.sample, key, policy)
        opened = {"device": user["device_id"], "plaintext_bytes": len(package.plaintext)}
    result = {
        "statuses": dict(rec.statuses),
        "missing_retry_after": rec.missing_retry_after,
        "latencies": rec.latencies,
        "post_seconds": rec.post_seconds,
        "wait_seconds": rec.wait_seconds,
        "download_seconds": rec.download_seconds,
        "polls": rec.polls,
        "completed": rec.completed,
        "started_flows": rec.started_flows,
        "refused_flows": rec.refused_flows,
        "failed_jobs": rec.failed_jobs,
        "errors": dict(rec.errors),
        "bytes_downloaded": rec.bytes_downloaded,
        "skipped_arrivals": rec.skipped_arrivals,
        "client_cpu_seconds": cpu,
        "sample_opened": opened,
    }
    out_path.write_text(json.dumps(result))


# --- the orchestrator -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(work: Path, args: argparse.Namespace, database_url: str | None) -> Path:
    """The server's TOML file: dev mode, one 1 MiB model, the limits under test."""
    lines = [
        f'data_dir = "{work / "data"}"',
        f"job_workers = {args.job_workers}",
        f"max_in_flight_requests = {args.max_in_flight}",
        f"max_queued_jobs = {args.max_queued}",
        f"max_working_iml_requests = {args.max_working_iml}",
        "sweep_interval_seconds = 0",
    ]
    if database_url is not None:
        lines.append(f'database_url = "{database_url}"')
    if args.argon2 == "light":
        # The lightest hashing the settings allow: API token secrets carry 256 random bits.
        lines += [
            "[auth]",
            "argon2_time_cost = 1",
            "argon2_memory_kib = 1024",
            "argon2_parallelism = 1",
        ]
    # Every flow comes from one address and 256 users: the per-client rate limits (a policy,
    # not a capacity) would refuse the benchmark itself. They still run, with limits out of reach.
    unreachable = '"100000000/minute"'
    lines += [
        "[abuse]",
        f"user_rate_limit = {unreachable}",
        f"device_rate_limit = {unreachable}",
        f"ip_rate_limit = {unreachable}",
    ]
    lines += [
        "[[models]]",
        f'id = "{MODEL_ID}"',
        f'generator = "{GENERATOR}"',
        f"options = {{ size_bytes = {MODEL_SIZE_BYTES} }}",
    ]
    config = work / "server.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


@contextlib.contextmanager
def database(kind: str) -> Iterator[str | None]:
    """``None`` (SQLite in the data directory) or the URL of a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    import psycopg

    name = "ms_bench_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def provision(config: Path, users: int) -> list[dict[str, Any]]:
    """Create users and register one X25519 device each, before the server starts."""
    configure_logging(sys.stderr, level="WARNING")
    services = build_services(load_settings(config))
    created = []
    try:
        for index in range(users):
            info, token = services.accounts.create_user(f"bench-{index:05d}")
            key = RecipientPrivateKey.generate(KEM.X25519)
            principal = Principal(user_id=info.id, subject=info.subject, name=info.name)
            device_id = f"device-{index:05d}"
            services.devices.register(principal, device_id, "bench", key_to_jwk(key.public_key()))
            created.append(
                {
                    "name": info.name,
                    "token": token,
                    "device_id": device_id,
                    "device_key": key_to_jwk(key, include_private=True),
                }
            )
    finally:
        services.close()
    return created


class Server:
    """The server process and the probes the orchestrator reads from it."""

    def __init__(self, config: Path, work: Path, workers: int = 1) -> None:
        self.workers = workers
        self.samples_path = work / "samples.json"
        self.log_path = work / "server.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
        env[SAMPLES_ENV] = str(self.samples_path)
        self._log = self.log_path.open("w")
        argv = [sys.executable, __file__, "_serve", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit("server did not start within 120 s")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server process and its live descendants (the workers)."""
        return sum(self.cpu_tree().values())

    def cpu_tree(self) -> dict[int, float]:
        """CPU seconds of the server process and of each live descendant, by pid."""
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
        tree = {self.process.pid}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return {pid: ticks.get(pid, 0) / os.sysconf("SC_CLK_TCK") for pid in tree}

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.base}/metrics", timeout=30).text
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # creation timestamps, not counts
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{label}}}" if label else sample.name] = sample.value
        return values

    def profile(self, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``run()`` with the sampler on; the samples, with ``run()``'s result."""
        self.process.send_signal(signal.SIGUSR1)
        try:
            result = run()
        finally:
            self.process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not self.samples_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        samples: dict[str, Any] = json.loads(self.samples_path.read_text())
        samples["phase"] = result
        return samples

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


def run_load(
    server: Server, work: Path, users: list[dict[str, Any]], name: str, **spec: Any
) -> dict[str, Any]:
    """Run one phase in a fresh load-generator process, with server-side probes around it."""
    spec_path, out_path = work / f"{name}.spec.json", work / f"{name}.out.json"
    spec_path.write_text(json.dumps({"base": server.base, "users": users, **spec}))
    # With several workers each scrape answers from one of them: no usable delta.
    probe = server.metrics if server.workers == 1 else dict
    metrics_before, tree_before = probe(), server.cpu_tree()
    cpu_before = sum(tree_before.values())
    machine_before = cpu_busy_seconds()[1]
    wall = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "_load", str(spec_path), str(out_path)],
        check=True,
        timeout=spec["duration"] + DRAIN_SECONDS + 120,
    )
    wall = time.perf_counter() - wall
    result: dict[str, Any] = json.loads(out_path.read_text())
    after = probe()
    tree_after = server.cpu_tree()
    result["server_cpu_seconds"] = sum(tree_after.values()) - cpu_before
    # How the work spread over the processes (with --workers, over the workers).
    result["server_cpu_by_process"] = {
        str(pid): seconds - tree_before.get(pid, 0.0) for pid, seconds in tree_after.items()
    }
    result["machine_busy_seconds"] = cpu_busy_seconds()[1] - machine_before
    result["wall_seconds"] = wall
    result["load_average_after"] = os.getloadavg()
    result["metrics_delta"] = {
        key: value - metrics_before.get(key, 0.0)
        for key, value in after.items()
        if value != metrics_before.get(key, 0.0)
    }
    result["spec"] = dict(spec)
    spec_path.unlink()
    return result


def calibrate(server: Server, users: list[dict[str, Any]]) -> dict[str, Any]:
    """Server CPU per request, one request at a time, and the job's parts in this process.

    Sequential requests on one keep-alive connection measure what each endpoint costs
    the server with no contention: the CPU floor of an issuance.
    """
    user = users[0]
    auth = {"Authorization": f"Bearer {user['token']}"}
    device = {**auth, "X-Modelseal-Device": user["device_id"]}
    costs: dict[str, float] = {}
    with httpx.Client(base_url=server.base, timeout=30) as client:

        def measure(name: str, call: Callable[[], object], repeats: int) -> None:
            call()
            time.sleep(0.2)
            before = server.cpu_seconds()
            for _ in range(repeats):
                call()
            time.sleep(0.3)  # let the job workers finish what the calls started
            costs[name] = 1000 * (server.cpu_seconds() - before) / repeats

        body = {"model_id": MODEL_ID, "device_id": user["device_id"]}
        jobs: list[str] = []

        def request_iml() -> None:
            response = client.post("/v1/imls", json=body, headers=auth)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/imls: {response.status_code} {response.text}")
            jobs.append(response.json()["job_id"])

        measure("GET /healthz", lambda: client.get("/healthz"), 300)
        measure(
            "GET /v1/devices (auth + one read)",
            lambda: client.get("/v1/devices", headers=auth),
            300,
        )
        measure("POST /v1/imls, with its job", request_iml, 100)
        time.sleep(1)
        ready = jobs[-1]
        measure(
            "GET /v1/jobs/{id}, ready", lambda: client.get(f"/v1/jobs/{ready}", headers=auth), 300
        )
        pending = iter(jobs[:-1])

        def download_and_ack() -> None:
            job = client.get(f"/v1/jobs/{next(pending)}", headers=auth).json()
            response = client.get(job["download_url"], headers=device)
            if response.status_code != 200:
                raise RuntimeError(f"download answered {response.status_code}")
            client.post(f"/v1/issuances/{job['jti']}/ack", headers=auth)

        measure("GET job + download 1 MiB + ack", download_and_ack, 90)
    return {"server_cpu_ms": costs, "job_parts_ms": job_parts()}


def job_parts() -> dict[str, float]:
    """Wall time of the job's parts in this process: generate, seal, store (median of 30)."""
    from modelseal.envelope import Claims, IssueTo, seal_into, sealed_size
    from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm
    from modelseal.server.generators import GenerationRequest, deterministic_test_generator
    from modelseal.server.storage import LocalDirBlobStore, new_blob_key

    request = GenerationRequest(
        "u_bench", MODEL_ID, "device", "j" * 32, {"size_bytes": MODEL_SIZE_BYTES}
    )
    recipient = RecipientPrivateKey.generate(KEM.X25519).public_key()
    signer = IssuerPrivateKey.generate(SignatureAlgorithm.ED25519)
    plaintext = deterministic_test_generator(request)

    def seal() -> bytearray:
        now = int(time.time())
        claims = Claims(
            iss="i", sub="s", aud="d", mid=MODEL_ID, jti="j" * 32, iat=now, exp=now + 900
        )
        to = IssueTo(recipient=recipient, signer=signer, claims=claims)
        out = bytearray(sealed_size(to, len(plaintext), "application/octet-stream"))
        seal_into(plaintext, out, to, ctype="application/octet-stream")
        return out

    package = seal()
    with tempfile.TemporaryDirectory(dir=OUT_DIR) as directory:
        store = LocalDirBlobStore(directory)
        parts: dict[str, Callable[[], object]] = {
            "generate": lambda: deterministic_test_generator(request),
            "seal": seal,
            "store (write + fsync)": lambda: store.put(new_blob_key(), package),
        }
        result: dict[str, float] = {}
        for name, call in parts.items():
            times: list[float] = []
            for _ in range(30):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            result[name] = 1000 * sorted(times)[len(times) // 2]
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    duration = result["spec"]["duration"]
    lat = result["latencies"]
    metrics = result["metrics_delta"]
    jobs = metrics.get("job_latency_seconds_count", 0.0)
    statuses: dict[str, int] = result["statuses"]
    by_code: collections.Counter[int] = collections.Counter()
    for key, count in statuses.items():
        by_code[int(key.rsplit(" ", 1)[1])] += count
    completed = result["completed"]
    return {
        "issuances_per_second": completed / duration,
        "completed": completed,
        "p50_ms": 1000 * percentile(lat, 0.50),
        "p90_ms": 1000 * percentile(lat, 0.90),
        "p99_ms": 1000 * percentile(lat, 0.99),
        "max_ms": 1000 * max(lat, default=math.nan),
        "post_p50_ms": 1000 * percentile(result["post_seconds"], 0.5),
        "wait_p50_ms": 1000 * percentile(result["wait_seconds"], 0.5),
        "download_p50_ms": 1000 * percentile(result["download_seconds"], 0.5),
        "polls_per_issuance": result["polls"] / max(1, result["started_flows"]),
        "job_mean_ms": (
            1000 * metrics.get("job_latency_seconds_sum", 0.0) / jobs if jobs else math.nan
        ),
        "server_cpu_ms_per_issuance": 1000 * result["server_cpu_seconds"] / max(1, completed),
        "client_cpu_ms_per_issuance": 1000 * result["client_cpu_seconds"] / max(1, completed),
        "server_cores": result["server_cpu_seconds"] / result["wall_seconds"],
        "server_cores_by_process": sorted(
            (
                round(seconds / result["wall_seconds"], 3)
                for seconds in result["server_cpu_by_process"].values()
            ),
            reverse=True,
        ),
        "client_cores": result["client_cpu_seconds"] / result["wall_seconds"],
        "machine_cores": result["machine_busy_seconds"] / result["wall_seconds"],
        "status_codes": dict(sorted(by_code.items())),
        "disallowed": {c: n for c, n in by_code.items() if c not in ALLOWED_STATUSES},
        "missing_retry_after": result["missing_retry_after"],
        "errors": result["errors"],
        "refused_flows": result["refused_flows"],
        "started_flows": result["started_flows"],
        "skipped_arrivals": result["skipped_arrivals"],
        "sample_opened": result["sample_opened"],
        "load_average_after": result.get("load_average_after"),
    }


def shares(samples: dict[str, Any]) -> dict[str, Any]:
    """Busy-thread sample shares by category, overall and per thread group."""
    total: collections.Counter[str] = collections.Counter()
    groups = {}
    for group, counts in samples["counts"].items():
        busy = {k: v for k, v in counts.items() if k != "idle"}
        total.update(busy)
        all_group = sum(counts.values())
        groups[group] = {
            "busy_fraction": sum(busy.values()) / all_group if all_group else 0.0,
            "shares": {k: v / max(1, sum(busy.values())) for k, v in sorted(busy.items())},
        }
    overall = sum(total.values())
    return {
        "busy_samples": overall,
        "samples": samples["samples"],
        "seconds": samples["seconds"],
        "top": samples["top"],
        "overall": {k: v / overall for k, v in total.most_common()},
        "groups": groups,
    }


def markdown(report: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in report["load_average_before"])
    lines = [
        f"{report['workers']} server process(es), {report['database']}; "
        f"load average before: {load}",
        "",
        "| phase | issuances/s | p50 ms | p99 ms | server cores | client cores | codes |",
    ]
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for name in ("sustained", "overload"):
        if name not in report["phases"]:
            continue
        s = report["phases"][name]
        codes = ", ".join(f"{c}: {n}" for c, n in s["status_codes"].items())
        lines.append(
            f"| {name} | {s['issuances_per_second']:.1f} | {s['p50_ms']:.0f} | "
            f"{s['p99_ms']:.0f} | {s['server_cores']:.2f} | {s['client_cores']:.2f} | {codes} |"
        )
    if "sweep" in report:
        lines.append("")
        lines.append("| flows in progress | issuances/s | p50 ms | p99 ms | server cores |")
        lines.append("|---:|---:|---:|---:|---:|")
        for concurrency, s in report["sweep"].items():
            lines.append(
                f"| {concurrency} | {s['issuances_per_second']:.1f} | {s['p50_ms']:.0f} | "
                f"{s['p99_ms']:.0f} | {s['server_cores']:.2f} |"
            )
    if "calibrate" in report:
        lines.append("")
        lines.append("| one request at a time | server CPU ms |")
        lines.append("|---|---:|")
        for name, ms in report["calibrate"]["server_cpu_ms"].items():
            lines.append(f"| {name} | {ms:.1f} |")
        for name, ms in report["calibrate"]["job_parts_ms"].items():
            lines.append(f"| job part, in process: {name} | {ms:.2f} (wall) |")
    if "profile" in report:
        lines.append("")
        lines.append("| where server threads were busy | share |")
        lines.append("|---|---:|")
        for category, share in report["profile"]["overall"].items():
            lines.append(f"| {category} | {100 * share:.1f} % |")
    return "\n".join(lines)


def run_phases(
    args: argparse.Namespace, work: Path, database_url: str | None, report: dict[str, Any]
) -> None:
    """Provision, start the server, run every phase, stop the server; fill ``report``."""
    phases = args.phases.split(",")
    config = write_config(work, args, database_url)
    print(f"provisioning {args.users} users and devices ...", file=sys.stderr)
    users = provision(config, args.users)
    server = Server(config, work, args.workers)
    try:
        common = {"poll_ms": args.poll_ms, "connections": max(64, 4 * args.concurrency)}
        closed = {"mode": "closed", "concurrency": args.concurrency, **common}
        print("warm-up ...", file=sys.stderr)
        run_load(server, work, users, "warmup", duration=args.warmup, **closed)
        if "calibrate" in phases:
            print("calibrate ...", file=sys.stderr)
            report["calibrate"] = calibrate(server, users)
        if "sweep" in phases:
            report["sweep"] = {}
            for concurrency in (int(c) for c in args.sweep.split(",")):
                print(f"sweep: {concurrency} flows for {args.sweep_seconds} s ...", file=sys.stderr)
                spec = {**closed, "concurrency": concurrency}
                raw = run_load(server, work, users, "sweep", duration=args.sweep_seconds, **spec)
                report["sweep"][concurrency] = summarize(raw)
        sustained_rate = None
        if "sustained" in phases:
            print(f"sustained {args.duration} s ...", file=sys.stderr)
            raw = run_load(server, work, users, "sustained", duration=args.duration, **closed)
            report["raw"]["sustained"] = raw
            report["phases"]["sustained"] = summarize(raw)
            sustained_rate = report["phases"]["sustained"]["issuances_per_second"]
        if "profile" in phases and args.workers > 1:
            report["profile_skipped"] = "the sampler runs in one process; run with --workers 1"
        elif "profile" in phases:
            print(f"profile {args.profile_seconds} s ...", file=sys.stderr)
            samples = server.profile(
                lambda: summarize(
                    run_load(
                        server, work, users, "profile", duration=args.profile_seconds, **closed
                    )
                ),
            )
            report["profile"] = shares(samples)
            report["profile"]["phase"] = samples["phase"]
        if "overload" in phases:
            rate = args.overload_rate or args.overload_factor * (sustained_rate or 50.0)
            seconds = args.overload_duration or min(args.duration, 30.0)
            print(f"overload {rate:.0f} flows/s for {seconds} s ...", file=sys.stderr)
            raw = run_load(
                server,
                work,
                users,
                "overload",
                duration=seconds,
                mode="open",
                rate=rate,
                max_outstanding=4000,
                poll_ms=args.poll_ms,
                connections=512,
            )
            report["raw"]["overload"] = raw
            report["phases"]["overload"] = summarize(raw)
            report["phases"]["overload"]["offered_per_second"] = rate
    finally:
        report["server_exit_code"] = server.stop()
    log_lines = server.log_path.read_text().splitlines()
    report["server_log"] = {
        "lines": len(log_lines),
        "errors": [line for line in log_lines if '"level": "error"' in line][:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase (<= 60)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--profile-seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop flows")
    parser.add_argument("--overload-factor", type=float, default=3.0)
    parser.add_argument("--overload-duration", type=float, default=None)
    parser.add_argument(
        "--overload-rate", type=float, default=None, help="flows/s (default: factor x sustained)"
    )
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--job-workers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="server processes (uvicorn)")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--max-queued", type=int, default=64)
    parser.add_argument("--max-working-iml", type=int, default=4)
    parser.add_argument("--argon2", choices=("light", "default"), default="light")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--phases", default="calibrate,sweep,sustained,profile,overload")
    parser.add_argument("--sweep", default="1,2,4,8,16,32", help="closed-loop concurrencies")
    parser.add_argument("--sweep-seconds", type=float, default=10.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if not 0 < args.duration <= 60:
        parser.error("--duration must be in (0, 60]")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_server-", dir=OUT_DIR))
    report: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": sys.argv[1:],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "workers": args.workers,
        "database": args.database,
        "load_average_before": os.getloadavg(),
        "phases": {},
        "raw": {},
    }
    # Others' work on a shared machine shows in every figure: start when it is quiet.
    report["waited_for_quiet_seconds"] = wait_until_quiet(120)
    try:
        with database(args.database) as database_url:
            run_phases(args, work, database_url, report)
    finally:
        report["load_average_after"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = OUT_DIR / f"bench_server-{stamp}.json"
    for raw in report["raw"].values():
        raw["latencies"] = sorted(raw["latencies"])
    out.write_text(json.dumps(report, indent=1))
    summary = {k: v for k, v in report.items() if k != "raw"}
    print(json.dumps(summary, indent=1), file=sys.stderr)
    print(markdown(report))
    print(f"\nraw results: {out}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        load(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
