"""Uploaded personalisation examples: validation, isolation, retention, deletion, encryption.

Each test runs a fresh in-process server (tests/server/conftest.py) and checks one
property through the API, the service or the files on disk.
"""

from __future__ import annotations

import io
import re
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from modelseal.models import digits, reference
from modelseal.server.db.examples_models import UserExamples
from modelseal.server.db.models import User
from modelseal.server.errors import ConfigurationError
from modelseal.server.generators import GenerationRequest
from modelseal.server.services import examples as examples_module
from modelseal.server.settings import ExamplesSettings
from tests.canary import files_under, holders
from tests.pg import fresh_database
from tests.server.conftest import Harness, start

REFERENCE_MODEL = {
    "id": "digits",
    "generator": "modelseal.models.reference:generate_iml",
    "ctype": "application/vnd.modelseal.bundle",
    "licence_seconds": 86400,
}
RETENTION_SECONDS = 3600


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A server with the reference model and short example retention."""
    yield from start(
        tmp_path,
        log_stream,
        models=[REFERENCE_MODEL],
        examples={"retention_seconds": RETENTION_SECONDS, "max_examples_per_upload": 200},
    )


def _examples(n: int, seed: int = 0) -> tuple[list[list[float]], list[int]]:
    rng = np.random.default_rng(seed)
    x = np.round(rng.random((n, 64)), 4)
    return x.tolist(), [int(v) for v in rng.integers(0, 10, n)]


def _upload(server: Harness, token: str, x: Any, y: Any) -> Any:
    return server.client.post("/v1/examples", json={"x": x, "y": y}, headers=server.auth(token))


def _subject(server: Harness, name: str) -> str:
    return server.services.accounts.find_user(name).subject


def test_an_upload_is_stored_listed_and_counted(server: Harness) -> None:
    token = server.user("alice")
    x, y = _examples(30)
    response = _upload(server, token, x, y)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == 30
    assert body["total"] == 30
    assert body["expires_at"] - body["created_at"] == RETENTION_SECONDS
    second = _upload(server, token, *_examples(5, seed=1)).json()
    assert second["total"] == 35
    listed = server.client.get("/v1/examples", headers=server.auth(token)).json()
    assert listed["total"] == 35
    assert [r["record_id"] for r in listed["records"]] == [body["record_id"], second["record_id"]]
    # Listing never returns the examples themselves.
    assert set(listed["records"][0]) == {"record_id", "count", "created_at", "expires_at"}


def test_the_service_returns_exactly_what_was_uploaded(server: Harness) -> None:
    token = server.user("alice")
    x, y = _examples(12)
    _upload(server, token, x, y)
    stored = server.services.examples.load(_subject(server, "alice"))
    assert stored is not None
    np.testing.assert_array_equal(stored.x, np.asarray(x, dtype=np.float32))
    np.testing.assert_array_equal(stored.y, np.asarray(y))


def _row(width: int = 64, value: Any = 0.5) -> list[Any]:
    return [value] * width


@pytest.mark.parametrize(
    ("x", "y", "code", "match"),
    [
        ([_row(), _row(63)], [1, 2], "examples_invalid", r"x\[1\] must be a list of 64 numbers"),
        ([_row(), [0.5] * 3 + [1.5] + [0.5] * 60], [1, 2], "examples_invalid", r"x\[1\]\[3\]"),
        ([[-0.1, *_row(63)]], [1], "examples_invalid", r"x\[0\]\[0\] must be a finite"),
        ([_row(value="0.5")], [1], "examples_invalid", r"x\[0\]\[0\] must be a number"),
        ([_row(value=True)], [1], "examples_invalid", r"x\[0\]\[0\] must be a number"),
        ([_row()], [10], "examples_invalid", r"y\[0\] must be an integer label 0..9"),
        ([_row()], [True], "examples_invalid", r"y\[0\]"),
        ([_row()], [1.0], "examples_invalid", r"y\[0\]"),
        ([_row(), _row()], [1], "examples_invalid", r"y must be a list of 2 labels"),
        ([], [], "examples_invalid", "at least one example"),
        ([_row()] * 201, [1] * 201, "examples_limit_exceeded", "at most 200"),
        # An integer beyond float64's range once escaped the checks as an OverflowError (500).
        ([[0.5, 10**400, *_row(62)]], [1], "examples_invalid", r"x\[0\]\[1\] must be a finite"),
        ([[0.5, 2, *_row(62)]], [1], "examples_invalid", r"x\[0\]\[1\] must be a finite"),
        # A huge label is named, not echoed back digit by digit.
        ([_row()], [10**400], "examples_invalid", r"y\[0\] .*got an integer of 1329 bits$"),
    ],
)
def test_bad_uploads_are_refused_with_a_stable_code_naming_the_field(
    server: Harness, x: Any, y: Any, code: str, match: str
) -> None:
    token = server.user("alice")
    response = _upload(server, token, x, y)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert re.search(match, error["message"]), error["message"]
    assert server.client.get("/v1/examples", headers=server.auth(token)).json()["total"] == 0


def test_non_finite_values_are_refused(server: Harness) -> None:
    token = server.user("alice")
    body = '{"x": [[NaN' + ", 0.5" * 63 + ']], "y": [1]}'
    response = server.client.post(
        "/v1/examples",
        content=body,
        headers={**server.auth(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "examples_invalid"
    assert "x[0][0] must be a finite number" in response.json()["error"]["message"]


def test_an_oversized_body_and_a_missing_token_are_refused(server: Harness) -> None:
    token = server.user("alice")
    x, y = _examples(400)
    too_big = _upload(server, token, x, y)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "body_too_large"
    anonymous = server.client.post("/v1/examples", json={"x": x[:1], "y": y[:1]})
    assert anonymous.status_code == 401


def test_the_per_user_limit_holds_across_uploads(tmp_path: Path, log_stream: io.StringIO) -> None:
    for harness in start(
        tmp_path,
        log_stream,
        examples={"max_examples_per_user": 50, "max_examples_per_upload": 40},
    ):
        token = harness.user("alice")
        assert _upload(harness, token, *_examples(40)).status_code == 201
        refused = _upload(harness, token, *_examples(11))
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "examples_limit_exceeded"
        assert _upload(harness, token, *_examples(10)).status_code == 201


def test_users_never_see_or_delete_each_others_examples(server: Harness) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    record = _upload(server, alice, *_examples(20)).json()["record_id"]
    assert server.client.get("/v1/examples", headers=server.auth(bob)).json()["total"] == 0
    refused = server.client.delete(f"/v1/examples/{record}", headers=server.auth(bob))
    assert refused.status_code == 404
    assert server.client.delete("/v1/examples", headers=server.auth(bob)).json()["deleted"] == 0
    assert server.services.examples.load(_subject(server, "bob")) is None
    assert server.client.get("/v1/examples", headers=server.auth(alice)).json()["total"] == 20


def test_a_row_moved_to_another_user_does_not_decrypt(server: Harness) -> None:
    alice, _ = server.user("alice"), server.user("bob")
    _upload(server, alice, *_examples(20))
    with server.services.sessions.begin() as session:
        bob_id = session.scalars(select(User.id).where(User.name == "bob")).one()
        session.execute(update(UserExamples).values(user_id=bob_id))
    with pytest.raises(ConfigurationError, match="failed authentication"):
        server.services.examples.load(_subject(server, "bob"))


def test_uploads_expire_and_the_sweeper_deletes_them(server: Harness) -> None:
    token = server.user("alice")
    _upload(server, token, *_examples(20))
    server.clock.advance(RETENTION_SECONDS - 1)
    assert server.client.get("/v1/examples", headers=server.auth(token)).json()["total"] == 20
    server.clock.advance(1)
    assert server.client.get("/v1/examples", headers=server.auth(token)).json()["total"] == 0
    assert server.services.examples.load(_subject(server, "alice")) is None
    report = server.services.sweep.run_once()
    assert report.examples == 1
    with server.services.sessions() as session:
        assert session.scalars(select(UserExamples)).all() == []


def test_a_user_deletes_one_upload_or_all(server: Harness) -> None:
    token = server.user("alice")
    first = _upload(server, token, *_examples(5)).json()["record_id"]
    _upload(server, token, *_examples(6))
    _upload(server, token, *_examples(7))
    gone = server.client.delete(f"/v1/examples/{first}", headers=server.auth(token))
    assert gone.status_code == 200
    assert gone.json() == {"deleted": 1}
    again = server.client.delete(f"/v1/examples/{first}", headers=server.auth(token))
    assert again.status_code == 404
    assert server.client.delete("/v1/examples", headers=server.auth(token)).json()["deleted"] == 2
    with server.services.sessions() as session:
        assert session.scalars(select(UserExamples)).all() == []


def test_deleting_a_user_deletes_their_examples_and_access(server: Harness) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    server.register(alice, "phone")
    _upload(server, alice, *_examples(20))
    _upload(server, bob, *_examples(20))
    report = server.services.examples.delete_user("alice")
    assert report.examples == 1
    assert report.tokens == 1
    assert len(report.devices) == 1
    assert server.client.get("/v1/examples", headers=server.auth(alice)).status_code == 401
    with server.services.sessions() as session:
        owners = session.scalars(select(UserExamples.user_id)).all()
        bob_id = session.scalars(select(User.id).where(User.name == "bob")).one()
    assert owners == [bob_id]


def test_admin_cli_deletes_a_user(tmp_path: Path, log_stream: io.StringIO) -> None:
    from modelseal.server.cli import admin_app

    data = tmp_path / "data"
    for harness in start(tmp_path, log_stream):
        token = harness.user("alice")
        harness.register(token, "phone")
        _upload(harness, token, *_examples(20))
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{data}"\nsweep_interval_seconds = 0\n'
        "[auth]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
    )
    result = CliRunner().invoke(admin_app, ["--config", str(config), "users", "delete", "alice"])
    assert result.exit_code == 0, result.output
    assert "1 example uploads deleted" in result.output
    assert "1 devices revoked" in result.output
    missing = CliRunner().invoke(admin_app, ["--config", str(config), "users", "delete", "nobody"])
    assert missing.exit_code == 1
    assert "not_found" in missing.output


def test_examples_are_encrypted_at_rest(server: Harness) -> None:
    token = server.user("alice")
    # Distinctive values: a canary in every encoding the server could write them in.
    canary = [0.123456789 + i * 1e-6 for i in range(64)]
    response = _upload(server, token, [canary] * 3, [7, 7, 7])
    assert response.status_code == 201
    server.services.engine.dispose()  # flush SQLite's WAL into the database file
    needles = [
        struct.pack("<4f", *canary[:4]),
        struct.pack("<4d", *canary[:4]),
        np.asarray(canary[:4], dtype=np.float32).tobytes(),
        repr(canary[0]).encode(),
        repr(float(np.float32(canary[0]))).encode(),
    ]
    paths = files_under(server.settings.data_dir)
    assert any(p.name == "modelseal.db" for p in paths)
    assert holders(paths, needles) == []
    assert holders(paths, [b"0.1234567"]) == []
    assert "0.1234567" not in server.logs.getvalue()
    # The key is a private file, and the row holds ciphertext of the expected size.
    key_file = server.settings.keyring_dir / "examples.key"
    assert key_file.stat().st_mode & 0o077 == 0
    with server.services.sessions() as session:
        row = session.scalars(select(UserExamples)).one()
    assert len(row.ciphertext) == 12 + 4 + 3 * 64 * 4 + 3 + 16


def test_the_generator_fine_tunes_on_the_uploaded_examples(server: Harness) -> None:
    token = server.user("alice")
    subject = _subject(server, "alice")
    x, y = digits.user_examples("someone-else", 60)
    x_list = np.asarray(x).tolist()
    y_list = [int(v) for v in np.asarray(y)]
    generator = server.services.issuance._generators["digits"]  # the wrapped generator
    request = GenerationRequest(subject, "digits", "phone", "jti-1", {})
    without = bytes(generator(request))
    assert without == bytes(reference.build_iml_bundle(subject, "digits"))
    assert _upload(server, token, x_list, y_list).status_code == 201
    with_uploads = bytes(generator(request))
    expected = reference.build_iml_bundle(
        subject,
        "digits",
        (np.asarray(x_list, dtype=np.float32), np.asarray(y_list)),
    )
    assert with_uploads == bytes(expected)
    assert with_uploads != without


def test_an_issued_iml_is_personalised_from_the_uploads(server: Harness) -> None:
    token = server.user("alice")
    device = server.register(token, "phone")
    x, y = digits.user_examples("someone-else", 60)
    assert _upload(server, token, np.asarray(x).tolist(), [int(v) for v in y]).status_code == 201
    job = server.issue(token, device, "digits")
    package = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    opened = server.open(package.content, device)
    subject = _subject(server, "alice")
    expected = reference.build_iml_bundle(
        subject, "digits", (np.asarray(x, dtype=np.float32), np.asarray(y))
    )
    assert opened.plaintext == bytes(expected)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    with fresh_database("ms_examples") as url:
        yield url


def test_uploads_limits_expiry_and_deletion_work_on_postgresql(
    tmp_path: Path, log_stream: io.StringIO, pg_url: str
) -> None:
    for harness in start(
        tmp_path,
        log_stream,
        database_url=pg_url,
        examples={"max_examples_per_user": 30, "retention_seconds": 60},
    ):
        alice, bob = harness.user("alice"), harness.user("bob")
        assert _upload(harness, alice, *_examples(20)).status_code == 201
        assert _upload(harness, alice, *_examples(11)).status_code == 422
        assert _upload(harness, bob, *_examples(20)).status_code == 201
        stored = harness.services.examples.load(_subject(harness, "alice"))
        assert stored is not None
        assert len(stored.y) == 20
        harness.services.examples.delete_user("bob")
        harness.clock.advance(60)
        assert harness.services.sweep.run_once().examples == 1
        with harness.services.sessions() as session:
            assert session.scalars(select(UserExamples)).all() == []


def test_processes_starting_together_agree_on_one_examples_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file is never seen created but empty (it once was, between open and write)."""
    first_call, release = threading.Event(), threading.Event()
    real_token_bytes = examples_module.secrets.token_bytes
    calls: list[int] = []

    def slow_first_key(n: int) -> bytes:
        calls.append(n)
        if len(calls) == 1:  # the first server pauses while it makes its key
            first_call.set()
            release.wait(10)
        return real_token_bytes(n)

    monkeypatch.setattr(examples_module.secrets, "token_bytes", slow_first_key)
    settings = ExamplesSettings()
    results: list[bytes | BaseException] = []

    def first_server() -> None:
        try:
            results.append(examples_module.examples_key(settings, tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    thread = threading.Thread(target=first_server)
    thread.start()
    try:
        assert first_call.wait(10)
        second = examples_module.examples_key(settings, tmp_path)
    finally:
        release.set()
        thread.join(10)
    assert results == [second]
    assert (tmp_path / examples_module.KEY_FILE_NAME).stat().st_mode & 0o777 == 0o600
