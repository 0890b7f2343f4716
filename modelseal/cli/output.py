"""Output of the ``modelseal`` command: one JSON object or human text, progress on stderr.

Every command takes ``--json``. With it, stdout carries exactly one JSON object
(``"ok": true`` plus the command's fields, or the error object written by the
error boundary) and nothing else is printed. Without it, results go to stdout as
text and errors to stderr.

Anything taken from a package header is attacker-controlled until verified (and
``inspect`` verifies nothing), so every string shown to a person goes through
:func:`printable`, which escapes control and formatting characters that could
move the cursor, rewrite the terminal or reorder text. Rich markup is never
interpreted: plain lines are written as they are, and rich is used only for the
demo's table (built from :class:`rich.text.Text`) and for progress bars.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "JSON_META_KEY",
    "PROGRESS_THRESHOLD_BYTES",
    "JSONFlag",
    "ProgressCallback",
    "byte_progress",
    "emit_json",
    "format_bytes",
    "format_seconds",
    "format_time",
    "json_mode",
    "key_value_lines",
    "print_lines",
    "printable",
    "progress_wanted",
    "stderr_console",
    "stdout_console",
    "transfer_progress",
]

JSON_META_KEY = "modelseal.json"
PROGRESS_THRESHOLD_BYTES = 8 * 1024 * 1024

ProgressCallback = Callable[[int], None]


def _remember_json(ctx: typer.Context, value: bool) -> bool:
    # ctx.meta is shared by every context of one invocation, so the error boundary in
    # main.py sees the flag even though it wraps the root group, not this command.
    if value:
        ctx.meta[JSON_META_KEY] = True
    return value


JSONFlag = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object on stdout (results and errors) instead of text.",
        callback=_remember_json,
    ),
]
"""The ``--json`` option; every command declares ``json_output: JSONFlag = False``."""


def json_mode(ctx: typer.Context) -> bool:
    """Whether the running command was given ``--json``."""
    return bool(ctx.meta.get(JSON_META_KEY, False))


def emit_json(payload: Mapping[str, object], *, ok: bool = True) -> None:
    """Write one JSON object to stdout: ``{"ok": ok, **payload}``.

    Non-ASCII characters are escaped so that the raw bytes on stdout never carry a
    terminal control sequence, even when a header string holds one.
    """
    document = {"ok": ok, **payload}
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``, ``\\n``).

    Python's notion of printable excludes Unicode categories Cc, Cf, Cs, Co, Cn, Zl,
    Zp and Zs other than the ASCII space: control characters, bidirectional
    overrides, zero-width characters and line breaks.
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


# rich is imported where it is used, not at module level: it is most of the CLI's own
# start-up time, and only the demo's table and progress bars need it.


def stdout_console() -> Console:
    """A rich console on stdout, for tables: no highlighting, no markup in plain strings."""
    from rich.console import Console

    return Console(highlight=False, markup=False)


def stderr_console() -> Console:
    """A console on stderr, for progress bars."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def key_value_lines(rows: Sequence[tuple[str, str]], *, indent: int = 2) -> list[str]:
    """Aligned ``label  value`` lines; labels and values escaped with :func:`printable`."""
    if not rows:
        return []
    labels = [printable(label) for label, _ in rows]
    width = max(len(label) for label in labels)
    pad = " " * indent
    return [
        f"{pad}{label:<{width}}  {printable(value)}"
        for label, (_, value) in zip(labels, rows, strict=True)
    ]


def print_lines(lines: Iterable[str]) -> None:
    """Write human output lines to stdout (callers escape untrusted parts)."""
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def format_bytes(count: int) -> str:
    """``3,145,728 bytes (3.0 MiB)``; small sizes without the binary-unit part."""
    if count < 1024:
        return f"{count:,} bytes"
    size = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if size < 1024 or unit == "PiB":
            break
    return f"{count:,} bytes ({size:.1f} {unit})"


def format_seconds(seconds: float) -> str:
    """A duration for people: ``12.3 ms`` or ``1.42 s``."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def format_time(unix_seconds: int) -> str:
    """``1800000000 (2027-01-15T08:00:00Z)``."""
    try:
        moment = datetime.fromtimestamp(unix_seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(unix_seconds)
    return f"{unix_seconds} ({moment.strftime('%Y-%m-%dT%H:%M:%SZ')})"


def progress_wanted(total_bytes: int, *, json_output: bool) -> bool:
    """Show a progress bar: large input, a person watching stderr, not ``--json``."""
    if json_output or total_bytes <= PROGRESS_THRESHOLD_BYTES:
        return False
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except ValueError:  # a closed stream
        return False


@contextmanager
def transfer_progress(
    description: str, total_bytes: int, *, enabled: bool, console: Console | None = None
) -> Iterator[ProgressCallback | None]:
    """A transient rich progress bar fed by the envelope's per-segment ``progress`` callback.

    Yields the callback to pass to :func:`~modelseal.envelope.seal_file` or
    :func:`~modelseal.envelope.open_file`, or ``None`` when ``enabled`` is false.
    """
    if not enabled:
        yield None
        return
    with byte_progress(description, total_bytes, console=console) as update:

        def advance(done_bytes: int) -> None:
            update(advance=done_bytes)

        yield advance


@contextmanager
def byte_progress(
    description: str, total_bytes: int | None = None, *, console: Console | None = None
) -> Iterator[Callable[..., None]]:
    """A transient rich progress bar counting bytes, with speed and time left (stderr by default).

    Yields its one task's ``update(**fields)`` (:meth:`rich.progress.Progress.update`:
    ``advance=``, ``completed=``, ``total=``); ``total_bytes`` None means not yet known.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or stderr_console(), transient=True) as progress:
        task = progress.add_task(description, total=total_bytes)

        def update(**fields: Any) -> None:
            progress.update(task, **fields)

        yield update
