"""``modelseal admin fraud ...``: list, explain and override fraud verdicts; check rules
files and replay stored histories under them.

Registered on ``admin_app`` by :mod:`modelseal.server.cli`; shares its ``--config``.
Every override is stored (``fraud_overrides``), recorded as a ``fraud_override``
event and written to the audit log, with the operating-system user as the actor.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from argon2 import PasswordHasher

from modelseal.fraud import RuleSet, Verdict
from modelseal.server.container import Services
from modelseal.server.services.abuse import VerdictInfo
from modelseal.server.services.audit import admin_actor

__all__ = ["fraud_app", "parse_expiry"]

fraud_app = typer.Typer(help="Fraud verdicts: list, explain, override.", no_args_is_help=True)
rules_app = typer.Typer(help="Rules files: check, replay.", no_args_is_help=True)
fraud_app.add_typer(rules_app, name="rules")
_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_expiry(text: str, now: int) -> int:
    """``7d``, ``12h``, ``30m``, ``90s`` from ``now``, or an ISO 8601 time (UTC if naive).

    Raises:
        ValueError: Neither form.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is not None:
        return now + int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--expires must be a duration such as 7d or an ISO 8601 time, got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


@contextlib.contextmanager
def _services(ctx: typer.Context) -> Iterator[Services]:
    # Imported here: modelseal.server.cli imports this module to register it.
    from modelseal.server import cli

    with cli._services(ctx) as services:
        yield services


def _print(info: VerdictInfo, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(info.to_json(), sort_keys=True))
    else:
        typer.echo(info.explain())


JSONOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@fraud_app.command("list")
def list_verdicts(
    ctx: typer.Context,
    verdict: Annotated[
        Verdict | None, typer.Option("--verdict", help="Only users with this verdict.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: JSONOption = False,
) -> None:
    """Users whose verdict is not ok (or is --verdict), or with an override, worst first."""
    from modelseal.server import cli

    with _services(ctx) as services:
        infos = cli._guard(lambda: services.abuse.list_verdicts(verdict, limit=limit))
    if as_json:
        typer.echo(json.dumps([info.to_json() for info in infos], sort_keys=True))
        return
    for info in infos:
        who = info.user_name or f"id:{info.user_id}"
        rules = ",".join(str(rule.get("rule_id")) for rule in info.fired) or "-"
        mark = " (override)" if info.override is not None else ""
        typer.echo(f"{who}\t{info.verdict}{mark}\tscore {info.score:g}\t{rules}")


@fraud_app.command("explain")
def explain(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Account name, or id:N")],
    as_json: JSONOption = False,
) -> None:
    """A user's verdict, recomputed now: the rules that fired and on which events."""
    from modelseal.server import cli

    with _services(ctx) as services:
        info = cli._guard(lambda: services.abuse.explain(user))
    _print(info, as_json)


@fraud_app.command("override")
def override(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Account name, or id:N")],
    verdict: Annotated[Verdict, typer.Option("--verdict", help="ok | suspicious | malicious")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the override).")],
    expires: Annotated[
        str | None, typer.Option("--expires", help="Duration (7d, 12h) or ISO 8601 time.")
    ] = None,
    as_json: JSONOption = False,
) -> None:
    """Set a user's verdict; it wins over the computed one until it expires or is cleared."""
    from modelseal.server import cli

    with _services(ctx) as services:
        now = int(services.clock())
        expires_at = cli._guard(lambda: parse_expiry(expires, now)) if expires else None
        info = cli._guard(
            lambda: services.abuse.override(
                user, verdict, reason=reason, actor=admin_actor(), expires_at=expires_at
            )
        )
    _print(info, as_json)


@fraud_app.command("clear")
def clear(
    ctx: typer.Context,
    user: Annotated[str, typer.Argument(help="Account name, or id:N")],
    reason: Annotated[str, typer.Option("--reason", help="Why the override ends.")],
    as_json: JSONOption = False,
) -> None:
    """End a user's override; the computed verdict applies again."""
    from modelseal.server import cli

    with _services(ctx) as services:
        info = cli._guard(
            lambda: services.abuse.clear_override(user, reason=reason, actor=admin_actor())
        )
    _print(info, as_json)


@fraud_app.command("admin-token")
def admin_token() -> None:
    """Make an admin API token: prints the token once and the hash for the settings."""
    token = "msa_" + secrets.token_urlsafe(32)
    typer.echo(f"token: {token}")
    typer.echo(f'abuse.admin_token_hash = "{PasswordHasher().hash(token)}"')


RulesFile = Annotated[Path, typer.Argument(help="A rules file (TOML).")]


@rules_app.command("check")
def rules_check(file: RulesFile, as_json: JSONOption = False) -> None:
    """Validate a rules file (exit 1 with the offending member named if it is invalid)."""
    from modelseal.server import cli

    rules = cli._guard(lambda: RuleSet.load(file))
    if as_json:
        typer.echo(json.dumps(rules.summary(), sort_keys=True))
        return
    stop = sum(1 for rule in rules.rules if rule.kind == "stop")
    typer.echo(
        f"{file}: ok, version {rules.version}, "
        f"{stop} stop factors, {len(rules.rules) - stop} points rules"
    )


@rules_app.command("replay")
def rules_replay(
    ctx: typer.Context,
    file: RulesFile,
    max_users: Annotated[int, typer.Option("--max-users", min=1, max=1_000_000)] = 10_000,
    as_json: JSONOption = False,
) -> None:
    """Assess stored histories under the rules in force and under FILE: what would change."""
    from modelseal.server import cli

    new = cli._guard(lambda: RuleSet.load(file))
    with _services(ctx) as services:
        result = services.abuse.replay_rules(new, max_users=max_users)
        current = services.abuse.rules.version
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "current": current,
                    "new": new.version,
                    "users": result.users,
                    "before": {str(k): v for k, v in result.before.items()},
                    "after": {str(k): v for k, v in result.after.items()},
                    "changes": [
                        {
                            "user_id": c.user_id,
                            "before": str(c.before.verdict),
                            "after": str(c.after.verdict),
                            "rules_after": [f.rule_id for f in c.after.fired],
                        }
                        for c in result.changes
                    ],
                },
                sort_keys=True,
            )
        )
        return
    typer.echo(f"rules {current} -> {new.version}, {result.users} users")
    typer.echo(result.summary())
