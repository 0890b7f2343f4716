"""The ``modelseal`` command line: a thin shell over :mod:`modelseal.envelope` and keys.

The Typer app and its one error boundary are in :mod:`modelseal.cli.main`;
commands live in modules by area. Importing this package has no side effects.
"""
