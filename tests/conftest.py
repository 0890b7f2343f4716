"""Suite-wide test policy, and the one SoftHSM2 of a test process.

A skipped test is a test that did not run. Under CI (``CI`` set), any skip fails
the session, so a missing package or service can never pass as green.

SoftHSM2 reads ``SOFTHSM2_CONF`` and scans its token directory once, when a process
first loads the module; tokens made afterwards, or another config, stay invisible
to that process. So each test process gets one SoftHSM2, made on first use with
every token any test needs (one label per area), and keeps it loaded until the
session ends, whatever order pytest-xdist hands the tests out in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pkcs11
import pytest

from tests.softhsm import SoftHSM, create_softhsm

# Every token label a test uses; a label belongs to one area of the suite.
SOFTHSM_TOKENS = (
    "modelseal-test",  # tests/unit: the main token
    "modelseal-spare",  # tests/unit: never logged in to (wrong-PIN tests)
    "modelseal-keys",  # tests/keyservice
    "modelseal-keys-http",  # tests/keyservice, servers in subprocesses
    "modelseal-audit",  # tests/audit
)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """This process's SoftHSM2: its own config, and a fresh token per label."""
    hsm = create_softhsm(tmp_path_factory.mktemp("softhsm"), SOFTHSM_TOKENS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(hsm.conf))
        yield hsm
    # Finalise and unload SoftHSM2 now, while OpenSSL is still alive. Left to the exit
    # handlers, SoftHSM2's static destructors can run after OpenSSL's own clean-up and
    # crash or hang the process (SoftHSMv2 issues #548, #635).
    pkcs11.unload(os.path.realpath(hsm.module))


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
