"""``modelseal device ...``: the device client from the command line.

A thin shell over :class:`modelseal.client.DeviceClient`::

    modelseal device init        [--keystore file|pkcs11] [--passphrase-file F | --keyring]
    modelseal device enroll      --server URL --token TOKEN [--ca CA.pem] [--pin sha256/...]
                                 [--kem x25519|p256|xwing] [--device-id ID]
                                 [--attest insecure-dev]
    modelseal device fetch       --model ID
    modelseal device list
    modelseal device run         --model ID --input FILE.npy|FILE.json
    modelseal device forget      --model ID | --all
    modelseal device pin-refresh

Every command takes ``--dir`` (default ``$MODELSEAL_CLIENT_DIR``, else
``$XDG_DATA_HOME/modelseal/client``) and ``--json``. A file keystore's passphrase
comes from ``--passphrase-file`` or ``$MODELSEAL_KEYSTORE_PASSPHRASE``; a PKCS#11
token's user PIN from ``--token-pin-file`` or ``$MODELSEAL_PKCS11_PIN``. Errors are
one ``error[<code>]: ...`` line (or a JSON error object) from the CLI's one error
boundary in :mod:`modelseal.cli.main`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelseal.attestation.base import Attester
from modelseal.attestation.dev import PLATFORM as DEV_PLATFORM
from modelseal.attestation.dev import InsecureDevAttester
from modelseal.cli.output import (
    JSONFlag,
    byte_progress,
    emit_json,
    format_bytes,
    format_seconds,
    format_time,
    key_value_lines,
    print_lines,
    printable,
)
from modelseal.client.config import KeystoreSpec, load_config
from modelseal.client.datadir import DataDir
from modelseal.client.errors import InputError
from modelseal.client.fetch import FetchResult
from modelseal.client.sdk import DeviceClient
from modelseal.client.store import StoredModel
from modelseal.client.unlock import default_data_dir, open_keystore
from modelseal.envelope import Claims
from modelseal.errors import KeyFormatError, UsageError
from modelseal.keys import KEM

if TYPE_CHECKING:
    import numpy.typing as npt

    from modelseal.client.runtime import LoadedModel

__all__ = ["app"]

MAX_SECRET_FILE_BYTES = 4096
MAX_INPUT_FILE_BYTES = 256 << 20
MAX_PRINTED_ROWS = 20

app = typer.Typer(
    help="The device client: enrol, fetch models, keep them sealed at rest, run them.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Client data directory (default: $MODELSEAL_CLIENT_DIR or "
        "$XDG_DATA_HOME/modelseal/client).",
        show_default=False,
    ),
]
PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="File holding the keystore passphrase (default: $MODELSEAL_KEYSTORE_PASSPHRASE).",
        show_default=False,
    ),
]
TokenPinFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-pin-file",
        help="File holding the PKCS#11 user PIN (default: $MODELSEAL_PKCS11_PIN).",
        show_default=False,
    ),
]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model id.")]


# --- Shared helpers --------------------------------------------------------------------------


def _read_secret_file(path: Path) -> str:
    """A secret from a file: its first line, without the line break."""
    with path.open("rb") as handle:
        data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise UsageError(f"{path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    return text.splitlines()[0] if text else ""


def _secret(path: Path | None, env: str) -> str | None:
    if path is not None:
        return _read_secret_file(path)
    return os.environ.get(env) or None


def _root(directory: Path | None) -> Path:
    return directory if directory is not None else default_data_dir()


@contextlib.contextmanager
def _client(
    directory: Path | None,
    passphrase_file: Path | None,
    token_pin_file: Path | None,
) -> Iterator[DeviceClient]:
    """The DeviceClient of the data directory, with its keystore open."""
    root = _root(directory)
    datadir = DataDir(root)
    datadir.check()
    spec = load_config(datadir.config).keystore
    with open_keystore(
        root,
        spec,
        passphrase=_secret(passphrase_file, "MODELSEAL_KEYSTORE_PASSPHRASE"),
        pkcs11_pin=_secret(token_pin_file, "MODELSEAL_PKCS11_PIN"),
    ) as keystore:
        yield DeviceClient(root, keystore)


def _claims_json(claims: Claims | None) -> dict[str, object] | None:
    return None if claims is None else claims.to_json()


# --- init ------------------------------------------------------------------------------------


def init_command(
    directory: DirOption = None,
    keystore: Annotated[
        str, typer.Option("--keystore", help="file (default) or pkcs11.", metavar="KIND")
    ] = "file",
    passphrase_file: PassphraseFileOption = None,
    keyring: Annotated[
        bool,
        typer.Option(
            "--keyring",
            help="Unlock the file keystore with a master key in the OS keyring "
            "(the default when no passphrase is given).",
        ),
    ] = False,
    pkcs11_module: Annotated[
        str | None, typer.Option("--pkcs11-module", help="PKCS#11 module path.")
    ] = None,
    pkcs11_token: Annotated[
        str | None, typer.Option("--pkcs11-token", help="PKCS#11 token label.")
    ] = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Create the client data directory and its keystore (KEKs for models and credentials)."""
    root = _root(directory)
    passphrase = _secret(passphrase_file, "MODELSEAL_KEYSTORE_PASSPHRASE")
    if keystore == "file":
        if keyring and passphrase:
            raise UsageError("give a passphrase or --keyring, not both")
        if pkcs11_module or pkcs11_token:
            raise UsageError("--pkcs11-module and --pkcs11-token go with --keystore pkcs11")
        spec = KeystoreSpec("file", unlock="passphrase" if passphrase else "keyring")
    elif keystore == "pkcs11":
        if not pkcs11_module or not pkcs11_token:
            raise UsageError("--keystore pkcs11 needs --pkcs11-module and --pkcs11-token")
        if keyring or passphrase_file:
            raise UsageError("a PKCS#11 keystore takes a PIN, not a passphrase or keyring")
        spec = KeystoreSpec("pkcs11", module=str(Path(pkcs11_module).resolve()), token=pkcs11_token)
    else:
        raise UsageError(f"--keystore must be file or pkcs11, got {keystore!r}")
    DataDir(root).create()
    with open_keystore(
        root,
        spec,
        passphrase=passphrase,
        pkcs11_pin=_secret(token_pin_file, "MODELSEAL_PKCS11_PIN"),
    ) as opened:
        DeviceClient.init(root, opened, spec)
    if json_output:
        emit_json({"data_dir": str(root), "keystore": spec.to_json()})
        return
    kind = f"file, unlocked by {spec.unlock}" if spec.kind == "file" else f"pkcs11 {spec.token}"
    print_lines([f"client created in {printable(str(root))}", f"  keystore  {printable(kind)}"])


# --- enroll ----------------------------------------------------------------------------------


def enroll_command(
    server: Annotated[str, typer.Option("--server", help="Issuance server base URL.")],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            help="API token (default: $MODELSEAL_API_TOKEN).",
            envvar="MODELSEAL_API_TOKEN",
        ),
    ],
    ca: Annotated[
        Path | None,
        typer.Option("--ca", help="PEM CA bundle for the server (default: system store)."),
    ] = None,
    pin: Annotated[
        list[str] | None,
        typer.Option("--pin", help="SPKI pin sha256/<base64> of the server's TLS key (repeat)."),
    ] = None,
    kem: Annotated[
        str, typer.Option("--kem", help="Device key KEM: x25519, p256 or xwing.")
    ] = "x25519",
    device_id: Annotated[
        str | None, typer.Option("--device-id", help="Device id (default: random).")
    ] = None,
    attest: Annotated[
        str | None,
        typer.Option(
            "--attest",
            help=(
                "Attest the enrollment: only 'insecure-dev' (the INSECURE development "
                "attestation, refused by production servers) exists on a desktop; apps "
                "use App Attest, Key Attestation or Play Integrity (docs/ATTESTATION.md)."
            ),
            metavar="PLATFORM",
        ),
    ] = None,
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Generate the device key, register it, and pin the issuer keys (trust on first use)."""
    try:
        kem_value = KEM.from_label(kem)
    except KeyFormatError:
        raise UsageError(f"--kem must be x25519, p256 or xwing, got {kem!r}") from None
    attester = _attester(attest)
    if ca is not None:
        ca.stat()  # a missing CA file is reported as file_not_found with its path
    with _client(directory, passphrase_file, token_pin_file) as client:
        result = client.enroll(
            server,
            token,
            ca_file=ca,
            pins=pin or (),
            kem=kem_value,
            device_id=device_id,
            attester=attester,
        )
    enrollment = result.enrollment
    attested = attester.platform if attester is not None else None
    if json_output:
        emit_json(
            {
                "server": enrollment.server,
                "device_id": enrollment.device_id,
                "kem": enrollment.kem.label,
                "kid": enrollment.kid,
                "issuer_kids": list(result.issuer_kids),
                "server_pin": result.server_pin,
                "pins": list(enrollment.pins),
                "attestation": attested,
            }
        )
        return
    rows = [
        ("server", enrollment.server),
        ("device id", enrollment.device_id),
        ("device key", f"{enrollment.kem.label}, kid {enrollment.kid}"),
        ("issuer keys", ", ".join(result.issuer_kids) + " (pinned: trust on first use)"),
    ]
    if attested is not None:
        rows.append(("attestation", f"{attested} (INSECURE: development only)"))
    if result.server_pin is not None:
        pinned = "checked" if enrollment.pins else "not pinned"
        rows.append(("TLS key", f"{result.server_pin} ({pinned})"))
    print_lines(["device enrolled", *key_value_lines(rows)])


def _attester(platform: str | None) -> Attester | None:
    """The attester named by ``--attest``.

    A desktop has no platform attestation: App Attest, Android Key Attestation and Play
    Integrity are reached only through the platform APIs inside a real app, which sends
    their evidence with :meth:`DeviceClient.enroll`'s ``attester``. Only the INSECURE
    development attester can run here.

    Raises:
        UsageError: Any other platform name.
    """
    if platform is None:
        return None
    if platform != DEV_PLATFORM:
        raise UsageError(
            f"--attest must be {DEV_PLATFORM!r} (the only attester a desktop has), got "
            f"{platform[:40]!r}; apps attest through the platform APIs"
        )
    return InsecureDevAttester()


# --- fetch -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _download_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr fed with ``(bytes received, total)``; None when off."""
    if not enabled:
        yield None
        return
    with byte_progress("downloading") as update:

        def received(done: int, total: int) -> None:
            update(completed=done, total=total)

        yield received


def _fetch_json(result: FetchResult) -> dict[str, object]:
    return {
        "model_id": result.model_id,
        "job_id": result.job_id,
        "jti": result.jti,
        "package_bytes": result.package_bytes,
        "resumed_from_bytes": result.resumed_from_bytes,
        "plaintext_bytes": result.plaintext_bytes,
        "at_rest_bytes": result.at_rest_bytes,
        "ctype": result.ctype,
        "issuer_kid": result.issuer_kid,
        "acknowledged": result.acknowledged,
        "claims": _claims_json(result.claims),
        "timings": {name: round(value, 6) for name, value in result.timings.items()},
    }


def fetch_command(
    model: ModelOption,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar on a terminal.")
    ] = True,
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Fetch a model: request, download (resumable), verify, re-seal at rest, acknowledge."""
    show_bar = progress and not json_output and sys.stderr.isatty()
    with (
        _client(directory, passphrase_file, token_pin_file) as client,
        _download_bar(show_bar) as bar,
    ):
        result = client.fetch(model, progress=bar)
    if json_output:
        emit_json(_fetch_json(result))
        return
    timings = result.timings
    resumed = (
        f", resumed at byte {result.resumed_from_bytes:,}" if result.resumed_from_bytes else ""
    )
    rows = [
        (
            "downloaded",
            f"{format_bytes(result.package_bytes)} in "
            f"{format_seconds(timings.get('download', 0.0))}{resumed}",
        ),
        (
            "verified",
            f"issuer kid {result.issuer_kid or '(earlier run)'}, audience, expiry; "
            f"{format_bytes(result.plaintext_bytes)} decrypted in memory",
        ),
        ("re-sealed", f"{format_bytes(result.at_rest_bytes)} at rest under the device KEK"),
        (
            "acknowledged",
            "server copy deleted" if result.acknowledged else "queued (server not reached)",
        ),
    ]
    if result.claims.lexp is not None:
        rows.append(("licence", f"until {format_time(result.claims.lexp)}"))
    print_lines(
        [f"fetched {printable(result.model_id)} (jti {result.jti})", *key_value_lines(rows)]
    )


# --- list ------------------------------------------------------------------------------------


def _model_json(model: StoredModel, now: int) -> dict[str, object]:
    lexp = model.licence_expires_at
    return {
        "model_id": model.model_id,
        "size_bytes": model.size_bytes,
        "plaintext_bytes": model.header.length,
        "ctype": model.header.ctype,
        "licence_expires_at": lexp,
        "licence_expired": lexp is not None and now > lexp,
        "claims": _claims_json(model.claims),
    }


def list_command(
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """List the models stored on this device, with their claims and licence expiry."""
    with _client(directory, passphrase_file, token_pin_file) as client:
        models = client.models()
        enrollment = client.config.enrollment
        acks, events = client.pending_acks(), client.pending_events()
    now = int(time.time())
    if json_output:
        emit_json(
            {
                "device_id": None if enrollment is None else enrollment.device_id,
                "server": None if enrollment is None else enrollment.server,
                "models": [_model_json(model, now) for model in models],
                "pending_acks": len(acks),
                "pending_events": [event.to_json() for event in events],
            }
        )
        return
    lines = []
    if enrollment is not None:
        lines.append(f"device {printable(enrollment.device_id)} at {printable(enrollment.server)}")
    if not models:
        lines.append("no models stored")
    for model in models:
        lexp = model.licence_expires_at
        status = "no licence expiry" if lexp is None else f"licence until {format_time(lexp)}"
        if lexp is not None and now > lexp:
            status = f"licence EXPIRED at {format_time(lexp)}; fetch again"
        claims = model.claims
        issued = "" if claims is None else f", issued {format_time(claims.iat)}, jti {claims.jti}"
        lines.append(
            f"  {printable(model.model_id)}  {format_bytes(model.header.length)}, "
            f"{printable(model.header.ctype)}{printable(issued)}; {status}"
        )
    if acks or events:
        lines.append(f"pending: {len(acks)} acknowledgement(s), {len(events)} event(s)")
    print_lines(lines)


# --- run -------------------------------------------------------------------------------------


def _read_input(path: Path) -> npt.ArrayLike | Mapping[str, npt.ArrayLike]:
    """An input array (``.npy``) or JSON (an array, or an object of arrays by input name)."""
    import numpy as np

    size = path.stat().st_size
    if size > MAX_INPUT_FILE_BYTES:
        raise InputError(f"{path} is larger than {MAX_INPUT_FILE_BYTES} bytes")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array: npt.ArrayLike = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"{path} is not a readable .npy array: {exc}") from None
        return array
    if suffix == ".json":
        try:
            document = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path} is not JSON: {exc}") from None
        if isinstance(document, dict):
            return {str(name): _json_array(value, path) for name, value in document.items()}
        return _json_array(document, path)
    raise InputError(f"--input must be a .npy or .json file, got {path.name!r}")


def _json_array(value: object, path: Path) -> npt.ArrayLike:
    import numpy as np

    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise InputError(f"{path}: not a rectangular array of numbers: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: the array must hold numbers only")
    return array


def _run_json(model: LoadedModel, outputs: Mapping[str, Any]) -> dict[str, object]:
    import numpy as np

    document: dict[str, object] = {
        "model_id": model.header.claims.mid if model.header.claims else None,
        "outputs": {name: np.asarray(value).tolist() for name, value in outputs.items()},
    }
    first = np.asarray(next(iter(outputs.values()))) if outputs else None
    if first is not None and first.ndim >= 1 and first.dtype.kind == "f":
        document["argmax"] = np.asarray(first.argmax(axis=-1)).tolist()
    return document


def run_command(
    model: ModelOption,
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="Input: FILE.npy, or FILE.json (array or object).")
    ],
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Run a stored model on an input, in memory; prints the outputs and their argmax."""
    data = _read_input(input_path)
    with _client(directory, passphrase_file, token_pin_file) as client:
        started = time.perf_counter()
        loaded = client.load(model)
        loaded_in = time.perf_counter() - started
        outputs = loaded.run(data)
    document = _run_json(loaded, outputs)
    if json_output:
        emit_json({**document, "load_seconds": round(loaded_in, 6)})
        return
    import numpy as np

    lines = [f"{printable(model)} loaded in memory in {format_seconds(loaded_in)}"]
    for name, value in outputs.items():
        array = np.asarray(value)
        lines.append(f"  output {printable(name)}: shape {list(array.shape)}, {array.dtype}")
    argmax = document.get("argmax")
    if isinstance(argmax, list):
        shown = argmax[:MAX_PRINTED_ROWS]
        lines.append("  argmax: " + " ".join(str(v) for v in shown))
        if len(argmax) > MAX_PRINTED_ROWS:
            lines.append(f"  ... {len(argmax) - MAX_PRINTED_ROWS} more rows (use --json)")
    print_lines(lines)


# --- forget ----------------------------------------------------------------------------------


def forget_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model id.")] = None,
    all_models: Annotated[
        bool, typer.Option("--all", help="Every model and download in progress.")
    ] = False,
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Delete a stored model (and any download of it in progress), or all of them."""
    if (model is None) == (not all_models):
        raise UsageError("give exactly one of --model ID and --all")
    with _client(directory, passphrase_file, token_pin_file) as client:
        if model is not None:
            client.forget(model)
            removed = [model]
        else:
            removed = client.forget_all()
    if json_output:
        emit_json({"removed": removed})
        return
    print_lines([f"removed {printable(name)}" for name in removed] or ["nothing was stored"])


# --- pin-refresh -----------------------------------------------------------------------------


def pin_refresh_command(
    directory: DirOption = None,
    passphrase_file: PassphraseFileOption = None,
    token_pin_file: TokenPinFileOption = None,
    json_output: JSONFlag = False,
) -> None:
    """Re-pin the server's issuer keys (after a key rotation); shows what changed."""
    with _client(directory, passphrase_file, token_pin_file) as client:
        result = client.pin_refresh()
    if json_output:
        emit_json(
            {
                "before": list(result.before),
                "after": list(result.after),
                "added": list(result.added),
                "removed": list(result.removed),
            }
        )
        return
    lines = ["issuer keys pinned: " + (", ".join(result.after) or "none")]
    lines += [f"  added   {kid}" for kid in result.added]
    lines += [f"  removed {kid}" for kid in result.removed]
    if not result.added and not result.removed:
        lines.append("  unchanged")
    print_lines(lines)


app.command("init")(init_command)
app.command("enroll")(enroll_command)
app.command("fetch")(fetch_command)
app.command("list")(list_command)
app.command("run")(run_command)
app.command("forget")(forget_command)
app.command("pin-refresh")(pin_refresh_command)
