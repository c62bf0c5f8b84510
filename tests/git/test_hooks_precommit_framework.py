""".pre-commit-hooks.yaml: valid for the pre-commit framework, and its entries run under it with real commits."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from registry import config
from registry.parse import EXTENSIONS
from registry.registration import list_migrations
from tests.git import seedrepo
from tests.git.test_hooks import add, canonical

MANIFEST = Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml"


def pre_commit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, capture_output=True, text=True)


def test_the_manifest_is_valid_and_shaped_for_the_two_stages():
    out = pre_commit("validate-manifest", str(MANIFEST))
    assert out.returncode == 0, out.stdout + out.stderr
    hooks = {h["id"]: h for h in yaml.safe_load(MANIFEST.read_text())}
    check, register = hooks["mreg-check"], hooks["mreg-register"]
    assert check["entry"] == "python -m registry.hooks pre-commit" and check["language"] == "python"
    assert check["stages"] == ["pre-commit"] and check["pass_filenames"] is False
    assert register["entry"] == "python -m registry.hooks post-commit" and register["language"] == "python"
    assert register["stages"] == ["post-commit"] and register["always_run"] is True  # post-commit has no files
    files = re.compile(check["files"])
    assert all(files.search(f"db/migrations/x.{ext}") for ext in EXTENSIONS)
    assert not any(files.search(p) for p in ("README.md", "package.json", "migrations/notes.txt"))


def test_the_framework_runs_the_entries_on_real_commits(empty_project):
    """The manifest's hooks, as a local config (language system: this interpreter instead of a virtualenv
    the framework would build from PyPI), installed by `pre-commit install` and run by `git commit`."""
    root = empty_project.root
    seedrepo.git(root, "config", "--unset", "core.hooksPath")  # the framework refuses to install with it set
    hooks = []
    for hook in yaml.safe_load(MANIFEST.read_text()):
        entry = hook["entry"].split(" ", 1)
        assert entry[0] == "python"
        hooks.append({**hook, "language": "system", "entry": f"{shlex.quote(sys.executable)} {entry[1]}"})
    (root / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}))
    seedrepo.git(root, "add", ".pre-commit-config.yaml")
    seedrepo.git(root, "commit", "-q", "-m", "pre-commit config")
    out = pre_commit("install", "--hook-type", "pre-commit", "--hook-type", "post-commit", cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr

    head = seedrepo.git(root, "rev-parse", "HEAD")
    rel = "migrations/20251121_100000_schema_add_widgets.sql"
    add(root, rel, canonical("20251121_100000_schema_add_widgets", body="CREATE TABLE (;"))
    refused = subprocess.run(["git", "-C", str(root), "commit", "-m", "broken"], capture_output=True, text=True)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "mreg check staged migrations" in text and "Failed" in text
    assert f"{rel}:11: [sql] SQL syntax error" in text and "fix: fix the statement" in text
    assert seedrepo.git(root, "rev-parse", "HEAD") == head

    add(root, rel, canonical("20251121_100000_schema_add_widgets"))
    done = subprocess.run(["git", "-C", str(root), "commit", "-m", "widgets"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mreg register the commit's migrations" in done.stdout + done.stderr
    assert [m["id"] for m in list_migrations(config.load())] == ["20251121_100000_schema_add_widgets"]

    (root / "README.md").write_text("y\n")
    seedrepo.git(root, "add", "README.md")
    skipped = subprocess.run(["git", "-C", str(root), "commit", "-m", "readme"], capture_output=True, text=True)
    assert skipped.returncode == 0
    assert re.search(r"mreg check staged migrations\.+\(no files to check\)Skipped", skipped.stdout + skipped.stderr)
