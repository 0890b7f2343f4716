"""One real server: ``python -m modelseal.server server`` under uvicorn, driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from modelseal.envelope import OpenPolicy, open_bytes
from modelseal.keys import KEM, RecipientPrivateKey, key_to_jwk, parse_jwks
from modelseal.server.container import build_services
from modelseal.server.settings import load_settings

from .conftest import TEST_GENERATOR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    config: Path, log_file: IO[str], log_path: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """Start uvicorn on a free port; retry if another process took the port meanwhile."""
    for _attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelseal.server",
                "server",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    return process, base
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
            process.wait()
            raise AssertionError(f"server did not start:\n{log_path.read_text()}")
        if "address already in use" not in log_path.read_text().lower():
            raise AssertionError(f"server exited:\n{log_path.read_text()}")
    raise AssertionError("no free port after three attempts")


def test_the_whole_flow_over_http_against_a_real_uvicorn(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[[models]]\nid = "m1"\ngenerator = "{TEST_GENERATOR}"\n'
        "options = { size_bytes = 70000 }\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}
    # The account is made in-process (the admin CLI has its own tests); the server is not.
    services = build_services(load_settings(config))
    _, token = services.accounts.create_user("alice")
    services.close()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log_file:
        process, base = start_server(config, log_file, log_path, env)
        try:
            key = RecipientPrivateKey.generate(KEM.X25519)
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
                response = client.post(
                    "/v1/devices",
                    json={
                        "device_id": "phone",
                        "app_version": "1",
                        "public_key": key_to_jwk(key.public_key()),
                    },
                )
                assert response.status_code == 201, response.text
                job = client.post("/v1/imls", json={"model_id": "m1", "device_id": "phone"})
                assert job.status_code == 202
                job_id = job.json()["job_id"]
                for _ in range(500):
                    status = client.get(f"/v1/jobs/{job_id}").json()
                    if status["status"] == "ready":
                        break
                    time.sleep(0.02)
                assert status["status"] == "ready", status
                url = status["download_url"]
                device = {"X-Modelseal-Device": "phone"}
                first = client.get(url, headers={**device, "Range": "bytes=0-49999"})
                assert first.status_code == 206
                rest = client.get(url, headers={**device, "Range": "bytes=50000-"})
                assert rest.status_code == 206
                package = first.content + rest.content
                assert client.get(url, headers=device).status_code == 410
                jwks = client.get("/.well-known/modelseal/issuer-jwks.json").json()
                opened = open_bytes(
                    package, key, OpenPolicy(issuers=parse_jwks(jwks), audience="phone")
                )
                assert len(opened.plaintext) == 70000
                ack = client.post(f"/v1/issuances/{status['jti']}/ack")
                assert ack.status_code == 204
                again = client.get(f"/v1/jobs/{job_id}").json()
                assert again["download_url"] is None
                assert client.get("/metrics").text.count("downloads_total 1.0") == 1
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "request"]
    assert {"/v1/downloads/{token}", "/v1/jobs/{job_id}"} <= {r["route"] for r in requests}
    text = log_path.read_text()
    assert url.rsplit("/", 1)[1] not in text
    assert token not in text
    assert not os.listdir(tmp_path / "data" / "blobs")
