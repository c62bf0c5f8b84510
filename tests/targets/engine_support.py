"""Helpers for the engine's tests: a throw-away mreg project pointed at real servers.

Not a test module: imported by ``test_engine_*.py``, ``test_crash_*.py`` and the CLI tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]
MREG = [sys.executable, "-m", "registry.cli.main"]


class Project:
    """A project root with an mreg.toml, a trusted signing key and a migrations folder."""

    def __init__(self, root: Path, targets: dict[str, tuple[str, str]], *, tenants: dict | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "migrations").mkdir(exist_ok=True)
        lines = ['[project]', 'name = "t"', '']
        for name, (kind, url) in targets.items():
            lines += [f"[targets.{name}]", f'type = "{kind}"', f'url = "{url}"']
            if tenants and name in tenants:
                lines.append("tenants = [" + ", ".join(f'"{t}"' for t in tenants[name]) + "]")
            lines.append("")
        (root / "mreg.toml").write_text("\n".join(lines))
        self.env = dict(os.environ)
        self.env.update({"MREG_ROOT": str(root), "MREG_CATALOG": str(root / "catalog.db"),
                         "MREG_KEY": str(root.parent / f"{root.name}.key"), "PYTHONPATH": str(REPO)})
        self.env.pop("MREG_CONFIG", None)
        code, out, err = self.run("keys", "generate", "--principal", "ops@example.com")
        assert code == 0, err

    def write(self, rel: str, text: str) -> Path:
        path = self.root / "migrations" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def copy_examples(self, database: str) -> None:
        shutil.copytree(REPO / "migrations" / database, self.root / "migrations" / database, dirs_exist_ok=True)

    def run(self, *args: str, timeout: float = 120) -> tuple[int, str, str]:
        """Run the CLI in a subprocess; return (exit code, stdout, stderr)."""
        proc = subprocess.run([*MREG, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        return proc.returncode, proc.stdout, proc.stderr

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*MREG, *args], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def json(self, *args: str) -> dict:
        code, out, err = self.run(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    def statements(self, target: str) -> list[dict]:
        """The target's log as catalog.db holds it (after an apply or a sync)."""
        from ledger.log import parse_leaf
        from ledger.store import LedgerStore

        with LedgerStore(self.env["MREG_CATALOG"]) as store:
            return [parse_leaf(leaf).statement for leaf in store.leaves(f"t/{target}")]


def events(statements: list[dict], mid: str | None = None, kind: str | None = None) -> list[dict]:
    return [s for s in statements if (mid is None or (s.get("migration") or {}).get("id") == mid)
            and (kind is None or s["type"] == kind)]


def pg_rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def mirror_events(dsn: str) -> list[tuple]:
    return pg_rows(dsn, "SELECT seq, event_type, migration_id, metadata FROM schema_versions ORDER BY seq")
