"""Rendering helpers shared by the command modules: JSON, tables, messages."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on standard output (for ``--json``)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a rich table on standard output."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    Console().print(t)


def say(message: str) -> None:
    print(message)


def warn(message: str) -> None:
    print(f"mreg: warning: {message}", file=sys.stderr)
