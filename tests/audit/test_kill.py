"""Kill the server process between an action and its commit: the action and its audit entry
are both there or both absent.

A subprocess runs the real service code (``build_services`` on a SQLite data directory,
``DeviceService.register``) and is killed with SIGKILL: once while it waits inside the
commit of an audited registration, and several times at random moments of a stream of
registrations.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from modelseal.audit.verify import load_checkpoints, verify_log
from modelseal.server.clock import ManualClock
from modelseal.server.container import Services, build_services
from modelseal.server.db.models import Device
from modelseal.server.services.audit import AuditAction, AuditFilter
from tests.server.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import os, sys, time
sys.path.insert(0, os.getcwd())
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.orm import Session
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk
from modelseal.server.container import build_services
from modelseal.server.services.accounts import Principal
from modelseal.server.logging import configure_logging
from tests.server.conftest import make_settings

configure_logging(sys.stderr, level="WARNING")
data_dir, mode, user_id, subject = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
services = build_services(make_settings(Path(data_dir)))
principal = Principal(user_id, subject, "killme")

def jwk():
    return key_to_jwk(RecipientPrivateKey.generate(KEM.X25519).public_key())

if mode == "pause":
    @event.listens_for(Session, "before_commit")
    def pause(session):
        if session.info.get("modelseal_audit_appended"):
            print("@@COMMITTING", flush=True)
            time.sleep(120)
    services.devices.register(principal, "victim", "1.0.0", jwk())
else:
    i = 0
    while True:
        services.devices.register(principal, f"{mode}-{i}", "1.0.0", jwk())
        print(f"@@{i}", flush=True)
        i += 1
"""


def spawn(data_dir: Path, mode: str, user_id: int, subject: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data_dir), mode, str(user_id), subject],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_line(child: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while not line.startswith("@@"):
        assert time.monotonic() < deadline, "child produced no output"
        assert child.poll() is None, "child exited early"
        line = child.stdout.readline().strip()
    return line[2:]


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def both_or_neither(services: Services) -> tuple[set[str], set[str]]:
    """Devices and device.registered entries must match one to one (by kid)."""
    with services.sessions() as session:
        devices = {d.kid: d.device_id for d in session.scalars(select(Device))}
    entries = services.audit.entries(AuditFilter(action=AuditAction.DEVICE_REGISTERED))
    audited = {e.details["kid"]: e.device_id for e in entries}
    assert devices == audited
    log = services.audit
    services.audit.checkpoint()
    trusted = load_checkpoints(log.all_checkpoints(), log.recorded_verifiers(), log.origin)
    verify_log(list(log.stored()), trusted, expected_size=log.appended_size())
    return set(devices.values()), set(audited.values())


def test_killed_inside_the_commit_leaves_neither_action_nor_entry(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    services = build_services(make_settings(data_dir), clock=ManualClock())
    info, _token = services.accounts.create_user("killme")
    services.close()
    child = spawn(data_dir, "pause", info.id, info.subject)
    try:
        assert wait_for_line(child) == "COMMITTING"
        kill(child)
    finally:
        if child.poll() is None:
            child.kill()
    services = build_services(make_settings(data_dir), clock=ManualClock())
    try:
        devices, audited = both_or_neither(services)
        assert "victim" not in devices
        assert "victim" not in audited
    finally:
        services.close()


def test_killed_at_random_moments_leaves_actions_and_entries_in_step(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    services = build_services(make_settings(data_dir), clock=ManualClock())
    info, _token = services.accounts.create_user("killme")
    services.close()
    rng = random.Random(8)
    total = 0
    for round_ in range(2):
        child = spawn(data_dir, f"r{round_}", info.id, info.subject)
        try:
            wait_for_line(child)  # it is registering
            time.sleep(rng.uniform(0.05, 0.4))
            kill(child)
        finally:
            if child.poll() is None:
                child.kill()
        services = build_services(make_settings(data_dir), clock=ManualClock())
        try:
            devices, _audited = both_or_neither(services)
        finally:
            services.close()
        assert len(devices) > total
        total = len(devices)
