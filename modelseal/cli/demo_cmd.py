"""``modelseal demo``: one self-contained issuance round trip, step by step.

In a fresh directory: make a small synthetic model, generate a device key
(X25519) and an issuer key (Ed25519), seal the model to the device, inspect the
package, open it as the device would (pinned issuer, audience, expiry), check
that the plaintext's SHA-256 is unchanged, and show that a package with one
flipped body byte is refused without writing any output. Each step reports
sizes and timings.

The model is synthetic for now: 3 MiB of deterministic pseudo-random float32
weights behind a small header. It is built from the same library calls a
service would make; nothing here is specific to the demo except the data.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli.claims import build_claims
from modelseal.cli.keys_cmd import generate_and_save, read_issuer_key_set
from modelseal.cli.output import (
    JSONFlag,
    emit_json,
    format_bytes,
    format_seconds,
    print_lines,
    printable,
    stdout_console,
)
from modelseal.envelope import IssueTo, OpenPolicy, inspect, open_file, seal_file
from modelseal.envelope.body import BODY_PREFIX_BYTES, ENCRYPTED_CHUNK_BYTES
from modelseal.errors import ChunkTagError, ModelSealError
from modelseal.keys import (
    KEM,
    IssuerPrivateKey,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
    load_key,
)

__all__ = ["DemoFailedError", "DemoReport", "DemoStep", "demo", "demo_model_bytes", "run_demo"]

MODEL_MAGIC = b"MSDEMO/1"
MODEL_ROWS, MODEL_COLUMNS = 768, 1024  # 768 * 1024 float32 = 3 MiB
MODEL_CTYPE = "application/vnd.modelseal.demo-weights"
DEVICE_ID = "demo-device-1"
TAMPERED_CHUNK = 5
FILE_NAMES = (
    "model.bin",
    "device.jwk",
    "device.pub.jwk",
    "issuer.jwk",
    "issuer.pub.jwk",
    "model.mseal",
    "model.opened.bin",
    "model.tampered.mseal",
    "model.tampered.out",
)


class DemoFailedError(ModelSealError):
    """The demo's round trip did not behave as the format promises (this is a bug)."""

    code = "demo_failed"


def demo_model_bytes(seed: bytes = b"modelseal demo model") -> bytes:
    """A deterministic stand-in for a model file: a JSON header, then float32 weights.

    Layout: ``MSDEMO/1`` || u32 big-endian header length || header JSON || weights
    (``MODEL_ROWS * MODEL_COLUMNS`` little-endian float32).
    """
    count = MODEL_ROWS * MODEL_COLUMNS
    meta = json.dumps(
        {"name": "demo-mlp", "dtype": "float32", "shape": [MODEL_ROWS, MODEL_COLUMNS]},
        separators=(",", ":"),
    ).encode()
    random_bits = int.from_bytes(hashlib.shake_256(seed).digest(4 * count), "little")
    # Keep each float32's random sign and mantissa and fix its exponent to 2^-7, so every
    # weight is a finite value in +-[2^-7, 2^-6): weight-like numbers, never NaN or inf,
    # made with a few big-integer operations instead of a loop over 786,432 floats.
    sign_and_mantissa = int.from_bytes(b"\xff\xff\x7f\x80" * count, "little")
    exponent = int.from_bytes(b"\x00\x00\x00\x3c" * count, "little")
    weights = ((random_bits & sign_and_mantissa) | exponent).to_bytes(4 * count, "little")
    return MODEL_MAGIC + struct.pack(">I", len(meta)) + meta + weights


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One step of the demo: what was done, its size in bytes (if any) and how long it took."""

    step: str
    detail: str
    size_bytes: int | None
    seconds: float

    def to_json(self) -> dict[str, object]:
        """The step as JSON."""
        return {
            "step": self.step,
            "detail": self.detail,
            "bytes": self.size_bytes,
            "seconds": round(self.seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class DemoReport:
    """The outcome of :func:`run_demo`."""

    steps: tuple[DemoStep, ...]
    package_id: str
    device_kid: str
    issuer_kid: str
    plaintext_sha256: str
    opened_sha256: str

    @property
    def digests_match(self) -> bool:
        """Whether the opened plaintext is byte-for-byte the original."""
        return self.plaintext_sha256 == self.opened_sha256


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def run_demo(directory: Path) -> DemoReport:
    """Run every step in ``directory`` (which must not hold the demo's files yet).

    Raises:
        DemoFailedError: A digest differs, or tampering went unnoticed.
        ModelSealError, OSError: As the library raises them.
    """
    for name in FILE_NAMES:
        if os.path.lexists(directory / name):
            raise FileExistsError(
                errno.EEXIST,
                "already exists; the demo needs a directory without its files",
                str(directory / name),
            )
    steps: list[DemoStep] = []

    def record(step: str, detail: str, size: int | None, started: float) -> None:
        steps.append(DemoStep(step, detail, size, time.perf_counter() - started))

    started = time.perf_counter()
    model_path = directory / "model.bin"
    model = demo_model_bytes()
    model_path.write_bytes(model)
    plaintext_sha256 = hashlib.sha256(model).hexdigest()
    record("model", f"model.bin: {MODEL_ROWS}x{MODEL_COLUMNS} float32", len(model), started)

    started = time.perf_counter()
    device = generate_and_save(directory / "device", kem=KEM.X25519)
    record("keygen device", f"x25519, kid {device.kid[:16]}...", None, started)

    started = time.perf_counter()
    issuer = generate_and_save(directory / "issuer", issuer_alg=SignatureAlgorithm.ED25519)
    record("keygen issuer", f"Ed25519, kid {issuer.kid[:16]}...", None, started)

    started = time.perf_counter()
    device_public = load_key(directory / "device.pub.jwk")
    signer = load_key(directory / "issuer.jwk")
    if not isinstance(device_public, RecipientPublicKey) or not isinstance(
        signer, IssuerPrivateKey
    ):
        raise DemoFailedError("generated key files did not load as the expected key types")
    claims = build_claims(
        iss=issuer.kid, sub="demo-user-1", aud=DEVICE_ID, mid="demo-mlp", ttl_seconds=600
    )
    package_path = directory / "model.mseal"
    sealed = seal_file(
        model_path, package_path, IssueTo(device_public, signer, claims), ctype=MODEL_CTYPE
    )
    record("seal", f"model.mseal, id {sealed.package_id[:16]}...", sealed.size, started)

    started = time.perf_counter()
    with package_path.open("rb") as src:
        info = inspect(src)
    if info.body_bytes != info.expected_body_bytes:
        raise DemoFailedError("the sealed body's length does not match its header")
    overhead = sealed.size - len(model)
    record("inspect", f"header {info.header_bytes} B, total +{overhead} B", None, started)

    started = time.perf_counter()
    device_private = load_key(directory / "device.jwk")
    if not isinstance(device_private, RecipientPrivateKey):
        raise DemoFailedError("device.jwk did not load as a device private key")
    policy = OpenPolicy(
        issuers=read_issuer_key_set(directory / "issuer.pub.jwk"), audience=DEVICE_ID
    )
    opened_path = directory / "model.opened.bin"
    package = open_file(package_path, opened_path, device_private, policy)
    record(
        "open",
        f"sig, aud, exp and {package.chunk_count} chunks ok",
        package.length,
        started,
    )

    started = time.perf_counter()
    opened_sha256 = _sha256_file(opened_path)
    if opened_sha256 != plaintext_sha256:
        raise DemoFailedError(
            f"opened plaintext SHA-256 {opened_sha256} differs from {plaintext_sha256}"
        )
    record("verify", f"SHA-256 {opened_sha256[:16]}... matches", len(model), started)

    started = time.perf_counter()
    tampered = bytearray(package_path.read_bytes())
    flip_at = info.body_offset + BODY_PREFIX_BYTES + TAMPERED_CHUNK * ENCRYPTED_CHUNK_BYTES + 7
    tampered[flip_at] ^= 0x01
    tampered_path = directory / "model.tampered.mseal"
    tampered_path.write_bytes(tampered)
    tampered_out = directory / "model.tampered.out"
    try:
        open_file(tampered_path, tampered_out, device_private, policy)
    except ChunkTagError as exc:
        if tampered_out.exists():
            raise DemoFailedError("a refused package left an output file") from None
        refused = f"chunk {exc.index} altered: {exc.code}"
    else:
        raise DemoFailedError("a package with a flipped body byte was opened")
    record("tamper", refused, None, started)

    return DemoReport(
        tuple(steps), sealed.package_id, device.kid, issuer.kid, plaintext_sha256, opened_sha256
    )


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="modelseal-demo-") as tmp:
        yield Path(tmp)


def demo(
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Work in DIR (created if needed) and keep the files instead of a temp dir.",
            metavar="DIR",
        ),
    ] = None,
    json_output: JSONFlag = False,
) -> None:
    """Run a complete seal -> inspect -> open round trip on a synthetic model."""
    started = time.perf_counter()
    with _workspace(keep) as directory:
        report = run_demo(directory)
    total_seconds = time.perf_counter() - started
    kept = keep
    if json_output:
        emit_json(
            {
                "steps": [step.to_json() for step in report.steps],
                "package_id": report.package_id,
                "device_kid": report.device_kid,
                "issuer_kid": report.issuer_kid,
                "plaintext_sha256": report.plaintext_sha256,
                "opened_sha256": report.opened_sha256,
                "sha256_match": report.digests_match,
                "seconds": round(total_seconds, 6),
                "kept": None if kept is None else str(kept),
            }
        )
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title="modelseal demo", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("step", no_wrap=True)
    table.add_column("result")
    table.add_column("bytes", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for step in report.steps:
        table.add_row(
            Text(step.step),
            Text(step.detail),
            "" if step.size_bytes is None else f"{step.size_bytes:,}",
            format_seconds(step.seconds),
        )
    stdout_console().print(table)
    model_size = format_bytes(report.steps[0].size_bytes or 0)
    print_lines(
        [
            f"SHA-256 match: {report.opened_sha256}",
            "tampered package refused; no output file was written",
            f"model {model_size}; total {format_seconds(total_seconds)}",
            "temporary files removed" if kept is None else f"files kept in {printable(str(kept))}",
        ]
    )
