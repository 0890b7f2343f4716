"""A fetch killed mid-download resumes; bytes corrupted in transit are refused; acks survive.

A loopback proxy sits between the device and the real server process: it slows
downloads down (so that a ``modelseal device fetch`` process can be killed with
SIGKILL while the ciphertext is arriving), flips one byte of a package in flight,
or drops the acknowledgement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelseal.client.errors import TransportError
from modelseal.errors import ChunkTagError
from modelseal.server.generators import GenerationRequest, deterministic_test_generator
from tests.terminal import run_on_a_terminal

from .conftest import (
    BIG_BYTES,
    CLI_ENTRY,
    M1_BYTES,
    PASSPHRASE,
    ServerProcess,
    enrolled,
    reopen,
    server_env,
)
from .proxy import http_proxy


def upstream_port(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def expected(subject: str, model_id: str, size: int) -> bytes:
    request = GenerationRequest(subject, model_id, "any", "any", {"size_bytes": size})
    return bytes(deterministic_test_generator(request))


def test_a_fetch_killed_mid_download_resumes_where_it_stopped(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    partial = root / "downloads" / "big.part"
    with http_proxy(upstream_port(server)) as proxy:
        enrolled(server, root, url=proxy.url)
        proxy.throttle_seconds = 0.03
        fetch = subprocess.Popen(
            [sys.executable, str(CLI_ENTRY), "device", "fetch", "-m", "big", "--dir", str(root)],
            env={**server_env(), "MODELSEAL_KEYSTORE_PASSPHRASE": PASSPHRASE},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while not (partial.exists() and partial.stat().st_size > 0):
                assert fetch.poll() is None, fetch.communicate()
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.005)
            os.kill(fetch.pid, signal.SIGKILL)
        finally:
            fetch.kill()
            fetch.wait()
        assert fetch.returncode == -signal.SIGKILL
        received = partial.stat().st_size
        state = json.loads((root / "downloads" / "big.json").read_text())
        assert 0 < received < state["total_bytes"]
        assert not (root / "models" / "big.mseal").exists()

        proxy.throttle_seconds = 0.0
        before = len(proxy.requests)
        result = reopen(root).fetch("big")
    assert result.job_id == state["job_id"]
    assert result.jti == state["jti"]
    assert result.resumed_from_bytes >= received
    assert result.acknowledged
    resumed = [r for r in proxy.requests[before:] if b"GET /v1/downloads/" in r]
    assert len(resumed) == 1
    assert f"range: bytes={result.resumed_from_bytes}-".encode() in resumed[0].lower()
    client = reopen(root)
    with client.open_plaintext("big") as (_header, view):
        assert bytes(view) == expected(result.claims.sub, "big", BIG_BYTES)
    assert list((root / "downloads").iterdir()) == []


def test_a_byte_flipped_in_transit_is_refused_and_nothing_is_kept(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    with http_proxy(upstream_port(server)) as proxy:
        client = enrolled(server, root, url=proxy.url)
        proxy.flip_download_byte = M1_BYTES // 2
        with pytest.raises(ChunkTagError, match="chunk") as caught:
            client.fetch("m1")
        assert proxy.flip_download_byte is None  # the flip happened
    assert caught.value.code == "chunk_tag_failed"
    assert not (root / "models" / "m1.mseal").exists()
    assert list((root / "downloads").iterdir()) == []
    assert client.pending_acks() == []  # a refused package is never acknowledged
    (event,) = client.pending_events()
    assert (event.type, event.details["reason"]) == ("download_failure", "chunk_tag_failed")


def test_an_acknowledgement_that_does_not_arrive_is_delivered_on_the_next_connection(
    server: ServerProcess, tmp_path: Path
) -> None:
    token = server.token()
    root = tmp_path / "phone"
    with http_proxy(upstream_port(server)) as proxy:
        client = enrolled(server, root, token, url=proxy.url)
        proxy.drop_paths_containing = "/ack"
        result = client.fetch("m1")
        assert not result.acknowledged
        assert client.pending_acks() == [result.jti]
        assert (root / "models" / "m1.mseal").exists()
        assert list((root / "downloads").iterdir()) == []
        with server.http(token) as http:
            assert http.get(f"/v1/jobs/{result.job_id}").json()["download_url"] is not None

        proxy.drop_paths_containing = None
        client.pin_refresh()  # any later connection that passes the checks delivers it
    assert client.pending_acks() == []
    with server.http(token) as http:
        assert http.get(f"/v1/jobs/{result.job_id}").json()["download_url"] is None


def test_a_pending_job_survives_a_restart_of_the_client(
    server: ServerProcess, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    with http_proxy(upstream_port(server)) as proxy:
        client = enrolled(server, root, url=proxy.url)
        # The first fetch dies while it downloads: the proxy drops the download.
        proxy.drop_paths_containing = "/v1/downloads/"
        with pytest.raises(TransportError, match="cannot reach") as caught:
            client.fetch("m1")
        assert caught.value.code == "network_error"
        state = json.loads((root / "downloads" / "m1.json").read_text())
        proxy.drop_paths_containing = None
        result = reopen(root).fetch("m1")
    assert result.job_id == state["job_id"]  # the same job, not a new issuance
    assert result.acknowledged


def test_fetch_draws_a_progress_bar_on_a_terminal(server: ServerProcess, tmp_path: Path) -> None:
    env = {**server_env(), "MODELSEAL_KEYSTORE_PASSPHRASE": PASSPHRASE, "COLUMNS": "120"}
    root = tmp_path / "phone"
    with http_proxy(upstream_port(server)) as proxy:
        enrolled(server, root, url=proxy.url)
        proxy.throttle_seconds = 0.01
        command = [sys.executable, str(CLI_ENTRY), "device", "fetch", "-m", "big", "--dir"]
        code, drawn = run_on_a_terminal([*command, str(root)], env=env, timeout=180)
    assert code == 0, drawn
    assert b"downloading" in drawn
    assert b"MiB" in drawn  # rich's download column, in binary units
    assert (root / "models" / "big.mseal").exists()
