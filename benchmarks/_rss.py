"""Process memory and machine-load probes for benchmarks (Linux ``/proc`` only).

A benchmark that wants the peak memory of one operation runs it in a fresh interpreter and reads
:func:`peak_rss_kib` at the end; subtracting the same reading from a child that only imported the
same modules leaves what the operation itself added. :func:`cpu_busy_seconds` lets a benchmark
tell whether something else on the machine was using the CPU while it measured.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

__all__ = [
    "cpu_busy_seconds",
    "own_cpu_seconds",
    "peak_rss_kib",
    "wait_until_quiet",
]

_USER_HZ = os.sysconf("SC_CLK_TCK")


def peak_rss_kib() -> int:
    """Return this process's peak resident set size so far (``VmHWM``), in KiB.

    Returns:
        The ``VmHWM`` line of ``/proc/self/status``.

    Raises:
        RuntimeError: The kernel did not report ``VmHWM``.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no VmHWM line")


def own_cpu_seconds() -> tuple[float, float]:
    """Return (user, user + system) CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = own.ru_utime + kids.ru_utime
    return user, user + own.ru_stime + kids.ru_stime


def cpu_busy_seconds() -> tuple[float, float]:
    """Return (user, busy) CPU seconds the whole machine has spent since boot, over all CPUs.

    From the ``cpu`` line of ``/proc/stat``: *user* is the user and nice states, *busy* every
    state except idle and iowait. The difference of two readings minus :func:`own_cpu_seconds`
    over the same interval is CPU time others took meanwhile. The *busy* part also counts kernel
    threads and interrupts working for us (page-cache writeback, disk completions), so *user* is
    the cleaner sign of another program running. Resolution is one clock tick (10 ms).
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    if fields[0] != "cpu":
        raise RuntimeError("/proc/stat does not start with the aggregate cpu line")
    ticks = [int(v) for v in fields[1:]]
    user, nice, idle, iowait = ticks[0], ticks[1], ticks[3], ticks[4]
    # Fields 9 and 10 (guest, guest_nice) are already included in user and nice.
    busy = sum(ticks[:8]) - idle - iowait
    return (user + nice) / _USER_HZ, busy / _USER_HZ


def wait_until_quiet(
    max_wait_seconds: float, *, window_seconds: float = 0.5, busy_fraction: float = 0.10
) -> float:
    """Wait until the machine is idle for one window, so a measurement does not share the CPUs.

    Idle means all CPUs together were busy less than ``busy_fraction`` of ``window_seconds``.
    The caller should itself be idle while it waits.

    Args:
        max_wait_seconds: Give up and return after this long.
        window_seconds: Length of each sample.
        busy_fraction: Threshold, as a fraction of all CPUs.

    Returns:
        Seconds waited; at least one window, more than ``max_wait_seconds`` if it gave up.
    """
    cpus = os.cpu_count() or 1
    start = time.monotonic()
    while True:
        before = cpu_busy_seconds()[1]
        time.sleep(window_seconds)
        busy = cpu_busy_seconds()[1] - before
        waited = time.monotonic() - start
        if busy < busy_fraction * window_seconds * cpus or waited > max_wait_seconds:
            return waited
