"""Blob store, job runner, generators and log redaction in isolation."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from modelseal.errors import UsageError
from modelseal.server.errors import ConfigurationError
from modelseal.server.generators import (
    GenerationRequest,
    canary_generator,
    deterministic_test_generator,
    load_generator,
)
from modelseal.server.jobs import InProcessJobRunner
from modelseal.server.logging import REDACTED, configure_logging, redact_text
from modelseal.server.storage import BlobNotFoundError, LocalDirBlobStore, new_blob_key


def test_blobs_are_private_files_in_a_private_directory(tmp_path: Path) -> None:
    store = LocalDirBlobStore(tmp_path / "blobs")
    key = new_blob_key()
    store.put(key, b"ciphertext" * 1000)
    assert (tmp_path / "blobs").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "blobs" / key).stat().st_mode & 0o777 == 0o600
    assert store.size(key) == 10_000
    with store.open(key) as handle:
        assert handle.read() == b"ciphertext" * 1000
    assert list(store.keys()) == [key]
    assert os.listdir(tmp_path / "blobs") == [key]  # no temp file left behind
    assert store.delete(key) is True
    assert store.delete(key) is False
    with pytest.raises(BlobNotFoundError) as info:
        store.open(key)
    assert info.value.code == "object_gone"


@pytest.mark.parametrize("key", ["../etc/passwd", "ABC", "", "0" * 31, "0" * 32 + "/x"])
def test_blob_keys_that_are_not_random_ids_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalDirBlobStore(tmp_path)
    with pytest.raises(UsageError) as info:
        store.put(key, b"x")
    assert info.value.code == "usage_error"


def test_sweep_removes_old_blobs_and_abandoned_temp_files_only(tmp_path: Path) -> None:
    store = LocalDirBlobStore(tmp_path)
    old, new = new_blob_key(), new_blob_key()
    store.put(old, b"a")
    store.put(new, b"b")
    (tmp_path / ".tmp-abandoned").write_bytes(b"c")
    (tmp_path / "unrelated").write_bytes(b"d")
    past = time.time() - 7200
    os.utime(tmp_path / old, (past, past))
    os.utime(tmp_path / ".tmp-abandoned", (past, past))
    os.utime(tmp_path / "unrelated", (past, past))
    assert store.sweep(3600, time.time()) == [old]
    assert sorted(os.listdir(tmp_path)) == sorted([new, "unrelated"])


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalDirBlobStore(tmp_path)

    class Exploding:
        def __buffer__(self, flags: int) -> memoryview:
            raise OSError("disk full")

    with pytest.raises((OSError, TypeError)):
        store.put(new_blob_key(), Exploding())  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_the_job_runner_finishes_scheduled_jobs_on_shutdown() -> None:
    runner = InProcessJobRunner(workers=1)
    gate = threading.Event()
    done: list[int] = []
    runner.submit("first", lambda: (gate.wait(5), done.append(1)))
    runner.submit("second", lambda: done.append(2))
    gate.set()
    runner.shutdown(wait=True)
    assert done == [1, 2]
    with pytest.raises(RuntimeError):
        runner.submit("late", lambda: None)


def test_a_crashing_job_is_logged_and_the_worker_survives() -> None:
    stream = io.StringIO()
    configure_logging(stream)
    runner = InProcessJobRunner(workers=1)
    done = threading.Event()

    def crash() -> None:
        raise ValueError("boom")

    runner.submit("crash", crash)
    runner.submit("after", done.set)
    assert done.wait(5)
    runner.shutdown()
    assert '"event": "job_crashed"' in stream.getvalue()


def test_the_test_generator_is_deterministic_per_user_and_model() -> None:
    def make(user: str, model: str, size: int = 100) -> bytes:
        request = GenerationRequest(user, model, "d", "j", {"size_bytes": size})
        return bytes(deterministic_test_generator(request))

    assert make("u", "m") == make("u", "m")
    assert make("u", "m") != make("v", "m")
    assert make("u", "m") != make("u", "n")
    assert len(make("u", "m", 0)) == 0
    assert len(make("u", "m", 16385)) == 16385
    canary = os.urandom(32)
    request = GenerationRequest("u", "m", "d", "j", {"canary_hex": canary.hex()})
    assert canary in canary_generator(request)


def test_a_generator_path_that_does_not_load_is_a_configuration_error() -> None:
    for path in ("modelseal.nowhere:gen", "modelseal.server.generators:absent", "json:__doc__"):
        with pytest.raises(ConfigurationError) as info:
            load_generator(path)
        assert info.value.code == "config_invalid"


@pytest.mark.parametrize(
    "secret",
    [
        "ms_0123456789abcdef_Q0Cf2MGFgLHUEotpwEhjGgkMkFQbqXhjwNjDz9kOixk",
        "eyJ2IjoxLCJsaWQiOiJhYmMifQ.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dQ",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
    ],
)
def test_redaction_scrubs_tokens_everywhere_in_an_event(secret: str) -> None:
    stream = io.StringIO()
    configure_logging(stream)
    log = structlog.get_logger("t")
    log.info(f"saw {secret}", path=f"/v1/downloads/{secret}", nested={"x": [secret]})
    log.info("auth", authorization=f"Bearer {secret}", headers={"Authorization": "Basic abc"})
    try:
        raise ValueError(f"bad {secret}")
    except ValueError:
        log.exception("failed")
    import logging

    logging.getLogger("uvicorn.error").error("stdlib %s", secret)
    text = stream.getvalue()
    assert secret not in text
    assert secret[:20] not in text
    assert text.count(REDACTED) >= 6
    for line in text.splitlines():
        json.loads(line)


def test_redact_text_leaves_ordinary_text_alone() -> None:
    assert redact_text("GET /v1/jobs/{job_id} 200") == "GET /v1/jobs/{job_id} 200"
    assert redact_text("Authorization: Bearer abc.def") == f"Authorization: {REDACTED}"


def test_the_sweeper_runs_periodically_until_stopped() -> None:
    from modelseal.server.services.sweeper import Sweeper

    calls = threading.Semaphore(0)

    class Counting:
        def run_once(self) -> None:
            calls.release()

    sweeper = Sweeper(Counting(), interval_seconds=1)  # type: ignore[arg-type]
    sweeper.start()
    try:
        assert calls.acquire(timeout=5)
        assert calls.acquire(timeout=5)
    finally:
        sweeper.stop()


def test_logging_to_a_named_standard_stream_follows_its_replacement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`modelseal admin` logs to "stderr": a captured stderr closed later must not break it."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("stderr", level="WARNING")
    try:
        first.close()  # as a test runner's capture is, once its command returns
        monkeypatch.setattr(sys, "stderr", second)
        structlog.get_logger("modelseal.test").warning("after_replacement")
        logging.getLogger("modelseal.test").warning("stdlib_after_replacement")
        for handler in logging.getLogger().handlers:
            handler.flush()  # as logging.shutdown() does at exit
            assert handler.name is None or isinstance(handler.name, str)
    finally:
        configure_logging(io.StringIO())
    assert "after_replacement" in second.getvalue()
    assert "stdlib_after_replacement" in second.getvalue()
