"""Overload: past its limits the server answers 429 or 503 with Retry-After, never a 500.

Everything runs in process and is made deterministic with gates: a generator that waits
for a test's signal keeps the job worker busy, and an authenticator that waits keeps
requests in flight. Limits are tiny so a handful of requests is already an overload.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from modelseal.server.api.middleware import (
    InFlightLimitMiddleware,
    Message,
    Receive,
    Scope,
    Send,
)
from modelseal.server.app import create_app
from modelseal.server.clock import ManualClock
from modelseal.server.db.models import Job
from modelseal.server.errors import (
    ConfigurationError,
    QueueFullError,
    ShuttingDownError,
)
from modelseal.server.generators import GenerationRequest, deterministic_test_generator
from modelseal.server.jobs import InProcessJobRunner, JobSlot
from modelseal.server.services.accounts import Authenticator, Principal
from modelseal.server.settings import load_settings

from .conftest import Harness, make_settings

WAIT_SECONDS = 20.0
_GATES: dict[str, threading.Event] = {}


def gated_generator(request: GenerationRequest) -> bytearray:
    """The test generator, once the test opens the gate named by ``options.gate``."""
    if not _GATES[str(request.options["gate"])].wait(WAIT_SECONDS):
        raise TimeoutError("the test never opened the generator gate")
    return deterministic_test_generator(request)


@pytest.fixture
def gate() -> Iterator[tuple[str, threading.Event]]:
    name = secrets.token_hex(8)
    event = _GATES[name] = threading.Event()
    yield name, event
    event.set()
    del _GATES[name]


def gated_model(gate_name: str) -> list[dict[str, Any]]:
    return [
        {
            "id": "slow",
            "generator": f"{__name__}:gated_generator",
            "options": {"gate": gate_name, "size_bytes": 1000},
        }
    ]


@contextlib.contextmanager
def serve(
    tmp_path: Path, logs: io.StringIO, gate: threading.Event, **overrides: Any
) -> Iterator[Harness]:
    """A server whose gate is opened before it stops, so shutdown never waits on a test."""
    settings = make_settings(tmp_path / "data", **overrides)
    clock = ManualClock()
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        try:
            yield Harness(client, app.state.services, clock, settings, logs)
        finally:
            gate.set()


class GatedAuthenticator:
    """The real authenticator, entered only when the test opens the gate."""

    def __init__(self, inner: Authenticator, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.entered = threading.Semaphore(0)

    def authenticate(self, credential: str) -> Principal:
        self.entered.release()
        if not self.gate.wait(WAIT_SECONDS):
            raise TimeoutError("the test never opened the authentication gate")
        return self.inner.authenticate(credential)


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    """Status, error code and Retry-After of a refusal with the standard error body."""
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"], response.headers.get("Retry-After", "")


def job_rows(server: Harness) -> dict[str, int]:
    with server.services.sessions() as session:
        rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return dict(rows)


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def request_slow_iml(server: Harness, token: str) -> httpx.Response:
    response: httpx.Response = server.client.post(
        "/v1/imls", json={"model_id": "slow", "device_id": "phone"}, headers=server.auth(token)
    )
    return response


def test_a_full_job_queue_refuses_iml_requests_with_429_queue_full_and_creates_no_job(
    tmp_path: Path, log_stream: io.StringIO, gate: tuple[str, threading.Event]
) -> None:
    name, event = gate
    limits = {"job_workers": 1, "max_queued_jobs": 2, "retry_after_seconds": 3}
    with serve(tmp_path, log_stream, event, models=gated_model(name), **limits) as server:
        token = server.user("alice")
        server.register(token, "phone")
        first = request_slow_iml(server, token)
        assert first.status_code == 202, first.text
        job_url = f"/v1/jobs/{first.json()['job_id']}"
        # Once the worker holds the first job, it no longer counts as queued.
        wait_for(
            lambda: (
                server.client.get(job_url, headers=server.auth(token)).json()["status"] == "running"
            ),
            "the first job to start",
        )
        accepted = [first, *(request_slow_iml(server, token) for _ in range(2))]
        assert [r.status_code for r in accepted] == [202, 202, 202]

        refused = [request_slow_iml(server, token) for _ in range(3)]

        assert [refusal(r) for r in refused] == [(429, "queue_full", "3")] * 3
        assert job_rows(server) == {"running": 1, "queued": 2}
        event.set()
        for response in accepted:
            assert server.wait_job(token, response.json()["job_id"])["status"] == "ready"
        assert job_rows(server) == {"ready": 3}
        again = request_slow_iml(server, token)
        assert again.status_code == 202, again.text
        assert server.wait_job(token, again.json()["job_id"])["status"] == "ready"
        metrics = server.client.get("/metrics").text
        assert 'rejected_requests_total{reason="queue_full"} 3.0' in metrics


def test_requests_beyond_the_in_flight_limit_get_503_overloaded_with_retry_after(
    tmp_path: Path, log_stream: io.StringIO, gate: tuple[str, threading.Event]
) -> None:
    name, event = gate
    limits = {"max_in_flight_requests": 2, "retry_after_seconds": 5}
    with serve(tmp_path, log_stream, event, models=gated_model(name), **limits) as server:
        token = server.user("alice")
        server.register(token, "phone")
        gated = GatedAuthenticator(server.services.authenticator, event)
        server.services.authenticator = gated
        held: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda: held.append(
                    server.client.get("/v1/devices", headers=server.auth(token))
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert gated.entered.acquire(timeout=WAIT_SECONDS)

        shed = [
            server.client.get("/v1/devices", headers=server.auth(token)),
            request_slow_iml(server, token),
            server.client.get("/.well-known/modelseal/issuer-jwks.json"),
            server.client.get("/v1/downloads/anything", headers=server.auth(token)),
        ]
        health = server.client.get("/healthz")
        metrics = server.client.get("/metrics")

        assert [refusal(r) for r in shed] == [(503, "overloaded", "5")] * 4
        assert all(r.headers["X-Request-ID"] for r in shed)
        assert health.status_code == 200
        assert 'rejected_requests_total{reason="overloaded"} 4.0' in metrics.text
        assert job_rows(server) == {}
        event.set()
        for thread in threads:
            thread.join(WAIT_SECONDS)
        assert [r.status_code for r in held] == [200, 200]
        assert server.client.get("/v1/devices", headers=server.auth(token)).status_code == 200
        lines = [json.loads(line) for line in server.logs.getvalue().splitlines()]
        statuses = [line["status"] for line in lines if line.get("event") == "request"]
        assert statuses.count(503) == 4


def test_new_iml_requests_are_refused_first_while_accepted_work_still_gets_in(
    tmp_path: Path, log_stream: io.StringIO, gate: tuple[str, threading.Event]
) -> None:
    name, event = gate
    limits = {"max_in_flight_requests": 4, "max_working_iml_requests": 1}
    with serve(tmp_path, log_stream, event, models=gated_model(name), **limits) as server:
        token = server.user("alice")
        server.register(token, "phone")
        gated = GatedAuthenticator(server.services.authenticator, event)
        server.services.authenticator = gated
        held: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: held.append(server.client.get("/v1/devices", headers=server.auth(token)))
        )
        thread.start()
        assert gated.entered.acquire(timeout=WAIT_SECONDS)

        new_work = request_slow_iml(server, token)
        # Admitted (the refusal comes from the application, not from load shedding).
        other = server.client.get("/v1/jobs/j_unknown")
        jwks = server.client.get("/.well-known/modelseal/issuer-jwks.json")

        assert refusal(new_work) == (503, "overloaded", "1")
        assert refusal(other)[:2] == (401, "unauthenticated")
        assert jwks.status_code == 200
        event.set()
        thread.join(WAIT_SECONDS)
        assert [r.status_code for r in held] == [200]
        assert request_slow_iml(server, token).status_code == 202


def test_at_three_times_overload_only_202_429_and_503_come_back(
    tmp_path: Path, log_stream: io.StringIO, gate: tuple[str, threading.Event]
) -> None:
    name, event = gate
    limits = {"job_workers": 1, "max_queued_jobs": 2, "max_in_flight_requests": 2}
    # What the server can hold at once: requests in flight, queued jobs, running jobs.
    capacity = 2 + 2 + 1
    with serve(tmp_path, log_stream, event, models=gated_model(name), **limits) as server:
        token = server.user("alice")
        server.register(token, "phone")
        start = threading.Barrier(3 * capacity)
        responses: list[httpx.Response] = []
        lock = threading.Lock()

        def burst() -> None:
            start.wait(WAIT_SECONDS)
            response = request_slow_iml(server, token)
            with lock:
                responses.append(response)

        threads = [threading.Thread(target=burst) for _ in range(3 * capacity)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_SECONDS)

        assert len(responses) == 3 * capacity
        statuses = sorted(r.status_code for r in responses)
        assert set(statuses) <= {202, 429, 503}, statuses
        accepted = [r for r in responses if r.status_code == 202]
        # One job may already run, two wait; nothing drains while the gate is shut.
        assert 1 <= len(accepted) <= 3, statuses
        for response in responses:
            if response.status_code != 202:
                status, code, retry_after = refusal(response)
                assert (status, code) in {(429, "queue_full"), (503, "overloaded")}
                assert retry_after == "1"
        assert sum(job_rows(server).values()) == len(accepted)
        event.set()
        for response in accepted:
            assert server.wait_job(token, response.json()["job_id"])["status"] == "ready"
        assert job_rows(server) == {"ready": len(accepted)}


class ShutsDownAfterReserving(InProcessJobRunner):
    """A real runner that stops between a request's reservation and its submission."""

    def reserve(self) -> JobSlot:
        slot = super().reserve()
        self.shutdown(wait=False)
        return slot


def test_a_request_racing_shutdown_gets_503_and_leaves_no_queued_job(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    settings = make_settings(tmp_path / "data")
    runner = ShutsDownAfterReserving(1, retry_after_seconds=2)
    app = create_app(settings, clock=ManualClock(), job_runner=runner)
    with TestClient(app) as client:
        services = app.state.services
        _, token = services.accounts.create_user("alice")
        harness = Harness(client, services, ManualClock(), settings, log_stream)
        harness.register(token, "phone")

        response = client.post(
            "/v1/imls", json={"model_id": "m1", "device_id": "phone"}, headers=harness.auth(token)
        )

        assert refusal(response) == (503, "shutting_down", "2")
        with services.sessions() as session:
            rows = session.execute(select(Job.status, Job.error_code)).all()
        assert [tuple(row) for row in rows] == [("failed", "shutting_down")]
        metrics = client.get("/metrics").text
        assert 'rejected_requests_total{reason="shutting_down"} 1.0' in metrics


def test_the_job_queue_bound_counts_waiting_jobs_not_running_ones() -> None:
    runner = InProcessJobRunner(workers=1, max_queued=1, retry_after_seconds=4)
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def hold() -> None:
        started.set()
        release.wait(WAIT_SECONDS)

    try:
        runner.submit("running", hold)
        assert started.wait(WAIT_SECONDS)
        runner.submit("waiting", lambda: done.append("waiting"))
        with pytest.raises(QueueFullError, match="queue is full") as info:
            runner.submit("refused", lambda: done.append("refused"))
        assert (info.value.code, info.value.retry_after_seconds) == ("queue_full", 4)
        assert runner.queued() == 1
    finally:
        release.set()
        runner.shutdown(wait=True)
    assert done == ["waiting"]


def test_a_released_job_slot_goes_back_to_the_queue() -> None:
    runner = InProcessJobRunner(workers=1, max_queued=1)
    try:
        slot = runner.reserve()
        with pytest.raises(QueueFullError) as info:
            runner.reserve()
        assert info.value.code == "queue_full"
        slot.release()
        slot.release()
        assert runner.queued() == 0
        with pytest.raises(RuntimeError, match="used or released"):
            slot.submit("late", lambda: None)
        ran = threading.Event()
        runner.reserve().submit("next", ran.set)
        assert ran.wait(WAIT_SECONDS)
    finally:
        runner.shutdown(wait=True)


def test_a_stopped_runner_refuses_reservations_and_reserved_slots() -> None:
    runner = InProcessJobRunner(workers=1, max_queued=4, retry_after_seconds=6)
    slot = runner.reserve()
    runner.shutdown(wait=True)
    with pytest.raises(ShuttingDownError) as refused_slot:
        slot.submit("after", lambda: None)
    with pytest.raises(ShuttingDownError) as refused_reservation:
        runner.reserve()
    for error in (refused_slot.value, refused_reservation.value):
        assert (error.code, error.retry_after_seconds) == ("shutting_down", 6)
    assert runner.queued() == 0


def test_the_in_flight_limit_holds_a_request_until_its_last_byte_and_exempts_probes() -> None:
    async def scenario() -> None:
        last_byte = asyncio.Event()
        streaming = asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            if scope["path"] == "/download":
                streaming.set()
                await last_byte.wait()
            await send({"type": "http.response.body", "body": b"ok"})

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def call(path: str) -> list[Message]:
            sent: list[Message] = []

            async def send(message: Message) -> None:
                sent.append(message)

            scope: Scope = {"type": "http", "method": "GET", "path": path, "headers": []}
            await limiter(scope, receive, send)
            return sent

        refusals: list[int] = []
        limiter = InFlightLimitMiddleware(
            app, limit=1, retry_after_seconds=9, on_refusal=lambda: refusals.append(1)
        )
        download = asyncio.create_task(call("/download"))
        await asyncio.wait_for(streaming.wait(), WAIT_SECONDS)

        refused = await call("/v1/devices")
        probes = [await call("/healthz"), await call("/metrics")]

        assert limiter.in_flight == 1
        start, body = refused
        assert start["status"] == 503
        assert (b"retry-after", b"9") in start["headers"]
        assert json.loads(body["body"])["error"]["code"] == "overloaded"
        assert [sent[0]["status"] for sent in probes] == [200, 200]
        assert refusals == [1]
        last_byte.set()
        await asyncio.wait_for(download, WAIT_SECONDS)
        assert limiter.in_flight == 0
        assert (await call("/v1/devices"))[0]["status"] == 200

    asyncio.run(scenario())


def test_a_streaming_response_blocks_new_work_only_until_its_response_starts() -> None:
    async def scenario() -> None:
        decided, streaming, last_byte = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["path"] == "/v1/downloads/t":
                await decided.wait()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                streaming.set()
                await last_byte.wait()
            else:
                await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def call(method: str, path: str) -> int:
            sent: list[Message] = []

            async def send(message: Message) -> None:
                sent.append(message)

            scope: Scope = {"type": "http", "method": method, "path": path, "headers": []}
            await limiter(scope, receive, send)
            return int(sent[0]["status"])

        limiter = InFlightLimitMiddleware(app, limit=2, new_work_limit=1)
        download = asyncio.create_task(call("GET", "/v1/downloads/t"))
        while limiter.working == 0:
            await asyncio.sleep(0)

        assert await call("POST", "/v1/imls") == 503
        assert await call("GET", "/v1/jobs/j") == 202
        decided.set()
        await asyncio.wait_for(streaming.wait(), WAIT_SECONDS)
        assert (limiter.in_flight, limiter.working) == (1, 0)
        assert await call("POST", "/v1/imls") == 202
        last_byte.set()
        assert await asyncio.wait_for(download, WAIT_SECONDS) == 200
        assert (limiter.in_flight, limiter.working) == (0, 0)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("limit", "new_work_limit"), [(0, None), (2, 0), (2, 3)], ids=["limit", "low", "high"]
)
def test_limiter_bounds_are_checked(limit: int, new_work_limit: int | None) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="must be"):
        InFlightLimitMiddleware(app, limit=limit, new_work_limit=new_work_limit)


def test_overload_limits_are_bounded_settings_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    assert (defaults.max_in_flight_requests, defaults.max_queued_jobs) == (64, 64)
    assert defaults.retry_after_seconds == 1
    monkeypatch.setenv("MODELSEAL_MAX_QUEUED_JOBS", "7")
    monkeypatch.setenv("MODELSEAL_MAX_IN_FLIGHT_REQUESTS", "9")
    settings = load_settings()
    assert (settings.max_in_flight_requests, settings.max_queued_jobs) == (9, 7)
    assert defaults.max_working_iml_requests == 4
    names = ("max_in_flight_requests", "max_queued_jobs", "max_working_iml_requests")
    for name in (*names, "retry_after_seconds"):
        with pytest.raises(ConfigurationError, match=name) as info:
            load_settings(None, **{name: 0})
        assert info.value.code == "config_invalid"
