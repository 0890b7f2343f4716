"""End-to-end fixtures: the issuance server as a real uvicorn process, device clients, a proxy.

One HTTP server process is shared by every e2e test of a pytest worker (``server``);
tests that change server-wide state (issuer key rotation) or need HTTPS start
their own with :func:`run_server`. Users and API tokens are created up front with
the server's own services, before the process starts, and handed out one per test.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelseal.client import DeviceClient, KeystoreSpec, Passphrase, PollPolicy
from modelseal.server.container import build_services
from modelseal.server.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_ENTRY = Path(__file__).with_name("cli_entry.py")
TEST_GENERATOR = "modelseal.server.generators:deterministic_test_generator"
CANARY_GENERATOR = "modelseal.server.generators:canary_generator"
REFERENCE_GENERATOR = "modelseal.models.reference:generate_iml"
PASSPHRASE = "e2e device passphrase"
FAST_POLL = PollPolicy(initial_seconds=0.02, max_seconds=0.25, timeout_seconds=120)
M1_BYTES = 70_000
BIG_BYTES = 1 << 20
CANARY = secrets.token_bytes(32)
USERS_PER_SERVER = 64
SERVER_COMMAND = (sys.executable, "-m", "modelseal.server", "server")


def model_specs() -> list[dict[str, Any]]:
    """The models of the shared server."""
    return [
        {
            "id": "m1",
            "generator": TEST_GENERATOR,
            "options": {"size_bytes": M1_BYTES},
            "licence_seconds": 86400,
        },
        {"id": "big", "generator": TEST_GENERATOR, "options": {"size_bytes": BIG_BYTES}},
        {
            "id": "canary",
            "generator": CANARY_GENERATOR,
            "options": {"canary_hex": CANARY.hex(), "size_bytes": 50_000},
        },
        {
            "id": "digits",
            "generator": REFERENCE_GENERATOR,
            "ctype": "application/vnd.modelseal.bundle",
        },
    ]


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)  # strings, integers and booleans are the same in TOML


def write_config(
    directory: Path,
    models: Sequence[dict[str, Any]],
    *,
    tls: tuple[Path, Path] | None = None,
) -> Path:
    """A dev-mode server config with fast hashing and no background sweeper."""
    lines = [
        f"data_dir = {json.dumps(str(directory / 'data'))}",
        "sweep_interval_seconds = 0",
    ]
    if tls is not None:
        lines += [
            f"tls_certfile = {json.dumps(str(tls[0]))}",
            f"tls_keyfile = {json.dumps(str(tls[1]))}",
        ]
    lines += [
        "[auth]",
        "argon2_time_cost = 1",
        "argon2_memory_kib = 1024",
        "argon2_parallelism = 1",
    ]
    for spec in models:
        lines.append("[[models]]")
        lines += [f"{name} = {_toml_value(value)}" for name, value in spec.items()]
    config = directory / "server.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}


@dataclass
class ServerProcess:
    """A running issuance server and what tests need to drive it."""

    url: str
    config: Path
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    ca_file: Path | None
    tokens: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self) -> str:
        """A fresh user's API token."""
        with self._lock:
            assert self.tokens, "the server ran out of pre-created users"
            return self.tokens.pop()

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``modelseal admin --config <config> ARGS`` against the server's data."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "modelseal.server",
                "admin",
                "--config",
                str(self.config),
                *args,
            ],
            capture_output=True,
            text=True,
            env=server_env(),
            timeout=120,
            check=True,
        )

    def http(self, token: str) -> httpx.Client:
        """A plain HTTP client for the API, authenticated as ``token``'s user."""
        verify: Any = True
        if self.ca_file is not None:
            import ssl

            verify = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=30,
            trust_env=False,
        )


@contextmanager
def run_server(
    directory: Path,
    models: Sequence[dict[str, Any]],
    *,
    tls: tuple[Path, Path] | None = None,
    ca_file: Path | None = None,
    users: int = USERS_PER_SERVER,
) -> Iterator[ServerProcess]:
    """Start ``python -m modelseal.server server`` on a free port; stop it with SIGINT."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, models, tls=tls)
    services = build_services(load_settings(config))
    try:
        tokens = [services.accounts.create_user(f"user{i}")[1] for i in range(users)]
    finally:
        services.close()
    log_path = directory / "server.log"
    scheme = "https" if tls is not None else "http"
    verify: Any = True
    if ca_file is not None:
        import ssl

        verify = ssl.create_default_context(cafile=str(ca_file))
    with log_path.open("w") as log:
        for _attempt in range(3):
            port = free_port()
            process = subprocess.Popen(
                [
                    *SERVER_COMMAND,
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(),
            )
            url = f"{scheme}://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            ready = False
            while process.poll() is None and time.monotonic() < deadline:
                with suppress(httpx.TransportError):
                    ready = httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200
                if ready:
                    break
                time.sleep(0.1)
            if ready:
                break
            if process.poll() is None:
                process.kill()
                process.wait()
                raise AssertionError(f"server did not start:\n{log_path.read_text()}")
            if "address already in use" not in log_path.read_text().lower():
                raise AssertionError(f"server exited:\n{log_path.read_text()}")
        else:
            raise AssertionError("no free port after three attempts")
        server = ServerProcess(url, config, directory / "data", process, log_path, ca_file, tokens)
        try:
            yield server
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared plain-HTTP (loopback) server of this test process."""
    with run_server(tmp_path_factory.mktemp("e2e-server"), model_specs()) as running:
        yield running


# --- device clients ------------------------------------------------------------------------------


def new_client(root: Path, **options: Any) -> DeviceClient:
    """An initialised client with a file keystore (cheap scrypt) under ``root``."""
    options.setdefault("poll", FAST_POLL)
    keystore = DeviceClient.file_keystore(root, Passphrase(PASSPHRASE, n=2**14))
    return DeviceClient.init(root, keystore, KeystoreSpec("file", unlock="passphrase"), **options)


def reopen(root: Path, **options: Any) -> DeviceClient:
    """The client in ``root`` again, as a restarted app would open it."""
    options.setdefault("poll", FAST_POLL)
    keystore = DeviceClient.file_keystore(root, Passphrase(PASSPHRASE))
    return DeviceClient(root, keystore, **options)


def enrolled(
    server: ServerProcess,
    root: Path,
    token: str | None = None,
    *,
    url: str | None = None,
    **enroll_options: Any,
) -> DeviceClient:
    """A client under ``root`` enrolled with ``server`` (or with ``url`` in front of it)."""
    client = new_client(root)
    if server.ca_file is not None:
        enroll_options.setdefault("ca_file", server.ca_file)
    client.enroll(url or server.url, token or server.token(), **enroll_options)
    return client


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``modelseal ARGS`` as a process of its own (with the ``device`` sub-app registered)."""
    return subprocess.run(
        [sys.executable, str(CLI_ENTRY), *args],
        capture_output=True,
        text=True,
        env={**server_env(), **(env or {})},
        timeout=timeout,
        check=False,
    )


# --- disk scans ------------------------------------------------------------------------------


def canary_forms(secret: bytes) -> list[bytes]:
    """The ways a secret could be written down."""
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]
