"""``modelseal device ...`` against the real server: every command, JSON shapes, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import numpy as np
import pytest
from keyring.backend import KeyringBackend
from typer.testing import CliRunner, Result

from tests.softhsm import create_softhsm

from .cli_entry import cli
from .conftest import REPO_ROOT, ServerProcess, server_env

PASSPHRASE = "cli device passphrase"
FLOW = (sys.executable, "-m", "tests.e2e.pkcs11_flow")
ERROR_LINE = re.compile(r"error\[([a-z0-9_]+)\]: .+")


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    environment = {"MODELSEAL_KEYSTORE_PASSPHRASE": PASSPHRASE, "MODELSEAL_CLIENT_DIR": None}
    environment.update(env or {})
    return CliRunner().invoke(cli(), [str(a) for a in args], env=environment)  # type: ignore[arg-type]


def run_json(*args: str | Path, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run(*args, "--json", env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    document = json.loads(result.stdout)
    assert document["ok"] is True
    return document  # type: ignore[no-any-return]


def assert_error(result: Result, exit_code: int, code: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = ERROR_LINE.fullmatch(lines[0])
    assert match is not None, lines[0]
    assert match.group(1) == code, lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def digits_input(tmp_path: Path, subject: str) -> tuple[Path, Path, np.ndarray]:
    from modelseal.models.digits import user_holdout

    images, labels = user_holdout(subject)
    npy = tmp_path / "digits.npy"
    np.save(npy, images[:6])
    as_json = tmp_path / "digits.json"
    as_json.write_text(json.dumps({"input": images[:3].tolist()}))
    return npy, as_json, labels


def test_every_device_command_works_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    device = tmp_path / "device"
    init = run_json("device", "init", "--dir", device)
    assert init["keystore"] == {"kind": "file", "unlock": "passphrase"}
    assert init["data_dir"] == str(device)

    enroll = run_json(
        "device",
        "enroll",
        "--dir",
        device,
        "--server",
        server.url,
        "--token",
        server.token(),
        "--kem",
        "xwing",
        "--device-id",
        "cli-phone-1",
    )
    assert enroll["device_id"] == "cli-phone-1"
    assert enroll["kem"] == "xwing"
    assert enroll["server_pin"] is None  # plain http on loopback: no TLS key to report
    assert len(enroll["issuer_kids"]) >= 1  # type: ignore[arg-type]

    fetched = run_json("device", "fetch", "--dir", device, "--model", "digits")
    assert fetched["acknowledged"] is True
    assert fetched["ctype"] == "application/vnd.modelseal.bundle"
    claims = fetched["claims"]
    assert isinstance(claims, dict)
    assert claims["aud"] == "cli-phone-1"
    assert set(fetched["timings"]) == {"request", "wait", "download", "verify", "reseal", "ack"}  # type: ignore[arg-type]

    listed = run_json("device", "list", "--dir", device)
    (model,) = listed["models"]  # type: ignore[misc]
    assert model["model_id"] == "digits"
    assert model["licence_expired"] is False
    assert model["claims"] == claims
    assert listed["pending_acks"] == 0

    npy, as_json, labels = digits_input(tmp_path, str(claims["sub"]))
    ran = run_json("device", "run", "--dir", device, "--model", "digits", "--input", npy)
    assert np.asarray(ran["outputs"]["logits"]).shape == (6, 10)  # type: ignore[index]
    assert len(ran["argmax"]) == 6  # type: ignore[arg-type]
    assert sum(int(p == t) for p, t in zip(ran["argmax"], labels, strict=False)) >= 3  # type: ignore[call-overload]
    ran_json = run_json("device", "run", "--dir", device, "-m", "digits", "-i", as_json)
    assert ran_json["argmax"] == ran["argmax"][:3]  # type: ignore[index]
    text = run("device", "run", "--dir", device, "-m", "digits", "-i", npy)
    assert text.exit_code == 0, text.stderr
    assert "output logits: shape [6, 10], float32" in text.stdout
    assert "argmax: " + " ".join(str(v) for v in ran["argmax"]) in text.stdout  # type: ignore[attr-defined]

    assert run_json("device", "pin-refresh", "--dir", device)["added"] == []
    assert run_json("device", "forget", "--dir", device, "--model", "digits")["removed"] == [
        "digits"
    ]
    assert run_json("device", "list", "--dir", device)["models"] == []


def test_human_output_names_each_fetch_step(server: ServerProcess, tmp_path: Path) -> None:
    device = tmp_path / "device"
    run_json("device", "init", "--dir", device)
    run_json("device", "enroll", "--dir", device, "--server", server.url, "--token", server.token())
    result = run("device", "fetch", "--dir", device, "--model", "m1")
    assert result.exit_code == 0, result.stderr
    for step in ("downloaded", "verified", "re-sealed", "acknowledged", "licence"):
        assert re.search(rf"^\s+{step}\s", result.stdout, re.MULTILINE), step
    listed = run("device", "list", "--dir", device)
    assert re.search(r"^\s+m1\s+70,000 bytes .*licence until", listed.stdout, re.MULTILINE)


def test_errors_are_one_line_with_a_code_and_the_exit_code_of_their_family(
    server: ServerProcess, tmp_path: Path
) -> None:
    device = tmp_path / "device"
    assert_error(run("device", "fetch", "--dir", device, "-m", "m1"), 1, "client_not_initialized")
    run_json("device", "init", "--dir", device)
    assert_error(run("device", "fetch", "--dir", device, "-m", "m1"), 1, "not_enrolled")
    enroll = ["device", "enroll", "--dir", device, "--server", server.url]
    assert_error(run(*enroll, "--token", "t", "--kem", "x448"), 2, "usage_error")
    assert_error(run(*enroll, "--token", "ms_nope"), 1, "unauthenticated")
    assert_error(
        run(
            "device", "enroll", "--dir", device, "--server", "http://models.example", "--token", "t"
        ),
        1,
        "insecure_transport",
    )
    token = server.token()
    run_json(*enroll, "--token", token)
    assert_error(run(*enroll, "--token", token), 1, "already_enrolled")
    assert_error(run("device", "fetch", "--dir", device, "-m", "nope"), 1, "unknown_model")
    assert_error(run("device", "fetch", "--dir", device, "-m", "../x"), 2, "usage_error")
    assert_error(
        run("device", "run", "--dir", device, "-m", "m1", "-i", "x.npy"), 7, "file_not_found"
    )
    bad = tmp_path / "bad.json"
    bad.write_text('["a", "b"]')
    run_json("device", "fetch", "--dir", device, "-m", "m1")
    assert_error(run("device", "run", "--dir", device, "-m", "m1", "-i", bad), 2, "input_invalid")
    bad.write_text("[[1, 2]]")
    assert_error(
        run("device", "run", "--dir", device, "-m", "m1", "-i", bad), 1, "model_unsupported"
    )
    assert_error(
        run("device", "run", "--dir", device, "-m", "gone", "-i", bad), 1, "model_not_found"
    )
    assert_error(run("device", "forget", "--dir", device), 2, "usage_error")
    locked = {"MODELSEAL_KEYSTORE_PASSPHRASE": ""}
    assert_error(run("device", "list", "--dir", device, env=locked), 1, "keystore_locked")
    wrong = {"MODELSEAL_KEYSTORE_PASSPHRASE": "wrong"}
    assert_error(run("device", "list", "--dir", device, env=wrong), 1, "keystore_locked")
    as_json = run("device", "fetch", "--dir", device, "-m", "nope", "--json")
    assert as_json.exit_code == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False
    assert document["error"]["code"] == "unknown_model"


def test_the_passphrase_can_come_from_a_file(server: ServerProcess, tmp_path: Path) -> None:
    device = tmp_path / "device"
    secret = tmp_path / "passphrase.txt"
    secret.write_text("from a file\n")
    no_env = {"MODELSEAL_KEYSTORE_PASSPHRASE": ""}
    result = run("device", "init", "--dir", device, "--passphrase-file", secret, env=no_env)
    assert result.exit_code == 0, result.stderr
    result = run(
        "device",
        "enroll",
        "--dir",
        device,
        "--server",
        server.url,
        "--token",
        server.token(),
        "--passphrase-file",
        secret,
        env=no_env,
    )
    assert result.exit_code == 0, result.stderr
    assert_error(run("device", "list", "--dir", device, env=no_env), 1, "keystore_locked")
    assert_error(
        run(
            "device",
            "list",
            "--dir",
            device,
            env={"MODELSEAL_KEYSTORE_PASSPHRASE": "from a file\n"},
        ),
        1,
        "keystore_locked",
    )


class MemoryKeyring(KeyringBackend):
    """An OS keyring stand-in that keeps secrets in memory."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_without_a_passphrase_the_keystore_is_unlocked_by_the_os_keyring(
    server: ServerProcess, tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    device = tmp_path / "device"
    no_env = {"MODELSEAL_KEYSTORE_PASSPHRASE": ""}
    assert run_json("device", "init", "--dir", device, env=no_env)["keystore"] == {
        "kind": "file",
        "unlock": "keyring",
    }
    (entry,) = memory_keyring.entries
    assert entry == ("modelseal-client", str(device.resolve()))
    run_json(
        "device",
        "enroll",
        "--dir",
        device,
        "--server",
        server.url,
        "--token",
        server.token(),
        env=no_env,
    )
    assert run_json("device", "fetch", "--dir", device, "-m", "m1", env=no_env)["acknowledged"]
    memory_keyring.entries.clear()
    assert_error(run("device", "list", "--dir", device, env=no_env), 1, "keystore_locked")


def test_a_keyring_that_cannot_keep_secrets_is_refused(tmp_path: Path) -> None:
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        result = run(
            "device", "init", "--dir", tmp_path / "d", env={"MODELSEAL_KEYSTORE_PASSPHRASE": ""}
        )
    finally:
        keyring.set_keyring(previous)
    assert_error(result, 1, "keyring_unavailable")


def test_a_pkcs11_token_holds_the_device_keys_for_the_whole_flow(
    server: ServerProcess, tmp_path: Path
) -> None:
    from modelseal.models.digits import load_split

    hsm = create_softhsm(tmp_path / "softhsm", ["modelseal-e2e"])
    images = tmp_path / "input.npy"
    np.save(images, load_split().x_test[:4])
    device = tmp_path / "device"
    completed = subprocess.run(
        [*FLOW, str(device), server.url, hsm.module, "modelseal-e2e", str(images)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **server_env(),
            "SOFTHSM2_CONF": str(hsm.conf),
            "MODELSEAL_API_TOKEN": server.token(),
            "MODELSEAL_PKCS11_PIN": hsm.user_pin,
        },
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    init, x25519, enroll, fetch, listed, ran = json.loads(completed.stdout)
    assert init["exit_code"] == 0, init
    assert json.loads(init["stdout"])["keystore"]["kind"] == "pkcs11"
    assert x25519["exit_code"] == 2
    refused = json.loads(x25519["stdout"])["error"]
    assert refused["code"] == "usage_error"
    assert "a PKCS#11 keystore holds p256 device keys only" in refused["message"]
    assert enroll["exit_code"] == 0, enroll
    assert json.loads(enroll["stdout"])["kem"] == "p256"
    assert fetch["exit_code"] == 0, fetch
    assert json.loads(fetch["stdout"])["acknowledged"] is True
    assert [m["model_id"] for m in json.loads(listed["stdout"])["models"]] == ["digits"]
    assert ran["exit_code"] == 0, ran
    assert len(json.loads(ran["stdout"])["argmax"]) == 4
    # No key material on disk: the keys live in the token.
    assert not (device / "keys").exists()
    assert sorted(p.name for p in (device / "models").iterdir()) == ["digits.mseal"]
