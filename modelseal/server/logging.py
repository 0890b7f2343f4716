"""Structured JSON logs with a redaction processor.

Everything logged, structlog events and stdlib records alike (uvicorn, SQLAlchemy,
Alembic), passes :func:`redact` last before rendering: link tokens, ``ms_`` API
tokens, JWTs and ``Authorization``/``Bearer`` values are replaced, wherever they
appear (messages, fields, exception text). Request logs carry the route template,
never the raw path, which may hold a link token.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

__all__ = ["REDACTED", "configure_logging", "redact", "redact_text"]

REDACTED = "[REDACTED]"

_SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "token",
        "api_token",
        "link",
        "link_token",
        "password",
        "secret",
        "link_signing_key",
        "cookie",
        "set-cookie",
    }
)
_PATTERNS = (
    # JWTs and JWS compact serializations (three base64url parts, header starts '{"').
    re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    # Link tokens: base64url payload '.' base64url MAC (payload JSON starts '{"').
    re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{20,}"),
    # Any other long dotted base64url pair, in case a token's shape changes.
    re.compile(r"[A-Za-z0-9_-]{24,}\.[A-Za-z0-9_-]{24,}"),
    # API tokens ms_<token_id>_<secret>.
    re.compile(r"ms_[0-9A-Za-z]+_[A-Za-z0-9_-]+"),
    # Authorization header values.
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]+"),
)


def redact_text(text: str) -> str:
    """Replace anything in ``text`` that looks like a credential or link token."""
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        # Raw bytes in a log line are a bug (they might be a model); never render them.
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if str(k).lower() in _SENSITIVE_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: scrub every key and value of the event."""
    for key in list(event_dict):
        if key.lower() in _SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


# A standard stream named rather than given: looked up in ``sys`` at each write, so that
# logging follows a replaced ``sys.stderr`` (a test runner's capture, a closed pipe's
# replacement) instead of writing to a stream that has since been closed.
StandardStream = Literal["stdout", "stderr"]


def _resolve(stream: TextIO | StandardStream | None) -> TextIO:
    if stream is None:
        return sys.stdout
    if isinstance(stream, str):
        resolved: TextIO = getattr(sys, stream)
        return resolved
    return stream


class _StreamLoggerFactory:
    """Writes to a fixed stream, or to whatever ``sys.stdout``/``sys.stderr`` is at write time."""

    def __init__(self, stream: TextIO | StandardStream | None) -> None:
        self._stream = stream

    def __call__(self, *_args: Any) -> _LineWriter:
        return _LineWriter(self._stream)


class _StandardStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdlib handler writing to whatever ``sys.<name>`` is when each record arrives."""

    def __init__(self, name: StandardStream) -> None:
        # Not ``_name``: logging.Handler keeps the handler's own name there.
        self._standard_stream = name
        super().__init__()

    @property
    def stream(self) -> TextIO:
        resolved: TextIO = getattr(sys, self._standard_stream)
        return resolved

    @stream.setter
    def stream(self, _value: object) -> None:
        """StreamHandler assigns its stream; the name decides instead."""


class _LineWriter:
    def __init__(self, stream: TextIO | StandardStream | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = _resolve(self._stream)
        stream.write(message + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def configure_logging(stream: TextIO | StandardStream | None = None, level: str = "INFO") -> None:
    """Send structlog and stdlib logging, redacted and as JSON lines, to ``stream``.

    Args:
        stream: Destination: a stream, or ``"stdout"``/``"stderr"`` for whatever that
            standard stream is at the time of each write (None: ``"stdout"``).
        level: Minimum level of stdlib records (structlog events are all kept).
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        logger_factory=_StreamLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream)
        if stream is not None and not isinstance(stream, str)
        else _StandardStreamHandler(stream or "stdout")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_modelseal", False):
            root.removeHandler(existing)
    handler._modelseal = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # One request line comes from our middleware; uvicorn's access log would repeat
    # the raw path, which can hold a link token.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
