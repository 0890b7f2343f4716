"""``modelseal demo --scenario scraper`` as users run it (slow: a real server, ~1 minute)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import server_env

SCRIPT = Path(sys.executable).parent / "modelseal"


@pytest.mark.slow
def test_the_scraper_demo_shows_ok_then_suspicious_then_malicious(tmp_path: Path) -> None:
    completed = subprocess.run(
        [str(SCRIPT), "demo", "--scenario", "scraper"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**server_env(), "TMPDIR": str(tmp_path), "COLUMNS": "200"},
        check=False,
    )
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    out = completed.stdout
    verdicts = re.findall(r"^verdict\s+(\w+)", out, re.MULTILINE)
    assert verdicts[0] == "ok"
    assert verdicts[-1] == "malicious"
    assert "suspicious" in verdicts
    assert re.search(r"^verdict\s+malicious .*honey_token_used \[stop\]", out, re.MULTILINE)
    assert "429 quota_exceeded" in out
    assert "429 rate_limited" in out
    assert re.search(r"a link minted before the block\) -> 403 account_blocked", out)
    assert "scraper obtained 3 IMLs" in out
