"""Git hooks: pre-commit refuses bad migrations, post-commit registers new ones.

Run as ``python -m registry.hooks pre-commit|post-commit`` (what ``mreg hooks install``
writes into ``.git/hooks``, what ``hooks/`` holds and what ``.pre-commit-hooks.yaml``
names). This module is the hooks' entry point and keeps their import path lean: no typer,
rich, click, dulwich or sqlite-utils; Git is asked through ``git`` itself (two processes
per hook: one ``diff``, one ``cat-file --batch``).

pre-commit reads every staged migration candidate the way ``mreg scan`` reads a file
(:func:`registry.discovery.inspect.inspect`, the full parser) and refuses the commit with
one problem per file: file, line, field, what is wrong and the fix. What it read (the
scan record's fields of each file) is kept in ``<git dir>/mreg/checked.json`` by path and
blob id, so that post-commit, moments later, imports neither the parser nor pglast: see
:mod:`registry.postcommit`.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

HOOKS = ("pre-commit", "post-commit")
LINK_MODE = "120000"
GITLINK_MODE = "160000"
CHECKED = "mreg/checked.json"  # under the git dir: what pre-commit read, for post-commit


class Entry:
    """One line of ``git diff --raw``: the status, the new mode and blob, the path."""

    __slots__ = ("status", "mode", "blob", "path")

    def __init__(self, status: str, mode: str, blob: str, path: str) -> None:
        self.status, self.mode, self.blob, self.path = status, mode, blob, path


class Problem:
    """Why pre-commit refuses one file: where (file, line, field), what, and the fix."""

    __slots__ = ("path", "line", "field", "message", "fix")

    def __init__(self, path: str, line: int, field: str, message: str, fix: str) -> None:
        self.path, self.line, self.field, self.message, self.fix = path, line, field, message, fix

    def __str__(self) -> str:
        at = f":{self.line}" if self.line else ""
        return f"{self.path}{at}: [{self.field}] {self.message}\n    fix: {self.fix}"


# -- Git, through `git` ---------------------------------------------------------------

def git(root: Path, *args: str, data: bool = False, stdin: bytes | None = None):
    out = subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True)
    if out.returncode != 0:
        from registry.errors import ConfigError

        raise ConfigError(f"git {' '.join(args[:2])} failed: {out.stderr.decode(errors='replace').strip()}",
                          hint="run the hook from inside the repository (`git rev-parse --show-toplevel`)")
    return out.stdout if data else out.stdout.decode("utf-8", "surrogateescape")


def raw_entries(out: bytes) -> list[Entry]:
    """Entries of ``git diff --raw -z --no-abbrev`` output (no renames: ``--no-renames``)."""
    fields = out.split(b"\0")
    entries = []
    i = 0
    while i + 1 < len(fields):
        head = fields[i].lstrip(b"\n")
        if not head.startswith(b":"):
            i += 1
            continue
        _old_mode, mode, _old_blob, blob, status = head[1:].decode().split(" ")
        entries.append(Entry(status[:1], mode, blob, fields[i + 1].decode("utf-8", "surrogateescape")))
        i += 2
    return entries


def read_blobs(root: Path, blobs: set[str]) -> dict[str, bytes]:
    """The bytes of ``blobs`` through one ``git cat-file --batch``."""
    if not blobs:
        return {}
    order = sorted(blobs)
    out = git(root, "cat-file", "--batch", data=True, stdin=("\n".join(order) + "\n").encode())
    found, pos = {}, 0
    for blob in order:
        end = out.index(b"\n", pos)
        head = out[pos:end].split(b" ")
        size = int(head[2])
        found[blob] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return found


def compiled_twins(root: Path, paths: list[str], rev: str | None = None) -> set[str]:
    """The ``x.js`` among ``paths`` whose ``x.ts`` stands beside them (in ``rev``, else in the index):
    compiled output, not migrations (``rules.is_compiled_twin``, as the scan applies it)."""
    siblings = {p.rpartition(".")[0] + ts: p for p in paths if p.lower().endswith((".js", ".mjs", ".cjs"))
                for ts in (".ts", ".mts", ".cts")}
    if not siblings:
        return set()
    from registry.discovery import rules

    args = ["ls-tree", "-r", "--name-only", "-z", rev] if rev else ["ls-files", "--cached", "-z"]
    present = set(git(root, *args, "--", *sorted(siblings)).split("\0"))
    return {p for p in paths if rules.is_compiled_twin(p, present)}


def git_path(root: Path, name: str) -> Path:
    """``name`` inside the repository's git dir (``.git`` without a process when it is a folder)."""
    dot = root / ".git"
    if dot.is_dir():
        return dot / name
    where = Path(git(root, "rev-parse", "--git-path", name).strip())
    return where if where.is_absolute() else root / where


# -- pre-commit -----------------------------------------------------------------------

def check_staged(cfg) -> tuple[list[Problem], dict]:
    """Problems with the staged migrations (empty: accept), and what was read (for post-commit)."""
    from registry.discovery import rules
    from registry.discovery.inspect import inspect, record_fields

    root = Path(cfg.root)
    scope = rules.Scope.from_config(cfg)
    canonical_dir = _rel(root, Path(cfg.migrations.value))
    staged = raw_entries(git(root, "diff", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames",
                             "--diff-filter=ACMT", data=True))
    problems: list[Problem] = []
    todo = []
    for e in staged:
        in_canonical = canonical_dir is not None and e.path.startswith(canonical_dir + "/")
        candidate = scope.candidate(e.path)
        naming = candidate or (rules.naming(e.path) if in_canonical else None)
        if naming is None or e.mode == GITLINK_MODE:
            continue
        unsafe = rules.unsafe_path(e.path)
        if unsafe:
            problems.append(Problem(e.path, 0, "path", unsafe, "rename the file to a plain relative path"))
            continue
        todo.append((e, naming, in_canonical, candidate is not None))
    twins = compiled_twins(root, [e.path for e, *_ in todo])
    todo = [t for t in todo if t[0].path not in twins]
    blobs = read_blobs(root, {e.blob for e, *_ in todo})
    checked = {}
    for e, naming, in_canonical, candidate in todo:
        data = blobs[e.blob]
        parsed = inspect(e.path, data, naming, symlink=(e.mode == LINK_MODE))
        if parsed.get("error"):
            problems.append(_parse_problem(e.path, data, parsed["error"], e.mode))
            continue
        if candidate:  # post-commit takes the scan record's fields from here
            checked[e.path] = {"blob": e.blob, "mode": e.mode, "migration": bool(parsed.get("migration")),
                               "naming": naming_dict(naming),
                               "fields": record_fields(parsed, naming.version, naming.description)}
        if parsed.get("migration") and in_canonical:
            problems.extend(_canonical_rules(e.path, naming, parsed, data))
    return problems, checked


def naming_dict(naming) -> dict:
    return {"scheme": naming.scheme, "version": naming.version, "description": naming.description,
            "kind": naming.kind}


def _parse_problem(path: str, data: bytes, error: dict, mode: str) -> Problem:
    """The parser's own words for a file it refuses: line, field and hint (its ``ParseError``)."""
    from registry.discovery import rules
    from registry.parse import ParseError, parse_migration

    message = error["message"]
    if mode == LINK_MODE:
        return Problem(path, 0, "mode", message, "commit the file itself (`git rm --cached` the link, copy the "
                                                 "target in, `git add` it)")
    if message.startswith("file is "):
        return Problem(path, 0, "size", message, "split the migration into smaller files")
    try:
        parse_migration(path, data, database=rules.database_from_path(path))
    except ParseError as exc:
        return Problem(path, int(exc.line or 0), exc.field or "file", exc.reason,
                       exc.hint or "see docs/migration-files.md for the format")
    return Problem(path, int(error.get("line") or 0), "file", message.partition("] ")[2] or message,
                   "see docs/migration-files.md for the format")


def _canonical_rules(path: str, naming, parsed: dict, data: bytes) -> list[Problem]:
    """The canonical folder's rules: a canonical name, a header ID equal to it, a semver Version."""
    stem = path.rpartition("/")[2].rpartition(".")[0]
    if naming.scheme != "canonical":
        return [Problem(path, 0, "name", "not a canonical name YYYYMMDD_HHMMSS_<schema|data|security|perf>_"
                                         "<description>.<ext>",
                        "`mreg new` writes one; or `git mv` the file to such a name")]
    lines = _header_lines(path, data, naming.kind)
    out = []
    declared = parsed.get("declared_id")
    if declared and declared != stem:
        out.append(Problem(path, lines.get("id", 0), "ID", f"header ID {declared!r} differs from the file name "
                                                           f"{stem!r}", f"write `ID: {stem}` (or rename the file)"))
    version = parsed.get("version")
    if not version:
        out.append(Problem(path, 1, "Version", "the header has no Version (semantic X.Y.Z)",
                           "add a `Version: 1.0.0` line to the header"))
    elif not _semver(str(version)):
        out.append(Problem(path, lines.get("version", 0), "Version", f"Version {version!r} is not semantic X.Y.Z",
                           "write a version such as 1.0.0"))
    return out


def _semver(v: str) -> bool:
    parts = v.split(".")
    return len(parts) == 3 and all(p.isdigit() and p.isascii() for p in parts)


def _header_lines(path: str, data: bytes, kind: str) -> dict[str, int]:
    """Header key -> line, for script files (modules have no header lines)."""
    if kind not in ("sql", "cypher", "redis"):
        return {}
    from registry.parse.sections import read_script

    text = data.decode("utf-8", "replace").lstrip("\ufeff").replace("\r\n", "\n")
    return {k: line for k, (_v, line) in read_script(path, text, kind).header.items()}


def _rel(root: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def save_checked(root: Path, checked: dict) -> None:
    """Keep what pre-commit read for post-commit (by path and blob; stale entries are harmless)."""
    import json

    target = git_path(root, CHECKED)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"v": 1, "files": checked}), encoding="utf-8")
    os.replace(tmp, target)


def pre_commit(cfg) -> list[Problem]:
    problems, checked = check_staged(cfg)
    if not problems:
        save_checked(Path(cfg.root), checked)
    return problems


# -- install --------------------------------------------------------------------------

def scripts_dir() -> Path:
    """The repository's ``hooks/`` folder with the thin hook scripts."""
    return Path(__file__).resolve().parents[1] / "hooks"


def install(cfg, *, force: bool = False) -> list[Path]:
    """Write ``pre-commit`` and ``post-commit`` into the hooks folder, calling this module with this Python."""
    from registry.errors import ConfigError

    root = Path(cfg.root)
    hooks_dir = _absolute(root, git(root, "rev-parse", "--git-path", "hooks").strip())
    cache = _absolute(root, git(root, "rev-parse", "--git-common-dir").strip()) / "mreg" / "pycache"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in HOOKS:
        target = hooks_dir / name
        if target.exists() and not force and "registry.hooks" not in target.read_text(errors="replace"):
            raise ConfigError(f"{target} exists and is not an mreg hook", path=str(target),
                              hint="pass --force to replace it, or call `python -m registry.hooks "
                                   f"{name}` from your own hook")
        target.write_text(hook_script(name, cache), encoding="utf-8")
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(target)
    return written


def _absolute(root: Path, where: str) -> Path:
    path = Path(where)
    return (path if path.is_absolute() else root / path).resolve()


def hook_script(name: str, cache: Path) -> str:
    """The hook: run this module with the Python that runs mreg (``MREG_PYTHON`` overrides it).

    With ``PYTHONDONTWRITEBYTECODE`` set, Python would compile every module the hook imports
    on every commit (about 0.08 s); the hook then keeps its bytecode in the git dir instead
    (``PYTHONPYCACHEPREFIX``), never beside the sources.
    """
    python = os.environ.get("MREG_PYTHON") or sys.executable
    if os.sep in python:  # a path (not a name looked up on PATH): the hook runs from the repository root
        python = os.path.abspath(python)
    return (f"#!/bin/sh\n# mreg {name} hook (installed by `mreg hooks install`)\n"
            f"if [ -n \"$PYTHONDONTWRITEBYTECODE\" ] && [ -z \"$PYTHONPYCACHEPREFIX\" ]; then\n"
            f"  PYTHONPYCACHEPREFIX='{cache}'; export PYTHONPYCACHEPREFIX; unset PYTHONDONTWRITEBYTECODE\n"
            f"fi\n"
            f"exec \"${{MREG_PYTHON:-{python}}}\" -m registry.hooks {name} \"$@\"\n")


# -- entry point ----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in HOOKS:
        print(f"usage: python -m registry.hooks {{{'|'.join(HOOKS)}}}", file=sys.stderr)
        return 2
    from ledger.errors import LedgerError
    from registry import config
    from registry.errors import MregError

    hook = argv[0]
    try:
        cfg = config.load()
        if hook == "pre-commit":
            problems = pre_commit(cfg)
            for p in problems:
                print(f"mreg pre-commit: {p}", file=sys.stderr)
            if problems:
                print(f"mreg pre-commit: commit refused ({len(problems)} problem{'s' * (len(problems) > 1)}); "
                      "fix the files, `git add` them and commit again", file=sys.stderr)
                return 1
            return 0
        from registry.postcommit import post_commit

        for line in post_commit(cfg):
            print(f"mreg: {line}", file=sys.stderr)
        return 0
    except (MregError, LedgerError) as exc:
        print(f"mreg {hook}: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1 if hook == "pre-commit" else 0


if __name__ == "__main__":
    import gc

    gc.disable()  # a short-lived process: reference counting frees what it makes; ~10% less CPU
    sys.exit(main())
