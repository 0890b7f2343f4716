"""``modelseal trace``: name the issuance a leaked model came from.

Blind detection (``docs/WATERMARK.md`` section 1.5): the suspect's weights are compared
with the base model's, and every recorded issuance of the model is scored by its
watermark key, re-derived from the server's watermark secret and the issuance id.
The command reads the server's settings (``--config``, else ``$MODELSEAL_CONFIG``) and
database; it never changes either.

Exit codes: 0 when the best candidate is significant (family-wise p < 1e-6), 8 when
no candidate is, and the CLI's usual codes for errors (``docs/CLI.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from modelseal.cli.output import JSONFlag, emit_json, format_time, print_lines, printable
from modelseal.errors import UsageError

if TYPE_CHECKING:
    from modelseal.server.services.watermarking import TraceReport
    from modelseal.server.settings import Settings

__all__ = ["EXIT_FOUND", "EXIT_NOT_FOUND", "MAX_MODEL_FILE_BYTES", "trace_command"]

EXIT_FOUND = 0
EXIT_NOT_FOUND = 8
MAX_MODEL_FILE_BYTES = 4 << 30
REFERENCE_GENERATOR = "modelseal.models.reference:generate_iml"


def _read_model_file(path: Path, what: str) -> bytes:
    size = path.stat().st_size
    if size > MAX_MODEL_FILE_BYTES:
        raise UsageError(f"{what} {path} is {size} bytes, more than {MAX_MODEL_FILE_BYTES}")
    return path.read_bytes()


def _model_id(settings: Settings, suspect: bytes, given: str | None) -> str:
    from modelseal.models.bundle import MAGIC, parse_bundle

    if given is not None:
        return given
    if suspect.startswith(MAGIC):
        return parse_bundle(suspect).manifest.fields.model_id
    marked = [spec.id for spec in settings.models if spec.watermark.enabled]
    if len(marked) == 1:
        return marked[0]
    raise UsageError(
        "the suspect names no model: give --model (models with a watermark: "
        f"{', '.join(marked) or 'none'})"
    )


def _base_model(settings: Settings, model_id: str, base: Path | None) -> bytes:
    if base is not None:
        return _read_model_file(base, "base model")
    spec = settings.model(model_id)
    if spec is not None and spec.generator == REFERENCE_GENERATOR:
        # The reference generator's base is deterministic: rebuild it (about a second).
        from modelseal.models.reference import base_onnx

        return base_onnx()
    raise UsageError(f"model {model_id!r} needs --base: the base model its issuances came from")


def _report_json(report: TraceReport) -> dict[str, object]:
    return {
        "found": report.found,
        "model_id": report.model_id,
        "candidates": report.candidates,
        "scores": report.scores,
        "matches": [
            {
                "jti": m.jti,
                "user_subject": m.user_subject,
                "user_name": m.user_name,
                "device_id": m.device_id,
                "issued_at": m.issued_at,
                "z": round(m.z, 4),
                "p_value": m.p_value,
                "family_p_value": m.family_p_value,
                "method": m.method,
                "significant": m.significant,
            }
            for m in report.matches
        ],
    }


def _report_lines(report: TraceReport) -> list[str]:
    lines = [
        f"model {printable(report.model_id)}: {report.candidates} issuances scanned "
        f"({report.scores} scores)"
    ]
    best = report.best
    if best is not None and best.significant:
        user = best.user_name if best.user_name is not None else "(no name)"
        lines.append(
            f"found: issuance {best.jti}, user {printable(user)} ({best.user_subject}), "
            f"device {printable(best.device_id)}, issued {format_time(best.issued_at)}"
        )
        lines.append(
            f"       z = {best.z:.2f}, p = {best.p_value:.3g}, "
            f"family-wise p = {best.family_p_value:.3g}"
            + ("" if best.method == "blind" else f" (suspect read {best.method})")
        )
    else:
        lines.append("not found: no issuance reaches family-wise p < 1e-06")
    if report.matches:
        lines.append("")
        lines.append(f"{'z':>8}  {'p':>9}  {'family p':>9}  {'user':<20}  {'device':<20}  jti")
        for m in report.matches:
            user = printable(m.user_name if m.user_name is not None else m.user_subject)
            lines.append(
                f"{m.z:8.2f}  {m.p_value:9.2e}  {m.family_p_value:9.2e}  {user[:20]:<20}  "
                f"{printable(m.device_id)[:20]:<20}  {m.jti}"
            )
    return lines


def trace_command(
    suspect: Annotated[
        Path, typer.Argument(help="The suspect model: a bundle, ONNX or safetensors file.")
    ],
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="The base model the issuances were personalised from "
            "(default: rebuilt, for the reference generator).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model id (default: the bundle's, or the one marked model)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Server TOML config (default: $MODELSEAL_CONFIG)."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="Candidates to list.")] = 5,
    json_output: JSONFlag = False,
) -> None:
    """Name the issuance (user, device, time) a leaked model was marked for.

    Exit code 0 when an issuance is found at family-wise p < 1e-6, 8 when none is.
    """
    from sqlalchemy import make_url

    from modelseal.server.db.migrate import is_at_head
    from modelseal.server.db.session import make_engine, make_session_factory
    from modelseal.server.errors import ConfigurationError, SchemaOutdatedError
    from modelseal.server.services.watermarking import WatermarkingService
    from modelseal.server.settings import load_settings

    settings = load_settings(config)
    suspect_bytes = _read_model_file(suspect, "suspect")
    model_id = _model_id(settings, suspect_bytes, model)
    base_bytes = _base_model(settings, model_id, base)
    url = make_url(settings.resolved_database_url)
    if url.drivername.startswith("sqlite") and not Path(url.database or "").is_file():
        # Opening a missing SQLite file would create it: trace writes nothing.
        raise ConfigurationError(f"no database at {url.database}: is --config the server's?")
    engine = make_engine(settings.resolved_database_url)
    try:
        if not is_at_head(engine):
            raise SchemaOutdatedError(
                "the database schema is not at this version's head; "
                "run `modelseal admin db upgrade`"
            )
        service = WatermarkingService(make_session_factory(engine), settings, create_secrets=False)
        report = service.trace(suspect_bytes, base_bytes, model_id, top=top)
    finally:
        engine.dispose()
    if json_output:
        emit_json(_report_json(report))
    else:
        print_lines(_report_lines(report))
    raise typer.Exit(EXIT_FOUND if report.found else EXIT_NOT_FOUND)
