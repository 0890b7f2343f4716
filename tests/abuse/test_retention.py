"""Client addresses are forgotten after ``address_retention_seconds`` (the sweeper)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from modelseal.server.db.abuse_models import AddressUse
from modelseal.server.db.models import Event
from modelseal.server.settings import AbuseSettings
from tests.server.conftest import Harness

from .conftest import abuse_overrides, start


@pytest.fixture(params=["sqlite", "postgresql"])
def any_server(
    request: pytest.FixtureRequest, tmp_path: Path, log_stream: io.StringIO
) -> Iterator[Harness]:
    if request.param == "sqlite":
        yield from start(tmp_path, log_stream, **abuse_overrides())
    else:
        url = request.getfixturevalue("pg_url")
        yield from start(tmp_path, log_stream, database_url=url, **abuse_overrides())


def addresses(h: Harness) -> list[tuple[int, str]]:
    with h.services.sessions() as session:
        return [(r.user_id, r.ip) for r in session.scalars(select(AddressUse))]


def events_with_ip(h: Harness) -> list[tuple[int, str]]:
    with h.services.sessions() as session:
        return [
            (e.id, e.details["ip"])
            for e in session.scalars(select(Event).order_by(Event.id))
            if "ip" in e.details
        ]


def test_the_sweeper_forgets_old_addresses_and_keeps_the_events(any_server: Harness) -> None:
    server = any_server
    retention = server.settings.abuse.address_retention_seconds
    old, new = server.user("old"), server.user("new")
    old_p = server.services.authenticator.authenticate(old)
    new_p = server.services.authenticator.authenticate(new)
    server.services.abuse.admit(old_p, device_id=None, ip="198.51.100.7", api_version=None)
    for _ in range(3):
        server.services.abuse.record_server_event(
            "rate_limited", user_id=old_p.user_id, ip="198.51.100.7", details={"scope": "user"}
        )
    server.services.abuse.record_server_event(
        "linked_account_blocked",
        user_id=old_p.user_id,
        details={"linked_user": new_p.user_id, "network": "198.51.100.0/24", "new_account": False},
    )
    server.clock.advance(retention - 10)
    server.services.abuse.admit(new_p, device_id=None, ip="203.0.113.9", api_version=None)
    server.services.abuse.record_server_event(
        "rate_limited", user_id=new_p.user_id, ip="203.0.113.9", details={"scope": "user"}
    )
    with server.services.sessions() as session:
        total = len(session.scalars(select(Event.id)).all())
    server.clock.advance(20)  # the first ones are now past the retention
    report = server.services.sweep.run_once()
    assert addresses(server) == [(new_p.user_id, "203.0.113.0/24")]
    assert [ip for _, ip in events_with_ip(server)] == ["203.0.113.9"]
    assert report.addresses == 5  # one address use, four events
    with server.services.sessions() as session:
        assert len(session.scalars(select(Event.id)).all()) == total
        kept = session.scalars(select(Event).where(Event.user_id == old_p.user_id)).all()
        assert [e.details for e in kept] == [{"scope": "user"}] * 3 + [
            {"linked_user": new_p.user_id, "new_account": False}
        ]
    # Idempotent: nothing left to change.
    assert server.services.sweep.run_once().addresses == 0


def test_the_retention_cannot_be_shorter_than_the_linkage_window() -> None:
    with pytest.raises(ValueError, match="address_retention_seconds"):
        AbuseSettings(address_window_seconds=7 * 86400, address_retention_seconds=86400)
    assert AbuseSettings().address_retention_seconds == 30 * 86400
