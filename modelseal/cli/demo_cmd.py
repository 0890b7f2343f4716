"""``modelseal demo``: the whole system on one machine, step by step, offline.

1. Write a server config (dev mode: SQLite, local blob directory, in-process job
   runner) declaring the reference model: a digit classifier fine-tuned per user
   (:mod:`modelseal.models.reference`).
2. Create a user and an API token with the admin CLI, against that data directory.
3. Start the issuance server in a subprocess on a free loopback port.
4. As a device: create a file keystore, generate and register a device key, pin
   the issuer keys; request the user's IML, which the server generates, seals to
   the device key and stores; download it, verify it, re-seal it at rest under
   the device KEK, acknowledge it (the server deletes its copy) and delete the
   download.
5. Scan the device's files for pieces of the plaintext (none may be there), load
   the model from memory into ONNX Runtime and classify held-out digits written
   in the user's handwriting.
6. Stop the server and remove the temporary directory (unless ``--keep``).

Each step reports what it did, sizes and timings. Nothing here is demo-only but
the data: the server, admin CLI and device client are the real ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from modelseal.cli.output import (
    JSONFlag,
    emit_json,
    format_bytes,
    format_seconds,
    print_lines,
    printable,
    stdout_console,
)
from modelseal.errors import ModelSealError

if TYPE_CHECKING:
    from modelseal.client.runtime import LoadedModel

__all__ = ["DEMO_STEPS", "DemoFailedError", "DemoReport", "DemoStep", "demo", "run_demo"]

MODEL_ID = "digits"
USER_NAME = "demo-user"
SAMPLES_SHOWN = 8
SCAN_WINDOWS = 16
SCAN_WINDOW_BYTES = 64
TITLE = "modelseal demo: issuance server, admin CLI and a device, on this machine"
SERVER_START_SECONDS = 60.0
SERVER_STOP_SECONDS = 15.0
DEMO_STEPS = (
    "account",
    "server",
    "keystore",
    "enrolled",
    "pinned",
    "requested",
    "generated",
    "sealed",
    "stored",
    "downloaded",
    "verified",
    "re-sealed",
    "deleted",
    "scanned",
    "loaded",
    "inference",
    "stopped",
)
"""Every step of the demo, in order."""


class DemoScenario(StrEnum):
    """What ``modelseal demo`` shows."""

    FULL = "full"
    SCRAPER = "scraper"


class DemoFailedError(ModelSealError):
    """The demo could not run or the system misbehaved (a server that would not start...)."""

    code = "demo_failed"


@dataclass(frozen=True, slots=True)
class DemoStep:
    """One step: what was done, its size in bytes (if any) and how long it took (if known)."""

    step: str
    detail: str
    size_bytes: int | None
    seconds: float | None

    def to_json(self) -> dict[str, object]:
        """The step as JSON."""
        return {
            "step": self.step,
            "detail": self.detail,
            "bytes": self.size_bytes,
            "seconds": None if self.seconds is None else round(self.seconds, 6),
        }


@dataclass(frozen=True, slots=True)
class Sample:
    """One classified held-out digit."""

    index: int
    true_label: int
    predicted: int


@dataclass(slots=True)
class DemoReport:
    """What :func:`run_demo` did and found."""

    steps: list[DemoStep] = field(default_factory=list)
    device_id: str = ""
    device_kid: str = ""
    issuer_kids: tuple[str, ...] = ()
    jti: str = ""
    package_bytes: int = 0
    plaintext_bytes: int = 0
    at_rest_bytes: int = 0
    server_objects_after_ack: int = -1
    device_files_scanned: int = 0
    plaintext_found_in: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        """Fraction of the held-out digits classified correctly."""
        return self.correct / self.total if self.total else 0.0


StepCallback = Callable[[DemoStep], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_config(directory: Path, port: int) -> Path:
    data_dir = directory / "data"
    config = directory / "server.toml"
    config.write_text(
        'mode = "dev"\n'
        f"data_dir = {str(data_dir)!r}\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        "[auth]\n"
        "# API tokens carry 256 random bits, so light Argon2 settings keep every\n"
        "# request fast here without making tokens guessable.\n"
        "argon2_time_cost = 1\n"
        "argon2_memory_kib = 8192\n"
        "argon2_parallelism = 1\n"
        "[[models]]\n"
        f'id = "{MODEL_ID}"\n'
        'generator = "modelseal.models.reference:generate_iml"\n'
        'ctype = "application/vnd.modelseal.bundle"\n'
        "licence_seconds = 86400\n"
        "# Per-issuance forensic watermark and device binding (docs/WATERMARK.md).\n"
        "watermark = true\n"
        "binding = true\n",
        encoding="utf-8",
    )
    return config


def _environment() -> dict[str, str]:
    # The subprocesses take their settings from the config file only.
    return {k: v for k, v in os.environ.items() if not k.startswith("MODELSEAL_")}


def _create_user(config: Path, name: str = USER_NAME) -> str:
    """Create the account ``name`` through the admin CLI; return its API token.

    Raises:
        DemoFailedError: The admin CLI failed or printed no token.
    """
    admin = [sys.executable, "-m", "modelseal.server", "admin", "--config", str(config)]
    # Fixed arguments: this interpreter, our own module, a config file we just wrote.
    result = subprocess.run(  # noqa: S603
        [*admin, "users", "create", name],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=120,
        check=False,
    )
    token = result.stdout.strip()
    if result.returncode != 0 or not token.startswith("ms_"):
        raise DemoFailedError(
            f"the admin CLI could not create the demo user {name!r}: {result.stderr.strip()[-500:]}"
        )
    return token


class _Server:
    """The issuance server as a subprocess; stopped with SIGINT (uvicorn's clean shutdown)."""

    def __init__(self, config: Path, port: int, log: IO[bytes], log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, as for the admin CLI
            [sys.executable, "-m", "modelseal.server", "server", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self._log_path.read_text(errors="replace")[-1500:]
                raise DemoFailedError(f"the server exited during start-up:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.05)
        raise DemoFailedError(f"the server did not answer within {SERVER_START_SECONDS:g} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=SERVER_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _count_files(directory: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(directory)) if directory.exists() else 0


def _scan(root: Path, needles: list[bytes]) -> tuple[int, tuple[str, ...]]:
    """How many files under ``root`` were read, and which hold any of ``needles``."""
    scanned, found = 0, []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            scanned += 1
            if any(needle in data for needle in needles):
                found.append(str(path))
    return scanned, tuple(found)


def _windows(plaintext: memoryview) -> list[bytes]:
    """Pieces of the plaintext spread over its length, to look for on disk."""
    length = len(plaintext)
    if length <= SCAN_WINDOW_BYTES:
        return [bytes(plaintext)]
    step = (length - SCAN_WINDOW_BYTES) // (SCAN_WINDOWS - 1)
    return [bytes(plaintext[i * step : i * step + SCAN_WINDOW_BYTES]) for i in range(SCAN_WINDOWS)]


def run_demo(workspace: Path, on_step: StepCallback | None = None) -> DemoReport:
    """Run the whole demo in ``workspace`` (which must not hold ``server/`` or ``device/``).

    Raises:
        DemoFailedError: The server would not start, or the system misbehaved.
        ModelSealError, OSError: As the components raise them.
    """
    from modelseal.client import DeviceClient, KeystoreSpec, Passphrase
    from modelseal.keys import KEM

    server_dir, device_dir = workspace / "server", workspace / "device"
    for path in (server_dir, device_dir):
        if os.path.lexists(path):
            raise FileExistsError(17, "already exists; the demo needs a fresh directory", str(path))
    server_dir.mkdir(mode=0o700, parents=True)
    report = DemoReport()

    def record(step: str, detail: str, size: int | None, seconds: float | None) -> None:
        item = DemoStep(step, detail, size, seconds)
        report.steps.append(item)
        if on_step is not None:
            on_step(item)

    started = time.perf_counter()
    port = _free_port()
    config = _server_config(server_dir, port)
    token = _create_user(config)
    record("account", f"user {USER_NAME!r} and an API token (admin CLI)", None, _since(started))

    log_path = server_dir / "server.log"
    with log_path.open("wb") as log, contextlib.ExitStack() as stack:
        started = time.perf_counter()
        server = _Server(config, port, log, log_path)
        stack.callback(server.stop)  # idempotent; also runs when a step fails
        # The device keystore is made while the server boots (both are CPU work).
        keystore_started = time.perf_counter()
        keystore = DeviceClient.file_keystore(device_dir, Passphrase(secrets.token_urlsafe(24)))
        client = DeviceClient.init(device_dir, keystore, KeystoreSpec("file", unlock="passphrase"))
        keystore_seconds = _since(keystore_started)
        server.wait_ready()
        record(
            "server",
            f"dev mode on {server.url} (pid {server.process.pid}): SQLite, local blobs",
            None,
            _since(started),
        )
        record(
            "keystore",
            "device file keystore (scrypt passphrase); KEKs for models and credentials",
            None,
            keystore_seconds,
        )

        started = time.perf_counter()
        enrolled = client.enroll(server.url, token, kem=KEM.X25519)
        report.device_id = enrolled.enrollment.device_id
        report.device_kid = enrolled.enrollment.kid
        report.issuer_kids = enrolled.issuer_kids
        record(
            "enrolled",
            f"device {report.device_id}: x25519 key {report.device_kid[:16]}... registered",
            None,
            _since(started),
        )
        pinned = client.pinned_issuers()
        algs = ", ".join(f"{pinned[kid].alg} {kid[:16]}..." for kid in report.issuer_kids)
        record("pinned", f"issuer JWK Set pinned on first use: {algs}", None, None)

        fetched = client.fetch(MODEL_ID)
        timings = fetched.timings
        report.jti = fetched.jti
        report.package_bytes = fetched.package_bytes
        report.plaintext_bytes = fetched.plaintext_bytes
        report.at_rest_bytes = fetched.at_rest_bytes
        record("requested", f"IML of {MODEL_ID!r}, job {fetched.job_id}", None, timings["request"])
        record(
            "generated",
            "server: the base classifier fine-tuned on the user's own digits, ONNX in "
            "an MSBUNDLE/1 bundle, in memory only",
            fetched.plaintext_bytes,
            timings.get("wait"),
        )
        issuer = pinned[fetched.issuer_kid]
        record(
            "sealed",
            f"server: fresh DEK, AES-256-GCM chunks, HPKE x25519 to the device key, "
            f"{issuer.alg} issuer signature",
            fetched.package_bytes,
            None,
        )
        record(
            "stored",
            "server: ciphertext only, in its blob directory, until acknowledged",
            fetched.package_bytes,
            None,
        )
        record(
            "downloaded",
            "single-use link bound to the device, into downloads/ (ciphertext)",
            fetched.package_bytes,
            timings.get("download"),
        )
        record(
            "verified",
            "issuer signature against the pinned key, audience, expiry; decrypted in memory",
            fetched.plaintext_bytes,
            timings.get("verify"),
        )
        record(
            "re-sealed",
            f"fresh DEK under the device KEK: models/{MODEL_ID}.mseal",
            fetched.at_rest_bytes,
            timings.get("reseal"),
        )
        if not fetched.acknowledged:
            raise DemoFailedError("the server did not take the acknowledgement")
        report.server_objects_after_ack = _count_files(server_dir / "data" / "blobs")
        downloads_left = _count_files(device_dir / "downloads")
        if report.server_objects_after_ack or downloads_left:
            raise DemoFailedError(
                f"after the acknowledgement {report.server_objects_after_ack} server objects "
                f"and {downloads_left} downloads remain"
            )
        record(
            "deleted",
            "acknowledged: the server deleted its copy (0 objects left); download deleted",
            None,
            timings.get("ack"),
        )

        started = time.perf_counter()
        with client.open_plaintext(MODEL_ID) as (_header, plaintext):
            needles = _windows(plaintext)
        report.device_files_scanned, report.plaintext_found_in = _scan(device_dir, needles)
        needles.clear()
        if report.plaintext_found_in:
            raise DemoFailedError(f"plaintext found on disk: {report.plaintext_found_in}")
        record(
            "scanned",
            f"{report.device_files_scanned} device files hold none of {SCAN_WINDOWS} "
            f"plaintext pieces",
            None,
            _since(started),
        )

        started = time.perf_counter()
        model = client.load(MODEL_ID)
        record(
            "loaded",
            "ONNX Runtime session built from memory; licence checked",
            None,
            _since(started),
        )

        started = time.perf_counter()
        _classify(model, fetched.claims.sub, report)
        record(
            "inference",
            f"{report.correct}/{report.total} held-out digits in the user's handwriting "
            f"({100 * report.accuracy:.1f}%)",
            None,
            _since(started),
        )

        started = time.perf_counter()
        code = server.stop()
        record("stopped", f"server stopped (exit status {code})", None, _since(started))
    return report


def _since(started: float) -> float:
    return time.perf_counter() - started


def _classify(model: LoadedModel, user_id: str, report: DemoReport) -> None:
    import numpy as np

    from modelseal.models.digits import user_holdout

    images, labels = user_holdout(user_id)
    logits = model.run(images)[model.outputs[0].name]
    predicted = np.asarray(logits).argmax(axis=1)
    report.correct = int((predicted == labels).sum())
    report.total = len(labels)
    report.samples = tuple(
        Sample(i, int(labels[i]), int(predicted[i])) for i in range(min(SAMPLES_SHOWN, len(labels)))
    )


@contextlib.contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    directory = Path(tempfile.mkdtemp(prefix="modelseal-demo-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _print_step(step: DemoStep) -> None:
    from rich.text import Text

    size = "" if step.size_bytes is None else f"{step.size_bytes:,} B"
    seconds = "" if step.seconds is None else format_seconds(step.seconds)
    line = Text()
    line.append(f"  {step.step:<11}", style="bold")
    line.append(f" {step.detail}")
    if size or seconds:
        line.append(f"  [{', '.join(part for part in (size, seconds) if part)}]", style="dim")
    stdout_console().print(line, soft_wrap=True)


def demo(
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Work in DIR (created if needed) and keep its files instead of a temp dir.",
            metavar="DIR",
        ),
    ] = None,
    json_output: JSONFlag = False,
    scenario: Annotated[
        DemoScenario,
        typer.Option(
            "--scenario",
            help="full: the whole system (default); scraper: a scraper meets the abuse controls.",
        ),
    ] = DemoScenario.FULL,
) -> None:
    """Run the whole system: server, admin, device enrolment, fetch, at-rest copy, inference."""
    if scenario is DemoScenario.SCRAPER:
        from modelseal.cli.demo_scraper import print_summary, run_scraper_demo

        if not json_output:
            print_lines(["modelseal demo --scenario scraper: a scraper against the demo server"])
        with _workspace(keep) as directory:
            print_summary(run_scraper_demo(directory, quiet=json_output), json_output)
        return
    started = time.perf_counter()
    shown: list[DemoStep] = []

    def show(step: DemoStep) -> None:
        if not shown:
            print_lines([TITLE])
        shown.append(step)
        _print_step(step)

    with _workspace(keep) as directory:
        report = run_demo(directory, None if json_output else show)
    total_seconds = time.perf_counter() - started
    if json_output:
        emit_json(
            {
                "steps": [step.to_json() for step in report.steps],
                "model_id": MODEL_ID,
                "device_id": report.device_id,
                "device_kid": report.device_kid,
                "issuer_kids": list(report.issuer_kids),
                "jti": report.jti,
                "package_bytes": report.package_bytes,
                "plaintext_bytes": report.plaintext_bytes,
                "at_rest_bytes": report.at_rest_bytes,
                "server_objects_after_ack": report.server_objects_after_ack,
                "device_files_scanned": report.device_files_scanned,
                "plaintext_found_in": list(report.plaintext_found_in),
                "inference": {
                    "samples": [
                        {"index": s.index, "true": s.true_label, "predicted": s.predicted}
                        for s in report.samples
                    ],
                    "correct": report.correct,
                    "total": report.total,
                    "accuracy": round(report.accuracy, 6),
                },
                "seconds": round(total_seconds, 6),
                "kept": None if keep is None else str(keep),
            }
        )
        return
    samples = "  ".join(
        f"#{s.index}: true {s.true_label} -> predicted {s.predicted}"
        + ("" if s.true_label == s.predicted else " (wrong)")
        for s in report.samples
    )
    print_lines(
        [
            f"samples: {samples}",
            f"accuracy: {100 * report.accuracy:.1f}% ({report.correct}/{report.total})",
            f"package {format_bytes(report.package_bytes)}; total {format_seconds(total_seconds)}",
            "temporary files removed" if keep is None else f"files kept in {printable(str(keep))}",
        ]
    )
