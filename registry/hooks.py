"""Git hooks: pre-commit refuses bad migrations, post-commit registers new ones.

Run as ``python -m registry.hooks pre-commit|post-commit`` (the scripts in ``hooks/``
do exactly that). The import path is kept lean (no typer, rich, dulwich or
sqlite-utils of our own; Git is asked through ``git`` itself) so that registering one
new migration after a commit takes well under 0.3 s including interpreter start-up.

pre-commit checks every staged migration candidate: it must parse (UTF-8, not binary,
not a symlink, a module that parses, the migration parser's rules); a file in the
canonical folder (``[project] migrations``, default ``migrations/``) must also have a
canonical name ``YYYYMMDD_HHMMSS_<type>_<description>.<ext>`` and a header whose ``ID``
(if present) equals its name and whose ``Version`` is semver. Exit 1 with the reasons.

post-commit registers the commit's added or modified migrations in the registry log
(``register`` statements, then a checkpoint), exactly as ``mreg scan`` would.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HOOKS = ("pre-commit", "post-commit")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def _git(root: Path, *args: str, data: bool = False):
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True)
    return out.stdout if data else out.stdout.decode("utf-8", "surrogateescape")


def _changes(root: Path, args: list[str]) -> list[tuple[str, str]]:
    """``(status, path)`` from ``git diff --name-status -z`` output (renames give the new path)."""
    raw = _git(root, *args, "-z").split("\0")
    out = []
    i = 0
    while i < len(raw) - 1:
        status = raw[i]
        if status[:1] in ("R", "C"):
            out.append((status[:1], raw[i + 2]))
            i += 3
        else:
            out.append((status[:1], raw[i + 1]))
            i += 2
    return out


# -- pre-commit -----------------------------------------------------------------------

def check_staged(cfg) -> list[str]:
    """Reasons to refuse the staged migrations (empty: accept)."""
    from registry.discovery import rules
    from registry.discovery.inspect import inspect

    root = Path(cfg.root)
    scope = rules.Scope.from_config(cfg)
    canonical_dir = _rel(root, Path(cfg.migrations.value))
    problems = []
    for status, path in _changes(root, ["diff", "--cached", "--name-status", "--diff-filter=ACMR"]):
        in_canonical = canonical_dir is not None and path.startswith(canonical_dir + "/")
        naming = scope.candidate(path) or (rules.naming(path) if in_canonical else None)
        if naming is None:
            continue
        unsafe = rules.unsafe_path(path)
        if unsafe:
            problems.append(f"{path}: {unsafe}")
            continue
        mode = _git(root, "ls-files", "-s", "--", path).split(" ", 1)[0]
        data = _git(root, "show", f":{path}", data=True)
        parsed = inspect(path, data, naming, symlink=(mode == "120000"))
        if parsed.get("error"):
            err = parsed["error"]
            at = f":{err['line']}" if err.get("line") else ""
            problems.append(f"{path}{at}: {err['message']}")
            continue
        if not parsed.get("migration"):
            continue
        if in_canonical:
            problems.extend(_canonical_rules(path, naming, parsed))
    return problems


def _canonical_rules(path: str, naming, parsed: dict) -> list[str]:
    out = []
    stem = path.rpartition("/")[2].rpartition(".")[0]
    if naming.scheme != "canonical":
        out.append(f"{path}: not a canonical name; expected YYYYMMDD_HHMMSS_<schema|data|security|perf>_"
                   f"<description>.<ext> (`mreg new` writes one)")
        return out
    if parsed.get("declared_id") and parsed["declared_id"] != stem:
        out.append(f"{path}: header ID {parsed['declared_id']!r} differs from the file name {stem!r}")
    version = parsed.get("version")
    if not version:
        out.append(f"{path}: header has no Version: (semver X.Y.Z)")
    elif not SEMVER.match(str(version)):
        out.append(f"{path}: header Version {version!r} is not semver X.Y.Z")
    return out


def _rel(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


# -- post-commit ----------------------------------------------------------------------

def commit_records(cfg, rev: str = "HEAD") -> tuple[list[dict], list[dict]]:
    """Scan records for the migrations ``rev`` added or changed, and parse errors."""
    import sqlite3

    from registry import catalog
    from registry.discovery import rules
    from registry.discovery.findings import finding
    from registry.discovery.inspect import inspect, record_fields
    from registry.discovery.lineage import migration_id

    root = Path(cfg.root)
    scope = rules.Scope.from_config(cfg)
    sha, author, when = _git(root, "log", "-1", "--format=%H%x00%an <%ae>%x00%at", rev).strip().split("\0")
    date = datetime.fromtimestamp(int(when), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = _changes(root, ["diff-tree", "--root", "--no-commit-id", "-r", "-M", "--name-status", rev])
    wanted = [p for st, p in changed if st != "D"]
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        rows = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows.update({r[1]: (r[0], r[2]) for r in conn.execute(
                f"SELECT id, path, record FROM migrations WHERE path IN ({','.join('?' * len(chunk))})", chunk)})
        taken = {r[0] for r in conn.execute("SELECT id FROM migrations")}
    except sqlite3.Error:
        rows, taken = {}, set()
    finally:
        conn.close()
    records, errors = [], []
    for status, path in changed:
        if status == "D":
            continue
        naming = scope.candidate(path)
        if naming is None:
            continue
        mode = _git(root, "ls-tree", rev, "--", path).split(" ", 1)[0]
        data = _git(root, "show", f"{rev}:{path}", data=True)
        # Canonical files take their type from the name: no full parse needed (pre-commit ran it).
        # Legacy files are parsed exactly as the scan does, so both give the same id.
        parsed = inspect(path, data, naming, symlink=(mode == "120000"), check=naming.scheme != "canonical")
        if parsed.get("error"):
            errors.append(finding("parse_error", [path], f"{path}: {parsed['error']['message']}"))
            continue
        if not parsed.get("migration"):
            continue
        import json

        revision = {"sha": sha, "date": date, "checksum": parsed["checksum"]}
        if path in rows:  # a registered migration changed: a new revision, same id
            mid, rec_text = rows[path]
            rec = json.loads(rec_text)
            if any(r.get("sha") == sha for r in rec.get("revisions") or []):
                continue
            rec["revisions"] = list(rec.get("revisions") or []) + [revision]
            rec.update(id=mid, checksum=parsed["checksum"], content=parsed.get("content"))
            records.append(rec)
            continue
        mid = migration_id(path, naming, parsed.get("type"), int(when), taken)
        records.append({
            "id": mid, "path": path, "paths": [path], "scheme": naming.scheme, "status": "active",
            "first_commit": {"sha": sha, "author": author, "date": date}, "revisions": [revision],
            "renames": [], "deleted": None, "kind": naming.kind,
            **record_fields(parsed, naming.version, naming.description),
        })
    return records, errors


def post_commit(cfg, rev: str = "HEAD"):
    from registry.registration import register_records

    records, errors = commit_records(cfg, rev)
    if not records:
        return None
    contents = [(r["checksum"], r["content"]) for r in records if r.get("content")]
    # Findings are recomputed by the next `mreg scan` (keeps the hook fast).
    return register_records(cfg, records, contents=contents, findings=False)


# -- install --------------------------------------------------------------------------

def scripts_dir() -> Path:
    """The repository's ``hooks/`` folder with the thin hook scripts."""
    return Path(__file__).resolve().parents[1] / "hooks"


def install(cfg, *, force: bool = False) -> list[Path]:
    """Write ``.git/hooks/pre-commit`` and ``post-commit`` calling this module with this Python."""
    from registry.errors import ConfigError

    root = Path(cfg.root)
    git_dir = Path(_git(root, "rev-parse", "--git-path", "hooks").strip())
    hooks_dir = git_dir if git_dir.is_absolute() else root / git_dir
    hooks_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in HOOKS:
        target = hooks_dir / name
        if target.exists() and not force and "registry.hooks" not in target.read_text(errors="replace"):
            raise ConfigError(f"{target} exists and is not an mreg hook", path=str(target),
                              hint="pass --force to replace it, or call `python -m registry.hooks "
                                   f"{name}` from your own hook")
        target.write_text(hook_script(name), encoding="utf-8")
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(target)
    return written


def hook_script(name: str) -> str:
    python = os.environ.get("MREG_PYTHON") or sys.executable
    return (f"#!/bin/sh\n# mreg {name} hook (installed by `mreg hooks install`)\n"
            f"exec \"${{MREG_PYTHON:-{python}}}\" -m registry.hooks {name} \"$@\"\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in HOOKS:
        print(f"usage: python -m registry.hooks {{{'|'.join(HOOKS)}}}", file=sys.stderr)
        return 2
    from ledger.errors import LedgerError
    from registry import config
    from registry.errors import MregError

    try:
        cfg = config.load()
        if argv[0] == "pre-commit":
            problems = check_staged(cfg)
            for p in problems:
                print(f"mreg pre-commit: {p}", file=sys.stderr)
            if problems:
                print("mreg pre-commit: commit refused (fix the files above, or `git commit --no-verify`)",
                      file=sys.stderr)
                return 1
            return 0
        done = post_commit(cfg)
        if done is not None and (done.registered or done.updated):
            print(f"mreg: registered {', '.join(done.registered + done.updated)}", file=sys.stderr)
        return 0
    except (MregError, LedgerError) as exc:
        print(f"mreg {argv[0]}: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1 if argv[0] == "pre-commit" else 0


if __name__ == "__main__":
    sys.exit(main())
