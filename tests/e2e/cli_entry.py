"""Run the ``modelseal`` command with the ``device`` sub-app, as a process of its own.

``modelseal.cli.main`` registers the sub-apps; until it registers ``device`` this
entry point adds it to the same root group (and so the same error boundary), so
tests drive exactly the command users get.
"""

from __future__ import annotations

import typer

from modelseal.cli.device_cmd import app as device_app
from modelseal.cli.main import app


def cli() -> typer.Typer:
    """The root app, with ``device`` registered once."""
    if not any(group.name == "device" for group in app.registered_groups):
        app.add_typer(device_app, name="device")
    return app


if __name__ == "__main__":
    cli()(prog_name="modelseal")
