"""Fixtures for the issuance server tests: an in-process app with a manual clock."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelseal.envelope import OpenedPackage, OpenPolicy, open_bytes
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk, parse_jwks
from modelseal.server.app import create_app
from modelseal.server.clock import ManualClock
from modelseal.server.container import Services
from modelseal.server.logging import configure_logging
from modelseal.server.settings import Settings, load_settings

FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
TEST_GENERATOR = "modelseal.server.generators:deterministic_test_generator"
MODEL_SIZE_BYTES = 40_000  # three chunks: exercises multi-piece streaming and ranges


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Dev-mode settings with fast hashing, no background sweeper and two models."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "auth": FAST_ARGON2,
        "sweep_interval_seconds": 0,
        "models": [
            {
                "id": "m1",
                "generator": TEST_GENERATOR,
                "ctype": "application/vnd.modelseal.test",
                "options": {"size_bytes": MODEL_SIZE_BYTES},
                "licence_seconds": 86400,
            },
            {"id": "m2", "generator": TEST_GENERATOR, "options": {"size_bytes": 100}},
        ],
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Device:
    device_id: str
    key: RecipientPrivateKey


@dataclass
class Harness:
    """A running in-process server and helpers to drive it."""

    client: TestClient
    services: Services
    clock: ManualClock
    settings: Settings
    logs: io.StringIO
    tokens: dict[str, str] = field(default_factory=dict)

    def user(self, name: str) -> str:
        _, token = self.services.accounts.create_user(name)
        self.tokens[name] = token
        return token

    @staticmethod
    def auth(token: str, device_id: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if device_id is not None:
            headers["X-Modelseal-Device"] = device_id
        return headers

    def register(self, token: str, device_id: str, kem: KEM = KEM.X25519) -> Device:
        key = RecipientPrivateKey.generate(kem)
        response = self.client.post(
            "/v1/devices",
            json={
                "device_id": device_id,
                "app_version": "1.0.0",
                "public_key": key_to_jwk(key.public_key()),
            },
            headers=self.auth(token),
        )
        assert response.status_code == 201, response.text
        return Device(device_id, key)

    def wait_job(self, token: str, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            response = self.client.get(f"/v1/jobs/{job_id}", headers=self.auth(token))
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] in ("ready", "failed"):
                return body
            assert time.monotonic() < deadline, f"job {job_id} stuck in {body['status']}"
            time.sleep(0.01)

    def issue(self, token: str, device: Device, model_id: str = "m1") -> dict[str, Any]:
        response = self.client.post(
            "/v1/imls",
            json={"model_id": model_id, "device_id": device.device_id},
            headers=self.auth(token),
        )
        assert response.status_code == 202, response.text
        job = self.wait_job(token, response.json()["job_id"])
        assert job["status"] == "ready", job
        return job

    def jwks(self) -> dict[str, Any]:
        response = self.client.get("/.well-known/modelseal/issuer-jwks.json")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        return document

    def open(self, package: bytes, device: Device) -> OpenedPackage:
        policy = OpenPolicy(
            issuers=parse_jwks(self.jwks()), audience=device.device_id, now=int(self.clock())
        )
        return open_bytes(package, device.key, policy)

    def event_types(self) -> list[str]:
        return [e.type for e in self.services.events.recent(limit=1000)]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Route every server log line into a buffer for the test to inspect."""
    stream = io.StringIO()
    configure_logging(stream, level="DEBUG")
    yield stream
    configure_logging(io.StringIO())


def start(tmp_path: Path, logs: io.StringIO, **overrides: Any) -> Iterator[Harness]:
    settings = make_settings(tmp_path / "data", **overrides)
    clock = ManualClock()
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        yield Harness(client, app.state.services, clock, settings, logs)


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A fresh server in a temp data dir."""
    yield from start(tmp_path, log_stream)
