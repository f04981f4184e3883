"""docs/cells.md's table of cells is the one `scripts/cell_table.py` counts from the code."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cell_table_matches_the_code():
    page = (ROOT / "docs" / "cells.md").read_text(encoding="utf-8")
    # In this process rather than a subprocess: a second `import torch` costs seconds.
    generated = runpy.run_path(str(ROOT / "scripts" / "cell_table.py"))["cell_table"]()
    section = re.search(r"<!-- cell-table:start.*?-->\n(.*?)\n<!-- cell-table:end -->", page, re.S)
    assert section is not None
    assert section.group(1).strip() == generated, (
        "run `python scripts/cell_table.py` and paste its output into docs/cells.md"
    )
