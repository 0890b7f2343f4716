"""``modelseal demo`` as users run it: the installed command, a real process, its output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from modelseal.cli.demo_cmd import DEMO_STEPS

from .conftest import server_env

SCRIPT = Path(sys.executable).parent / "modelseal"


def test_the_demo_runs_the_whole_system_and_cleans_up(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    completed = subprocess.run(
        [str(SCRIPT), "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**server_env(), "TMPDIR": str(scratch), "COLUMNS": "200"},
        check=False,
    )
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    out = completed.stdout
    steps = re.findall(r"^  (\S+)\s", out, re.MULTILINE)
    assert steps == list(DEMO_STEPS), out
    assert re.search(r"^  downloaded .*\[[\d,]+ B, [\d.]+ m?s\]$", out, re.MULTILINE), out
    assert re.search(r"^  deleted .*0 objects left", out, re.MULTILINE), out
    assert re.search(r"^  scanned .*hold none of 16 plaintext pieces", out, re.MULTILINE), out
    samples = re.findall(r"#(\d+): true (\d) -> predicted (\d)", out)
    assert len(samples) == 8
    accuracy = re.search(r"^accuracy: ([\d.]+)% \((\d+)/(\d+)\)$", out, re.MULTILINE)
    assert accuracy is not None, out
    assert float(accuracy.group(1)) > 60.0
    assert int(accuracy.group(3)) == 450
    assert "temporary files removed" in out
    # The demo's temporary directory (server data, device files, log) is gone. Importing
    # onnxruntime writes $TMPDIR/.ses (its session id: a timestamp and a UUID).
    assert [p.name for p in scratch.iterdir() if p.name != ".ses"] == []
    assert "Traceback" not in completed.stderr
