"""An interrupted ``CREATE INDEX CONCURRENTLY`` on a real PostgreSQL leaves an INVALID index; the
next ``mreg apply`` drops it and builds the index again (a backend terminated, the applying process
killed, a lock timeout retried)."""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest
from engine_support import Project, events, pg_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROWS = 600_000
MID = "20250101_000002_schema_index"


def _project(tmp_path, dsn: str, create: str, header: str = "") -> Project:
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    proj.write("20250101_000001_schema_big.sql", f"""
        -- Phase 1: EXPAND
        CREATE TABLE marks (tag text NOT NULL);
        CREATE TABLE big (id bigint PRIMARY KEY, s text NOT NULL);
        INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) AS g;
    """)
    proj.write(f"{MID}.sql", f"""
        -- Dependencies: [20250101_000001_schema_big]
        -- txmode: none
        {header}
        -- Phase 1: EXPAND
        INSERT INTO marks VALUES ('before');
        {create};
        INSERT INTO marks VALUES ('after');
    """.replace("\n        \n", "\n"))
    return proj


def _index(dsn: str) -> list[tuple]:
    return pg_rows(dsn, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE c.relname = 'big_s'")


def _building(dsn: str, timeout: float = 60) -> int:
    """The pid of the backend building big_s, once it is scanning the table."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = pg_rows(dsn, "SELECT p.pid FROM pg_stat_progress_create_index p JOIN pg_class c "
                            "ON c.oid = p.index_relid WHERE c.relname = 'big_s' AND p.phase LIKE 'building%%'")
        if rows:
            return rows[0][0]
        time.sleep(0.02)
    raise AssertionError("the index build never started")


def _waiting(dsn: str, timeout: float = 60) -> int:
    """The pid of the backend whose CREATE INDEX CONCURRENTLY waits for another transaction."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = pg_rows(dsn, "SELECT pid FROM pg_stat_activity WHERE query LIKE 'CREATE UNIQUE INDEX%%' "
                            "AND wait_event_type = 'Lock'")
        if rows:
            return rows[0][0]
        time.sleep(0.02)
    raise AssertionError("the index build never waited")


def _gone(dsn: str, pid: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while pg_rows(dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
        assert time.time() < deadline, f"backend {pid} still running"
        time.sleep(0.05)


def _applies_again(proj: Project, dsn: str) -> None:
    assert _index(dsn) == [("big_s", False)], "the interruption left an INVALID index"
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert "dropped the INVALID index public.big_s" in out
    assert _index(dsn) == [("big_s", True)]
    assert sorted(pg_rows(dsn, "SELECT tag FROM marks")) == [("after",), ("before",)]
    checkpoints = events(proj.statements("main"), MID, "batch_checkpoint")
    assert [c["details"].get("dropped_invalid_index") for c in checkpoints if c["details"]["steps_done"] == 2] \
        == ["public.big_s"]
    code, out, err = proj.run("verify")
    assert code == 0, out + err


def test_backend_terminated_during_the_build(tmp_path, pg_dsn):
    proj = _project(tmp_path, pg_dsn, "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_s ON big (md5(s))")
    proc = proj.popen("apply")
    pid = _building(pg_dsn)
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    assert proc.wait(60) == 3
    failed = events(proj.statements("main"), MID, "apply_failed")[-1]["details"]
    assert failed["resumable"] is True and failed["steps_done"] == 1
    _applies_again(proj, pg_dsn)


def test_applying_process_killed_during_the_build(tmp_path, pg_dsn):
    """Killed while the build waits for a writer's transaction: the server ends the build within a second."""
    proj = _project(tmp_path, pg_dsn, "CREATE UNIQUE INDEX CONCURRENTLY big_s ON big (md5(s))",
                    "-- Lock-Timeout: 60000")
    assert proj.run("apply", "--to", "20250101_000001_schema_big")[0] == 0
    blocker = psycopg.connect(pg_dsn)
    try:
        blocker.execute("UPDATE big SET s = s WHERE id = 1")
        proc = proj.popen("apply")
        pid = _waiting(pg_dsn)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _gone(pg_dsn, pid)  # the server notices the client is gone (client_connection_check_interval)
    finally:
        blocker.rollback()
        blocker.close()
    _applies_again(proj, pg_dsn)


def test_lock_timeout_during_the_build_is_retried_on_a_clean_slate(tmp_path, pg_dsn):
    """A writer's open transaction makes the build wait past lock_timeout: the retry drops what it left."""
    proj = _project(tmp_path, pg_dsn, "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_s ON big (md5(s))",
                    "-- Lock-Timeout: 300\n-- Max-Retries: 10")
    code, out, err = proj.run("apply", "--to", "20250101_000001_schema_big")
    assert code == 0, err
    blocker = psycopg.connect(pg_dsn)
    blocker.execute("UPDATE big SET s = s WHERE id = 1")  # an open writer: the build must wait for it
    release = threading.Timer(1.5, blocker.rollback)
    release.start()
    try:
        code, out, err = proj.run("apply")
    finally:
        release.join()
        blocker.close()
    assert code == 0, err
    assert "dropped the INVALID index public.big_s" in out
    assert _index(pg_dsn) == [("big_s", True)]
    assert proj.run("verify")[0] == 0
