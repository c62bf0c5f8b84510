"""The import direction ledger <- registry <- CLI holds (STYLE.md, SPEC §1)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_LEDGER = ("registry", "dulwich", "psycopg", "neo4j", "redis", "sqlite_utils_never", "typer", "rich")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_ledger_imports_no_git_no_driver_no_registry():
    for path in (ROOT / "ledger").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN_IN_LEDGER, f"{path.relative_to(ROOT)} imports {name}"


def test_nothing_outside_the_cli_imports_the_cli():
    for path in (ROOT / "registry").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "registry").parts:
            continue
        for name in _imports(path):
            assert not name.startswith("registry.cli"), f"{path.relative_to(ROOT)} imports {name}"


def test_help_imports_no_driver():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from registry.cli.main import app\n"
        "heavy = [m for m in ('psycopg', 'neo4j', 'redis', 'datasette', 'dulwich', 'pglast', 'sqlite_utils')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`mreg --help` imports {out.stdout.strip()}"
