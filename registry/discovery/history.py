"""Walk a Git history with dulwich and list each commit's changes to migration candidates, fast.

- Commits are read once each, as raw objects (no full ``Commit`` parsing).
- Trees are compared by object id: an unchanged subtree is skipped without being read,
  and only folders in scope are descended into (``Scope.descend``).
- Parsed trees are cached by id, so a parent's trees are never read again for its child.
- The walk stops at commits already scanned (incremental re-scan).
"""

from __future__ import annotations

from typing import NamedTuple

from registry.discovery import rules, treediff

TREE_MODE = 0o040000
LINK_MODE = 0o120000
GITLINK_MODE = 0o160000
TREE_CACHE_BYTES = 64 * 1024 * 1024  # parsed history is walked in order: recent trees suffice


class CommitInfo(NamedTuple):
    sha: str
    tree: str
    parents: tuple[str, ...]
    author: str
    time: int  # author time, seconds since the epoch (UTC)


class Change(NamedTuple):
    """A candidate file added (old None), deleted (new None) or modified in one commit."""

    path: str
    old: tuple[int, str] | None  # (mode, blob id)
    new: tuple[int, str] | None


class Objects:
    """Raw object access with a tree cache; blobs are read by the caller once per id."""

    def __init__(self, repo_path: str) -> None:
        from dulwich.objects import parse_tree
        from dulwich.repo import Repo

        self.path = repo_path
        self.repo = Repo(repo_path)
        self.store = self.repo.object_store
        from registry.discovery.packs import PackReader

        self._readers = [PackReader(p, self.store.get_raw) for p in getattr(self.store, "packs", [])]
        self._parse_tree = parse_tree
        self._trees: dict[bytes, list] = {}  # tree id -> [raw bytes, entry offsets or None]
        self._tree_bytes = 0
        self.reads = 0

    def close(self) -> None:
        for r in self._readers:
            r.close()
        self.repo.close()

    def raw(self, sha: str) -> tuple[int, bytes]:
        self.reads += 1
        return self._get(sha.encode("ascii"))

    def _get(self, hexsha: bytes) -> tuple[int, bytes]:
        """An object's type and bytes, straight from the pack that holds it (else the object store)."""
        for reader in self._readers:
            hit = reader.get(hexsha)
            if hit is not None:
                return hit
        return self.store.get_raw(hexsha)  # loose objects

    def commit(self, sha: str) -> CommitInfo:
        _, raw = self.raw(sha)
        tree = ""
        parents = []
        author = ""
        when = 0
        end = raw.find(b"\n\n")
        for line in (raw if end < 0 else raw[:end]).split(b"\n"):
            key, _, rest = line.partition(b" ")
            if key == b"tree":
                tree = rest.decode("ascii")
            elif key == b"parent":
                parents.append(rest.decode("ascii"))
            elif key == b"author":
                # "Name <email> 1700000000 +0100"
                head, _, tz = rest.rpartition(b" ")
                who, _, ts = head.rpartition(b" ")
                author = who.decode("utf-8", "replace")
                when = int(ts) if ts.isdigit() else 0
        return CommitInfo(sha, tree, tuple(parents), author, when)

    def tree(self, sha: bytes) -> list:
        """``[raw bytes, entry offsets or None, parsed entries or None]`` of a tree, cached (bounded) by id."""
        cached = self._trees.get(sha)
        if cached is not None:
            return cached
        self.reads += 1
        _, raw = self._get(sha)
        if self._tree_bytes > TREE_CACHE_BYTES:
            self._trees.clear()
            self._tree_bytes = 0
        entry = self._trees[sha] = [raw, None, None]
        self._tree_bytes += len(raw)
        return entry

    def changed_entries(self, old: bytes | None, new: bytes | None) -> tuple:
        """Entries only in ``old`` and only in ``new`` (``(name, mode, hex id)``), reading little.

        A large tree is compared by bytes (:mod:`treediff`, its entry offsets kept for the next
        commit); a small one entry by entry, parsed once and kept with the tree."""
        trees = self._trees
        a = (trees.get(old) or self.tree(old)) if old else None
        b = (trees.get(new) or self.tree(new)) if new else None
        if a is None:
            return (), self._parse_tree(b[0], 20)
        if b is None:
            return self._parse_tree(a[0], 20), ()
        if len(a[0]) > treediff.SMALL and len(b[0]) > treediff.SMALL:
            if a[1] is None:
                a[1] = treediff.starts_of(a[0])
            only_a, only_b, b[1] = treediff.delta(self._parse_tree, a[0], a[1], b[0])
            return only_a, only_b
        la = a[2]
        if la is None:
            la = a[2] = self._parse_tree(a[0], 20)
        lb = b[2]
        if lb is None:
            lb = b[2] = self._parse_tree(b[0], 20)
        if len(la) == len(lb):
            # Usually the same names with one id changed: compare entry by entry (sorted by name).
            only_a = []
            only_b = []
            for x, y in zip(la, lb):
                if x != y:
                    if x[0] != y[0]:
                        break
                    only_a.append(x)
                    only_b.append(y)
            else:
                return only_a, only_b
        sa, sb = set(la), set(lb)
        return sa - sb, sb - sa

    def blob(self, sha: str) -> bytes:
        _, raw = self.raw(sha)
        return raw

    def resolve(self, rev: str) -> str:
        """The commit id a revision names (a ref, ``HEAD``, or a hex id)."""
        from dulwich.objects import Commit, Tag

        from registry.discovery.errors import RevisionNotFound

        refs = self.repo.refs
        for cand in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}", f"refs/remotes/{rev}"):
            key = cand.encode()
            if key in refs:
                sha = refs[key]
                break
        else:
            if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev.lower()):
                sha = rev.lower().encode()
            else:
                raise RevisionNotFound(f"no revision {rev!r} in {self.repo.path}",
                                       hint="name a branch, tag or full commit id (`git rev-parse REV`)",
                                       rev=rev)
        obj = self.store[sha]
        while isinstance(obj, Tag):
            obj = self.store[obj.object[1]]
        if not isinstance(obj, Commit):
            raise RevisionNotFound(f"{rev!r} does not name a commit", hint="name a branch or commit", rev=rev)
        return obj.id.decode("ascii")

    def ref_name(self, rev: str) -> str:
        """The full name of the ref ``rev`` names (``HEAD`` -> the branch it is on, ``main`` ->
        ``refs/heads/main``), so scans of one branch by either name share its file set; else ``rev``."""
        refs = self.repo.refs
        if rev == "HEAD":
            chain, _sha = refs.follow(b"HEAD")
            return chain[-1].decode() if chain else rev
        for cand in (rev, f"refs/heads/{rev}", f"refs/tags/{rev}", f"refs/remotes/{rev}"):
            if cand.startswith("refs/") and cand.encode() in refs:
                return cand
        return rev

    def ref_heads(self, all_refs: bool, rev: str | None) -> dict[str, str]:
        """``{ref name: commit id}`` to scan: HEAD (or ``rev``), or every branch, tag and remote."""
        from registry.discovery.errors import RevisionNotFound

        if not all_refs:
            name = rev or "HEAD"
            if name == "HEAD" and b"HEAD" not in self.repo.refs:
                return {}
            try:
                return {self.ref_name(name): self.resolve(name)}
            except KeyError:
                return {}
        out = {}
        for ref in sorted(self.repo.refs.allkeys()):
            if ref == b"HEAD" or not ref.startswith((b"refs/heads/", b"refs/tags/", b"refs/remotes/")):
                continue
            if ref.endswith(b"/HEAD"):  # refs/remotes/origin/HEAD names another ref
                continue
            try:
                out[ref.decode()] = self.resolve(ref.decode())
            except (KeyError, RevisionNotFound):  # a dangling or non-commit ref is not scanned
                continue
        return out


def walk(objects: Objects, heads: list[str], seen: set[str]) -> list[CommitInfo]:
    """Commits reachable from ``heads`` and not in ``seen``, parents before children."""
    infos: dict[str, CommitInfo] = {}
    stack = [h for h in heads if h not in seen]
    while stack:
        sha = stack.pop()
        if sha in infos or sha in seen:
            continue
        info = objects.commit(sha)
        infos[sha] = info
        stack.extend(p for p in info.parents if p not in infos and p not in seen)
    # Topological order by iterative post-order DFS (oldest first).
    order: list[CommitInfo] = []
    state: dict[str, int] = {}
    for head in sorted(infos, key=lambda s: infos[s].time):
        if state.get(head):
            continue
        todo = [(head, False)]
        while todo:
            sha, done = todo.pop()
            if done:
                if state.get(sha) != 2:
                    state[sha] = 2
                    order.append(infos[sha])
                continue
            if state.get(sha):
                continue
            state[sha] = 1
            todo.append((sha, True))
            for p in reversed(infos[sha].parents):
                if p in infos and not state.get(p):
                    todo.append((p, False))
    return order


def diff(objects: Objects, scope: rules.Scope, old: str | None, new: str | None) -> list[Change]:
    """Changes to candidate files between two root trees (either may be None)."""
    out: list[Change] = []
    if old != new:
        _diff(objects, scope, old.encode() if old else None, new.encode() if new else None, "", out)
    return out


def _diff(objects: Objects, scope: rules.Scope, old: bytes | None, new: bytes | None, prefix: str,
          out: list[Change]) -> None:
    """Append the changes below ``prefix`` between trees ``old`` and ``new`` (hex ids, not equal)."""
    only_a, only_b = objects.changed_entries(old, new)
    if len(only_a) == 1 and len(only_b) == 1:
        # The common case: one entry changed its id (a file edited, or a folder below it).
        (name, mode_a, sha_a), = only_a
        (name_b, mode_b, sha_b), = only_b
        if name == name_b and mode_a == mode_b and mode_a & 0o170000 == TREE_MODE and _plain(name):
            path = prefix + name.decode("utf-8", "surrogateescape")
            if scope.descend(path):
                _diff(objects, scope, sha_a, sha_b, path + "/", out)
            return
    changed: dict[bytes, list] = {}
    for name, mode, sha in only_a:
        changed[name] = [(mode, sha), None]
    for name, mode, sha in only_b:
        pair = changed.get(name)
        if pair is None:
            changed[name] = [None, (mode, sha)]
        else:
            pair[1] = (mode, sha)
    folder = prefix[:-1]
    holds = None
    for bname, (ea, eb) in changed.items():
        path = prefix + bname.decode("utf-8", "surrogateescape")
        if not _plain(bname):
            # A crafted tree: never descend or read; report it where it would be in scope.
            if eb is not None and (scope.holds(folder) or scope.descend(folder or ".")):
                out.append(Change(path, None, (eb[0], eb[1].decode())))
            continue
        a_dir = ea is not None and ea[0] & 0o170000 == TREE_MODE
        b_dir = eb is not None and eb[0] & 0o170000 == TREE_MODE
        if a_dir or b_dir:
            if scope.descend(path):
                sub_a = ea[1] if a_dir else None
                sub_b = eb[1] if b_dir else None
                if sub_a != sub_b:
                    _diff(objects, scope, sub_a, sub_b, path + "/", out)
            if a_dir:
                ea = None
            if b_dir:
                eb = None
            if ea is None and eb is None:
                continue
        if (ea and ea[0] == GITLINK_MODE) or (eb and eb[0] == GITLINK_MODE):
            continue
        if holds is None:
            holds = scope.holds(folder)
        if holds and rules.naming(path) is not None:
            out.append(Change(path, (ea[0], ea[1].decode()) if ea else None, (eb[0], eb[1].decode()) if eb else None))


def _plain(name: bytes) -> bool:
    """Whether a tree entry's name is an ordinary one (not empty, ``.``, ``..`` or with a ``/``)."""
    return bool(name) and name not in (b".", b"..") and b"/" not in name
