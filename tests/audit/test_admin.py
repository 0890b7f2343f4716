"""Admin account actions and interrupted jobs are audited in the action's own transaction."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import NoResultFound
from typer.testing import CliRunner

from modelseal.cli.main import app
from modelseal.server.clock import ManualClock
from modelseal.server.container import Services, build_services
from modelseal.server.db.audit_models import AUDIT_STATE_ID, AuditState
from modelseal.server.db.models import ApiToken, Job, User
from modelseal.server.db.models import Device as DeviceRow
from modelseal.server.services.audit import AuditAction, AuditFilter
from tests.server.conftest import Harness, make_settings

from .conftest import verify_services

runner = CliRunner()


def admin_entries(services: Services) -> list[dict[str, Any]]:
    entries = services.audit.entries(AuditFilter(action=AuditAction.ADMIN_ACTION))
    return [{"user_id": e.user_id, "actor": e.actor, **e.details} for e in entries]


def break_audit(services: Services) -> None:
    """Remove the appender's state row: the next append fails inside its transaction."""
    with services.sessions.begin() as session:
        session.execute(delete(AuditState).where(AuditState.id == AUDIT_STATE_ID))


def test_account_actions_are_audited_with_ids_and_never_the_token(services: Services) -> None:
    info, token = services.accounts.create_user("alice", actor="admin:root")
    second = services.accounts.create_token("alice")
    second_id = second.split("_")[1]
    services.accounts.revoke_token(second_id)
    recorded = admin_entries(services)
    assert [e["command"] for e in recorded] == ["users.create", "tokens.create", "tokens.revoke"]
    assert all(e["user_id"] == info.id for e in recorded)
    assert recorded[0]["actor"] == "admin:root"
    assert recorded[0]["token_id"] == token.split("_")[1]
    assert recorded[1]["token_id"] == recorded[2]["token_id"] == second_id
    stored = "".join(row.data.decode() for row in services.audit.stored())
    for secret in (token, second, token.split("_", 2)[2], second.split("_", 2)[2]):
        assert secret not in stored
    assert verify_services(services).size == len(services.audit.entries())


@pytest.mark.parametrize("action", ["users.create", "tokens.create", "tokens.revoke"])
def test_an_audit_failure_rolls_the_account_action_back(services: Services, action: str) -> None:
    _info, token = services.accounts.create_user("bob")
    token_id = token.split("_")[1]
    with services.sessions() as session:
        tokens_before = session.scalars(select(ApiToken.token_id).order_by(ApiToken.id)).all()
    break_audit(services)
    calls: dict[str, Callable[[], object]] = {
        "users.create": lambda: services.accounts.create_user("carol"),
        "tokens.create": lambda: services.accounts.create_token("bob"),
        "tokens.revoke": lambda: services.accounts.revoke_token(token_id),
    }
    with pytest.raises(NoResultFound):
        calls[action]()
    with services.sessions() as session:
        assert session.scalars(select(User.name).where(User.name == "carol")).first() is None
        rows = session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
        assert [r.token_id for r in rows] == list(tokens_before)
        assert all(r.revoked_at is None for r in rows)


def test_an_audit_failure_rolls_a_user_deletion_back(services: Services) -> None:
    info, _token = services.accounts.create_user("dave")
    break_audit(services)
    with pytest.raises(NoResultFound):
        services.examples.delete_user(
            "dave",
            record=lambda session, user_id: services.accounts.record_admin(
                session, "users.delete", user_id=user_id
            ),
        )
    with services.sessions() as session:
        user = session.get(User, info.id)
        assert user is not None
        assert user.disabled_at is None
        assert all(t.revoked_at is None for t in session.scalars(select(ApiToken)))


def test_the_admin_cli_audits_user_and_token_commands(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    config = tmp_path / "server.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\nsweep_interval_seconds = 0\n')
    base = ["admin", "--config", str(config)]
    made = runner.invoke(app, [*base, "users", "create", "erin"])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    more = runner.invoke(app, [*base, "tokens", "create", "erin"])
    assert more.exit_code == 0, more.output
    gone = runner.invoke(app, [*base, "users", "delete", "erin"])
    assert gone.exit_code == 0, gone.output
    services = build_services(settings, clock=ManualClock())
    try:
        recorded = admin_entries(services)
        assert [e["command"] for e in recorded] == [
            "users.create",
            "tokens.create",
            "users.delete",
        ]
        assert len({e["user_id"] for e in recorded}) == 1
        assert all(e["actor"].startswith("admin:") for e in recorded)
        assert token not in "".join(r.data.decode() for r in services.audit.stored())
        verify_services(services)
    finally:
        services.close()


def stuck_jobs(server: Harness, name: str, statuses: list[str]) -> tuple[int, list[str]]:
    """Jobs of a new user left queued or running, as a dead process leaves them."""
    device = server.register(server.user(name), "phone")
    services = server.services
    job_ids = [f"job-{secrets.token_hex(4)}" for _ in statuses]
    with services.sessions.begin() as session:
        user_id = session.scalars(select(User.id).where(User.name == name)).one()
        device_pk = session.scalars(
            select(DeviceRow.id).where(DeviceRow.device_id == device.device_id)
        ).one()
        for job_id, status in zip(job_ids, statuses, strict=True):
            session.add(
                Job(
                    id=job_id,
                    user_id=user_id,
                    device_pk=device_pk,
                    model_id="m1",
                    status=status,
                    created_at=int(services.clock()),
                )
            )
    return user_id, job_ids


def test_jobs_failed_at_start_are_audited(server: Harness) -> None:
    services = server.services
    user_id, job_ids = stuck_jobs(server, "frank", ["queued", "running"])
    assert services.issuance.fail_interrupted() == 2
    failed = services.audit.entries(AuditFilter(action=AuditAction.IML_FAILED))
    assert sorted(e.details["job_id"] for e in failed) == sorted(job_ids)
    assert all(e.details["error_code"] == "interrupted" for e in failed)
    assert all(e.user_id == user_id and e.model_id == "m1" for e in failed)
    assert all(e.actor == "system" for e in failed)
    verify_services(services)


def test_an_audit_failure_leaves_interrupted_jobs_unfailed(server: Harness) -> None:
    services = server.services
    _user_id, (job_id,) = stuck_jobs(server, "gina", ["running"])
    break_audit(services)
    with pytest.raises(NoResultFound):
        services.issuance.fail_interrupted()
    with services.sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "running"
