"""The PostgreSQL lock: session-level advisory lock on its own connection."""

from __future__ import annotations

import psycopg
import pytest

from registry.config import Target
from registry.model import Step
from registry.targets.base import LockTimeout
from registry.targets.postgres import PostgresAdapter


def adapter(dsn: str, **options) -> PostgresAdapter:
    a = PostgresAdapter(Target("main", "postgresql", dsn, "test", options), dsn)
    a.connect()
    return a


def test_lock_survives_concurrently_commits_and_rollbacks(pg_dsn):
    a, b = adapter(pg_dsn), adapter(pg_dsn)
    try:
        handle = a.acquire_lock("alice", 5)
        with a.session(transactional=False) as s:
            s.execute(Step("CREATE TABLE t (id int)"))
            s.execute(Step("CREATE INDEX CONCURRENTLY t_id ON t(id)"))
        with a.session(transactional=True) as s:
            s.execute(Step("CREATE TABLE u (id int)"))
        # neither CONCURRENTLY (which waits for other transactions) nor a rollback released it
        with pytest.raises(LockTimeout):
            b.acquire_lock("bob", 0.3)
        assert a.lock_alive()
        a.release_lock(handle)
        assert not a.lock_alive()
        b.release_lock(b.acquire_lock("bob", 1))
    finally:
        a.close()
        b.close()


def test_terminated_holder_backend_frees_the_lock(pg_dsn):
    a, b = adapter(pg_dsn), adapter(pg_dsn)
    try:
        handle = a.acquire_lock("alice", 5)
        assert "alice" in b.lock_holder()
        assert f"pid {handle.pid}" in b.lock_holder()
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (handle.pid,))
        assert not a.lock_alive()
        got = b.acquire_lock("bob", 5)
        assert "bob" in a.lock_holder()
        a.release_lock(handle)  # harmless: the lost lock is already gone
        assert "bob" in a.lock_holder()
        b.release_lock(got)
    finally:
        a.close()
        b.close()


def test_lock_is_per_mirror_schema_and_the_holder_table_is_written(pg_dsn):
    a, b = adapter(pg_dsn), adapter(pg_dsn, mirror_schema="mreg")
    try:
        ha = a.acquire_lock("alice", 1)
        hb = b.acquire_lock("bob", 1)  # another mirror schema, another lock
        rows = a.conn.execute("SELECT owner FROM public.mreg_lock_owner").fetchall()
        assert rows == [("alice",)]
        assert b.conn.execute("SELECT owner FROM mreg.mreg_lock_owner").fetchall() == [("bob",)]
        name = a.conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                              (ha.pid,)).fetchone()[0]
        assert name == "mreg lock: alice"
        a.release_lock(ha)
        b.release_lock(hb)
        assert a.conn.execute("SELECT count(*) FROM public.mreg_lock_owner").fetchone()[0] == 0
    finally:
        a.close()
        b.close()


def test_a_stale_owner_row_does_not_name_a_holder(pg_dsn):
    a = adapter(pg_dsn)
    try:
        a.ensure_mirror()
        a.conn.execute("INSERT INTO mreg_lock_owner (lock_key, owner, pid) VALUES (%s, 'ghost', 1)",
                       (a._lock_ids()[1],))
        assert a.lock_holder() is None
        handle = a.acquire_lock("alice", 1)
        assert a.lock_holder().startswith("alice (pid")
        a.release_lock(handle)
    finally:
        a.close()


def test_zero_timeout_tries_once(pg_dsn):
    a, b = adapter(pg_dsn), adapter(pg_dsn)
    try:
        a.acquire_lock("alice", 0)
        with pytest.raises(LockTimeout) as err:
            b.acquire_lock("bob", 0)
        assert err.value.data["holder"].startswith("alice")
    finally:
        a.close()
        b.close()


def test_a_lost_lock_connection_stops_the_next_session(pg_dsn):
    from registry.targets.sqlcommon import LockLost

    a, b = adapter(pg_dsn), adapter(pg_dsn)
    try:
        handle = a.acquire_lock("alice", 5)
        with a.session(transactional=True) as s:  # fine while the lock is held
            s.query("SELECT 1")
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (handle.pid,))
        taken = b.acquire_lock("bob", 5)  # the server released it: bob may go ahead
        with pytest.raises(LockLost) as err:
            with a.session(transactional=True) as s:
                s.execute(Step("CREATE TABLE must_not_exist (id int)"))
        assert "alice" in str(err.value)
        assert b.conn.execute("SELECT to_regclass('must_not_exist')").fetchone()[0] is None
        b.release_lock(taken)
        handle = a.acquire_lock("alice", 5)  # taking it anew works
        with a.session(transactional=True) as s:
            s.query("SELECT 1")
        a.release_lock(handle)
    finally:
        a.close()
        b.close()


WORKER = """
import sys, time
from registry.config import Target
from registry.model import Step
from registry.targets.postgres import PostgresAdapter
dsn, name = sys.argv[1], sys.argv[2]
a = PostgresAdapter(Target("main", "postgresql", dsn, "test"), dsn)
a.connect()
handle = a.acquire_lock(name, 60)
with a.session(transactional=True) as s:
    n = s.query("SELECT n FROM counter")[0]["n"]
    s.commit()
time.sleep(0.1)  # a lost update would show if two workers were in here at once
with a.session(transactional=True) as s:
    s.execute(Step(f"UPDATE counter SET n = {n + 1}"))
    s.execute(Step(f"INSERT INTO visits VALUES ('{name}', clock_timestamp())"))
    s.commit()
a.release_lock(handle)
a.close()
"""


def test_six_operators_at_once_take_turns(pg_dsn):
    import subprocess
    import sys

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE TABLE counter (n int); INSERT INTO counter VALUES (0); "
                  "CREATE TABLE visits (who text, at timestamptz)")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, pg_dsn, f"op{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(6)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with psycopg.connect(pg_dsn) as c:
        assert c.execute("SELECT n FROM counter").fetchone()[0] == 6
        assert sorted(r[0] for r in c.execute("SELECT who FROM visits")) == [f"op{i}" for i in range(6)]
