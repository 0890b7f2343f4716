"""The key service on PostgreSQL: one active key per purpose under concurrent activations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal.server.container import Services, build_services
from modelseal.server.keyservice import KeyPurpose, KeyState, KeyStateError
from tests.pg import fresh_database
from tests.server.conftest import make_settings

ISSUER = KeyPurpose.ISSUER


@pytest.fixture
def pg_services(tmp_path: Path) -> Iterator[Services]:
    with fresh_database("ms_keys") as url:
        services = build_services(make_settings(tmp_path / "data", database_url=url))
        try:
            yield services
        finally:
            services.close()


def test_concurrent_activations_leave_exactly_one_active_key(pg_services: Services) -> None:
    keys = pg_services.keys
    made = [keys.create(ISSUER, actor="test").kid for _ in range(4)]
    barrier = threading.Barrier(len(made))
    failures: list[BaseException] = []

    def activate(kid: str) -> None:
        barrier.wait()
        try:
            keys.activate(ISSUER, kid, actor="test")
        except KeyStateError as exc:  # pragma: no cover - a lost race is allowed, not needed
            failures.append(exc)

    threads = [threading.Thread(target=activate, args=(kid,)) for kid in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    states = {info.kid: info.state for info in keys.list_keys(ISSUER)}
    assert list(states.values()).count(KeyState.ACTIVE) == 1
    assert not failures
    # Every key that was active at some point is now retiring, none lost in between.
    assert sorted(str(s) for s in states.values()) == ["active"] + ["retiring"] * len(made)
    (active,) = [kid for kid, state in states.items() if state is KeyState.ACTIVE]
    assert keys.issuer_signer().kid == active
