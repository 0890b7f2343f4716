"""The clock the server reads time from; injectable so tests can move it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Unix time in seconds."""

    def __call__(self) -> float:
        """Return the current Unix time."""
        ...


class SystemClock:
    """The wall clock."""

    def __call__(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: float | None = None) -> None:
        """Start at ``start`` (default: now)."""
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        """Return the current manual time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds
