"""post-commit: register the migrations one commit added or changed, as ``mreg scan`` would.

The commit's changes come from one ``git diff-tree`` (first parent, no rename detection);
each in-scope file is read as the scan reads it, or taken from what pre-commit read
moments before (``<git dir>/mreg/checked.json``, by path and blob id: then neither the
parser nor pglast is imported). The records are the scan's records, so a later
``mreg scan`` finds nothing to register again:

- a new file gets a new migration (a canonical file keeps its name as id);
- a new file with the content of an active migration is one more path of it (the scan
  groups copies; ``duplicate_content``);
- a changed file of a registered migration is a new revision (``edited_after_commit``);
- a file that does not parse is a ``parse_error`` finding, not a migration.

The findings table is recomputed in the same transaction as the registration, so a copy,
a version claimed twice or a missing dependency shows at once. What the scan decides from
more history than one commit is left to it: a commit that deletes or moves a registered
migration's file, re-adds a path a migration left, splits copies, or whose new file copies
a migration first committed later. The hook registers nothing from such a commit and says
so; the next ``mreg scan`` registers it.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from registry.hooks import CHECKED, GITLINK_MODE, LINK_MODE, compiled_twins, git, git_path, raw_entries, read_blobs


class Commit:
    __slots__ = ("sha", "author", "time", "date")

    def __init__(self, sha: str, author: str, time: int) -> None:
        self.sha, self.author, self.time = sha, author, time
        self.date = datetime.fromtimestamp(time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class File:
    """One added or changed migration of the commit: its name's reading and its scan record fields."""

    __slots__ = ("path", "naming", "fields")

    def __init__(self, path: str, naming: dict, fields: dict) -> None:
        self.path, self.naming, self.fields = path, naming, fields


class Deferred(Exception):
    """The commit needs history the hook does not read: ``mreg scan`` registers it."""


def read_commit(cfg, rev: str = "HEAD") -> tuple[Commit, list[File], list[str], list[tuple[str, dict]]]:
    """The commit, its candidate files (read), its deleted paths, and its files that do not parse."""
    root = Path(cfg.root)
    out = git(root, "diff-tree", "-r", "-z", "--raw", "--no-abbrev", "--no-renames", "--root",
              "--diff-merges=first-parent", "--format=%H%x00%an <%ae>%x00%at", rev, data=True)
    sha, author, when, rest = out.split(b"\0", 3)
    commit = Commit(sha.decode(), author.decode("utf-8", "replace"), int(when))
    entries = raw_entries(rest)
    checked = _load_checked(root) if entries else {}
    files, todo, deleted, broken = [], [], [], []
    scope = None
    for e in entries:
        if e.status == "D":
            deleted.append(e.path)
            continue
        hit = checked.get(e.path)
        if hit and hit.get("blob") == e.blob and hit.get("mode") == e.mode:
            if hit.get("migration"):
                files.append(File(e.path, hit["naming"], hit["fields"]))
            continue
        if scope is None:
            from registry.discovery import rules

            scope = rules.Scope.from_config(cfg)
        naming = scope.candidate(e.path)
        if naming is None or e.mode == GITLINK_MODE:
            continue
        unsafe = rules.unsafe_path(e.path)
        if unsafe:
            broken.append((e.path, {"message": f"{unsafe}: not read", "line": 0}))
            continue
        todo.append((e, naming))
    twins = compiled_twins(root, [e.path for e, _ in todo], commit.sha)
    todo = [t for t in todo if t[0].path not in twins]
    if todo:
        from registry.discovery.inspect import inspect, record_fields
        from registry.hooks import naming_dict

        blobs = read_blobs(root, {e.blob for e, _ in todo})
        for e, naming in todo:
            parsed = inspect(e.path, blobs[e.blob], naming, symlink=(e.mode == LINK_MODE))
            if parsed.get("error"):
                broken.append((e.path, parsed["error"]))
            elif parsed.get("migration"):
                files.append(File(e.path, naming_dict(naming),
                                  record_fields(parsed, naming.version, naming.description)))
    return commit, sorted(files, key=lambda f: f.path), deleted, broken


def _load_checked(root: Path) -> dict:
    path = git_path(root, CHECKED)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        os.unlink(path)  # read once: the next commit's pre-commit writes its own
    except (OSError, ValueError):
        return {}
    return data.get("files") or {} if isinstance(data, dict) else {}


def plan(conn, commit: Commit, files: list[File], deleted: list[str]) -> tuple[list[dict], list[str]]:
    """The scan records ``files`` make (new, revised or one more copy), and what to say about each.

    Raises :class:`Deferred` when the commit needs the scan's view of history.
    """
    paths = [f.path for f in files] + deleted
    located = _located(conn, paths)
    for path in deleted:
        if path in located and located[path][1]:
            raise Deferred(f"it deletes or moves {path} ({located[path][0]})")
    by_sum = _active_by_checksum(conn, {f.fields["checksum"] for f in files})
    records: dict[str, dict] = {}
    said = []
    for f in files:
        checksum, fields = f.fields["checksum"], f.fields
        if f.path in located:
            mid, current, status, rec = located[f.path]
            if not current or status != "active":
                raise Deferred(f"it adds {f.path} again, which {mid} left")
            if len(rec.get("paths") or []) > 1:
                raise Deferred(f"it changes {f.path}, one of the copies of {mid}")
            if rec.get("checksum") == checksum:
                continue
            other = by_sum.get(checksum)
            if other is not None and other["id"] != mid:
                raise Deferred(f"it makes {f.path} a copy of {other['id']}")
            if any(r.get("sha") == commit.sha for r in rec.get("revisions") or []):
                continue
            m = {**rec, **fields, "id": mid,
                 "revisions": list(rec.get("revisions") or []) + [
                     {"sha": commit.sha, "date": commit.date, "checksum": checksum}]}
            records[mid] = m
            said.append(f"{mid}: new revision {checksum} ({f.path})")
            continue
        other = by_sum.get(checksum)
        if other is not None:
            first = (other.get("first_commit") or {}).get("date") or ""
            if first > commit.date:
                raise Deferred(f"{f.path} copies {other['id']}, first committed later ({first})")
            m = records.get(other["id"]) or other
            records[other["id"]] = {**m, "paths": sorted(set(m["paths"]) | {f.path})}
            said.append(f"{f.path} is a copy of {other['id']}")
            continue
        mid = _new_id(conn, f, commit, set(records))
        m = {"id": mid, "path": f.path, "paths": [f.path], "scheme": f.naming["scheme"], "status": "active",
             "first_commit": {"sha": commit.sha, "author": commit.author, "date": commit.date},
             "revisions": [{"sha": commit.sha, "date": commit.date, "checksum": checksum}],
             "renames": [], "deleted": None, "kind": f.naming["kind"], **fields}
        records[mid] = m
        by_sum[checksum] = m  # a second copy in this commit joins the first (by path order, as the scan)
        said.append(f"registered {mid} ({f.path})")
    return list(records.values()), said


def _located(conn, paths: list[str]) -> dict[str, tuple[str, bool, str, dict]]:
    """path -> (migration id, stands there now, status, record) for registered paths."""
    out = {}
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        for path, current, mid, status, record in conn.execute(
                "SELECT l.path, l.current, m.id, m.status, m.record FROM locations l JOIN migrations m "
                f"ON m.id = l.migration_id WHERE l.path IN ({','.join('?' * len(chunk))})", chunk):
            if path not in out or current:
                out[path] = (mid, bool(current), status, json.loads(record))
    return out


def _active_by_checksum(conn, sums: set[str]) -> dict[str, dict]:
    out = {}
    chunk = sorted(sums)
    if chunk:
        for mid, record in conn.execute(
                f"SELECT id, record FROM migrations WHERE status = 'active' AND checksum IN "
                f"({','.join('?' * len(chunk))})", chunk):
            out[json.loads(record)["checksum"]] = {**json.loads(record), "id": mid}
    return out


def _new_id(conn, f: File, commit: Commit, assigned: set[str]) -> str:
    """The id the scan gives a new file (``assigned``: ids given earlier in this commit); Deferred when
    a migration already holds a canonical file's id."""
    if f.naming["scheme"] == "canonical":
        mid = f.path.rpartition("/")[2].rpartition(".")[0]
        if mid in assigned or conn.execute("SELECT 1 FROM migrations WHERE id = ?", (mid,)).fetchone():
            raise Deferred(f"{f.path} has the id of another migration, {mid}")
        return mid
    from registry.discovery import rules
    from registry.discovery.lineage import migration_id

    naming = rules.Naming(**f.naming)
    taken = {r[0] for r in conn.execute("SELECT id FROM migrations")} | assigned
    return migration_id(f.path, naming, f.fields.get("type"), commit.time, taken)


def parse_errors(conn, broken: list[tuple[str, dict]], touched: set[str]) -> list[dict] | None:
    """The stored parse errors with those of ``touched`` paths replaced by ``broken`` (None: unchanged)."""
    from registry.discovery.findings import finding

    stored = [finding(k, json.loads(p), m) for k, p, m in
              conn.execute("SELECT kind, paths, message FROM scan_findings ORDER BY n")]
    kept = [e for e in stored if not touched & set(e["paths"])]
    for path, err in broken:
        at = f":{err['line']}" if err.get("line") else ""
        kept.append(finding("parse_error", [path], f"{path}{at}: {err['message']}"))
    return None if kept == stored else kept


def post_commit(cfg, rev: str = "HEAD") -> list[str]:
    """Register ``rev``'s migrations and refresh the findings; the lines the hook prints."""
    from registry import catalog
    from registry.registration import register_records

    commit, files, deleted, broken = read_commit(cfg, rev)
    if not files and not deleted and not broken:
        return []
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        try:
            records, said = plan(conn, commit, files, deleted)
        except Deferred as why:
            return [f"not registered now: {why}; `mreg scan` registers this commit"]
        touched = {f.path for f in files} | set(deleted) | {p for p, _ in broken}
        errors = parse_errors(conn, broken, touched)
        if not records and errors is None:
            return said
        contents = [(r["checksum"], r["content"]) for r in records if r.get("content")]
        register_records(cfg, records, parse_errors=errors, contents=contents, conn=conn)
        if rev == "HEAD":
            _on_branch(conn, Path(cfg.root), [r["id"] for r in records if r.get("status", "active") == "active"])
        found = _findings_about(conn, {r["id"] for r in records}, touched)
    finally:
        conn.close()
    return said + [f"finding {kind}: {message}" for kind, message in found]


def head_ref(root: Path) -> str | None:
    """The branch HEAD names (``refs/heads/main``), read from the repository's ``HEAD`` file;
    ``HEAD`` itself when it is detached (the name the scan records then, ``History.ref_name``); None
    when it cannot be read (a worktree's ``.git`` file is followed)."""
    git_dir = root / ".git"
    try:
        if git_dir.is_file():  # a linked worktree or a submodule: "gitdir: <path>"
            git_dir = (root / git_dir.read_text().strip().removeprefix("gitdir:").strip()).resolve()
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if head.startswith("ref: "):
        return head[len("ref: "):].strip()
    return "HEAD" if head else None


def _on_branch(conn, root: Path, ids: list[str]) -> None:
    """Record that the migrations registered from HEAD's commit are on HEAD's branch (the ``refs`` of
    ``mreg list``/``show``), where a scan has recorded refs already; the next scan recomputes them."""
    ref = head_ref(root) if ids else None
    if ref is None:
        return
    with conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scan_migration_refs'").fetchone():
            conn.executemany("INSERT OR IGNORE INTO scan_migration_refs(id, ref) VALUES (?, ?)",
                             ((mid, ref) for mid in ids))


def _findings_about(conn, ids: set[str], paths: set[str]) -> list[tuple[str, str]]:
    """``(kind, message)`` of the findings naming one of ``ids`` or ``paths`` (JSON read only for candidates)."""
    needles = [json.dumps(x, ensure_ascii=False)[1:-1] for x in ids | paths]  # as the JSON columns hold them
    out = []
    for kind, mids, where, message in conn.execute(
            "SELECT kind, migration_ids, paths, message FROM findings ORDER BY n"):
        if any(n in mids or n in where for n in needles):  # a cheap text test before decoding
            if ids & set(json.loads(mids)) or paths & set(json.loads(where)):
                out.append((kind, message))
    return out
