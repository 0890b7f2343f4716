"""The ``modelseal`` command: the Typer app, its one error boundary, and ``main()``.

Commands live in modules by area (``keys_cmd``, ``envelope_cmd``, ``demo_cmd``)
and are registered here. Those that import heavy parts (the server, the device
client) are named in :data:`LAZY_COMMANDS` and imported on first use; all run
inside the same error boundary.

Importing this module builds the app and does nothing else: no I/O, no
consoles, no environment reads.

Exit codes (stable; ``docs/CLI.md``):

==  ======================================================================
0   success
1   any other :class:`~modelseal.errors.ModelSealError` (reserved)
2   usage: bad options (reported by Typer) or :class:`~modelseal.errors.UsageError`
3   :class:`~modelseal.errors.FormatError`: not a well-formed package
4   :class:`~modelseal.errors.VerificationError`: a cryptographic check failed
5   :class:`~modelseal.errors.ClaimsError`: genuine, but not for this device or not now
6   :class:`~modelseal.errors.KeyFormatError`: a key file is malformed or of the wrong kind
7   I/O error (:class:`OSError`): missing file, permission, existing output
70  internal error: a bug in modelseal
130 interrupted
==  ======================================================================
"""

from __future__ import annotations

import errno
import importlib
import logging
import sys
from typing import Annotated, Any

import typer

# Typer vendors its own Click; these are its classes, not a separately installed click's.
from typer._click.core import Command, Context
from typer.core import TyperGroup

from modelseal import __version__
from modelseal.cli import demo_cmd, envelope_cmd, keys_cmd
from modelseal.cli.output import JSON_META_KEY, emit_json, printable
from modelseal.errors import (
    ClaimsError,
    FormatError,
    KeyFormatError,
    ModelSealError,
    UsageError,
    VerificationError,
)

__all__ = [
    "EXIT_CLAIMS",
    "EXIT_FORMAT",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_IO",
    "EXIT_KEY",
    "EXIT_OK",
    "EXIT_OTHER",
    "EXIT_USAGE",
    "EXIT_VERIFICATION",
    "ModelSealGroup",
    "app",
    "classify",
    "main",
]

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_FORMAT = 3
EXIT_VERIFICATION = 4
EXIT_CLAIMS = 5
EXIT_KEY = 6
EXIT_IO = 7
EXIT_INTERNAL = 70  # EX_SOFTWARE in BSD sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

_FAMILY_EXITS: tuple[tuple[type[ModelSealError], int], ...] = (
    (UsageError, EXIT_USAGE),
    (FormatError, EXIT_FORMAT),
    (VerificationError, EXIT_VERIFICATION),
    (ClaimsError, EXIT_CLAIMS),
    (KeyFormatError, EXIT_KEY),
)

_OS_ERROR_CODES: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "file_not_found"),
    (FileExistsError, "file_exists"),
    (PermissionError, "permission_denied"),
    (IsADirectoryError, "is_a_directory"),
    (NotADirectoryError, "not_a_directory"),
)

_log = logging.getLogger("modelseal.cli")


def _os_error_message(exc: OSError) -> str:
    reason = exc.strerror or (errno.errorcode.get(exc.errno, "") if exc.errno else "") or str(exc)
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def classify(exc: BaseException) -> tuple[int, str, str]:
    """Map an exception to (exit code, error code, one-line message).

    Order matters: the first family that matches wins, and anything that is
    neither a :class:`ModelSealError` nor an :class:`OSError` is an internal error.
    """
    if isinstance(exc, ModelSealError):
        for family, exit_code in _FAMILY_EXITS:
            if isinstance(exc, family):
                return exit_code, exc.code, exc.message
        return EXIT_OTHER, exc.code, exc.message
    if isinstance(exc, OSError):
        code = next((c for kind, c in _OS_ERROR_CODES if isinstance(exc, kind)), "io_error")
        return EXIT_IO, code, _os_error_message(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted", "interrupted"
    return (
        EXIT_INTERNAL,
        "internal_error",
        f"unexpected {type(exc).__name__}: {exc} (this is a bug in modelseal)",
    )


def _report(ctx: typer.Context, exc: BaseException) -> int:
    exit_code, code, message = classify(exc)
    # One line, whatever the message holds: headers and paths may carry control characters.
    line = printable(" ".join(message.split()) or code)
    if ctx.meta.get(JSON_META_KEY):
        emit_json({"error": {"code": code, "message": line}}, ok=False)
    else:
        sys.stderr.write(f"error[{code}]: {line}\n")
        sys.stderr.flush()
    return exit_code


# Commands whose modules import the server, the device client, SQLAlchemy or ONNX Runtime
# (about two seconds here): imported only when named, so that `modelseal seal`, `open` or
# `--version` do not pay for them. name -> (module, attribute: a Typer app or a function).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("modelseal.server.cli", "server_app"),
    "admin": ("modelseal.server.cli", "admin_app"),
    "device": ("modelseal.cli.device_cmd", "app"),
    "audit": ("modelseal.cli.audit_cmd", "app"),
    "trace": ("modelseal.cli.trace_cmd", "trace_command"),
}


def _load_command(name: str) -> Command:
    module_name, attribute = LAZY_COMMANDS[name]
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        command: Command = typer.main.get_group(target)
    else:
        holder = typer.Typer()
        holder.command(name)(target)
        command = typer.main.get_command(holder)
    command.name = name
    return command


class ModelSealGroup(TyperGroup):
    """The root command group; its :meth:`invoke` is the CLI's one error boundary.

    Every command, including those of sub-apps added later, runs inside this
    ``invoke``. Typer's own signals (usage errors, ``Exit``, ``Abort``) pass
    through untouched; everything else becomes an ``error[<code>]`` line (or a JSON
    error object with ``--json``) and an exit code. No traceback is ever printed.

    The commands of :data:`LAZY_COMMANDS` are imported when first asked for.
    """

    def list_commands(self, ctx: Context) -> list[str]:
        """Every command name, the lazily loaded ones included."""
        return [*super().list_commands(ctx), *LAZY_COMMANDS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        """The named command, importing its module first if it is a lazy one."""
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            self.add_command(_load_command(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        """Run the selected command and map any error it raises to an exit code."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # stdout closed early (`| head`): Typer exits quietly
            raise typer.Exit(_report(ctx, exc)) from None
        except (ModelSealError, KeyboardInterrupt) as exc:
            raise typer.Exit(_report(ctx, exc)) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's one catch-all: report, no traceback
            _log.debug("internal error", exc_info=exc)
            raise typer.Exit(_report(ctx, exc)) from None


app = typer.Typer(
    name="modelseal",
    cls=ModelSealGroup,
    help="Seal ML models to the device they are issued to, and open them there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelseal {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Seal ML models to the device they are issued to, and open them there."""


app.command("keygen")(keys_cmd.keygen)
app.command("seal")(envelope_cmd.seal_command)
app.command("open")(envelope_cmd.open_command)
app.command("inspect")(envelope_cmd.inspect_command)
app.command("demo")(demo_cmd.demo)


def main() -> None:
    """Run the ``modelseal`` command (the console-script entry point)."""
    app(prog_name="modelseal")
