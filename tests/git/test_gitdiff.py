"""`git diff-tree --stdin` read by gitdiff gives the changes history.diff gives, pair by pair."""

from __future__ import annotations

import pytest

from registry import config
from registry.discovery import Scope, gitdiff
from registry.discovery.history import Objects, diff, walk

from . import seedrepo


def _pairs(objects):
    commits = walk(objects, list(objects.ref_heads(True, None).values()), set())
    trees = {c.sha: c.tree for c in commits}
    pairs = [((trees.get(c.parents[0]) or objects.commit(c.parents[0]).tree) if c.parents else None, c.tree)
             for c in commits]
    # also: a pair compared backwards, one against the empty tree, and identical trees
    return pairs + [(new, old) for old, new in pairs if old] + [(None, pairs[-1][1]), (pairs[-1][1], pairs[-1][1])]


@pytest.mark.skipif(not gitdiff.available(), reason="no git on the PATH")
@pytest.mark.parametrize("workers", [False, True])
def test_git_gives_the_changes_history_diff_gives(seed_project, workers):
    seedrepo.write_commit(seed_project.root, seedrepo.ALICE, "2024-03-01T00:00:00Z", {
        "db/migrations/V2__add_email_index.sql": "CREATE INDEX idx_users_email ON users (upper(email));\n",
        "db/migrations/V50__later.sql": "CREATE TABLE later (id int);\n",
        "node_modules/x/migrations/V1__skip.sql": "SELECT 1;\n",
        "docs/readme.md": "not a migration\n",
    }, {}, "later")
    scope = Scope.from_config(config.load())
    objects = Objects(str(seed_project.root))
    try:
        pairs = _pairs(objects)
        sums = {}
        pool = None
        if workers:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(1)
        try:
            git = gitdiff.start(objects, scope, pairs, pool, sums)
            assert git is not None
            got = [git.get(i) for i in range(len(pairs))]
            if workers:
                from concurrent.futures import wait

                wait(git.futures)
                git._sums(True)  # take in the checksums the worker made
            git.close()
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        assert not git.failed
        expected = [diff(objects, scope, old, new) for old, new in pairs]
        assert [sorted(g) for g in got] == [sorted(e) for e in expected]
        assert sum(map(len, expected)) > 10
        for blob, checksum in sums.items():  # what the pool computed is what State.checksum computes
            from registry.model import checksum_bytes

            assert checksum == checksum_bytes(objects.blob(blob))
        if workers:
            assert sums
    finally:
        objects.close()


def test_unexpected_output_falls_back_to_history_diff(seed_project, monkeypatch):
    scope = Scope.from_config(config.load())
    objects = Objects(str(seed_project.root))
    try:
        pairs = _pairs(objects)
        git = gitdiff.start(objects, scope, pairs)
        git.lines[3] = b"0" * 81 + b"\n"  # git echoes the real pair: not what is expected at 3
        got = [git.get(i) for i in range(len(pairs))]
        assert git.failed
        assert [sorted(g) for g in got] == [sorted(diff(objects, scope, old, new)) for old, new in pairs]
        git.close()
    finally:
        objects.close()


def test_git_reads_the_scanned_repository_whatever_git_dir_says(seed_project, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    seedrepo.git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))  # as in a hook of another repository
    scope = Scope.from_config(config.load())
    objects = Objects(str(seed_project.root))
    try:
        pairs = _pairs(objects)
        git = gitdiff.start(objects, scope, pairs)
        got = [git.get(i) for i in range(len(pairs))]
        git.close()
        assert not git.failed
        assert [sorted(g) for g in got] == [sorted(diff(objects, scope, old, new)) for old, new in pairs]
    finally:
        objects.close()
