"""Placeholder entry point, replaced by the Typer app."""


def main() -> None:
    """Run the CLI."""
