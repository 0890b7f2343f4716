"""``modelseal admin keys ...``: the lifecycle of the server's signing keys.

Each command runs one audited key service operation against the server's
database and key backend (docs/KEY_SERVICE.md). Output is one tab-separated line
per key: purpose, kid, backend, alg, state, created, and the state's date.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from modelseal.server.keyservice import KeyInfo, KeyPurpose
from modelseal.server.keyservice.service import KeyService
from modelseal.server.services.audit import admin_actor

__all__ = ["admin_actor", "keys_app"]

keys_app = typer.Typer(
    help="Signing keys (issuer, link, checkpoint): list, create, activate, retire, revoke.",
    no_args_is_help=True,
)

PurposeArg = Annotated[KeyPurpose, typer.Argument(help="issuer, link or checkpoint")]
KidArg = Annotated[str, typer.Argument(help="The key id")]


def _line(info: KeyInfo) -> str:
    from modelseal.server.cli import _when

    when = {
        "created": None,
        "active": info.activated_at,
        "retiring": info.retiring_until,
        "retired": info.retired_at,
        "revoked": info.revoked_at,
    }[str(info.state)]
    extra = f" {_when(when)}" if when is not None else ""
    reason = f"\t{info.revoke_reason}" if info.revoke_reason else ""
    return (
        f"{info.purpose}\t{info.kid}\t{info.backend}\t{info.alg}\t{info.state}{extra}\t"
        f"created {_when(info.created_at)}{reason}"
    )


def _apply(ctx: typer.Context, operation: Callable[[KeyService], KeyInfo]) -> None:
    """Run one key service operation for the server ``ctx`` names; print the key it leaves."""
    from modelseal.server.cli import _guard, _services

    with _services(ctx) as services:
        info = _guard(lambda: operation(services.keys))
        typer.echo(_line(info))


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    purpose: Annotated[KeyPurpose | None, typer.Option(help="Only this purpose")] = None,
) -> None:
    """List managed keys, oldest first."""
    from modelseal.server.cli import _services

    with _services(ctx) as services:
        for info in services.keys.list_keys(purpose):
            typer.echo(_line(info))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    purpose: PurposeArg,
    alg: Annotated[str | None, typer.Option(help="Ed25519 or ES256 (HS256 for link keys)")] = None,
) -> None:
    """Generate a key in state ``created``: published (issuer), not yet signing."""
    _apply(ctx, lambda keys: keys.create(purpose, alg, actor=admin_actor()))


@keys_app.command("activate")
def keys_activate(ctx: typer.Context, purpose: PurposeArg, kid: KidArg) -> None:
    """Make a created key the active one; the previous active key starts retiring."""
    _apply(ctx, lambda keys: keys.activate(purpose, kid, actor=admin_actor()))


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    purpose: PurposeArg,
    alg: Annotated[str | None, typer.Option(help="Algorithm of the new key")] = None,
) -> None:
    """Create a key and activate it at once."""
    _apply(ctx, lambda keys: keys.rotate(purpose, alg, actor=admin_actor()))


@keys_app.command("retire")
def keys_retire(ctx: typer.Context, purpose: PurposeArg, kid: KidArg) -> None:
    """Retire a created or retiring key now; its private half is destroyed."""
    _apply(ctx, lambda keys: keys.retire(purpose, kid, actor=admin_actor()))


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    purpose: PurposeArg,
    kid: KidArg,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit log)")],
    force: Annotated[
        bool, typer.Option("--force", help="Also revoke the active key (signing stops)")
    ] = False,
) -> None:
    """Withdraw a key at once (suspected compromise); its private half is destroyed."""
    _apply(
        ctx,
        lambda keys: keys.revoke(purpose, kid, actor=admin_actor(), reason=reason, force=force),
    )
