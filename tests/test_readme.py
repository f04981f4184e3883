"""The README and docs/ stay true: the config reference is the one generated from the code, and the configs
they name exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_config_reference_matches_the_code():
    generated = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = re.search(
        r"<!-- config-reference:start.*?-->\n(.*?)\n<!-- config-reference:end -->", page, re.S
    )
    assert section is not None
    assert section.group(1).strip() == generated, (
        "run `python scripts/config_reference.py` and paste its output into docs/configuration.md"
    )


def test_every_config_file_mentioned_exists():
    for page in PAGES:
        for name in set(re.findall(r"configs/[\w.-]+\.yaml", page.read_text(encoding="utf-8"))):
            assert (ROOT / name).exists(), f"{page.relative_to(ROOT)} names {name}"
