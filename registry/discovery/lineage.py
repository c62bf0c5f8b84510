"""Follow each migration file through history: additions, revisions, renames, deletion.

A *lineage* is one migration file followed across commits. It starts when a
candidate file is added (and is a migration), gains a *revision* each time its
content changes, follows *renames* (identical blob, or similar content of the
same kind in the same commit), and ends with a *deletion*. Its canonical id is
fixed when it starts: ``YYYYMMDD_HHMMSS_<type>_<description>`` dated by its first
commit (a canonical file keeps its own name).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

from registry.discovery import rules
from registry.discovery.history import LINK_MODE, Change, CommitInfo
from registry.discovery.inspect import inspect
from registry.model import checksum_bytes

RENAME_SIMILARITY = 0.7


@dataclass
class Lineage:
    key: int
    id: str
    path: str
    scheme: str
    version: str | None
    description: str
    kind: str
    blob: str
    first: dict | None  # {"sha", "author", "date"}
    revisions: list[dict] = field(default_factory=list)  # [{"sha", "date", "blob", "checksum"}]
    renames: list[dict] = field(default_factory=list)  # [{"sha", "date", "from", "to"}]
    deleted: dict | None = None  # {"sha", "date"}
    mode: int = 0o100644

    @property
    def active(self) -> bool:
        return self.deleted is None

    def to_json(self) -> dict:
        """The fields as a JSON-able dict (``dataclasses.asdict`` without its deep copies: json.dumps
        reads the nested lists and dicts as they are)."""
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Lineage))


def parse_key(path: str, kind: str, blob: str) -> str:
    """The cache key of a parsed blob (``scan_parsed``): blob id, language and the folder's database."""
    return f"{blob}:{kind}:{rules.database_from_path(path) or ''}"


def iso(ts: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC) of a timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def make_id(ts: int, type_: str, description: str, taken: set[str]) -> str:
    """A canonical id not in ``taken`` (the seconds move forward on a collision)."""
    from registry.naming import canonical_id

    when = ts
    while True:
        cid = canonical_id(datetime.fromtimestamp(when, timezone.utc), type_, description)
        if cid not in taken:
            taken.add(cid)
            return cid
        when += 1


def migration_id(path: str, naming: rules.Naming, type_: str | None, ts: int, taken: set[str]) -> str:
    """The id of a newly found file: a canonical file keeps its name, a legacy one gets ``make_id``."""
    if naming.scheme == "canonical":
        cid = rules.split(path)[1]
        taken.add(cid)
        return cid
    return make_id(ts, type_ or "schema", naming.description, taken)


class State:
    """Everything the scan knows: lineages, the files present, parsed blobs, scanned commits."""

    def __init__(self) -> None:
        self.lineages: dict[int, Lineage] = {}
        # path -> lineage key (0: a candidate that is no migration) at the commit being applied;
        # the scan gives each commit its first parent's file set (registry.discovery.scan.Lines)
        self.files: dict[str, int] = {}
        self.tips: dict[str, dict[str, int]] = {}  # ref -> file set at its scanned tip
        self.dirty_tips: set[str] = set()
        self.parsed: dict[str, dict] = {}  # blob id -> inspect() result
        self.sums: dict[str, str] = {}  # blob id -> checksum (revisions need no more)
        self.commits: set[str] = set()
        self.refs: dict[str, str] = {}
        self.ids: set[str] = set()
        self.dirty_lineages: set[int] = set()
        self.new_parsed: set[str] = set()
        self.new_commits: list[str] = []
        self.bad_paths: dict[str, dict] = {}  # path -> parse_error for unsafe paths
        self.prefetch = None  # a registry.discovery.prefetch.Prefetch during a long walk
        self._last_key: int | None = None  # the highest lineage key given (found on first use)

    def next_key(self) -> int:
        if self._last_key is None:
            self._last_key = max(self.lineages, default=0)
        self._last_key += 1
        return self._last_key

    # -- reading blobs once ---------------------------------------------------------
    def parse(self, objects, path: str, naming: rules.Naming, mode: int, blob: str) -> dict:
        key = parse_key(path, naming.kind, blob)
        hit = self.parsed.get(key)
        if hit is None:
            if self.prefetch is not None:  # parsed ahead in a worker process (registry.discovery.prefetch)
                hit = self.prefetch.take(key, path, mode)
            if hit is None:
                hit = inspect(path, objects.blob(blob), naming, symlink=(mode == LINK_MODE))
            self.parsed[key] = hit
            self.new_parsed.add(key)
        return hit

    def checksum(self, objects, blob: str) -> str:
        hit = self.sums.get(blob)
        if hit is None:
            hit = self.sums[blob] = checksum_bytes(objects.blob(blob))
        return hit

    # -- one commit -----------------------------------------------------------------
    def apply(self, objects, commit: CommitInfo, changes: list[Change], others: list[dict] = ()) -> None:
        """Apply one commit's changes (against its first parent) to :attr:`files`; ``others`` are the
        file sets of a merge's other parents (a file the merge brings in keeps its lineage)."""
        date = iso(commit.time)
        adds: dict[str, tuple[int, str]] = {}
        deletes: dict[str, tuple[int, str]] = {}
        for ch in changes:
            if ch.new is None:
                deletes[ch.path] = ch.old
            elif ch.old is None:
                key = self.files.get(ch.path) or next((o[ch.path] for o in others if o.get(ch.path)), 0)
                if key:  # a merge brings in a file a side branch already added: known, maybe changed
                    self.files[ch.path] = key
                    lin = self.lineages[key]
                    if lin.blob != ch.new[1]:
                        self._revise(objects, lin, ch.path, ch.new, commit, date)
                    elif lin.deleted is not None:  # deleted on another line, alive on this one
                        lin.deleted = None
                        self.dirty_lineages.add(key)
                else:
                    adds[ch.path] = ch.new
            else:
                key = self.files.get(ch.path)
                if key:
                    self._revise(objects, self.lineages[key], ch.path, ch.new, commit, date)
                else:
                    adds[ch.path] = ch.new
                    self.files.pop(ch.path, None)
        for path in deletes:
            if not self.files.get(path):
                self.files.pop(path, None)
        for path in adds:
            self.files.setdefault(path, 0)
        gone = {p: e for p, e in deletes.items() if self.files.get(p)}
        for path, (mode, blob) in sorted(adds.items()):
            unsafe = rules.unsafe_path(path)
            if unsafe:
                self.bad_paths[path] = {"message": f"{unsafe}: not read", "line": 0, "sha": commit.sha}
                self.files.pop(path, None)
                continue
            if rules.is_compiled_twin(path, self.files):
                continue
            naming = rules.naming(path)
            parsed = self.parse(objects, path, naming, mode, blob)
            if not parsed.get("migration"):
                continue
            origin = self._rename_source(objects, path, blob, naming, gone)
            if origin is not None:
                key = self.files.pop(origin)
                del gone[origin]
                lin = self.lineages[key]
                lin.renames.append({"sha": commit.sha, "date": date, "from": origin, "to": path})
                lin.path = path
                lin.scheme, lin.version, lin.kind = naming.scheme, naming.version, naming.kind
                self.files[path] = key
                if lin.blob != blob:
                    self._revise(objects, lin, path, (mode, blob), commit, date)
                self.dirty_lineages.add(key)
                continue
            self._start(path, naming, mode, blob, parsed, commit, date)
        for path in gone:
            key = self.files.pop(path)
            lin = self.lineages[key]
            lin.deleted = {"sha": commit.sha, "date": date}
            self.dirty_lineages.add(key)
        self.commits.add(commit.sha)
        self.new_commits.append(commit.sha)

    # -- refs -----------------------------------------------------------------------
    def files_at(self, objects, scope: rules.Scope, sha: str) -> dict[str, int]:
        """The file set at an already scanned commit that is no stored tip (a branch made from an old
        commit): its tree's candidate files, each given the lineage that held that path with that
        content (else the last lineage at that path, else 0)."""
        from registry.discovery.history import diff

        at: dict[str, list[Lineage]] = {}
        for lin in self.lineages.values():
            for p in {lin.path, *(r["from"] for r in lin.renames), *(r["to"] for r in lin.renames)}:
                at.setdefault(p, []).append(lin)
        out = {}
        for ch in diff(objects, scope, None, objects.commit(sha).tree):
            blob = ch.new[1]
            lins = sorted(at.get(ch.path, ()), key=lambda x: x.key)
            hit = next((x for x in reversed(lins) if any(r.get("blob") == blob for r in x.revisions)), None)
            hit = hit or (lins[-1] if lins else None)
            out[ch.path] = hit.key if hit else 0
        return out

    def set_tip(self, ref: str, files: dict[str, int]) -> None:
        if self.tips.get(ref) != files:
            self.tips[ref] = files
            self.dirty_tips.add(ref)

    def drop_tip(self, ref: str) -> None:
        if self.tips.pop(ref, None) is not None:
            self.dirty_tips.add(ref)

    def settle(self) -> dict[int, list[str]]:
        """After a walk: a lineage is active exactly when some scanned ref's tip holds it (one that no
        tip holds any more, and that no commit deleted, ends with ``deleted`` = {sha: null, date: null}).
        Returns ``{lineage key: refs whose tip holds it}``."""
        refs: dict[int, list[str]] = {}
        for ref in sorted(self.tips):
            for key in set(self.tips[ref].values()):
                if key:
                    refs.setdefault(key, []).append(ref)
        for key, lin in self.lineages.items():
            if key in refs:
                if lin.deleted is not None:
                    lin.deleted = None
                    self.dirty_lineages.add(key)
            elif lin.deleted is None:
                lin.deleted = {"sha": None, "date": None}
                self.dirty_lineages.add(key)
        return refs

    def _start(self, path, naming, mode, blob, parsed, commit, date) -> None:
        key = self.next_key()
        cid = migration_id(path, naming, parsed.get("type"), commit.time, self.ids)
        lin = Lineage(
            key=key, id=cid, path=path, scheme=naming.scheme, version=naming.version,
            description=naming.description, kind=naming.kind, blob=blob,
            first={"sha": commit.sha, "author": commit.author, "date": date},
            revisions=[{"sha": commit.sha, "date": date, "blob": blob, "checksum": parsed.get("checksum")}],
            mode=mode,
        )
        self.lineages[key] = lin
        self.files[path] = key
        self.dirty_lineages.add(key)

    def _revise(self, objects, lin: Lineage, path, entry, commit, date) -> None:
        mode, blob = entry
        lin.blob, lin.mode = blob, mode
        checksum = None if mode == LINK_MODE else self.checksum(objects, blob)
        lin.revisions.append({"sha": commit.sha, "date": date, "blob": blob, "checksum": checksum})
        lin.deleted = None
        self.dirty_lineages.add(lin.key)

    def _rename_source(self, objects, path, blob, naming, gone) -> str | None:
        """The deleted path this added file was renamed from, if any."""
        same = [p for p, (_, b) in gone.items() if b == blob]
        if same:
            base = rules.split(path)[1]
            same.sort(key=lambda p: (rules.split(p)[1] != base, p))
            return same[0]
        if not gone or len(gone) > 50:
            return None
        new_text = objects.blob(blob)[:200_000]
        best, best_ratio = None, RENAME_SIMILARITY
        for old_path, (_, old_blob) in sorted(gone.items()):
            if rules.kind_of(old_path) != naming.kind:
                continue
            old_text = objects.blob(old_blob)[:200_000]
            m = difflib.SequenceMatcher(None, old_text, new_text, autojunk=False)
            if m.real_quick_ratio() < best_ratio or m.quick_ratio() < best_ratio:
                continue
            r = m.ratio()
            if r >= best_ratio:
                best, best_ratio = old_path, r
        return best
