"""Suite-wide test policy.

A skipped test is a test that did not run. Under CI (``CI`` set), any skip fails
the session, so a missing package or service can never pass as green.
"""

from __future__ import annotations

import os

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not os.environ.get("CI"):
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(
            f"CI policy: {len(skipped)} test(s) skipped; every test must run in CI.", red=True
        )
        for report in skipped:
            reporter.write_line(f"  skipped: {report.nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
