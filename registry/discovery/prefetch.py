"""Compare trees and parse migration files in worker processes while the history walk goes on.

The walk's tree comparisons (``history.diff`` of each commit against its first parent) are
cut into chunks of commits, sent to the pool, and compared by whichever process gets to a
chunk first: a worker, or this process when it needs a chunk no worker has begun or has
nothing else to do (:class:`Diffs`). A worker also reads the blobs it parses and the
checksums of the files its chunk of commits modifies, so this process reads fewer objects.

A first scan of a long history parses thousands of files (every file's first content,
which fixes its id, and its current content); parsing is the parser's work (pglast,
tree-sitter) and independent of the walk. :class:`Prefetch` sends those files to a pool
of worker processes as the walk meets them, so that on a machine with a free core the
parsing happens while the main process reads trees. A first scan sends the files of the
scanned refs' tips (their current content) before it reads the commits
(:meth:`Prefetch.ahead`): the worker parses them while this process walks the history. The
lineage code applies each commit at most ``scan.AHEAD`` commits behind the tree comparison;
a file it needs that no worker has begun is parsed here (a pool's queue is first come, first
served: the files the walk meets wait behind the chunks of commits sent before them).

It changes no result: the lineage code still asks :meth:`State.parse
<registry.discovery.lineage.State.parse>` for each file in history order, and a prefetched
result is used only when it was made from the same path, mode and blob that call names
(``inspect`` is a pure function of them); otherwise the file is parsed in place.
No pool starts for fewer than :data:`START_AT` files, and the main process parses a
chunk itself when it needs one the pool has not begun.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures.process import BrokenProcessPool

from registry.discovery import rules
from registry.discovery.history import LINK_MODE, Change, Objects, diff
from registry.discovery.inspect import inspect
from registry.discovery.lineage import parse_key
from registry.model import checksum_bytes

CHUNK = 24  # files per task
START_AT = 96  # files waiting before a pool is worth its start-up
MAX_WORKERS = 4


def worker_count() -> int:
    """Worker processes to use: ``MREG_SCAN_WORKERS`` if set (0: parse in place), else the cores left
    beside the main process (at most :data:`MAX_WORKERS`)."""
    given = os.environ.get("MREG_SCAN_WORKERS", "").strip()
    if given.isdigit():
        return min(int(given), 32)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(cpus - 1, MAX_WORKERS))


def inspect_chunk(items: list[tuple]) -> list[dict]:
    """``inspect`` each ``(path, data, naming, symlink)``."""
    return [inspect(path, data, naming, symlink=link) for path, data, naming, link in items]


def inspect_blobs(repo: str, items: list[tuple]) -> list[dict]:
    """Run in a worker: ``inspect`` each ``(path, blob id, naming, symlink)``, reading the blobs here."""
    objects = _objects(repo)
    return [inspect(path, objects.blob(blob), naming, symlink=link) for path, blob, naming, link in items]


class _Chunk:
    """Up to :data:`CHUNK` files parsed together: ``items`` are ``(path, blob, naming, symlink)``."""

    __slots__ = ("items", "future", "results")

    def __init__(self) -> None:
        self.items: list[tuple] = []
        self.future = None
        self.results: list[dict] | None = None

    def done(self) -> bool:
        return self.results is not None or (self.future is not None and self.future.done())


class Prefetch:
    """Files the scan will parse, parsed ahead in worker processes (see the module docstring)."""

    def __init__(self, objects, known, workers: int) -> None:
        self.objects = objects
        self.known = known  # the parsed-blob cache: keys already there are not parsed again
        self.workers = workers
        self.pool = None
        self.entries: dict[str, tuple[str, int, _Chunk, int]] = {}  # key -> (path, mode, chunk, index)
        self.unsent: list[_Chunk] = []
        self.sent: list[_Chunk] = []  # in the order sent (a waiting main process takes from the end)
        self.alive: dict[str, tuple[int, str]] = {}  # path -> (mode, blob) as the walk has seen it

    def start(self, present) -> None:
        """Paths present before the commits this scan walks (their files were parsed earlier)."""
        for path in present:
            self.alive[path] = (0, "")

    def ahead(self, files: dict[str, tuple[int, str]]) -> None:
        """Send the files ``{path: (mode, blob)}`` to the pool before the walk (a first scan's tips)."""
        for path, entry in files.items():
            self._want(path, entry)
        self._send()

    def see(self, changes: list[Change]) -> list[_Chunk]:
        """Queue the files ``changes`` add; return the chunks the commit's adds depend on."""
        needs = []
        for ch in changes:
            if ch.new is None:
                self.alive.pop(ch.path, None)
                continue
            added = ch.path not in self.alive
            self.alive[ch.path] = ch.new
            if added:
                chunk = self._want(ch.path, ch.new)
                if chunk is not None:
                    needs.append(chunk)
        return needs

    def finish(self) -> None:
        """Queue every file's current content (what the scan reports), then send all that waits."""
        for path, (mode, blob) in self.alive.items():
            if blob:
                self._want(path, (mode, blob))
        if self.pool is not None or sum(len(c.items) for c in self.unsent) >= START_AT:
            self._send()

    @staticmethod
    def ready(needs: list[_Chunk]) -> bool:
        return all(c.done() for c in needs)

    def take(self, key: str, path: str, mode: int) -> dict | None:
        """The prefetched result for ``key`` if it was made from ``path`` and ``mode``, else None."""
        entry = self.entries.pop(key, None)
        if entry is None or entry[0] != path or entry[1] != mode:
            return None
        chunk = entry[2]
        if chunk.results is None:
            if chunk.future is None or chunk.future.cancel():  # not begun: parse it here
                self._parse_here(chunk)
            else:
                # Being parsed: rather than wait idle, parse the last chunks no worker has begun.
                while not chunk.future.done() and self._steal():
                    pass
                try:
                    chunk.results = chunk.future.result()
                    chunk.items = []
                except BrokenProcessPool:  # a worker died (killed, out of memory): parse here
                    self._parse_here(chunk)
        return chunk.results[entry[3]]

    def _parse_here(self, chunk: _Chunk) -> None:
        chunk.results = inspect_chunk(self._load(chunk.items))
        chunk.items = []

    def _steal(self) -> bool:
        """Parse here the last sent chunk no worker has begun; False when there is none."""
        while self.sent:
            last = self.sent.pop()
            if last.results is None and last.future.cancel():
                self._parse_here(last)
                return True
        return False

    def diffs(self, scope, pairs: list[tuple], sums: dict[str, str]) -> "Diffs":
        """The changes of each ``(parent tree, tree)`` pair, diffed ahead in the pool (:class:`Diffs`);
        the checksums of modified files the workers computed go into ``sums`` (``State.sums``)."""
        self._start_pool()
        return Diffs(self.pool, self.objects, scope, pairs, sums)

    def close(self) -> None:
        _OPEN.pop(self.objects.path, None)
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # no thread left: later pools may fork
            self.pool = None

    # -- internals --------------------------------------------------------------------
    def _want(self, path: str, entry: tuple[int, str]) -> _Chunk | None:
        mode, blob = entry
        if rules.unsafe_path(path):
            return None  # never read
        naming = rules.naming(path)
        if naming is None:
            return None
        key = parse_key(path, naming.kind, blob)
        known = self.entries.get(key)
        if known is not None:
            return known[2]
        if self.known.get(key) is not None:
            return None
        if not self.unsent or len(self.unsent[-1].items) >= CHUNK:
            self.unsent.append(_Chunk())
        chunk = self.unsent[-1]
        self.entries[key] = (path, mode, chunk, len(chunk.items))
        chunk.items.append((path, blob, naming, mode == LINK_MODE))
        if len(chunk.items) >= CHUNK and (self.pool is not None or len(self.unsent) * CHUNK >= START_AT):
            self._send()
        return chunk

    def _load(self, items: list[tuple]) -> list[tuple]:
        return [(path, self.objects.blob(blob), naming, link) for path, blob, naming, link in items]

    def _start_pool(self) -> None:
        if self.pool is None:
            from concurrent.futures import ProcessPoolExecutor

            from ledger.workers import context, worker_signals

            _OPEN[self.objects.path] = self.objects  # a forked worker reads through a copy of it
            self.pool = ProcessPoolExecutor(self.workers, mp_context=context(), initializer=worker_signals)

    def _send(self) -> None:
        """Submit every chunk not sent yet to the pool (started on first use)."""
        self._start_pool()
        for chunk in self.unsent:
            if chunk.items and chunk.future is None and chunk.results is None:
                try:
                    chunk.future = self.pool.submit(inspect_blobs, self.objects.path, chunk.items)
                except BrokenProcessPool:  # no pool any more: the chunk is parsed here when needed
                    continue
                self.sent.append(chunk)
        self.unsent = []


# -- tree comparison ahead ----------------------------------------------------------------
DIFF_CHUNK = 400  # commits per task

_OPEN: dict = {}  # repo path -> Objects; a forked worker inherits the scan's own (else opens one)


def _objects(repo: str) -> Objects:
    objects = _OPEN.get(repo)
    if objects is None:
        objects = _OPEN[repo] = Objects(repo)
    return objects


def diff_chunk(repo: str, scope, pairs: list[tuple]) -> tuple[list[list[Change]], dict[str, str]]:
    """Run in a worker: the changes of each ``(parent tree, tree)`` pair (``history.diff``), and the
    checksums of the files they modify (``{blob id: checksum}``, what ``State.checksum`` computes)."""
    objects = _objects(repo)
    out = [diff(objects, scope, old, new) for old, new in pairs]
    sums = {}
    for changes in out:
        for ch in changes:
            if ch.old is not None and ch.new is not None and ch.new[0] != LINK_MODE and ch.new[1] not in sums:
                sums[ch.new[1]] = checksum_bytes(objects.blob(ch.new[1]))
    return out, sums


def checksum_chunk(repo: str, blobs: list[str]) -> dict[str, str]:
    """Run in a worker: ``{blob id: checksum}`` (what ``State.checksum`` computes) of ``blobs``."""
    objects = _objects(repo)
    return {b: checksum_bytes(objects.blob(b)) for b in dict.fromkeys(blobs)}


class Diffs:
    """Commits' changes, compared by the pool's workers and by this process at once.

    The walk is cut into chunks of :data:`DIFF_CHUNK` commits, all sent to the pool. The walk
    asks for each commit's changes in order (:meth:`get`): a chunk no worker has begun is
    compared here; while a worker compares the chunk asked for, this process compares the
    last chunks no worker has begun (as :meth:`Prefetch.take` does for parses). Each chunk is
    compared by the same code (``history.diff``) wherever it runs, so the result is the same.
    """

    def __init__(self, pool, objects, scope, pairs: list[tuple], sums: dict[str, str]) -> None:
        self.objects, self.scope, self.sums = objects, scope, sums
        self.chunks = [pairs[i:i + DIFF_CHUNK] for i in range(0, len(pairs), DIFF_CHUNK)]
        self.results: list[list | None] = [None] * len(self.chunks)
        self.futures: list = [None] * len(self.chunks)
        self.back = len(self.chunks) - 1  # the last chunk that may still be stolen
        for j in range(1, len(self.chunks)):  # the first is compared here while the workers start
            try:
                self.futures[j] = pool.submit(diff_chunk, objects.path, scope, self.chunks[j])
            except BrokenProcessPool:
                break

    def get(self, i: int) -> list[Change]:
        """The changes of the ``i``-th pair (asked for in order)."""
        j, k = divmod(i, DIFF_CHUNK)
        res = self.results[j]
        if res is None:
            res = self.results[j] = self._fetch(j)
        if k == len(self.chunks[j]) - 1:
            self.results[j] = None
            self.chunks[j] = []
        return res[k]

    def _here(self, j: int) -> list[list[Change]]:
        return [diff(self.objects, self.scope, old, new) for old, new in self.chunks[j]]

    def _fetch(self, j: int) -> list[list[Change]]:
        f = self.futures[j]
        if f is None or f.cancel():
            return self._here(j)
        while not f.done() and self._steal(j):
            pass
        try:
            out, sums = f.result()
        except BrokenProcessPool:  # a worker died: compare here
            return self._here(j)
        self.sums.update(sums)
        return out

    def _steal(self, j: int) -> bool:
        """Compare here the last chunk after ``j`` no worker has begun; False when there is none."""
        while self.back > j:
            b = self.back
            self.back -= 1
            f = self.futures[b]
            if self.results[b] is None and f is not None and f.cancel():
                self.results[b] = self._here(b)
                return True
        return False
