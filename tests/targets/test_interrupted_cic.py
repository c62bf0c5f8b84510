"""An interrupted ``CREATE INDEX CONCURRENTLY`` (named or not) or ``REINDEX CONCURRENTLY`` on a real
PostgreSQL leaves an INVALID index; the next ``mreg apply`` drops it and runs the statement again (a
backend terminated, the applying process killed, a lock timeout retried). Valid indexes, including
ones whose names look like leftovers, are kept. The names PostgreSQL chooses for an unnamed index are
checked against ``registry.apply.cic``'s computation."""

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


def _project(tmp_path, dsn: str, create: str, header: str = "", setup: str = "") -> Project:
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    proj.write("20250101_000001_schema_big.sql", f"""
        -- Phase 1: EXPAND
        CREATE TABLE marks (tag text NOT NULL);
        CREATE TABLE big (id bigint PRIMARY KEY, s text NOT NULL);
        INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) AS g;
        {setup}
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


def _indexes(dsn: str) -> list[tuple]:
    """(name, valid) of every index on big but its primary key."""
    return pg_rows(dsn, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE i.indrelid = 'big'::regclass AND c.relname <> 'big_pkey' ORDER BY 1")


def _building(dsn: str, timeout: float = 60, name: str = "big_s", phase: str = "building%") -> int:
    """The pid of the backend building index ``name`` (any, if None), once it is in ``phase``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = pg_rows(dsn, "SELECT p.pid FROM pg_stat_progress_create_index p LEFT JOIN pg_class c "
                            "ON c.oid = p.index_relid WHERE (c.relname = %s OR %s::text IS NULL) AND p.phase LIKE %s",
                       (name, name, phase))
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


def _applied_again(proj: Project, dsn: str, dropped: str | list, said: str) -> None:
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert said in out, out
    assert sorted(pg_rows(dsn, "SELECT tag FROM marks")) == [("after",), ("before",)]
    checkpoints = events(proj.statements("main"), MID, "batch_checkpoint")
    assert [c["details"].get("dropped_invalid_index") for c in checkpoints if c["details"]["steps_done"] == 2] \
        == [dropped]
    code, out, err = proj.run("verify")
    assert code == 0, out + err


def test_unnamed_index_terminated_during_the_build(tmp_path, pg_dsn):
    """PostgreSQL names it big_s_idx; run again without the cleanup it would build big_s_idx1 beside it."""
    proj = _project(tmp_path, pg_dsn, "CREATE INDEX CONCURRENTLY ON big (s)")
    proc = proj.popen("apply")
    pid = _building(pg_dsn, name="big_s_idx")
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    assert proc.wait(60) == 3
    assert _indexes(pg_dsn) == [("big_s_idx", False)]
    _applied_again(proj, pg_dsn, "public.big_s_idx",
                   "dropped the INVALID index public.big_s_idx an interrupted CREATE INDEX CONCURRENTLY left")
    assert _indexes(pg_dsn) == [("big_s_idx", True)]


def test_unnamed_index_whose_first_name_is_taken(tmp_path, pg_dsn):
    """big_s_idx exists and is valid, so the build is big_s_idx1: only that one is dropped."""
    proj = _project(tmp_path, pg_dsn, "CREATE UNIQUE INDEX CONCURRENTLY ON big (s)",
                    setup="CREATE INDEX big_s_idx ON big (id);")
    assert proj.run("apply", "--to", "20250101_000001_schema_big")[0] == 0
    proc = proj.popen("apply")
    pid = _building(pg_dsn, name="big_s_idx1")
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    assert proc.wait(60) == 3
    assert _indexes(pg_dsn) == [("big_s_idx", True), ("big_s_idx1", False)]
    _applied_again(proj, pg_dsn, "public.big_s_idx1", "dropped the INVALID index public.big_s_idx1 ")
    assert _indexes(pg_dsn) == [("big_s_idx", True), ("big_s_idx1", True)]
    assert pg_rows(pg_dsn, "SELECT indexdef FROM pg_indexes WHERE indexname = 'big_s_idx'") \
        == [("CREATE INDEX big_s_idx ON public.big USING btree (id)",)]


def test_reindex_index_terminated_during_the_build(tmp_path, pg_dsn):
    """The copy big_s_ccnew is left INVALID; the next run drops it and reindexes again."""
    proj = _project(tmp_path, pg_dsn, "REINDEX INDEX CONCURRENTLY big_s",
                    setup="CREATE INDEX big_s ON big (md5(s));")
    assert proj.run("apply", "--to", "20250101_000001_schema_big")[0] == 0
    proc = proj.popen("apply")
    pid = _building(pg_dsn, name=None)
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    assert proc.wait(60) == 3
    assert _indexes(pg_dsn) == [("big_s", True), ("big_s_ccnew", False)]
    _applied_again(proj, pg_dsn, "public.big_s_ccnew",
                   "dropped the INVALID index public.big_s_ccnew an interrupted REINDEX CONCURRENTLY left")
    assert _indexes(pg_dsn) == [("big_s", True)]


def test_valid_indexes_named_like_leftovers_are_kept(tmp_path, pg_dsn):
    """Valid big_s_ccnew and big_s_ccold exist: the interrupted copy is big_s_ccnew1, the one dropped."""
    proj = _project(tmp_path, pg_dsn, "REINDEX (VERBOSE, CONCURRENTLY) INDEX public.big_s",
                    setup="CREATE INDEX big_s ON big (md5(s)); CREATE INDEX big_s_ccnew ON big (id); "
                          "CREATE INDEX big_s_ccold ON big (id);")
    assert proj.run("apply", "--to", "20250101_000001_schema_big")[0] == 0
    proc = proj.popen("apply")
    pid = _building(pg_dsn, name=None)
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    assert proc.wait(60) == 3
    assert _indexes(pg_dsn) == [("big_s", True), ("big_s_ccnew", True), ("big_s_ccnew1", False),
                                ("big_s_ccold", True)]
    _applied_again(proj, pg_dsn, "public.big_s_ccnew1", "dropped the INVALID index public.big_s_ccnew1 ")
    assert _indexes(pg_dsn) == [("big_s", True), ("big_s_ccnew", True), ("big_s_ccold", True)]


def test_reindex_table_terminated_after_the_swap(tmp_path, pg_dsn):
    """A reader's open transaction holds REINDEX TABLE CONCURRENTLY after it swapped the names: killed
    there, it leaves the old indexes as big_pkey_ccold, big_s_ccold and pg_toast_<oid>_index_ccold (on
    the TOAST table), all INVALID."""
    proj = _project(tmp_path, pg_dsn, "REINDEX TABLE CONCURRENTLY big",
                    setup="CREATE INDEX big_s ON big (md5(s));")
    assert proj.run("apply", "--to", "20250101_000001_schema_big")[0] == 0
    reader = psycopg.connect(pg_dsn)
    try:
        reader.execute("SELECT 1 FROM big LIMIT 1")  # idle in transaction: holds an ACCESS SHARE lock
        proc = proj.popen("apply")
        pid = _building(pg_dsn, name=None, phase="waiting for readers before marking dead")
        pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
        assert proc.wait(60) == 3
    finally:
        reader.rollback()
        reader.close()
    left = pg_rows(pg_dsn, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE i.indrelid = 'big'::regclass ORDER BY 1")
    assert left == [("big_pkey", True), ("big_pkey_ccold", False), ("big_s", True), ("big_s_ccold", False)]
    toast = pg_rows(pg_dsn, "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE i.indrelid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'big'::regclass) "
                            "ORDER BY 1")
    assert [valid for _, valid in toast] == [True, False] and toast[1][0] == toast[0][0] + "_ccold"
    dropped = ["public.big_pkey_ccold", "public.big_s_ccold", f"pg_toast.{toast[1][0]}"]
    _applied_again(proj, pg_dsn, dropped, "dropped the INVALID index " + ", ".join(dropped))
    assert _indexes(pg_dsn) == [("big_s", True)]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


def test_chosen_names_match_the_server(pg_dsn):
    """For each unnamed CREATE INDEX, the name the server picks is the first of cic's candidates not taken."""
    from registry.apply.cic import concurrent_index, make_object_name
    from registry.model import Step

    t, c = "t" * 63, "c" * 63
    statements = [
        "ON big (s)", "ON big (s)", "ON big (s)", "ON big (a, b)", "ON big (a, a)", "ON big (md5(s))",
        "ON big ((s::int))", "ON big (('1'::int))", 'ON big ((s collate "C"))', "ON big ((a + b))", "ON big ((a))",
        "ON big ((big.a))", "ON big (coalesce(a, b))", "ON big (greatest(a, b))", "ON big (least(a, b))",
        "ON big ((nullif(a, b)))", "ON big ((case when a > 0 then s end))",
        "ON big ((case when a > 0 then s else q end))", "ON big ((array[a, b]))", "ON big ((a is null))",
        "ON big ((a > 0 and b > 0))", "ON big ((a > 0 is true))", "ON big ((s like 'a%'))", "ON big (a) INCLUDE (b, s)", "ON big (lower(s), lower(s))",
        "ON big ((a+b), (a-b))", "ON public.big USING hash (s) WHERE s IS NOT NULL", f"ON big ({c})",
        f"ON big ({c})", f"ON big (a, {c})", f"ON {t} (a)", f"ON {t} (a)", f"ON {t} ({c})", f"ON {t} ({c}, {c})",
        "ON big (a, b, s, q, id, a, b, s, q, id, a, b, s, q, id, a, b, s, q, id)",
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE big (id int, a int, b int, s text, q text, {c} int)")
        conn.execute(f"CREATE TABLE {t} (id int, a int, {c} int)")
        for sql in statements:
            index = concurrent_index(Step("CREATE INDEX CONCURRENTLY " + sql, transactional=False))
            taken = {r[0] for r in conn.execute("SELECT relname FROM pg_class")}
            conn.execute("CREATE INDEX " + sql)
            (chosen,) = {r[0] for r in conn.execute("SELECT relname FROM pg_class")} - taken
            n = 0
            while make_object_name(*index.chosen, "idx" + (str(n) if n else "")) in taken:
                n += 1
            assert chosen == make_object_name(*index.chosen, "idx" + (str(n) if n else "")), sql
            assert index.left(chosen, [])
