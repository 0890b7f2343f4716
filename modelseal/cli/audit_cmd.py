"""``modelseal audit``: verify the audit log, show entries, make and check proofs.

``verify``, ``show``, ``proof`` and ``checkpoint`` read the server's database and
settings (``--config``, else ``$MODELSEAL_CONFIG``, as ``modelseal admin``), never
modify entries, and start nothing. ``verify-proof`` needs no database: a proof
bundle and the checkpoint verifier key are enough.

Trust: ``--key`` pins the checkpoint verifier key(s) (``name+keyid+base64``, or a file
holding one per line); without it, ``audit.verifier_keys`` of the settings does. Only when
neither is given are the keys recorded in ``<data_dir>/audit/verifier-keys`` trusted, with a
warning: that is only as good as the data directory. An auditor pins the key.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from modelseal.audit.checkpoint import Checkpoint, open_checkpoint
from modelseal.audit.errors import (
    LOG_CHECKPOINT_SIGNATURE,
    LOG_NOT_COVERED,
    LOG_SEQUENCE_GAP,
    LOG_TRUNCATED,
    AuditError,
    LogVerificationError,
)
from modelseal.audit.merkle import leaf_hash
from modelseal.audit.note import NoteVerifier, parse_verifier_key
from modelseal.audit.verify import (
    build_consistency_bundle,
    build_proof_bundle,
    load_checkpoints,
    verify_consistency_bundle,
    verify_entry,
    verify_log,
    verify_proof_bundle,
)
from modelseal.errors import UsageError
from modelseal.server.clock import SystemClock
from modelseal.server.db.models import User
from modelseal.server.db.session import make_engine, make_session_factory
from modelseal.server.services.audit import AuditFilter, AuditLog
from modelseal.server.settings import Settings, load_settings

__all__ = ["app"]

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Server TOML config (default: $MODELSEAL_CONFIG)"),
]
KeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--key", "-k", help="Trusted checkpoint verifier key, or a file of them (repeatable)"
    ),
]
JSONOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


@app.callback()
def audit(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Audit commands; they read the server's settings and database."""
    ctx.obj = config


def _settings(ctx: typer.Context) -> Settings:
    node: Any = ctx
    while node is not None and not isinstance(node.obj, Path):
        node = node.parent
    return load_settings(node.obj if node is not None else None)


class _Log:
    """The audit log of a configured server, opened read-only in spirit."""

    def __init__(self, ctx: typer.Context) -> None:
        self.settings = _settings(ctx)
        self.engine = make_engine(self.settings.resolved_database_url)
        self.sessions = make_session_factory(self.engine)
        self.log = AuditLog(self.sessions, self.settings, SystemClock())

    def __enter__(self) -> _Log:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.engine.dispose()


def _verifiers(keys: list[str] | None, log: AuditLog | None) -> list[NoteVerifier]:
    if not keys:
        if log is None:
            raise UsageError("give the checkpoint verifier key with --key")
        pinned = log.pinned_verifiers()
        if pinned:
            return pinned
        typer.echo(
            "warning: no checkpoint key pinned (--key, or audit.verifier_keys in the "
            f"settings): trusting the keys recorded in {log.key_dir}, which anyone who "
            "can write there can extend",
            err=True,
        )
        return log.recorded_verifiers()
    result: list[NoteVerifier] = []
    for item in keys:
        path = Path(item)
        texts = path.read_text("utf-8").split() if "+" not in item and path.exists() else [item]
        result.extend(parse_verifier_key(text) for text in texts)
    return result


def _extra_checkpoints(paths: list[Path] | None) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for path in paths or []:
        files = sorted(path.glob("*.checkpoint")) if path.is_dir() else [path]
        found.extend((str(f), f.read_bytes()) for f in files)
    return found


def _when(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"time must be Unix seconds or ISO 8601, got {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp())


@app.command("verify")
def verify(
    ctx: typer.Context,
    entry: Annotated[int | None, typer.Option("--entry", min=0, help="Check one entry")] = None,
    key: KeyOption = None,
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option("--checkpoints", help="More checkpoint files or directories (witnesses')"),
    ] = None,
    as_json: JSONOption = False,
) -> None:
    """Check the whole log (or one entry) against every signed checkpoint.

    Detects changed, deleted, inserted and reordered entries and truncation after a
    published checkpoint; names the first bad entry. Exit 4 on any failure.
    """
    with _Log(ctx) as opened:
        log = opened.log
        verifiers = _verifiers(key, log)
        notes = log.all_checkpoints(_extra_checkpoints(checkpoints))
        if notes and not verifiers:
            raise LogVerificationError(
                LOG_CHECKPOINT_SIGNATURE, "checkpoints exist but no verifier key is known"
            )
        trusted = load_checkpoints(notes, verifiers, log.origin)
        rows = list(log.stored())
        if entry is not None:
            checked, covering = verify_entry(rows, trusted, entry)
            result: dict[str, Any] = {
                "ok": True,
                "entry": entry,
                "action": checked.action,
                "checkpoints": [c.size for c in covering],
            }
            message = f"entry {entry} ok: proven by {len(covering)} signed checkpoint(s)"
        else:
            report = verify_log(rows, trusted, expected_size=log.appended_size())
            result = {
                "ok": True,
                "entries": report.size,
                "checkpoints": len(report.checkpoints),
                "covered": report.covered,
            }
            message = (
                f"ok: {report.size} entries, {len(report.checkpoints)} signed checkpoints, "
                f"entries 0..{report.covered - 1} covered"
            )
            if not report.checkpoints:
                message = (
                    f"ok: {report.size} entries, well-formed and chained; no signed "
                    "checkpoint yet, so nothing is protected against a rewrite"
                )
            elif report.covered < report.size:
                message += f"; {report.size - report.covered} newer entries not yet covered"
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
    else:
        typer.echo(message)


@app.command("show")
def show(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="User id or name")] = None,
    device: Annotated[str | None, typer.Option(help="Device id")] = None,
    model: Annotated[str | None, typer.Option(help="Model id")] = None,
    action: Annotated[str | None, typer.Option(help="Action, e.g. iml.issued")] = None,
    since: Annotated[str | None, typer.Option(help="From (Unix s or ISO 8601, UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="Before (Unix s or ISO 8601, UTC)")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JSONOption = False,
) -> None:
    """List entries, oldest first (not verified: run ``verify`` for that)."""
    with _Log(ctx) as opened:
        user_id: int | None = None
        if user is not None:
            if user.isdigit():
                user_id = int(user)
            else:
                with opened.sessions() as session:
                    found = session.scalar(select(User.id).where(User.name == user))
                if found is None:
                    raise UsageError(f"no user named {user[:64]!r}")
                user_id = found
        where = AuditFilter(
            user_id=user_id,
            device_id=device,
            model_id=model,
            action=action,
            since=_parse_time(since),
            until=_parse_time(until),
            limit=limit,
        )
        entries = opened.log.entries(where)
    for item in entries:
        if as_json:
            sys.stdout.write(item.to_bytes().decode("utf-8") + "\n")
        else:
            typer.echo(
                f"{item.seq}\t{_when(item.time)}\t{item.action}\t{item.actor}\t"
                f"{item.user_id if item.user_id is not None else '-'}\t{item.device_id or '-'}\t"
                f"{item.model_id or '-'}\t{json.dumps(dict(item.details), sort_keys=True)}"
            )


@app.command("proof")
def proof(
    ctx: typer.Context,
    entry: Annotated[int, typer.Option("--entry", min=0, help="Entry to prove")],
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Prove against this checkpoint file (default: newest)"),
    ] = None,
    key: KeyOption = None,
) -> None:
    """Print a JSON proof bundle (entry, inclusion proof, signed checkpoint) for ENTRY.

    A third party checks it offline with ``modelseal audit verify-proof``.
    """
    with _Log(ctx) as opened:
        log = opened.log
        verifiers = _verifiers(key, log)
        if checkpoint is not None:
            candidates = [(str(checkpoint), checkpoint.read_bytes())]
        else:
            candidates = log.all_checkpoints()
        best: tuple[Checkpoint, bytes] | None = None
        for where, note in candidates:
            try:
                parsed = open_checkpoint(note, verifiers, origin=log.origin)
            except AuditError as exc:
                raise LogVerificationError(
                    LOG_CHECKPOINT_SIGNATURE, f"checkpoint {where}: {exc.message}"
                ) from None
            if parsed.size > entry and (best is None or parsed.size > best[0].size):
                best = (parsed, note)
        if best is None:
            raise LogVerificationError(
                LOG_NOT_COVERED, f"no signed checkpoint covers entry {entry} yet", seq=entry
            )
        rows = list(log.stored())
        leaves = [leaf_hash(row.data) for row in rows]
        if entry >= len(rows) or rows[entry].seq != entry:
            raise LogVerificationError(LOG_SEQUENCE_GAP, f"entry {entry} is not in place")
        bundle = build_proof_bundle(leaves, rows[entry].data, entry, best[1], best[0].size)
    # Check before handing it out: a bundle from a tampered database would not verify.
    verify_proof_bundle(bundle.to_json(), verifiers)
    typer.echo(bundle.to_json())


@app.command("verify-proof")
def verify_proof(
    bundle: Annotated[Path, typer.Argument(help="Proof bundle (JSON) from `audit proof`")],
    key: KeyOption = None,
    as_json: JSONOption = False,
) -> None:
    """Verify a proof bundle offline: checkpoint signature, entry format, inclusion."""
    verifiers = _verifiers(key, None)
    entry, checkpoint = verify_proof_bundle(bundle.read_text("utf-8"), verifiers)
    if as_json:
        typer.echo(
            json.dumps(
                {"ok": True, "entry": entry.to_json(), "tree_size": checkpoint.size},
                sort_keys=True,
            )
        )
    else:
        typer.echo(
            f"ok: entry {entry.seq} ({entry.action}, {_when(entry.time)}) is in the log "
            f"{checkpoint.origin} at tree size {checkpoint.size}"
        )


@app.command("consistency")
def consistency(
    ctx: typer.Context,
    first: Annotated[int, typer.Option("--from", min=1, help="Size of the older checkpoint")],
    second: Annotated[
        int | None, typer.Option("--to", min=1, help="Size of the newer (default: newest)")
    ] = None,
    key: KeyOption = None,
) -> None:
    """Print a JSON proof that the checkpoint of size --to extends the one of size --from.

    A witness holding both checkpoints checks it offline with ``verify-consistency``.
    """
    with _Log(ctx) as opened:
        log = opened.log
        verifiers = _verifiers(key, log)
        signed: dict[int, bytes] = {}
        for where, note in log.all_checkpoints():
            try:
                parsed = open_checkpoint(note, verifiers, origin=log.origin)
            except AuditError as exc:
                raise LogVerificationError(
                    LOG_CHECKPOINT_SIGNATURE, f"checkpoint {where}: {exc.message}"
                ) from None
            signed.setdefault(parsed.size, note)
        target = second if second is not None else max(signed, default=0)
        missing = [size for size in (first, target) if size not in signed]
        if missing:
            raise UsageError(f"no signed checkpoint of size {missing[0]}")
        if first > target:
            raise UsageError("--from must not be larger than --to")
        leaves = [leaf_hash(row.data) for row in log.stored()]
        if target > len(leaves):
            raise LogVerificationError(
                LOG_TRUNCATED, f"the log holds {len(leaves)} entries, fewer than {target}"
            )
        bundle = build_consistency_bundle(leaves, signed[first], first, signed[target], target)
    # A proof from a rewritten database would not verify: check before handing it out.
    verify_consistency_bundle(bundle, verifiers)
    typer.echo(bundle)


@app.command("verify-consistency")
def verify_consistency_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle (JSON) from `audit consistency`")],
    key: KeyOption = None,
) -> None:
    """Verify offline that one signed checkpoint extends another."""
    first, second = verify_consistency_bundle(bundle.read_text("utf-8"), _verifiers(key, None))
    typer.echo(
        f"ok: the log {second.origin} at size {second.size} extends its checkpoint "
        f"at size {first.size}"
    )


@app.command("checkpoint")
def checkpoint_now(ctx: typer.Context) -> None:
    """Sign and export a checkpoint now (the server also does so by itself)."""
    from modelseal.server.container import build_services
    from modelseal.server.logging import configure_logging

    configure_logging(sys.stderr, level="WARNING")
    services = build_services(_settings(ctx))
    try:
        made = services.audit.checkpoint()
    finally:
        services.close()
    typer.echo(f"checkpoint at tree size {made.size}" if made else "no new entries")


@app.command("key")
def key_show(ctx: typer.Context) -> None:
    """Print the checkpoint verifier keys this server has used (give them to witnesses)."""
    with _Log(ctx) as opened:
        for verifier in opened.log.recorded_verifiers():
            typer.echo(str(verifier))
