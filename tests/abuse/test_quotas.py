"""Per-user IML quotas: atomic under concurrency, refused with a reset time, refunded on failure."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from modelseal.server.db.abuse_models import QuotaCounter
from modelseal.server.db.models import Issuance, Job
from modelseal.server.errors import QuotaExceededError
from modelseal.server.services.issuance import JobView
from modelseal.server.settings import QuotaPolicy
from tests.server.conftest import Harness

from .conftest import QUOTA, abuse_overrides, start

CONCURRENT = 50
ROUNDS = 20


def race(h: Harness, name: str) -> tuple[int, int]:
    """50 threads ask for m1 at the same instant; returns (accepted, refused by quota)."""
    token = h.user(name)
    device = h.register(token, f"{name}-phone")
    principal = h.services.authenticator.authenticate(token)
    barrier = threading.Barrier(CONCURRENT)

    def one(_: int) -> JobView | QuotaExceededError:
        barrier.wait()
        try:
            return h.services.issuance.request(principal, "m1", device.device_id)
        except QuotaExceededError as exc:
            return exc

    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(one, range(CONCURRENT)))
    accepted = [r for r in results if isinstance(r, JobView)]
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert len(accepted) + len(refused) == CONCURRENT
    deadline = time.monotonic() + 60
    with h.services.sessions() as session:
        while True:
            pending = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.user_id == principal.user_id, Job.status.in_(["queued", "running"]))
            )
            if not pending:
                break
            assert time.monotonic() < deadline, "jobs did not finish"
            time.sleep(0.02)
            session.rollback()
        issued = session.scalar(
            select(func.count()).select_from(Issuance).where(Issuance.user_id == principal.user_id)
        )
        used = session.scalar(
            select(QuotaCounter.used).where(QuotaCounter.user_id == principal.user_id)
        )
    assert issued == len(accepted)
    assert used == len(accepted)
    return len(accepted), len(refused)


def run_rounds(h: Harness, rounds: int) -> None:
    for round_ in range(rounds):
        accepted, refused = race(h, f"racer{round_}")
        assert (accepted, refused) == (QUOTA, CONCURRENT - QUOTA), f"round {round_}"


# The default run repeats each race 5 times; ``-m slow`` runs the full 20 rounds.
ROUND_COUNTS = [5, pytest.param(ROUNDS, marks=pytest.mark.slow)]


@pytest.mark.parametrize("rounds", ROUND_COUNTS)
def test_50_concurrent_requests_against_a_quota_of_10_issue_exactly_10_on_sqlite(
    server: Harness, rounds: int
) -> None:
    run_rounds(server, rounds)


@pytest.fixture
def pg_server(tmp_path: Path, log_stream: io.StringIO, pg_url: str) -> Iterator[Harness]:
    yield from start(tmp_path, log_stream, database_url=pg_url, **abuse_overrides())


@pytest.mark.parametrize("rounds", ROUND_COUNTS)
def test_50_concurrent_requests_against_a_quota_of_10_issue_exactly_10_on_postgresql(
    pg_server: Harness, rounds: int
) -> None:
    run_rounds(pg_server, rounds)


def test_past_the_quota_the_refusal_says_when_it_resets(server: Harness) -> None:
    token = server.user("alice")
    device = server.register(token, "phone")
    for _ in range(QUOTA):
        server.issue(token, device)
    now = int(server.clock())
    day_end = now - now % 86400 + 86400
    for _ in range(3):
        response = server.client.post(
            "/v1/imls",
            json={"model_id": "m1", "device_id": "phone"},
            headers=server.auth(token),
        )
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "quota_exceeded"
        assert error["resets_at"] == day_end
        assert int(response.headers["Retry-After"]) == day_end - now == error["retry_after_seconds"]
    # Three refusals, one event: a flood of refusals writes one row per interval.
    assert server.event_types().count("quota_exceeded") == 1
    # Another model's quota is separate; the next period starts afresh.
    server.issue(token, device, "m2")
    server.clock.advance(day_end - now)
    server.issue(token, device)


def test_a_failed_generation_gives_the_quota_unit_back(server: Harness) -> None:
    token = server.user("bob")
    device = server.register(token, "phone")
    for _ in range(5):  # quota of m-fail is 3 per hour: refunds keep it open
        response = server.client.post(
            "/v1/imls",
            json={"model_id": "m-fail", "device_id": "phone"},
            headers=server.auth(token),
        )
        assert response.status_code == 202, response.text
        job = server.wait_job(token, response.json()["job_id"])
        assert job["status"] == "failed"
    with server.services.sessions() as session:
        assert (
            session.scalar(select(QuotaCounter.used).where(QuotaCounter.model_id == "m-fail")) == 0
        )
    assert device.device_id == "phone"


def used_units(h: Harness, user_id: int, model_id: str) -> int:
    with h.services.sessions() as session:
        used = session.scalar(
            select(QuotaCounter.used).where(
                QuotaCounter.user_id == user_id, QuotaCounter.model_id == model_id
            )
        )
    return int(used or 0)


def test_only_the_first_failure_of_a_job_that_never_became_ready_refunds(
    server: Harness,
) -> None:
    token = server.user("carol")
    device = server.register(token, "phone")
    user_id = server.services.authenticator.authenticate(token).user_id
    ready = server.issue(token, device)  # one unit used, a package sealed
    assert used_units(server, user_id, "m1") == 1
    # A late failure report for a ready job (a package exists): no unit comes back.
    server.services.issuance._finish(ready["job_id"], "failed", error_code="late")
    assert used_units(server, user_id, "m1") == 1
    # A queued job failed twice (e.g. by the runner and by the scheduler): one refund.
    with server.services.sessions.begin() as session:
        job = session.get(Job, ready["job_id"])
        assert job is not None
        job.status = "queued"
    for _ in range(2):
        server.services.issuance._finish(ready["job_id"], "failed", error_code="twice")
    assert used_units(server, user_id, "m1") == 0


def test_quota_policy_periods_and_the_suspicious_limit() -> None:
    assert QuotaPolicy(limit=8, period="hour").period_seconds == 3600
    assert QuotaPolicy(limit=8, period=600).period_seconds == 600
    assert QuotaPolicy(limit=8).limit_for(True) == 2
    assert QuotaPolicy(limit=1).limit_for(True) == 1
    assert QuotaPolicy(limit=8, suspicious_limit=20).limit_for(True) == 8
    with pytest.raises(ValueError, match="period"):
        QuotaPolicy(limit=8, period=5)


def test_max_issuances_per_day_is_enforced_as_a_daily_quota(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    overrides = abuse_overrides()
    overrides["models"][1]["max_issuances_per_day"] = 2
    for h in start(tmp_path, log_stream, **overrides):
        token = h.user("carol")
        device = h.register(token, "phone")
        h.issue(token, device, "m2")
        h.issue(token, device, "m2")
        response = h.client.post(
            "/v1/imls", json={"model_id": "m2", "device_id": "phone"}, headers=h.auth(token)
        )
        assert response.json()["error"]["code"] == "quota_exceeded"
