"""The README stays true: its config reference is the one generated from the code, its configs exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_config_reference_matches_the_code():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    section = re.search(
        r"<!-- config-reference:start.*?-->\n(.*?)\n<!-- config-reference:end -->", README, re.S
    )
    assert section is not None
    assert section.group(1).strip() == generated, (
        "run `python scripts/config_reference.py` and paste its output"
    )


def test_every_config_file_mentioned_exists():
    for name in set(re.findall(r"configs/[\w.-]+\.yaml", README)):
        assert (ROOT / name).exists(), name
