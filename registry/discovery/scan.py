"""The scan: Git history (incremental), then the working tree, then migrations and findings.

:func:`discover` is a generator: it yields :class:`Progress` records while it works and
finally one :class:`ScanResult`. It remembers what it scanned in catalog.db
(``registry.discovery.store``), so the next scan walks only new commits.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from registry.discovery import findings as findings_mod
from registry.discovery import rules, store
from registry.discovery.history import Objects, diff, walk
from registry.discovery.inspect import inspect, record_fields
from registry.discovery.lineage import Lineage, State, iso, migration_id, parse_key

PROGRESS_EVERY = 250
PREFETCH_COMMITS = 500  # a shorter walk parses in place (a pool's start-up would not pay)
EARLY_FILES = 256  # a first scan whose refs hold this many files parses them in the pool during the walk
AHEAD = 400  # commits diffed ahead of the lineage code at most, waiting for parses
AHEAD_GIT = 2000  # likewise when Git compares the trees (the pool then parses and checksums only)


@dataclass
class Progress:
    """``done`` of ``total`` units of ``stage`` (``commits`` or ``files``) are finished."""

    stage: str
    done: int
    total: int
    detail: str = ""


@dataclass
class ScanResult:
    migrations: list[dict]
    findings: list[dict]
    new_commits: int = 0
    refs: dict[str, str] = field(default_factory=dict)
    changed: set[str] | None = None  # ids whose lineage changed in this scan (None: unknown, treat all)
    objects_read: int = 0
    seconds: float = 0.0


def is_repository(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def discover(root: Path, catalog: Path, scope: rules.Scope, *, rev: str | None = None,
             all_refs: bool = False, full: bool = False, worktree: bool = True,
             accepted: set[str] | frozenset = frozenset(), ahead=None) -> Iterator[Progress | ScanResult]:
    """Scan the repository (or plain folder) at ``root``; see the module docstring.

    ``ahead(migrations, changed, pool, close)``, when the scan used a pool of worker processes, is
    called as soon as the migrations are known, before the scan's state is saved, so that work
    on them can start in the pool meanwhile; the pool is then the callee's to end (``close()``).
    """
    started = time.perf_counter()
    conn = store.connect(catalog)
    try:
        if full:
            store.reset(conn)
        store.ensure_root(conn, root)
        state = store.load(conn)
        heads: dict[str, str] = {}
        reads = 0
        new = 0
        if is_repository(root):
            objects = Objects(str(root))
            git = None  # a registry.discovery.gitdiff.GitDiffs while Git compares trees
            try:
                heads = objects.ref_heads(all_refs, rev)
                early = _prefetch_heads(objects, state, scope, heads) if not state.refs else None
                commits = walk(objects, list(heads.values()), state.commits)
                new = len(commits)
                prefetch = early or _prefetch(objects, state, new)
                lines = Lines(state, objects, scope, commits, heads)
                trees = {c.sha: c.tree for c in commits}
                pending: deque = deque()  # with a prefetch: commits diffed, waiting for their parses
                pairs = [((trees.get(c.parents[0]) or objects.commit(c.parents[0]).tree) if c.parents else None,
                          c.tree) for c in commits]
                diffs = None
                if new >= PREFETCH_COMMITS:  # a long walk: Git compares the trees (else the pool, or here)
                    from registry.discovery import gitdiff

                    if prefetch is not None:
                        prefetch._start_pool()
                    diffs = git = gitdiff.start(objects, scope, pairs, prefetch and prefetch.pool, state.sums)
                if diffs is None and prefetch is not None:
                    diffs = prefetch.diffs(scope, pairs, state.sums)
                lead = AHEAD_GIT if git is not None else AHEAD
                for i, c in enumerate(commits):
                    changes = diffs.get(i) if diffs is not None else diff(objects, scope, pairs[i][0], c.tree)
                    if prefetch is None:
                        lines.apply(c, changes)
                    else:
                        pending.append((c, changes, prefetch.see(changes)))
                        while pending and (len(pending) > lead or prefetch.ready(pending[0][2])):
                            lines.apply(*pending.popleft()[:2])
                    if i % PROGRESS_EVERY == 0 or i == new - 1:
                        yield Progress("commits", i + 1, new, c.sha[:12])
                if prefetch is not None:
                    prefetch.finish()
                    while pending:
                        lines.apply(*pending.popleft()[:2])
                if git is not None:
                    git.close()
                refs = lines.finish(replace=all_refs)
                reads = objects.reads
                dirty = set(state.dirty_lineages)
                extra, errors = ([], [])
                if worktree:
                    extra, errors = scan_worktree(root, scope, state, git=True)
                migrations, parse_errors = build(state, extra, objects, refs)
                if ahead is not None and state.prefetch is not None and state.prefetch.pool is not None:
                    ahead(migrations, _changed(migrations, dirty, full), state.prefetch.pool, state.prefetch.close)
                    state.prefetch = None  # the callee ends the pool
                store.save(conn, state, heads, migrations)
            finally:
                if git is not None:
                    git.close()
                if state.prefetch is not None:
                    state.prefetch.close()
                    state.prefetch = None
                objects.close()
        else:
            dirty = None
            extra, errors = scan_worktree(root, scope, state, git=False)
            migrations, parse_errors = build(state, extra, None)
        found = findings_mod.compute(migrations, parse_errors + errors, accepted)
        changed = _changed(migrations, dirty, full)
        yield ScanResult(migrations, found, new_commits=new, refs=heads, objects_read=reads,
                         seconds=time.perf_counter() - started, changed=changed)
    finally:
        conn.close()


def _changed(migrations: list[dict], dirty: set[int] | None, full: bool) -> set[str] | None:
    """Ids of the migrations whose lineage this scan changed (None: unknown, or a full scan)."""
    if dirty is None or full:
        return None
    return {m["id"] for m in migrations if dirty & set(m["lineages"])}


def _prefetch(objects: Objects, state: State, commits: int):
    """A :class:`~registry.discovery.prefetch.Prefetch` for a walk long enough to use one, else None."""
    if commits < PREFETCH_COMMITS:
        return None
    from registry.discovery import prefetch

    workers = prefetch.worker_count()
    if not workers:
        return None
    state.prefetch = prefetch.Prefetch(objects, state.parsed, workers)
    state.prefetch.start({p for files in state.tips.values() for p in files})
    return state.prefetch


def _prefetch_heads(objects: Objects, state: State, scope: rules.Scope, heads: dict[str, str]):
    """On a first scan (no ref scanned before), a Prefetch already parsing the files the scanned refs' tips hold (what the
    scan reports), so the worker processes work while this process walks the commits; None when
    the tips hold fewer than :data:`EARLY_FILES` candidate files or no worker is to be used."""
    from registry.discovery import prefetch

    if not heads or not prefetch.worker_count():
        return None
    files = {}
    for sha in dict.fromkeys(heads.values()):
        for ch in diff(objects, scope, None, objects.commit(sha).tree):
            files[ch.path] = ch.new
    if len(files) < EARLY_FILES:
        return None
    state.prefetch = prefetch.Prefetch(objects, state.parsed, prefetch.worker_count())
    state.prefetch.ahead(files)
    state.prefetch.start({p for tip in state.tips.values() for p in tip})
    return state.prefetch


class Lines:
    """Each commit applied on its first parent's file set, so branches keep their own (SPEC §4).

    A file set is ``{path: lineage key}``. The set of a commit is kept while a commit still to
    apply has it as a parent, or while it is a ref's tip; in a straight history one set is
    updated in place. A parent scanned by an earlier run is a stored ref tip, or its set is
    rebuilt from its tree (:meth:`State.files_at`).
    """

    def __init__(self, state: State, objects: Objects, scope: rules.Scope, commits, heads: dict[str, str]) -> None:
        self.state, self.objects, self.scope, self.heads = state, objects, scope, heads
        self.need: dict[str, int] = {}
        for c in commits:
            for p in c.parents:
                self.need[p] = self.need.get(p, 0) + 1
        self.tips = set(heads.values())
        self.sets: dict[str, dict[str, int]] = {}
        self.owned: set[str] = set()  # sets made by this walk (the stored ones are never changed)
        self.stored = {state.refs[r]: files for r, files in state.tips.items() if r in state.refs}

    def files(self, sha: str) -> dict[str, int]:
        hit = self.sets.get(sha)
        if hit is None:
            hit = self.stored.get(sha)
            if hit is None:
                hit = self.stored[sha] = self.state.files_at(self.objects, self.scope, sha)
        return hit

    def apply(self, commit, changes) -> None:
        state = self.state
        if not commit.parents:
            files: dict[str, int] = {}
        else:
            first = commit.parents[0]
            base = self.files(first)
            self.need[first] -= 1
            if first in self.owned and self.need[first] == 0 and first not in self.tips:
                files = base  # no other child needs it: go on in place
                del self.sets[first]
            else:
                files = dict(base)
        others = [self.files(p) for p in commit.parents[1:]]
        state.files = files
        state.apply(self.objects, commit, changes, others)
        for p in commit.parents[1:]:
            self.need[p] -= 1
            if self.need[p] == 0 and p not in self.tips:
                self.sets.pop(p, None)
        if self.need.get(commit.sha) or commit.sha in self.tips:
            self.sets[commit.sha] = files
            self.owned.add(commit.sha)

    def finish(self, *, replace: bool) -> dict[int, list[str]]:
        """Record each scanned ref's file set (``replace``: forget refs not scanned now); return
        ``{lineage key: refs}`` (:meth:`State.settle`)."""
        state = self.state
        if replace:
            for ref in list(state.tips):
                if ref not in self.heads:
                    state.drop_tip(ref)
        for ref, sha in self.heads.items():
            state.set_tip(ref, self.files(sha))
        head = next(iter(self.heads.values()), None)
        state.files = self.files(head) if head else {}  # what the working tree is compared with
        return state.settle() if self.heads else {}


def scan_worktree(root: Path, scope: rules.Scope, state: State, *, git: bool) -> tuple[list[Lineage], list[dict]]:
    """Migrations in the working tree that Git does not hold yet, and unsafe files (symlinks)."""
    extra: list[Lineage] = []
    errors: list[dict] = []
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(d for d in dirnames
                             if scope.descend(f"{rel_dir}/{d}" if rel_dir else d))
        if not scope.holds(rel_dir):
            continue
        present = set(filenames)
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if git and rel in state.files:  # Git holds it: the history walk saw it
                continue
            naming = rules.naming(rel)  # (the folder is in scope: checked above)
            if naming is None:
                continue
            full = Path(dirpath) / name
            if rules.is_compiled_twin(name, present):
                continue
            if full.is_symlink():
                target = os.readlink(full)
                resolved = full.resolve()
                where = "outside the repository" if not _inside(resolved, root) else "inside the repository"
                errors.append(findings_mod.finding(
                    "parse_error", [rel], f"{rel}: symlink to {target!r} ({where}); migrations must be regular files"))
                continue
            size = full.stat().st_size
            if size > _max_bytes():
                errors.append(findings_mod.finding(
                    "parse_error", [rel], f"{rel}: file is {size} bytes, over the {_max_bytes()}-byte cap; not read"))
                continue
            data = full.read_bytes()
            parsed = inspect(rel, data, naming)
            if not parsed.get("migration"):
                continue
            mtime = int(full.stat().st_mtime)
            key = -(len(extra) + 1)
            cid = migration_id(rel, naming, parsed.get("type"), mtime, set(state.ids))
            lin = Lineage(key=key, id=cid, path=rel, scheme=naming.scheme, version=naming.version,
                          description=naming.description, kind=naming.kind, blob="", first=None,
                          revisions=[{"sha": None, "date": iso(mtime), "blob": "", "checksum": parsed.get("checksum")}])
            lin.parsed = parsed  # type: ignore[attr-defined]
            extra.append(lin)
    return extra, errors


def _max_bytes() -> int:
    from registry.discovery.inspect import MAX_BYTES

    return MAX_BYTES


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def parsed_of(state: State, lin: Lineage, objects) -> dict:
    """What the lineage's current file is (read and inspected once per blob, then cached)."""
    cached = getattr(lin, "parsed", None)
    if cached is not None:
        return cached
    hit = state.parsed.get(parse_key(lin.path, lin.kind, lin.blob))
    if hit is None and objects is not None:
        naming = rules.naming(lin.path)
        if naming is not None:
            hit = state.parse(objects, lin.path, naming, lin.mode, lin.blob)
    return hit or {}


def build(state: State, extra: list[Lineage], objects, refs: dict[int, list[str]] | None = None,
          ) -> tuple[list[dict], list[dict]]:
    """Migrations (duplicates grouped) and parse errors from the lineages."""
    lineages = list(state.lineages.values()) + extra
    errors = [findings_mod.finding("parse_error", [p], f"{p}: {d['message']}") for p, d in
              sorted(state.bad_paths.items())]
    groups: dict[str, list[tuple[Lineage, dict]]] = {}
    singles: list[tuple[Lineage, dict]] = []
    for lin in sorted(lineages, key=lambda x: ((x.first or {}).get("date") or "9", x.key)):
        parsed = parsed_of(state, lin, objects)
        if parsed.get("error"):
            if lin.active:
                err = parsed["error"]
                at = f":{err['line']}" if err.get("line") else ""
                errors.append(findings_mod.finding("parse_error", [lin.path], f"{lin.path}{at}: {err['message']}"))
            continue
        if lin.active and parsed.get("checksum"):
            groups.setdefault(parsed["checksum"], []).append((lin, parsed))
        else:
            singles.append((lin, parsed))
    refs = refs or {}
    out = [_record(members, refs) for members in groups.values()]
    out += [_record([s], refs) for s in singles]
    out.sort(key=lambda m: (m["id"], m["path"]))
    by_id = {m["id"]: m for m in out}
    for undo, versioned in findings_mod.undo_pairs(out)[0].items():  # Flyway U<n>__ files (SPEC §4)
        by_id[undo]["undo_of"] = versioned
        by_id[versioned]["undo"] = {"id": undo, "path": by_id[undo]["path"]}
    return out, errors


def _record(members: list[tuple[Lineage, dict]], refs: dict[int, list[str]]) -> dict:
    lin, parsed = members[0]
    paths = sorted(m[0].path for m in members)
    first = lin.first
    return {
        "id": lin.id,
        "path": lin.path,
        "paths": paths,
        "scheme": lin.scheme,
        "status": "active" if lin.active else "deleted",
        "first_commit": first,
        "revisions": [{"sha": r["sha"], "date": r["date"], "checksum": r["checksum"]} for r in lin.revisions],
        "renames": lin.renames,
        "deleted": lin.deleted,
        "kind": lin.kind,
        "lineages": [m[0].key for m in members],
        "refs": sorted({r for m in members for r in refs.get(m[0].key, ())}),
        **record_fields(parsed, lin.version, lin.description),
    }
