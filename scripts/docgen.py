"""What the generated docs share: write the file, or with --check say whether it is current."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(out: Path, text: str, script: str) -> int:
    """Write ``text`` to ``out``; with ``--check`` in argv, return 1 if ``out`` differs instead."""
    if "--check" in sys.argv:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"docs/{out.name} is out of date: run python scripts/{script}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding="utf-8")
    return 0
