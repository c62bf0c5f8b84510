"""A migration's statement that queues behind an autovacuum of its table: the engine cancels the
autovacuum at once, where PostgreSQL would after ``deadlock_timeout`` — a wait in which every query
of the application on that table queues behind the statement. Against the real PostgreSQL server,
with a real (deliberately slowed) autovacuum worker."""

from __future__ import annotations

import time

import psycopg
import pytest

from registry.config import Target
from registry.targets.postgres import PostgresAdapter
from registry.targets.sqlcommon import LockNotAvailable
from registry.model import Step


def _slow_autovacuum(dsn: str) -> psycopg.Connection:
    """Table ``t`` with dead rows and an autovacuum of it that runs (it sleeps 100 ms per page)."""
    admin = psycopg.connect(dsn, autocommit=True)
    if not admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
        admin.close()
        pytest.skip("needs a superuser: the test speeds up the autovacuum launcher (ALTER SYSTEM)")
    admin.execute("CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_vacuum_threshold = 0, "
                  "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100, "
                  "autovacuum_vacuum_cost_limit = 1, autovacuum_analyze_threshold = 2000000000)")
    admin.execute("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
    admin.execute("DELETE FROM t WHERE id % 2 = 0")
    admin.execute("ALTER SYSTEM SET autovacuum_naptime = 1")
    admin.execute("SELECT pg_reload_conf()")
    return admin


def _wait_for_autovacuum(admin, deadline_s: float = 60) -> int:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        row = admin.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
                            "AND datname = current_database() AND query LIKE '%public.t%'").fetchone()
        if row:
            return row[0]
        time.sleep(0.1)
    pytest.fail("no autovacuum of t started within a minute (autovacuum_naptime = 1 s)")


def _restore(admin) -> None:
    admin.execute("ALTER SYSTEM RESET autovacuum_naptime")
    admin.execute("SELECT pg_reload_conf()")
    admin.close()


def _adapter(dsn: str, **options) -> PostgresAdapter:
    a = PostgresAdapter(Target("main", "postgresql", dsn, "test", options=options), dsn)
    a.connect()
    a.acquire_lock("operator", 5)
    return a


ALTER = Step(content="SET deadlock_timeout = '20s'; ALTER TABLE t ADD COLUMN w int", name="alter", line=1)


def test_a_statement_behind_an_autovacuum_cancels_it_at_once(pg_dsn):
    admin = _slow_autovacuum(pg_dsn)
    a = _adapter(pg_dsn)
    try:
        av = _wait_for_autovacuum(admin)
        t0 = time.monotonic()
        # deadlock_timeout raised for this session: PostgreSQL alone would make it wait 20 s
        with a.session(transactional=True, lock_timeout_ms=10_000) as s:
            s.execute(ALTER)
            s.commit()
        waited = time.monotonic() - t0
        assert waited < 0.9, waited
        notes = a.take_notices()
        assert len(notes) == 1 and f"pid {av}" in notes[0] and "autovacuum: VACUUM public.t" in notes[0]
        assert a.take_notices() == []
        assert a.conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 't' "
                              "AND column_name = 'w'").fetchone()[0] == 1
    finally:
        a.close()
        _restore(admin)


def test_the_option_off_leaves_the_autovacuum_and_the_lock_timeout_applies(pg_dsn):
    admin = _slow_autovacuum(pg_dsn)
    a = _adapter(pg_dsn, cancel_blocking_autovacuum=False)
    try:
        av = _wait_for_autovacuum(admin)
        t0 = time.monotonic()
        with pytest.raises(LockNotAvailable):
            with a.session(transactional=True, lock_timeout_ms=600) as s:
                s.execute(ALTER)
        assert time.monotonic() - t0 >= 0.55
        assert a.take_notices() == []
        assert admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (av,)).fetchone()[0] == 1
    finally:
        a.close()
        _restore(admin)


def test_a_session_of_the_application_in_the_way_is_never_cancelled(pg_dsn):
    a = _adapter(pg_dsn)
    other = psycopg.connect(pg_dsn)
    try:
        a.conn.execute("CREATE TABLE u (id int)")
        other.execute("SELECT * FROM u")  # an open transaction holding ACCESS SHARE on u
        with pytest.raises(LockNotAvailable):
            with a.session(transactional=True, lock_timeout_ms=500) as s:
                s.execute(Step(content="ALTER TABLE u ADD COLUMN w int", name="alter", line=1))
        assert a.take_notices() == []
        assert other.execute("SELECT 1").fetchone()[0] == 1  # still alive, still in its transaction
        other.rollback()
    finally:
        other.close()
        a.close()


def test_a_phase_that_fails_after_cancelling_an_autovacuum_still_says_so(tmp_path, pg_dsn):
    """The warning is not lost with the phase: the operator reads both the failure and the cancel."""
    from engine_support import Project

    admin = _slow_autovacuum(pg_dsn)
    try:
        av = _wait_for_autovacuum(admin)
        proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})
        proj.write("20250101_000001_schema_t_w.sql", """
            -- Phase 1: EXPAND
            SET deadlock_timeout = '20s';
            ALTER TABLE t ADD COLUMN w int;
            SELECT 1 / 0;
        """)
        code, out, err = proj.run("apply")
        assert code == 3, (out, err)
        assert "division by zero" in out + err
        assert f"cancelled autovacuum: VACUUM public.t (pid {av})" in out + err, (out, err)
        # rolled back with the phase: no column w
        assert admin.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 't' "
                             "AND column_name = 'w'").fetchone()[0] == 0
    finally:
        _restore(admin)
