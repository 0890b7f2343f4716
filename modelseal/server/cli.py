"""Typer sub-apps: ``modelseal server`` (run uvicorn) and ``modelseal admin ...``.

Both take ``--config`` (else ``$MODELSEAL_CONFIG``); the environment overrides the
file. Errors print ``error: <code>: <message>`` and exit with status 1.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from modelseal.errors import ModelSealError
from modelseal.keys import SignatureAlgorithm
from modelseal.server.container import Services, build_services
from modelseal.server.db.migrate import current_revision, head_revision, upgrade
from modelseal.server.db.session import make_engine
from modelseal.server.keys_cli import admin_actor, keys_app
from modelseal.server.settings import Settings, load_settings

__all__ = ["admin_app", "server_app"]

server_app = typer.Typer(help="Run the issuance server.", no_args_is_help=False)
admin_app = typer.Typer(help="Operate the issuance server.", no_args_is_help=True)
users_app = typer.Typer(help="Built-in accounts.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens of built-in accounts.", no_args_is_help=True)
devices_app = typer.Typer(help="Registered devices.", no_args_is_help=True)
models_app = typer.Typer(help="Declared models.", no_args_is_help=True)
issuances_app = typer.Typer(help="Issued packages.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app.add_typer(users_app, name="users")
admin_app.add_typer(tokens_app, name="tokens")
admin_app.add_typer(devices_app, name="devices")
admin_app.add_typer(models_app, name="models")
admin_app.add_typer(issuances_app, name="issuances")
admin_app.add_typer(db_app, name="db")
admin_app.add_typer(keys_app, name="keys")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (default: $MODELSEAL_CONFIG)"),
]
T = TypeVar("T")


def _fail(exc: ModelSealError) -> typer.Exit:
    typer.echo(f"error: {exc.code}: {exc.message}", err=True)
    return typer.Exit(1)


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except ModelSealError as exc:
        raise _fail(exc) from None
    except ValueError as exc:
        typer.echo(f"error: invalid_argument: {exc}", err=True)
        raise typer.Exit(2) from None


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- server -------------------------------------------------------------------------------


@server_app.callback(invoke_without_command=True)
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: settings.port)")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes on the port (> 1: see docs/SERVER.md, 'Several processes')",
        ),
    ] = 1,
) -> None:
    """Run the issuance server under uvicorn (HTTPS when tls_certfile/tls_keyfile are set)."""
    import uvicorn

    from modelseal.server.app import create_app
    from modelseal.server.logging import configure_logging
    from modelseal.server.settings import CONFIG_ENV
    from modelseal.server.workers import prepare
    from modelseal.server.workers import serve as serve_workers

    configure_logging()
    settings = _guard(lambda: load_settings(config))
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_certfile) if settings.tls_certfile else None,
        "ssl_keyfile": str(settings.tls_keyfile) if settings.tls_keyfile else None,
        "proxy_headers": settings.behind_proxy,
        "forwarded_allow_ips": settings.forwarded_allow_ips if settings.behind_proxy else None,
        # Our middleware logs one redacted line per request; uvicorn's access log would
        # print raw paths, and download paths hold link tokens.
        "access_log": False,
        "log_config": None,
        "server_header": False,
    }
    bind_host = host or settings.host
    bind_port = settings.port if port is None else port
    if workers == 1:
        app = _guard(lambda: create_app(settings))
        uvicorn.run(app, host=bind_host, port=bind_port, **options)
        return
    # Each worker process builds its own app from the same file and environment.
    _guard(lambda: prepare(settings))
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    try:
        status = serve_workers(bind_host, bind_port, workers, options)
    except (OSError, ValueError) as exc:
        where = f"{bind_host}:{bind_port}"
        typer.echo(f"error: invalid_argument: cannot listen on {where}: {exc}", err=True)
        raise typer.Exit(2) from None
    if status:
        raise typer.Exit(status)


# --- admin --------------------------------------------------------------------------------


@admin_app.callback()
def admin(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Operator commands; they share the server's settings."""
    ctx.obj = config


def _settings(ctx: typer.Context) -> Settings:
    config = _find_config(ctx)
    return _guard(lambda: load_settings(config))


def _find_config(ctx: typer.Context) -> Path | None:
    node: Any = ctx
    while node is not None:
        if isinstance(node.obj, Path):
            return node.obj
        node = node.parent
    return None


@contextlib.contextmanager
def _services(ctx: typer.Context) -> Iterator[Services]:
    from modelseal.server.logging import configure_logging

    configure_logging("stderr", level="WARNING")
    settings = _settings(ctx)
    services = _guard(lambda: build_services(settings))
    try:
        yield services
    finally:
        services.close()


@users_app.command("create")
def users_create(ctx: typer.Context, name: str) -> None:
    """Create a built-in account and print its first API token (shown once)."""
    with _services(ctx) as services:
        info, token = _guard(lambda: services.accounts.create_user(name))
    typer.echo(f"user {info.name} created (subject {info.subject})", err=True)
    typer.echo(token)


@users_app.command("list")
def users_list(ctx: typer.Context) -> None:
    """List accounts."""
    with _services(ctx) as services:
        for user in services.accounts.list_users():
            typer.echo(f"{user.id}\t{user.name or '-'}\t{user.provider}\t{user.subject}")


@users_app.command("delete")
def users_delete(ctx: typer.Context, name: str) -> None:
    """Delete NAME's uploaded examples, revoke their tokens and devices, disable the account.

    Issuance and audit records, which name the user only by pseudonymous subject,
    stay for their own retention.
    """
    with _services(ctx) as services:
        accounts = services.accounts
        report = _guard(
            lambda: services.examples.delete_user(
                name,
                record=lambda session, user_id: accounts.record_admin(
                    session, "users.delete", user_id=user_id, user_name=name
                ),
            )
        )
        for kid in report.devices:
            _guard(functools.partial(services.devices.admin_revoke, kid))
    typer.echo(
        f"user {name} disabled: {report.examples} example uploads deleted, "
        f"{report.tokens} tokens and {len(report.devices)} devices revoked",
        err=True,
    )


@tokens_app.command("create")
def tokens_create(ctx: typer.Context, user: str) -> None:
    """Create another API token for USER and print it (shown once)."""
    with _services(ctx) as services:
        token = _guard(lambda: services.accounts.create_token(user))
        typer.echo(token)


@tokens_app.command("revoke")
def tokens_revoke(ctx: typer.Context, token_id: str) -> None:
    """Revoke a token by its id (the 16 hex characters after ``ms_``)."""
    with _services(ctx) as services:
        _guard(lambda: services.accounts.revoke_token(token_id))
    typer.echo(f"token {token_id} revoked", err=True)


@tokens_app.command("list")
def tokens_list(ctx: typer.Context, user: str) -> None:
    """List USER's token ids."""
    with _services(ctx) as services:
        for token_id, created, revoked in _guard(lambda: services.accounts.list_tokens(user)):
            typer.echo(f"{token_id}\tcreated {_when(created)}\trevoked {_when(revoked)}")


@devices_app.command("list")
def devices_list(
    ctx: typer.Context, user: Annotated[str | None, typer.Option(help="Only this user")] = None
) -> None:
    """List devices."""
    with _services(ctx) as services:
        for owner, device in services.devices.list_all(user):
            attested = device.attestation
            attestation = (
                "-"
                if attested is None
                else f"{attested.platform}:{attested.level}@{_when(attested.verified_at)}"
            )
            typer.echo(
                f"{owner or '-'}\t{device.device_id}\t{device.kid}\t{device.kem}\t"
                f"{device.status}\t{device.app_version}\t{attestation}"
            )


@devices_app.command("revoke")
def devices_revoke(
    ctx: typer.Context,
    device: Annotated[str, typer.Argument(help="Key id, or device id")],
    user: Annotated[str | None, typer.Option(help="Owner, when a device id is ambiguous")] = None,
) -> None:
    """Revoke a device; its undelivered packages are deleted."""
    with _services(ctx) as services:
        info = _guard(lambda: services.devices.admin_revoke(device, user))
    typer.echo(f"device {info.device_id} ({info.kid}) revoked", err=True)


@models_app.command("list")
def models_list(ctx: typer.Context) -> None:
    """List declared models."""
    settings = _settings(ctx)
    for spec in settings.models:
        typer.echo(json.dumps(spec.model_dump(), sort_keys=True))


@issuances_app.command("list")
def issuances_list(
    ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=10000)] = 100
) -> None:
    """List recent issuances, newest first."""
    with _services(ctx) as services:
        for item in services.issuance.recent(limit=limit):
            state = item.deleted_reason or "stored"
            typer.echo(
                f"{item.jti}\t{item.user_name or item.user_subject}\t{item.device_id}\t"
                f"{item.model_id}\t{item.size}\t{_when(item.created_at)}\t{state}"
            )


@admin_app.command("rotate-issuer-key")
def rotate_issuer_key(
    ctx: typer.Context,
    alg: Annotated[SignatureAlgorithm | None, typer.Option(help="Ed25519 or ES256")] = None,
) -> None:
    """Create a new active issuer key; the old one stays published until its packages expire."""
    with _services(ctx) as services:
        new = _guard(lambda: services.keyring.rotate(alg, actor=admin_actor()))
        for state in services.keyring.states():
            until = f" until {_when(state.retiring_until)}" if state.state == "retiring" else ""
            typer.echo(f"{state.kid}\t{state.alg}\t{state.state}{until}")
    typer.echo(f"active issuer key is now {new.kid}", err=True)


@admin_app.command("sweep")
def sweep(ctx: typer.Context) -> None:
    """Delete expired packages and retire old issuer keys, once."""
    with _services(ctx) as services:
        report = services.sweep.run_once()
    typer.echo(
        f"expired {report.expired}, orphans {report.orphans}, retired keys {report.retired_keys}"
    )


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Upgrade the database schema to the newest migration."""
    settings = _settings(ctx)
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        typer.echo(f"schema at {current_revision(engine)} (head {head_revision()})")
    finally:
        engine.dispose()


# Anti-fraud operator commands (own module; it imports this one lazily).
from modelseal.server.fraud_cli import fraud_app  # noqa: E402

admin_app.add_typer(fraud_app, name="fraud")
