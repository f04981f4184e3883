"""Print the Markdown table of every config key, its default and its meaning (for docs/configuration.md).

    python scripts/config_reference.py

The table is generated from the typed sections in `lmtrain/config.py`, so the reference cannot drift
from the code: `tests/test_readme.py` checks that docs/configuration.md holds exactly this output.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel

from lmtrain.config import Config


def type_name(annotation) -> str:
    """`int`, `float or null`, `rnn | gru | lstm`, ... for a field's annotation."""
    args = get_args(annotation)
    if args and all(isinstance(arg, str) for arg in args):
        return " \\| ".join(f"`{arg}`" for arg in args)
    if args:
        names = [type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    return "path" if annotation is Path else getattr(annotation, "__name__", str(annotation))


def yaml_value(value) -> str:
    """A default as it would be written in YAML: `null`, `true`, `0.002`, `runs/default`."""
    return (
        yaml.safe_dump(value if not isinstance(value, Path) else str(value)).removesuffix("\n...\n").strip()
    )


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.extend(rows(annotation, f"{prefix}{name}."))
            continue
        default = "required" if field.is_required() else f"`{yaml_value(field.get_default())}`"
        lines.append(f"| `{prefix}{name}` | {type_name(annotation)} | {default} | {field.description} |")
    return lines


def reference_table() -> str:
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *rows(Config)])


if __name__ == "__main__":
    print(reference_table())
