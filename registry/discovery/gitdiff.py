"""A long walk's tree comparisons by Git itself (`git diff-tree --stdin`), read as they come.

``history.diff`` compares two trees in Python (~80 µs a commit: 1.6 s of CPU for 20,000
commits). ``git diff-tree --stdin -r --raw --no-renames -z`` compares the same ``(parent tree,
tree)`` pairs in C, in its own process (on a free core, while this one applies the commits it
has already read): it echoes each pair's line, then one ``:<old mode> <new mode> <old id> <new
id> <status>\\0<path>\\0`` per changed file (recursively; a deleted or added side has mode
``000000``). :func:`changes_of` keeps the entries ``history.diff`` would report (the folders the
scope descends into, files it holds whose name is a migration's, no submodules), so both give
the same :class:`~registry.discovery.history.Change` lists (``tests/git/test_gitdiff.py``).

Used for walks of at least ``scan.PREFETCH_COMMITS`` commits when ``git`` is on the PATH;
anything unexpected (no git, a failure, a path with an empty, ``.`` or ``..`` part, which only a
crafted tree holds) makes the scan compare those trees in Python instead (:class:`GitDiffs`
returns None and the caller falls back).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from registry.discovery import rules
from registry.discovery.history import GITLINK_MODE, LINK_MODE, Change

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # Git's id of the empty tree (SHA-1)
READ = 1 << 20
USE = True  # tests turn it off to compare with history.diff


LEAD = 2000  # pairs read ahead of the one asked for (their checksums go to the pool meanwhile)
SUM_CHUNK = 400  # modified files per checksum task


def start(objects, scope: rules.Scope, pairs: list[tuple], pool=None, sums: dict | None = None,
          ) -> "GitDiffs | None":
    """A :class:`GitDiffs` for ``pairs``, or None (no ``git``, not a SHA-1 repository, disabled).
    With ``pool``, the checksums of the files the commits modify are computed there, into ``sums``
    (``State.sums``; a checksum not there yet when needed is computed in place)."""
    if not USE or not available():
        return None
    try:
        return GitDiffs(objects, scope, pairs, pool, sums)
    except (Unexpected, OSError):
        return None


def available() -> bool:
    return shutil.which("git") is not None


class Unexpected(Exception):
    """Git's output is not what this module reads; compare in Python instead."""


class GitDiffs:
    """``get(i)``: the changes of the ``i``-th ``(parent tree, tree)`` pair (asked for in order);
    from the first unexpected output on, the pairs are compared in Python (``history.diff``)."""

    def __init__(self, objects, scope: rules.Scope, pairs: list[tuple], pool=None, sums: dict | None = None,
                 ) -> None:
        self.objects, self.scope, self.pairs = objects, scope, pairs
        self.pool, self.sums = pool, sums
        self.blobs: list[str] = []  # modified files' blob ids not sent for checksums yet
        self.futures: list = []
        self.failed = False
        repo = objects.path
        self.lines = [f"{old or EMPTY_TREE} {new}\n".encode() for old, new in pairs]
        if any(len(line) != 82 for line in self.lines):
            raise Unexpected("not SHA-1 tree ids")
        with tempfile.TemporaryFile() as pairs_file:  # the input from a file: no thread feeds a pipe
            pairs_file.write(b"".join(self.lines))
            pairs_file.seek(0)
            self.proc = subprocess.Popen(
                ["git", "-C", repo, "diff-tree", "--stdin", "-r", "--raw", "--no-renames", "-z"],
                stdin=pairs_file, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
        self.buf = b""
        self.pos = 0
        self.done: list[list[Change]] = []
        self.eof = False
        self._folders: dict[str, bool] = {}

    def get(self, i: int) -> list[Change]:
        if not self.failed:
            try:
                while len(self.done) <= i:
                    if not self._parse_one():
                        if self.eof:
                            raise Unexpected(f"git diff-tree ended after {len(self.done)} of {len(self.lines)}")
                        self._read()
                want = min(i + LEAD, len(self.lines))
                while len(self.done) < want and self._parse_one():  # what is already read
                    pass
            except Unexpected:
                self.failed = True
                self.close()
            self._sums(len(self.done) >= len(self.lines))
        if self.failed and len(self.done) <= i:
            from registry.discovery.history import diff

            old, new = self.pairs[i]
            return diff(self.objects, self.scope, old, new)
        out = self.done[i]
        self.done[i] = None  # asked for once
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if not self.proc.stdout.closed:
            self.proc.stdout.close()

    # -- internals --------------------------------------------------------------------
    def _sums(self, last: bool) -> None:
        """Send the modified files' blob ids to the pool in chunks; take in the checksums made."""
        if self.pool is None:
            return
        from concurrent.futures.process import BrokenProcessPool

        from registry.discovery.prefetch import checksum_chunk

        while len(self.blobs) >= SUM_CHUNK or (last and self.blobs):
            chunk, self.blobs = self.blobs[:SUM_CHUNK], self.blobs[SUM_CHUNK:]
            try:
                self.futures.append(self.pool.submit(checksum_chunk, self.objects.path, chunk))
            except (BrokenProcessPool, RuntimeError):
                self.pool = None
                return
        while self.futures and self.futures[0].done():
            try:
                self.sums.update(self.futures.pop(0).result())
            except Exception:  # a worker died: the checksums are computed in place when needed
                pass

    def _read(self) -> None:
        data = os.read(self.proc.stdout.fileno(), READ)
        if not data:
            self.eof = True
            if self.proc.wait() != 0:
                raise Unexpected(f"git diff-tree failed ({self.proc.returncode})")
            return
        self.buf = self.buf[self.pos:] + data
        self.pos = 0

    def _parse_one(self) -> bool:
        """Parse the next pair's record if all of it is in the buffer (else False: read more)."""
        k = len(self.done)
        head = self.lines[k]
        buf, pos = self.buf, self.pos
        if len(buf) - pos < 82:
            return False
        if buf[pos:pos + 82] != head:
            raise Unexpected(f"git diff-tree output does not follow the pairs at {k}")
        at = pos + 82
        raw = []
        while True:
            if at >= len(buf):
                if not self.eof:
                    return False  # more entries may follow
                break
            if buf[at] != 0x3A:  # ":" starts an entry; anything else is the next pair's line
                break
            meta_end = buf.find(b"\0", at)
            path_end = buf.find(b"\0", meta_end + 1) if meta_end >= 0 else -1
            if path_end < 0:
                return False
            raw.append((buf[at + 1:meta_end], buf[meta_end + 1:path_end]))
            at = path_end + 1
        self.pos = at
        changes = changes_of(self.scope, raw, self._folders)
        if self.pool is not None:
            for ch in changes:
                if ch.old is not None and ch.new is not None and ch.new[0] != LINK_MODE:
                    self.blobs.append(ch.new[1])
        self.done.append(changes)
        return True


# Set by Git for hooks (or by a user): they would make `git -C repo` read another repository.
_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")


def _env() -> dict[str, str]:
    """The environment for git: this one without the variables that choose another repository."""
    return {k: v for k, v in os.environ.items() if k not in _REPO_VARS}


def changes_of(scope: rules.Scope, raw: list[tuple[bytes, bytes]], folders: dict[str, bool]) -> list[Change]:
    """The :class:`Change` list ``history.diff`` gives, from ``git diff-tree --raw -z`` entries
    ``(b"<old mode> <new mode> <old id> <new id> <status>", path)``."""
    out = []
    for meta, bpath in raw:
        om, nm, oid, nid, _status = meta.split(b" ")
        old_mode, new_mode = int(om, 8), int(nm, 8)
        if old_mode == GITLINK_MODE or new_mode == GITLINK_MODE:
            continue
        path = bpath.decode("utf-8", "surrogateescape")
        folder, _, name = path.rpartition("/")
        ok = folders.get(folder)
        if ok is None:
            ok = folders[folder] = _in_scope(scope, folder)
        if not ok or name in ("", ".", ".."):
            if not ok:
                continue
            raise Unexpected(f"path {path!r}")
        if rules.naming(path) is None:
            continue
        out.append(Change(path, (old_mode, oid.decode()) if old_mode else None,
                          (new_mode, nid.decode()) if new_mode else None))
    return out


def _in_scope(scope: rules.Scope, folder: str) -> bool:
    """Whether ``history.diff`` reaches files directly in ``folder``: it descends into each of its
    folders (``Scope.descend``) and the scope holds it."""
    if not folder:
        return scope.holds("")
    parts = folder.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise Unexpected(f"folder {folder!r}")
    for i in range(1, len(parts) + 1):
        if not scope.descend("/".join(parts[:i])):
            return False
    return scope.holds(folder)
