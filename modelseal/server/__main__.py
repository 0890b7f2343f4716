"""``python -m modelseal.server server|admin ...`` until the main CLI wires the sub-apps."""

from __future__ import annotations

import typer

from modelseal.server.cli import admin_app, server_app

cli = typer.Typer(no_args_is_help=True)
cli.add_typer(server_app, name="server")
cli.add_typer(admin_app, name="admin")

if __name__ == "__main__":
    cli()
