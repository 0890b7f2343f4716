"""The ``modelseal`` command line: every command, every exit-code family, JSON shapes, files.

Most tests drive the Typer app in process through ``typer.testing.CliRunner``;
the ones at the end run the installed ``modelseal`` script as a real process,
one of them on a pseudo-terminal to see the progress bar.
"""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner, Result

import modelseal.errors as errors_module
from modelseal.cli.claims import parse_claim_options
from modelseal.cli.demo_cmd import DEMO_STEPS
from modelseal.cli.keys_cmd import generate_and_save
from modelseal.cli.main import (
    EXIT_CLAIMS,
    EXIT_FORMAT,
    EXIT_INTERNAL,
    EXIT_IO,
    EXIT_KEY,
    EXIT_OTHER,
    EXIT_USAGE,
    EXIT_VERIFICATION,
    ModelSealGroup,
    app,
    classify,
)
from modelseal.cli.output import JSONFlag, printable, transfer_progress
from modelseal.envelope.container import read_framing
from modelseal.errors import (
    ChunkTagError,
    ClaimsError,
    FormatError,
    KeyFormatError,
    ModelSealError,
    UsageError,
    VerificationError,
)
from modelseal.keys import (
    KEK,
    KEM,
    IssuerPrivateKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
    load_key,
)
from tests.terminal import run_on_a_terminal

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "modelseal"
DEVICE_ID = "device-1"
PLAINTEXT = bytes((i * 31 + 7) % 251 for i in range(3 * 16384 + 123))
ERROR_LINE = re.compile(r"error\[([a-z_]+)\]: .+")


# --- Helpers ---------------------------------------------------------------------------------


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def run_json(*args: str | Path) -> tuple[Result, dict[str, object]]:
    result = run(*args, "--json")
    return result, json.loads(result.stdout)


def assert_error(result: Result, exit_code: int, code: str) -> str:
    """The process failed with ``exit_code`` and one ``error[code]: ...`` line on stderr."""
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = ERROR_LINE.fullmatch(lines[0])
    assert match is not None, lines[0]
    assert match.group(1) == code, lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return lines[0]


def assert_json_error(result: Result, exit_code: int, code: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert set(document) == {"ok", "error"}
    assert set(document["error"]) == {"code", "message"}
    assert document["error"]["code"] == code
    message = document["error"]["message"]
    assert isinstance(message, str)
    assert message
    return message


@dataclass(frozen=True)
class Workspace:
    """A directory with a model file, a device key pair, an issuer key pair and a KEK."""

    root: Path
    model: Path
    device: Path
    device_pub: Path
    issuer: Path
    issuer_pub: Path
    kek: Path

    def seal(self, out: str = "model.mseal", *extra: str) -> Path:
        target = self.root / out
        result = run(
            "seal", self.model, target, "--to", self.device_pub, "--issuer-key", self.issuer,
            "--sub", "user-1", "--aud", DEVICE_ID, "--mid", "model-1", "--ttl", "600", *extra,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        return target

    def open_args(self, package: Path, out: Path) -> list[str | Path]:
        return [
            "open", package, out, "--key", self.device, "--issuers", self.issuer_pub,
            "--aud", DEVICE_ID,
        ]  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    model = tmp_path / "model.bin"
    model.write_bytes(PLAINTEXT)
    for args in (
        ("--kem", "x25519", "--out", tmp_path / "device"),
        ("--issuer", "--alg", "Ed25519", "--out", tmp_path / "issuer"),
        ("--kek", "--label", "kek-1", "--out", tmp_path / "kek"),
    ):
        result = run("keygen", *args)
        assert result.exit_code == 0, result.output
    return Workspace(
        root=tmp_path,
        model=model,
        device=tmp_path / "device.jwk",
        device_pub=tmp_path / "device.pub.jwk",
        issuer=tmp_path / "issuer.jwk",
        issuer_pub=tmp_path / "issuer.pub.jwk",
        kek=tmp_path / "kek.jwk",
    )


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- keygen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kem", ["x25519", "p256", "xwing"])
def test_keygen_writes_a_device_key_pair_with_a_0600_private_file(tmp_path: Path, kem: str) -> None:
    result, document = run_json("keygen", "--kem", kem, "--out", tmp_path / "dev")
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "dev.jwk", tmp_path / "dev.pub.jwk"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key, pub = load_key(private), load_key(public)
    assert isinstance(key, RecipientPrivateKey)
    assert isinstance(pub, RecipientPublicKey)
    assert key.kem.label == kem
    assert pub == key.public_key()
    assert document == {
        "ok": True,
        "kind": "device",
        "algorithm": kem,
        "kid": key.kid,
        "private_key": str(private),
        "public_key": str(public),
    }


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_keygen_issuer_writes_a_signing_key_pair(tmp_path: Path, alg: str) -> None:
    result = run("keygen", "--issuer", "--alg", alg, "--out", tmp_path / "iss")
    assert result.exit_code == 0, result.output
    key = load_key(tmp_path / "iss.jwk")
    assert isinstance(key, IssuerPrivateKey)
    assert str(key.alg) == alg
    assert load_key(tmp_path / "iss.pub.jwk") == key.public_key()
    assert stat.S_IMODE((tmp_path / "iss.jwk").stat().st_mode) == 0o600
    assert key.kid in result.stdout
    assert str(tmp_path / "iss.jwk") in result.stdout


def test_keygen_without_a_kind_makes_an_x25519_device_key(tmp_path: Path) -> None:
    result = run("keygen", "--out", tmp_path / "dev")
    assert result.exit_code == 0, result.output
    key = load_key(tmp_path / "dev.jwk")
    assert isinstance(key, RecipientPrivateKey)
    assert key.kem.label == "x25519"


def test_keygen_kek_writes_only_a_private_file(tmp_path: Path) -> None:
    result, document = run_json("keygen", "--kek", "--label", "kek-7", "--out", tmp_path / "k")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.jwk"]
    assert stat.S_IMODE((tmp_path / "k.jwk").stat().st_mode) == 0o600
    key = load_key(tmp_path / "k.jwk")
    assert isinstance(key, KEK)
    assert key.label == "kek-7"
    assert document["kind"] == "kek"
    assert document["kid"] == "kek-7"
    assert document["public_key"] is None


def test_keygen_refuses_to_overwrite_existing_key_files(tmp_path: Path) -> None:
    assert run("keygen", "--out", tmp_path / "dev").exit_code == 0
    before = (tmp_path / "dev.jwk").read_bytes()
    line = assert_error(run("keygen", "--out", tmp_path / "dev"), EXIT_IO, "file_exists")
    assert str(tmp_path / "dev.jwk") in line
    assert (tmp_path / "dev.jwk").read_bytes() == before


def test_keygen_force_replaces_existing_key_files(tmp_path: Path) -> None:
    assert run("keygen", "--out", tmp_path / "dev").exit_code == 0
    before = (tmp_path / "dev.jwk").read_bytes()
    assert run("keygen", "--out", tmp_path / "dev", "--force").exit_code == 0
    assert (tmp_path / "dev.jwk").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "dev.jwk").stat().st_mode) == 0o600


def test_keygen_refusal_over_an_existing_public_file_writes_no_private_file(tmp_path: Path) -> None:
    (tmp_path / "dev.pub.jwk").write_text("{}")
    assert_error(run("keygen", "--out", tmp_path / "dev"), EXIT_IO, "file_exists")
    assert not (tmp_path / "dev.jwk").exists()


def test_keygen_into_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    line = assert_error(
        run("keygen", "--out", tmp_path / "nowhere" / "dev"), EXIT_IO, "file_not_found"
    )
    assert str(tmp_path / "nowhere") in line


@pytest.mark.parametrize(
    "options",
    [
        ["--issuer", "--kek", "--label", "x"],
        ["--kem", "p256", "--issuer"],
        ["--alg", "ES256"],
        ["--label", "x"],
        ["--kek"],
    ],
)
def test_keygen_rejects_options_that_do_not_fit_together(
    tmp_path: Path, options: list[str]
) -> None:
    assert_error(run("keygen", *options, "--out", tmp_path / "k"), EXIT_USAGE, "usage_error")
    assert list(tmp_path.iterdir()) == []


def test_keygen_rejects_a_malformed_kek_label_as_a_key_error(tmp_path: Path) -> None:
    result = run("keygen", "--kek", "--label", "has space", "--out", tmp_path / "k")
    assert_error(result, EXIT_KEY, "key_invalid")


def test_keygen_with_an_unknown_kem_is_a_typer_usage_error(tmp_path: Path) -> None:
    result = run("keygen", "--kem", "rsa", "--out", tmp_path / "k")
    assert result.exit_code == EXIT_USAGE
    assert list(tmp_path.iterdir()) == []


# --- seal ------------------------------------------------------------------------------------


def test_seal_then_open_restores_the_model_byte_for_byte(ws: Workspace) -> None:
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "user-1", "--aud", DEVICE_ID, "--mid", "model-1", "--ttl", "600",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"sealed {ws.model} -> {ws.root / 'm.mseal'}\n")
    assert "package_id" in result.stdout
    opened = ws.root / "m.out"
    result = run(*ws.open_args(ws.root / "m.mseal", opened))
    assert result.exit_code == 0, result.output
    assert opened.read_bytes() == PLAINTEXT
    assert "signature valid" in result.stdout
    assert "issuer_signature, audience, expiry" in result.stdout


def test_seal_json_reports_the_header_and_sizes(ws: Workspace) -> None:
    before = int(time.time())
    result, document = run_json(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "user-1", "--aud", DEVICE_ID, "--mid", "model-1", "--ttl", "600",
        "--licence-ttl", "3600", "--iss", "issuer.example", "--ctype", "application/onnx",
        "--claim", "tier=3", "--claim", "name=abc", "--claim", "beta=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert set(document) == {
        "ok", "input", "output", "package_id", "rtype", "kem", "rcpt", "plaintext_bytes",
        "package_bytes", "seconds", "header",
    }  # fmt: skip
    assert document["ok"] is True
    assert re.fullmatch(r"[0-9a-f]{64}", str(document["package_id"]))
    assert document["rtype"] == "hpke"
    assert document["kem"] == "x25519"
    device = load_key(ws.device)
    assert isinstance(device, RecipientPrivateKey)
    assert document["rcpt"] == device.kid
    assert document["plaintext_bytes"] == len(PLAINTEXT)
    assert document["package_bytes"] == (ws.root / "m.mseal").stat().st_size
    header = document["header"]
    assert isinstance(header, dict)
    assert header["ctype"] == "application/onnx"
    claims = header["claims"]
    assert claims["iss"] == "issuer.example"
    assert (claims["sub"], claims["aud"], claims["mid"]) == ("user-1", DEVICE_ID, "model-1")
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 600
    assert claims["lexp"] - claims["iat"] == 3600
    assert (claims["tier"], claims["name"], claims["beta"]) == (3, "abc", True)


def test_seal_defaults_iss_to_the_issuer_kid(ws: Workspace) -> None:
    package = ws.seal()
    _, document = run_json("inspect", package)
    issuer = load_key(ws.issuer)
    assert isinstance(issuer, IssuerPrivateKey)
    header = document["header"]
    assert isinstance(header, dict)
    assert header["claims"]["iss"] == issuer.kid


def test_every_package_gets_a_fresh_jti(ws: Workspace) -> None:
    jtis = set()
    for name in ("a.mseal", "b.mseal"):
        _, document = run_json("inspect", ws.seal(name))
        header = document["header"]
        assert isinstance(header, dict)
        jtis.add(header["claims"]["jti"])
    assert len(jtis) == 2


def test_claim_values_keep_json_scalar_types_and_fall_back_to_strings() -> None:
    assert parse_claim_options(
        ["n=3", "f=1.5", "t=true", "z=null", 'q="3"', "s=abc", "list=[1,2]", "e=", "eq=a=b"]
    ) == {
        "n": 3,
        "f": 1.5,
        "t": True,
        "z": None,
        "q": "3",
        "s": "abc",
        "list": "[1,2]",
        "e": "",
        "eq": "a=b",
    }


def test_claim_that_spells_out_nan_is_kept_as_a_string() -> None:
    assert parse_claim_options(["x=NaN", "y=Infinity"]) == {"x": "NaN", "y": "Infinity"}


@pytest.mark.parametrize(
    "item", ["big=9007199254740992", "neg=-9007199254740992", "inf=1e400", "noequals", "=v"]
)
def test_claim_that_no_reader_could_accept_is_refused(item: str) -> None:
    with pytest.raises(UsageError, match="--claim") as caught:
        parse_claim_options([item])
    assert caught.value.code == "usage_error"


def test_claim_given_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="more than once") as caught:
        parse_claim_options(["a=1", "a=2"])
    assert caught.value.code == "usage_error"


@pytest.mark.parametrize("name", ["iss", "sub", "aud", "mid", "jti", "iat", "exp", "lexp"])
def test_claim_that_redefines_a_standard_claim_is_refused(ws: Workspace, name: str) -> None:
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60", "--claim", f"{name}=1",
    )  # fmt: skip
    line = assert_error(result, EXIT_USAGE, "usage_error")
    assert f"--claim {name}" in line
    assert not (ws.root / "m.mseal").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("--ttl", "0"), ("--ttl", "-5"), ("--licence-ttl", "0")]
)
def test_seal_with_a_non_positive_ttl_is_a_usage_error(
    ws: Workspace, option: str, value: str
) -> None:
    args = ["--ttl", "60", "--licence-ttl", "60"]
    args[args.index(option) + 1] = value
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "u", "--aud", "d", "--mid", "m", *args,
    )  # fmt: skip
    line = assert_error(result, EXIT_USAGE, "usage_error")
    assert option in line
    assert not (ws.root / "m.mseal").exists()


def test_seal_names_every_missing_option(ws: Workspace) -> None:
    result = run("seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--sub", "u")
    line = assert_error(result, EXIT_USAGE, "usage_error")
    assert "missing --issuer-key, --aud, --mid and --ttl" in line


def test_seal_with_an_overlong_claim_is_a_usage_error(ws: Workspace) -> None:
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "u" * 256, "--aud", "d", "--mid", "m", "--ttl", "60",
    )  # fmt: skip
    assert "claims.sub" in assert_error(result, EXIT_USAGE, "usage_error")


def test_seal_to_a_device_private_key_is_refused(ws: Workspace) -> None:
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device, "--issuer-key", ws.issuer,
        "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60",
    )  # fmt: skip
    assert "device private key" in assert_error(result, EXIT_KEY, "key_invalid")
    assert not (ws.root / "m.mseal").exists()


def test_seal_with_an_issuer_public_key_as_signer_is_refused(ws: Workspace) -> None:
    result = run(
        "seal", ws.model, ws.root / "m.mseal", "--to", ws.device_pub, "--issuer-key",
        ws.issuer_pub, "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60",
    )  # fmt: skip
    assert "issuer public key" in assert_error(result, EXIT_KEY, "key_invalid")


def test_seal_refuses_to_replace_an_existing_output_without_force(ws: Workspace) -> None:
    package = ws.seal()
    before = package.read_bytes()
    result = run(
        "seal", ws.model, package, "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60",
    )  # fmt: skip
    assert str(package) in assert_error(result, EXIT_IO, "file_exists")
    assert package.read_bytes() == before
    assert ws.seal("model.mseal", "--force") == package
    assert package.read_bytes() != before


def test_seal_with_out_equal_to_in_is_refused(ws: Workspace) -> None:
    result = run(
        "seal", ws.model, ws.model, "--to", ws.device_pub, "--issuer-key", ws.issuer,
        "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60", "--force",
    )  # fmt: skip
    assert_error(result, EXIT_USAGE, "usage_error")
    assert ws.model.read_bytes() == PLAINTEXT


def test_seal_to_a_kek_makes_an_unsigned_at_rest_package_that_the_kek_opens(ws: Workspace) -> None:
    package = ws.root / "rest.mseal"
    result, document = run_json("seal", ws.model, package, "--to", ws.kek)
    assert result.exit_code == 0, result.output
    assert document["rtype"] == "kek"
    assert document["rcpt"] == "kek-1"
    assert document["kem"] is None
    header = document["header"]
    assert isinstance(header, dict)
    assert "sig" not in header
    assert "claims" not in header
    result, opened = run_json("open", package, ws.root / "rest.out", "--key", ws.kek)
    assert result.exit_code == 0, result.output
    assert (ws.root / "rest.out").read_bytes() == PLAINTEXT
    assert opened["verified"] == [
        "recipient", "dek_unwrap", "key_commitment", "body_length", "chunks",
    ]  # fmt: skip


def test_seal_to_a_kek_keeps_claims_when_all_are_given(ws: Workspace) -> None:
    result, document = run_json(
        "seal", ws.model, ws.root / "rest.mseal", "--to", ws.kek, "--iss", "i", "--sub", "u",
        "--aud", "d", "--mid", "m", "--ttl", "60", "--licence-ttl", "120",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    header = document["header"]
    assert isinstance(header, dict)
    assert header["claims"]["lexp"] - header["claims"]["iat"] == 120


def test_seal_to_a_kek_with_partial_claims_is_a_usage_error(ws: Workspace) -> None:
    result = run("seal", ws.model, ws.root / "rest.mseal", "--to", ws.kek, "--sub", "u")
    assert "--iss" in assert_error(result, EXIT_USAGE, "usage_error")


def test_seal_to_a_kek_refuses_an_issuer_key(ws: Workspace) -> None:
    result = run("seal", ws.model, ws.root / "r.mseal", "--to", ws.kek, "--issuer-key", ws.issuer)
    assert "not signed" in assert_error(result, EXIT_USAGE, "usage_error")


# --- open ------------------------------------------------------------------------------------


def test_open_json_lists_the_checks_that_ran(ws: Workspace) -> None:
    package = ws.seal("m.mseal", "--licence-ttl", "3600")
    result, document = run_json(*ws.open_args(package, ws.root / "m.out"))
    assert result.exit_code == 0, result.output
    assert set(document) == {
        "ok", "input", "output", "package_id", "rtype", "kem", "plaintext_bytes", "chunks",
        "verified", "seconds", "header",
    }  # fmt: skip
    assert document["plaintext_bytes"] == len(PLAINTEXT)
    assert document["chunks"] == len(PLAINTEXT) // 16384 + 1
    assert document["verified"] == [
        "issuer_signature", "audience", "expiry", "licence", "recipient", "dek_unwrap",
        "key_commitment", "body_length", "chunks",
    ]  # fmt: skip
    _, inspected = run_json("inspect", package)
    assert document["package_id"] == inspected["package_id"]


def test_open_accepts_a_jwk_set_of_pinned_issuers(ws: Workspace) -> None:
    assert run("keygen", "--issuer", "--alg", "ES256", "--out", ws.root / "other").exit_code == 0
    keys = [json.loads(p.read_text()) for p in (ws.root / "other.pub.jwk", ws.issuer_pub)]
    jwks = ws.root / "issuers.jwks"
    jwks.write_text(json.dumps({"keys": keys}))
    package = ws.seal()
    result = run(
        "open", package, ws.root / "m.out", "--key", ws.device, "--issuers", jwks,
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (ws.root / "m.out").read_bytes() == PLAINTEXT


def test_open_with_an_unpinned_issuer_exits_4_and_writes_nothing(ws: Workspace) -> None:
    package = ws.seal()
    assert run("keygen", "--issuer", "--out", ws.root / "stranger").exit_code == 0
    out = ws.root / "m.out"
    before = sorted(p.name for p in ws.root.iterdir())
    result = run(
        "open", package, out, "--key", ws.device, "--issuers", ws.root / "stranger.pub.jwk",
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert_error(result, EXIT_VERIFICATION, "unknown_issuer")
    assert sorted(p.name for p in ws.root.iterdir()) == before


def test_open_with_the_wrong_audience_exits_5(ws: Workspace) -> None:
    package = ws.seal()
    args = ws.open_args(package, ws.root / "m.out")
    args[args.index(DEVICE_ID)] = "device-2"
    assert_error(run(*args), EXIT_CLAIMS, "wrong_audience")
    assert not (ws.root / "m.out").exists()


def test_open_after_the_delivery_deadline_exits_5(ws: Workspace) -> None:
    package = ws.seal()
    later = str(int(time.time()) + 600 + 60 + 3600)
    result = run(*ws.open_args(package, ws.root / "m.out"), "--now", later)
    assert_error(result, EXIT_CLAIMS, "expired")


def test_open_within_the_leeway_after_the_deadline_succeeds(ws: Workspace) -> None:
    package = ws.seal()
    _, document = run_json("inspect", package)
    header = document["header"]
    assert isinstance(header, dict)
    now = str(header["claims"]["exp"] + 30)
    result = run(*ws.open_args(package, ws.root / "m.out"), "--now", now, "--leeway", "60")
    assert result.exit_code == 0, result.output


def test_open_after_the_licence_expiry_exits_5(ws: Workspace) -> None:
    package = ws.seal("m.mseal", "--ttl", "100000", "--licence-ttl", "10")
    later = str(int(time.time()) + 10 + 300 + 60)
    result = run(*ws.open_args(package, ws.root / "m.out"), "--now", later)
    assert_error(result, EXIT_CLAIMS, "licence_expired")


def test_open_with_a_malformed_jwk_exits_6(ws: Workspace) -> None:
    package = ws.seal()
    bad = ws.root / "bad.jwk"
    bad.write_text('{"kty": "OKP", "crv": "X25519"}')
    result = run(
        "open", package, ws.root / "m.out", "--key", bad, "--issuers", ws.issuer_pub,
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert_error(result, EXIT_KEY, "key_invalid")


def test_open_with_a_key_file_that_is_not_json_exits_6(ws: Workspace) -> None:
    package = ws.seal()
    bad = ws.root / "bad.jwk"
    bad.write_bytes(b"\x00\xff not json")
    result = run(
        "open", package, ws.root / "m.out", "--key", bad, "--issuers", ws.issuer_pub,
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert_error(result, EXIT_KEY, "key_invalid")


def test_open_with_a_device_public_key_is_refused(ws: Workspace) -> None:
    package = ws.seal()
    result = run(
        "open", package, ws.root / "m.out", "--key", ws.device_pub, "--issuers", ws.issuer_pub,
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert "PREFIX.pub.jwk" in assert_error(result, EXIT_KEY, "key_invalid")


def test_open_with_a_device_key_needs_issuers_and_audience(ws: Workspace) -> None:
    package = ws.seal()
    result = run("open", package, ws.root / "m.out", "--key", ws.device)
    assert "missing --issuers and --aud" in assert_error(result, EXIT_USAGE, "usage_error")


def test_open_with_a_kek_refuses_issuers_and_audience(ws: Workspace) -> None:
    result, _ = run_json("seal", ws.model, ws.root / "r.mseal", "--to", ws.kek)
    assert result.exit_code == 0
    result = run("open", ws.root / "r.mseal", ws.root / "r.out", "--key", ws.kek, "--aud", "d")
    assert_error(result, EXIT_USAGE, "usage_error")
    assert not (ws.root / "r.out").exists()


def test_open_of_an_at_rest_package_with_a_device_key_is_a_recipient_mismatch(
    ws: Workspace,
) -> None:
    assert run("seal", ws.model, ws.root / "r.mseal", "--to", ws.kek).exit_code == 0
    result = run(*ws.open_args(ws.root / "r.mseal", ws.root / "r.out"))
    assert_error(result, EXIT_VERIFICATION, "recipient_mismatch")


@pytest.mark.parametrize("leeway", ["-1", "301"])
def test_open_with_a_leeway_out_of_range_is_a_usage_error(ws: Workspace, leeway: str) -> None:
    package = ws.seal()
    result = run(*ws.open_args(package, ws.root / "m.out"), "--leeway", leeway)
    assert "--leeway" in assert_error(result, EXIT_USAGE, "usage_error")


def test_open_failure_in_the_last_chunk_leaves_no_output_file(ws: Workspace) -> None:
    package = ws.seal()
    data = bytearray(package.read_bytes())
    data[-5] ^= 0x80  # inside the final chunk's tag: everything before it verifies
    package.write_bytes(data)
    before = sorted(p.name for p in ws.root.iterdir())
    result, _ = run_json(*ws.open_args(package, ws.root / "m.out"))
    assert_json_error(result, EXIT_VERIFICATION, "chunk_tag_failed")
    # No output and no temp file: the directory is exactly as it was.
    assert sorted(p.name for p in ws.root.iterdir()) == before


def test_open_refuses_to_replace_an_existing_output_without_force(ws: Workspace) -> None:
    package = ws.seal()
    out = ws.root / "m.out"
    out.write_bytes(b"keep me")
    assert_error(run(*ws.open_args(package, out)), EXIT_IO, "file_exists")
    assert out.read_bytes() == b"keep me"
    assert run(*ws.open_args(package, out), "--force").exit_code == 0
    assert out.read_bytes() == PLAINTEXT


# --- Errors that every command shares --------------------------------------------------------


def test_bad_magic_exits_3(ws: Workspace) -> None:
    line = assert_error(run("inspect", ws.model), EXIT_FORMAT, "bad_magic")
    assert line.startswith("error[bad_magic]: ")
    result = run(*ws.open_args(ws.model, ws.root / "m.out"))
    assert_error(result, EXIT_FORMAT, "bad_magic")
    assert not (ws.root / "m.out").exists()


def test_bad_magic_with_json_prints_one_error_object_on_stdout(ws: Workspace) -> None:
    result, _ = run_json("inspect", ws.model)
    assert "magic" in assert_json_error(result, EXIT_FORMAT, "bad_magic")


@pytest.mark.parametrize("command", ["seal", "open", "inspect"])
def test_missing_input_file_exits_7_and_names_the_path(ws: Workspace, command: str) -> None:
    missing = ws.root / "no-such-file.bin"
    args: list[str | Path] = {
        "seal": [
            "seal", missing, ws.root / "o", "--to", ws.device_pub, "--issuer-key", ws.issuer,
            "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60",
        ],
        "open": ws.open_args(missing, ws.root / "o"),
        "inspect": ["inspect", missing],
    }[command]  # fmt: skip
    line = assert_error(run(*args), EXIT_IO, "file_not_found")
    assert str(missing) in line
    result, _ = run_json(*args)
    assert str(missing) in assert_json_error(result, EXIT_IO, "file_not_found")


def test_missing_key_file_exits_7_and_names_the_path(ws: Workspace) -> None:
    package = ws.seal()
    missing = ws.root / "gone.jwk"
    result = run(
        "open", package, ws.root / "m.out", "--key", missing, "--issuers", ws.issuer_pub,
        "--aud", DEVICE_ID,
    )  # fmt: skip
    assert str(missing) in assert_error(result, EXIT_IO, "file_not_found")


def test_a_directory_given_as_input_exits_7(ws: Workspace) -> None:
    assert_error(run("inspect", ws.root), EXIT_IO, "is_a_directory")


def test_unknown_option_is_a_typer_usage_error_with_exit_2(ws: Workspace) -> None:
    result = run("inspect", ws.model, "--no-such-option")
    assert result.exit_code == EXIT_USAGE
    assert result.stdout == ""
    assert "No such option" in result.stderr


ERROR_CLASSES = [getattr(errors_module, name) for name in errors_module.__all__]


def _instance(cls: type[ModelSealError]) -> ModelSealError:
    return cls(3) if cls is ChunkTagError else cls("test message")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_library_error_maps_to_the_exit_code_of_its_family(
    cls: type[ModelSealError],
) -> None:
    families = [
        (UsageError, EXIT_USAGE),
        (FormatError, EXIT_FORMAT),
        (VerificationError, EXIT_VERIFICATION),
        (ClaimsError, EXIT_CLAIMS),
        (KeyFormatError, EXIT_KEY),
    ]
    expected = next((code for family, code in families if issubclass(cls, family)), EXIT_OTHER)
    error = _instance(cls)
    assert classify(error) == (expected, cls.code, error.message)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FileNotFoundError(2, "No such file or directory", "/x/y"), "file_not_found"),
        (PermissionError(13, "Permission denied", "/x/y"), "permission_denied"),
        (FileExistsError(17, "File exists", "/x/y"), "file_exists"),
        (IsADirectoryError(21, "Is a directory", "/x/y"), "is_a_directory"),
        (OSError(5, "Input/output error", "/x/y"), "io_error"),
    ],
)
def test_os_errors_exit_7_and_name_the_path(error: OSError, code: str) -> None:
    exit_code, got_code, message = classify(error)
    assert (exit_code, got_code) == (EXIT_IO, code)
    assert message.startswith("/x/y: ")


def test_docs_list_every_error_code_and_exit_code() -> None:
    text = (REPO_ROOT / "docs" / "CLI.md").read_text()
    for cls in ERROR_CLASSES:
        assert f"| `{cls.code}` |" in text, cls.code
    for code in ("file_not_found", "file_exists", "permission_denied", "io_error"):
        assert f"| `{code}` |" in text, code
    for code in ("internal_error", "interrupted", "demo_failed"):
        assert f"| `{code}` |" in text, code
    for exit_code in (0, 1, 2, 3, 4, 5, 6, 7, 70, 130):
        assert f"\n| {exit_code} |" in text, exit_code


def _probe_app(failure: Callable[[], None]) -> typer.Typer:
    """An app with the real root group, a failing command and a failing sub-app command."""
    probe = typer.Typer(cls=ModelSealGroup, pretty_exceptions_enable=False)

    @probe.callback()
    def root() -> None:
        """Probe."""

    @probe.command()
    def fail(json_output: JSONFlag = False) -> None:
        failure()

    sub = typer.Typer()

    @sub.command("fail")
    def sub_fail(json_output: JSONFlag = False) -> None:
        failure()

    @sub.command("other")
    def sub_other() -> None:
        """Keep ``sub`` a group."""

    probe.add_typer(sub, name="server")
    return probe


def _raise(error: BaseException) -> Callable[[], None]:
    def fail() -> None:
        raise error

    return fail


def test_an_unexpected_exception_exits_70_with_one_line_and_no_traceback() -> None:
    probe = _probe_app(_raise(RuntimeError("kaput")))
    result = CliRunner().invoke(probe, ["fail"])
    line = assert_error(result, EXIT_INTERNAL, "internal_error")
    assert "RuntimeError: kaput" in line
    result = CliRunner().invoke(probe, ["fail", "--json"])
    assert_json_error(result, EXIT_INTERNAL, "internal_error")


def test_commands_of_an_added_sub_app_run_inside_the_error_boundary() -> None:
    probe = _probe_app(_raise(UsageError("from a sub-app")))
    result = CliRunner().invoke(probe, ["server", "fail"])
    assert assert_error(result, EXIT_USAGE, "usage_error") == "error[usage_error]: from a sub-app"
    result = CliRunner().invoke(probe, ["server", "fail", "--json"])
    assert assert_json_error(result, EXIT_USAGE, "usage_error") == "from a sub-app"


def test_an_interrupt_exits_130_with_one_line() -> None:
    result = CliRunner().invoke(_probe_app(_raise(KeyboardInterrupt())), ["fail"])
    assert_error(result, 130, "interrupted")


def test_error_messages_are_one_line_with_control_characters_escaped() -> None:
    result = CliRunner().invoke(_probe_app(_raise(UsageError("a\nb\x1b[2Jc"))), ["fail"])
    assert assert_error(result, EXIT_USAGE, "usage_error") == "error[usage_error]: a b\\x1b[2Jc"


# --- inspect ---------------------------------------------------------------------------------


def test_inspect_shows_header_sizes_and_package_id(ws: Workspace) -> None:
    package = ws.seal("m.mseal", "--claim", "tier=3")
    _, sealed = run_json("inspect", package)
    result = run("inspect", package)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "NOT VERIFIED" in out
    assert str(sealed["package_id"]) in out
    device, issuer = load_key(ws.device), load_key(ws.issuer)
    assert isinstance(device, RecipientPrivateKey)
    assert isinstance(issuer, IssuerPrivateKey)
    assert re.search(rf"\n  rcpt +{device.kid}\n", out)
    assert re.search(rf"\n  sig +Ed25519 kid {issuer.kid}\n", out)
    assert "x25519 (kem 0x0020), HKDF-SHA256, AES-256-GCM" in out
    assert re.search(r"\n  sub +user-1\n", out)
    assert re.search(r"\n  claim tier +3\n", out)
    assert f"{len(PLAINTEXT):,} bytes" in out
    assert "matches len" in out


def test_inspect_json_shape(ws: Workspace) -> None:
    package = ws.seal()
    result, document = run_json("inspect", package)
    assert result.exit_code == 0, result.output
    assert set(document) == {"ok", "file", "verified", "package_id", "kem", "header", "sizes"}
    assert document["verified"] is False
    assert document["kem"] == "x25519"
    with package.open("rb") as src:
        framing = read_framing(src)
    assert document["package_id"] == framing.package_id
    assert document["header"] == framing.header.to_json()
    size = package.stat().st_size
    assert document["sizes"] == {
        "header_bytes": len(framing.prelude) - 12,
        "enc_bytes": 32,
        "signature_bytes": 64,
        "body_offset": framing.body_offset,
        "body_bytes": size - framing.body_offset,
        "expected_body_bytes": size - framing.body_offset,
        "body_matches": True,
        "total_bytes": size,
    }


def test_inspect_reports_a_body_that_does_not_match_len(ws: Workspace) -> None:
    package = ws.seal()
    package.write_bytes(package.read_bytes()[:-100])
    result, document = run_json("inspect", package)
    assert result.exit_code == 0, result.output
    sizes = document["sizes"]
    assert isinstance(sizes, dict)
    assert sizes["body_matches"] is False
    assert sizes["expected_body_bytes"] - sizes["body_bytes"] == 100
    assert "DOES NOT match len" in run("inspect", package).stdout


def test_inspect_of_a_truncated_prelude_exits_3(ws: Workspace) -> None:
    package = ws.seal()
    package.write_bytes(package.read_bytes()[:20])
    assert_error(run("inspect", package), EXIT_FORMAT, "truncated")


def test_inspect_prints_no_key_material(ws: Workspace) -> None:
    package = ws.seal()
    with package.open("rb") as src:
        framing = read_framing(src)
    secrets = [
        json.loads(ws.device.read_text())["d"],
        json.loads(ws.issuer.read_text())["d"],
    ]
    blobs = [framing.enc, framing.wrapped_dek, framing.signature]
    for blob in blobs:
        secrets += [blob.hex(), b64u(blob), base64.b64encode(blob).decode()]
    for args in (("inspect", package), ("inspect", package, "--json")):
        out = run(*args).output
        for secret in secrets:
            assert secret not in out


def test_inspect_escapes_control_characters_from_the_header(ws: Workspace) -> None:
    package = ws.seal("m.mseal", "--claim", "note=\x1b[2J\u202eevil\nline")
    result = run("inspect", package)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "\u202e" not in result.stdout
    # Extra claims are shown as JSON (which escapes C0 controls), then made printable.
    assert '"\\u001b[2J\\u202eevil\\nline"' in result.stdout
    raw = run("inspect", package, "--json").stdout
    assert raw.isascii()
    assert "\x1b" not in raw


# --- demo ------------------------------------------------------------------------------------
# The demo starts a real server process; its text output is checked end to end, as an
# installed command, in tests/e2e/test_demo.py.


def test_demo_json_summary_covers_every_step_and_the_inference(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    result, document = run_json("demo", "--keep", kept)
    assert result.exit_code == 0, result.output
    assert [step["step"] for step in document["steps"]] == list(DEMO_STEPS)  # type: ignore[attr-defined]
    assert document["kept"] == str(kept)
    assert document["model_id"] == "digits"
    assert document["server_objects_after_ack"] == 0
    assert document["plaintext_found_in"] == []
    assert document["device_files_scanned"] > 0  # type: ignore[operator]
    inference = document["inference"]
    assert isinstance(inference, dict)
    assert inference["total"] == 450
    assert inference["accuracy"] > 0.6
    assert len(inference["samples"]) == 8
    # What --keep keeps: the server's config, data and log, and the device's files.
    assert (kept / "server" / "server.toml").is_file()
    assert list((kept / "server" / "data" / "blobs").iterdir()) == []
    assert (kept / "device" / "models" / "digits.mseal").is_file()
    assert list((kept / "device" / "downloads").iterdir()) == []
    _, inspected = run_json("inspect", kept / "device" / "models" / "digits.mseal")
    header = inspected["header"]
    assert isinstance(header, dict)
    assert header["rtype"] == "kek"
    assert header["claims"]["jti"] == document["jti"]


def test_demo_refuses_a_keep_directory_that_already_holds_its_files(tmp_path: Path) -> None:
    (tmp_path / "device").mkdir()
    line = assert_error(run("demo", "--keep", tmp_path), EXIT_IO, "file_exists")
    assert str(tmp_path / "device") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device"]


# --- Output helpers --------------------------------------------------------------------------


def test_printable_escapes_control_bidi_and_line_break_characters() -> None:
    assert printable("plain text, ünïcode") == "plain text, ünïcode"
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\u202ey\u200bz\n\t\x7f") == "x\\u202ey\\u200bz\\n\\t\\x7f"


def test_progress_bar_renders_on_a_terminal_and_counts_plaintext_bytes() -> None:
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=100)
    with transfer_progress("sealing", 10 << 20, enabled=True, console=console) as advance:
        assert advance is not None
        for _ in range(10):
            advance(1 << 20)
    assert "sealing" in sink.getvalue()


def test_progress_is_off_when_not_enabled() -> None:
    with transfer_progress("sealing", 10 << 20, enabled=False) as advance:
        assert advance is None


# --- Real processes --------------------------------------------------------------------------


def _script(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *(str(a) for a in args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_installed_script_round_trips_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(PLAINTEXT)
    # Keys in process (each script start costs about a second on a loaded machine).
    generate_and_save(tmp_path / "device", kem=KEM.P256)
    generate_and_save(tmp_path / "issuer", issuer_alg=SignatureAlgorithm.ES256)
    steps: list[tuple[str | Path, ...]] = [
        ("seal", "model.bin", "model.mseal", "--to", "device.pub.jwk", "--issuer-key",
         "issuer.jwk", "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60"),
        ("open", "model.mseal", "model.out", "--key", "device.jwk", "--issuers",
         "issuer.pub.jwk", "--aud", "d", "--json"),
    ]  # fmt: skip
    for args in steps:
        done = _script(*args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "model.out").read_bytes() == PLAINTEXT
    assert json.loads(done.stdout)["ok"] is True


def test_installed_script_reports_errors_in_one_line_with_the_family_exit_code(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-package").write_bytes(b"PK\x03\x04 something else")
    done = _script("inspect", "not-a-package", cwd=tmp_path)
    assert done.returncode == EXIT_FORMAT
    assert done.stdout == ""
    assert ERROR_LINE.fullmatch(done.stderr.rstrip("\n"))
    assert done.stderr.startswith("error[bad_magic]: ")
    done = _script("inspect", "missing", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        EXIT_IO,
        "error[file_not_found]: missing: No such file or directory\n",
    )


def test_importing_the_cli_has_no_side_effects() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import modelseal.cli.main"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def _seal_on_a_terminal(tmp_path: Path, *extra: str) -> tuple[int, bytes]:
    """Seal a 9 MiB file with stderr on a pseudo-terminal; return (exit code, terminal bytes)."""
    big = tmp_path / "big.bin"
    if not big.exists():
        big.write_bytes(bytes(9 << 20))
        generate_and_save(tmp_path / "device", kem=KEM.X25519)
        generate_and_save(tmp_path / "issuer", issuer_alg=SignatureAlgorithm.ED25519)
    out = tmp_path / f"big{len(extra)}.mseal"
    command = [
        str(SCRIPT), "seal", "big.bin", str(out), "--to", "device.pub.jwk", "--issuer-key",
        "issuer.jwk", "--sub", "u", "--aud", "d", "--mid", "m", "--ttl", "60", *extra,
    ]  # fmt: skip
    return run_on_a_terminal(command, cwd=tmp_path, timeout=120)


def test_progress_bar_appears_on_a_terminal_for_large_inputs_but_not_with_json(
    tmp_path: Path,
) -> None:
    code, shown = _seal_on_a_terminal(tmp_path)
    assert code == 0
    assert b"sealing" in shown
    assert b"MiB" in shown
    code, shown = _seal_on_a_terminal(tmp_path, "--json")
    assert code == 0
    assert shown == b""
