"""The conformance suite every adapter passes against its real server (Sqitch's DBIEngineTest).

One suite, parametrized over the adapter kinds. What differs per kind is data:
the ``SAMPLES`` dict below (a step that creates something, a check that sees it,
a step that fails, a rollback step, statements that try to rewrite the mirror).
An adapter whose module does not exist yet is skipped with a reason naming it.

Leaves are built with the ledger's API (statement, DSSE envelope, leaf), so the
rows are the same bytes the engine writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from registry.config import Target
from registry.errors import DatabaseError
from registry.model import Step
from registry.targets import adapter_class
from registry.targets.base import Adapter, LockTimeout, Session, StepFailed, mirror_row_from_leaf
from tests.targets.leaves import ORIGIN, make_log

# What each kind runs. ``check`` is a read whose first row's first value is truthy
# when ``create`` was applied; ``tamper`` are statements that try to rewrite or
# delete mirror rows (each must fail); ``tamper_evident`` (targets with no server-side guard)
# are ``{origin}``-templated statements that succeed but must change what ``mirror_rows`` reads;
# ``options`` go into the Target;
# ``lock_names_holder`` (default True) says a waiter's LockTimeout names the holder.
SAMPLES: dict[str, dict] = {
    "postgresql": {
        "fixture": "pg_dsn",
        "kind": "sql",
        "create": "CREATE TABLE conformance_t (id integer PRIMARY KEY, note text)",
        "check": "SELECT count(*) FROM pg_tables WHERE tablename = 'conformance_t'",
        "failing": "INSERT INTO no_such_table_xyz VALUES (1)",
        "failing_message": "no_such_table_xyz",
        "rollback": "DROP TABLE conformance_t",
        "tamper": [
            "UPDATE schema_versions SET applied_by = 'mallory'",
            "DELETE FROM schema_versions",
            "TRUNCATE schema_versions",
            "UPDATE schema_versions SET leaf = leaf || '\\x00'::bytea",
        ],
        "unreachable_url": "postgresql://mreg:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2",
        "options": {},
    },
    "timescale": {
        "fixture": "timescale_dsn",
        "kind": "sql",
        "create": "CREATE TABLE conformance_t (id integer PRIMARY KEY, note text)",
        "check": "SELECT count(*) FROM pg_tables WHERE tablename = 'conformance_t'",
        "failing": "INSERT INTO no_such_table_xyz VALUES (1)",
        "failing_message": "no_such_table_xyz",
        "rollback": "DROP TABLE conformance_t",
        "tamper": [
            "UPDATE schema_versions SET applied_by = 'mallory'",
            "DELETE FROM schema_versions",
            "TRUNCATE schema_versions",
        ],
        "unreachable_url": "postgresql://mreg:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2",
        "options": {},
        # pglite serves one connection at a time: a waiter cannot connect, so cannot read the holder's name
        "lock_names_holder": False,
    },
    # nosqladapt fills these two in (Cypher and Redis commands).
    "neo4j": {
        "fixture": "neo4j_uri",
        "kind": "cypher",
        "create": "CREATE (:ConformanceT {id: 1})",
        "check": "MATCH (n:ConformanceT) RETURN count(n) AS n",
        "failing": "THIS IS NOT CYPHER",
        "failing_message": "Invalid input",
        "rollback": "MATCH (n:ConformanceT) DELETE n",
        "tamper": [],  # Community has no triggers: nothing refuses these writes ...
        "tamper_evident": [  # ... but each shows when the rows are compared with their leaves
            "MATCH (v:SchemaVersion {{origin: '{origin}'}}) SET v.applied_by = 'mallory'",
            "MATCH (v:SchemaVersion {{origin: '{origin}', seq: 1}}) DETACH DELETE v",
            "MATCH (v:SchemaVersion {{origin: '{origin}', seq: 2}}) SET v.leaf = v.leaf_hash",
        ],
        "unreachable_url": "bolt://mreg:s3cret-pw@127.0.0.1:1",
        "options": {"lock_lease_ms": 2000},  # a killed holder's lease ends within 2 s
    },
    "redis": {
        "fixture": "redis_url",
        "kind": "redis",
        "create": "SET conformance:t 1",
        "check": "EXISTS conformance:t",
        "failing": "NOSUCHCOMMAND x",
        "failing_message": "unknown command",
        "rollback": "DEL conformance:t",
        "tamper": [],  # Redis cannot refuse XDEL/DEL ...
        "tamper_evident": [  # ... but each shows when the stream is compared with its leaves
            "XDEL mreg:ledger:{origin} 1-1",
            "DEL mreg:ledger:{origin}",
            "XTRIM mreg:ledger:{origin} MAXLEN 1",
        ],
        "unreachable_url": "redis://127.0.0.1:1/0",
        "options": {"lock_lease_ms": 2000},  # a killed holder's lease ends within 2 s
    },
}

KINDS = list(SAMPLES)


def make_adapter(kind: str, url: str, name: str = "conf"):
    sample = SAMPLES[kind]
    target = Target(name=name, type=kind, url=url, source="test", options=dict(sample["options"]))
    return adapter_class(kind)(target, url)


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def url(kind, request) -> str:
    return request.getfixturevalue(SAMPLES[kind]["fixture"])


@pytest.fixture
def adapter(kind, url):
    a = make_adapter(kind, url)
    a.connect()
    yield a
    a.close()


def step(kind: str, which: str, line: int = 7) -> Step:
    return Step(content=SAMPLES[kind][which], kind=SAMPLES[kind]["kind"], name=which, line=line)


def first_value(rows: list) -> object:
    if not rows:
        return None
    row = rows[0]
    if isinstance(row, dict):
        return next(iter(row.values()))
    if isinstance(row, (list, tuple)):
        return row[0]
    return row


# ----------------------------------------------------------------------------- leaves


# ----------------------------------------------------------------------------- the suite


def test_connect_and_server_version(kind, adapter):
    version = adapter.server_version()
    assert isinstance(version, str) and any(ch.isdigit() for ch in version)
    for attr in ("transactional_ddl", "supports_concurrent_index", "supports_batches"):
        assert isinstance(getattr(adapter, attr), bool)
    assert isinstance(adapter, Adapter)  # the Protocol of registry/targets/base.py
    assert adapter.kind == kind
    for transactional in (True, False):
        with adapter.session(transactional=transactional) as s:
            assert isinstance(s, Session)
            assert s.transactional is transactional


def test_unreachable_server_names_the_target_without_password(kind):
    a = make_adapter(kind, SAMPLES[kind]["unreachable_url"], name="faraway")
    with pytest.raises(DatabaseError) as err:
        a.connect()
        a.server_version()
    assert "faraway" in str(err.value)
    assert "s3cret-pw" not in str(err.value)
    assert err.value.hint


def test_ensure_mirror_is_idempotent(kind, url, adapter):
    adapter.ensure_mirror()
    adapter.ensure_mirror()
    other = make_adapter(kind, url) if kind != "timescale" else adapter
    try:
        other.ensure_mirror()
        assert other.mirror_rows(ORIGIN) == []
        assert other.mirror_checkpoint(ORIGIN) is None
    finally:
        if other is not adapter:
            other.close()


def test_mirror_round_trip_every_column(kind, url, adapter):
    adapter.ensure_mirror()
    leaves = make_log(4, engine=kind)
    with adapter.session(transactional=True) as s:
        for leaf in leaves[:2]:
            s.append_mirror(mirror_row_from_leaf(leaf))
        s.commit()
    for leaf in leaves[2:]:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    expected = [mirror_row_from_leaf(leaf) for leaf in leaves]
    got = adapter.mirror_rows(ORIGIN)
    assert got == expected  # dataclass equality: every column, leaf bytes included
    assert [r.leaf for r in got] == leaves
    assert adapter.mirror_rows(ORIGIN, start=3) == expected[3:]
    assert adapter.mirror_rows("conformance/other") == []


def test_duplicate_seq_is_refused(kind, adapter):
    adapter.ensure_mirror()
    first = make_log(2, engine=kind)
    adapter.append_mirror(mirror_row_from_leaf(first[0]))
    adapter.append_mirror(mirror_row_from_leaf(first[1]))
    rival = make_log(2, engine=kind)  # same seqs, other signer and bytes
    with pytest.raises(DatabaseError) as err:
        adapter.append_mirror(mirror_row_from_leaf(rival[1]))
    assert "1" in str(err.value)
    assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == first


def test_mirror_rows_cannot_be_rewritten(kind, adapter):
    statements = SAMPLES[kind]["tamper"]
    evident = SAMPLES[kind].get("tamper_evident", [])
    if not statements and not evident:
        pytest.skip(f"the {kind} sample declares no tampering statements (no server-side guard)")
    adapter.ensure_mirror()
    # Without a server-side guard (Neo4j Community, Redis) tampering succeeds, but it must show:
    # the rows read back no longer equal the ones derived from the leaves, which `mreg verify` reports.
    for i, text in enumerate(evident):
        origin = f"conformance/evident{i}"
        leaves = make_log(3, origin=origin, engine=kind)
        for leaf in leaves:
            adapter.append_mirror(mirror_row_from_leaf(leaf))
        with adapter.session(transactional=False) as s:
            s.execute(Step(content=text.format(origin=origin), kind=SAMPLES[kind]["kind"], name=f"tamper {i}"))
        assert adapter.mirror_rows(origin) != [mirror_row_from_leaf(leaf) for leaf in leaves], text
    leaves = make_log(2, engine=kind)
    for leaf in leaves:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    for i, text in enumerate(statements):
        tamper = Step(content=text, kind=SAMPLES[kind]["kind"], name=f"tamper {i}", line=i + 1)
        with pytest.raises(StepFailed):
            with adapter.session(transactional=False) as s:
                s.execute(tamper)
        assert adapter.mirror_rows(ORIGIN) == [mirror_row_from_leaf(leaf) for leaf in leaves], text


def test_checkpoint_size_never_goes_down(kind, adapter):
    adapter.ensure_mirror()
    adapter.write_checkpoint(ORIGIN, 3, "note at 3")
    assert adapter.mirror_checkpoint(ORIGIN) == "note at 3"
    adapter.write_checkpoint(ORIGIN, 5, "note at 5")
    with pytest.raises(DatabaseError) as err:
        adapter.write_checkpoint(ORIGIN, 4, "note at 4")
    assert "5" in str(err.value) and "4" in str(err.value)
    assert adapter.mirror_checkpoint(ORIGIN) == "note at 5"
    adapter.write_checkpoint(ORIGIN, 5, "note at 5, cosigned")
    assert adapter.mirror_checkpoint(ORIGIN) == "note at 5, cosigned"
    adapter.write_checkpoint("conformance/other", 1, "other log")
    assert adapter.mirror_checkpoint(ORIGIN) == "note at 5, cosigned"


def test_rolled_back_session_leaves_no_change_and_no_mirror_row(kind, adapter):
    adapter.ensure_mirror()
    leaf = make_log(1, engine=kind)[0]
    with adapter.session(transactional=True) as s:
        s.execute(step(kind, "create"))
        s.append_mirror(mirror_row_from_leaf(leaf))
        assert first_value(s.query(SAMPLES[kind]["check"]))
        # left without commit(): rolled back
    with adapter.session(transactional=True) as s:
        assert not first_value(s.query(SAMPLES[kind]["check"]))
    assert adapter.mirror_rows(ORIGIN) == []

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with adapter.session(transactional=True) as s:
            s.execute(step(kind, "create"))
            s.append_mirror(mirror_row_from_leaf(leaf))
            raise Boom
    assert adapter.mirror_rows(ORIGIN) == []


def test_committed_session_keeps_change_and_row_then_rollback_step(kind, adapter):
    adapter.ensure_mirror()
    leaf = make_log(1, engine=kind)[0]
    with adapter.session(transactional=True) as s:
        s.execute(step(kind, "create"))
        s.append_mirror(mirror_row_from_leaf(leaf))
        s.commit()
    with adapter.session(transactional=True) as s:
        assert first_value(s.query(SAMPLES[kind]["check"]))
        s.execute(step(kind, "rollback"))
        s.commit()
    with adapter.session(transactional=True) as s:
        assert not first_value(s.query(SAMPLES[kind]["check"]))
    assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == [leaf]


def test_step_failure_raises_step_failed_with_the_servers_message(kind, adapter):
    with pytest.raises(StepFailed) as err:
        with adapter.session(transactional=True) as s:
            s.execute(step(kind, "failing", line=42), path="migrations/x.sql")
    message = str(err.value)
    assert SAMPLES[kind]["failing_message"].lower() in message.lower()
    assert err.value.data.get("line") == 42
    assert "migrations/x.sql" in message
    # the adapter is still usable
    with adapter.session(transactional=True) as s:
        s.execute(step(kind, "create"))
        s.commit()


def _holder_script(kind: str, url: str, owner: str) -> str:
    return textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_conformance import make_adapter
        a = make_adapter({kind!r}, {url!r}, name="conf")
        a.connect()
        a.acquire_lock({owner!r}, 30)
        print("locked", flush=True)
        time.sleep(120)
    """)


def start_holder(kind: str, url: str, owner: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _holder_script(kind, url, owner)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        raise AssertionError(f"lock holder did not start: {line!r} {proc.stderr.read()}")
    return proc


def test_lock_is_exclusive_and_names_the_holder(kind, url):
    holder = start_holder(kind, url, "alice@laptop pid 1")
    try:
        b = make_adapter(kind, url)  # not connected yet: acquire_lock connects (and may wait for it)
        started = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            b.acquire_lock("bob@desk pid 2", 1.0)
        waited = time.monotonic() - started
        assert 0.9 <= waited < 15
        assert err.value.hint
        if SAMPLES[kind].get("lock_names_holder", True):
            assert "alice@laptop" in str(err.value)
            assert "alice@laptop" in (b.lock_holder() or "")
        b.close()
    finally:
        holder.kill()
        holder.wait(10)


def test_released_lock_lets_the_next_operator_in(kind, url):
    a = make_adapter(kind, url)
    a.connect()
    assert a.lock_holder() is None
    handle = a.acquire_lock("alice@laptop pid 1", 5)
    assert "alice@laptop" in (a.lock_holder() or "")
    a.release_lock(handle)
    assert a.lock_holder() is None
    a.close()
    b = make_adapter(kind, url)
    b.connect()
    handle = b.acquire_lock("bob@desk pid 2", 5)
    assert "bob@desk" in (b.lock_holder() or "")
    b.release_lock(handle)
    b.close()


def test_lock_recovered_after_the_holder_dies(kind, url):
    holder = start_holder(kind, url, "crashy@host pid 99")
    try:
        if kind != "timescale":
            probe = make_adapter(kind, url)
            probe.connect()
            try:
                assert "crashy@host" in (probe.lock_holder() or "")
                with pytest.raises(LockTimeout):
                    probe.acquire_lock("next@host", 0.5)
            finally:
                probe.close()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        after = make_adapter(kind, url)
        started = time.monotonic()
        after.connect()
        handle = after.acquire_lock("next@host pid 3", 30)
        assert time.monotonic() - started < 30
        assert "next@host" in (after.lock_holder() or "")
        after.release_lock(handle)
        after.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
