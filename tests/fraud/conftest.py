"""Helpers shared by the anti-fraud engine tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from modelseal.fraud.events import APP_EVENT_TYPES, FraudEvent
from modelseal.fraud.rules import Condition

NOW = 1_800_000_000
_ids = itertools.count(1)


def source_of(type_: str) -> str:
    """The source that can report ``type_``."""
    return "app" if type_ in APP_EVENT_TYPES else "server"


def ev(
    type_: str,
    at: int = NOW,
    *,
    id: int | None = None,
    source: str | None = None,
    device_id: str | None = "dev-1",
    user_id: int = 1,
    details: Mapping[str, Any] | None = None,
    **more: Any,
) -> FraudEvent:
    """One event with a fresh id (unless given) and the natural source of its type.

    Its details are ``details`` and the other keyword arguments.
    """
    return FraudEvent(
        id=next(_ids) if id is None else id,
        type=type_,
        at=at,
        source=source_of(type_) if source is None else source,
        user_id=user_id,
        device_id=device_id,
        details={**(details or {}), **more},
    )


def satisfy(
    cond: Condition, end: int, *, count: int | None = None, span: int | None = None
) -> list[FraudEvent]:
    """Events that make ``cond`` hold, the latest at ``end``.

    Args:
        cond: The condition.
        end: Time of the last event.
        count: Events (or distinct values) to make; default ``cond.min_count``.
        span: Seconds between the first and the last event; default the widest span that
            still fits the window (``window - 1``), or 0 without a window.
    """
    n = cond.min_count if count is None else count
    if span is None:
        span = 0 if cond.window_seconds is None else cond.window_seconds - 1
    type_ = cond.types[0]
    where = dict(cond.where)
    out = []
    for i, at in enumerate(_spread(end, span, n)):
        details: dict[str, Any] = dict(where)
        device = "dev-1"
        if cond.distinct == "device_id":
            device = f"dev-{i}"
        elif cond.distinct is not None:
            details[cond.distinct.removeprefix("details.")] = f"value-{i}"
        out.append(ev(type_, at, device_id=device, details=details))
    return out


def _spread(end: int, span: int, n: int) -> Iterator[int]:
    if n <= 0:
        return
    if n == 1:
        yield end
        return
    for i in range(n):
        yield end - span + (span * i) // (n - 1)
