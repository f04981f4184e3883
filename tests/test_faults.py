"""SIGKILL at random moments never leaves an unloadable checkpoint (a short run of the fault script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fault_injection.py"


def test_sigkill_loop_leaves_resumable_checkpoints():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "3", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3 kills, 3 resumable checkpoints"
