"""PostgreSQL sessions: CONCURRENTLY outside transactions, timeouts, killed backends, tenants, backfill."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from registry.config import Target
from registry.model import Settings, Step
from registry.targets.base import StepFailed
from registry.targets.postgres import SERVER_TIME, PostgresAdapter, dbname_of
from registry.targets.sqlcommon import (
    ConnectionLost,
    LockNotAvailable,
    ShadowUnavailable,
    StatementTimeout,
    UnknownTenant,
    batches,
    bind_range,
    inline_range,
)


@pytest.fixture
def pg(pg_dsn):
    a = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
    a.connect()
    yield a
    a.close()


def sql(text: str, line: int = 1) -> Step:
    return Step(content=text, line=line, name="s")


def test_concurrent_index_runs_in_a_non_transactional_session(pg):
    with pg.session(transactional=False) as s:
        s.execute(sql("CREATE TABLE users (id bigint PRIMARY KEY, email text)"))
        s.execute(sql("CREATE INDEX CONCURRENTLY idx_users_email ON users(email)"))
    rows = pg.conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_email'::regclass").fetchall()
    assert rows == [(True,)]


def test_concurrent_index_inside_a_transaction_fails_with_sqlstate(pg):
    with pytest.raises(StepFailed) as err:
        with pg.session(transactional=True) as s:
            s.execute(sql("CREATE TABLE t (id int)"))
            s.execute(sql("CREATE INDEX CONCURRENTLY i ON t(id)", line=9), path="m.sql")
    assert err.value.data["sqlstate"] == "25001"
    assert "m.sql:9" in str(err.value)
    assert pg.conn.execute("SELECT to_regclass('t')").fetchone() == (None,)


def _hold_table_lock(dsn: str, table: str, seconds: float, ready: threading.Event) -> None:
    with psycopg.connect(dsn) as c:
        c.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        ready.set()
        time.sleep(seconds)


def test_lock_timeout_is_distinguished_and_retryable_with_a_savepoint(pg, pg_dsn):
    pg.conn.execute("CREATE TABLE busy (id int)")
    ready = threading.Event()
    blocker = threading.Thread(target=_hold_table_lock, args=(pg_dsn, "busy", 1.5, ready))
    blocker.start()
    ready.wait(10)
    started = time.monotonic()
    with pg.session(transactional=True, settings=Settings(lock_timeout=200, timeout=10_000)) as s:
        s.execute(sql("CREATE TABLE other (id int)"))
        with pytest.raises(LockNotAvailable) as err:
            s.execute(sql("ALTER TABLE busy ADD COLUMN note text", line=3), savepoint=True)
        assert err.value.data["sqlstate"] == "55P03"
        assert err.value.retryable
        assert time.monotonic() - started < 1.4  # gave up after lock_timeout, not after the blocker
        blocker.join()
        s.execute(sql("ALTER TABLE busy ADD COLUMN note text"), savepoint=True)  # the retry succeeds
        s.commit()
    cols = pg.conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'busy' "
                           "ORDER BY ordinal_position").fetchall()
    assert cols == [("id",), ("note",)]
    assert pg.conn.execute("SELECT to_regclass('other')").fetchone()[0] == "other"


def test_statement_timeout_is_its_own_error(pg):
    with pytest.raises(StatementTimeout) as err:
        with pg.session(transactional=True, statement_timeout_ms=100) as s:
            s.execute(sql("SELECT pg_sleep(2)"))
    assert err.value.data["sqlstate"] == "57014"
    assert not isinstance(err.value, LockNotAvailable)


def test_non_transactional_session_restores_its_settings(pg):
    with pg.session(transactional=False, lock_timeout_ms=1234, statement_timeout_ms=5678) as s:
        assert s.query("SHOW lock_timeout") == [{"lock_timeout": "1234ms"}]
    assert pg.conn.execute("SHOW lock_timeout").fetchone()[0] == "0"
    assert pg.conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
    pg.conn.execute("SET lock_timeout = '7s'; SET search_path = pg_catalog, public")  # e.g. from the URL
    with pg.session(transactional=False, settings=Settings(lock_timeout=100, timeout=200)) as s:
        assert s.query("SHOW lock_timeout") == [{"lock_timeout": "100ms"}]
    assert pg.conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    assert pg.conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog, public"


def test_transactional_session_timeouts_are_local(pg):
    with pg.session(transactional=True, settings=Settings(lock_timeout=5000, timeout=60_000)) as s:
        assert s.query("SHOW lock_timeout") == [{"lock_timeout": "5s"}]
        assert s.query("SHOW statement_timeout") == [{"statement_timeout": "1min"}]
        s.commit()
    assert pg.conn.execute("SHOW lock_timeout").fetchone()[0] == "0"


def test_backend_killed_mid_step_raises_then_next_session_works(pg, pg_dsn):
    pg.ensure_mirror()
    pid = pg.conn.info.backend_pid

    def kill_soon():
        time.sleep(0.5)
        with psycopg.connect(pg_dsn, autocommit=True) as c:
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(ConnectionLost) as err:
        with pg.session(transactional=True) as s:
            s.execute(sql("CREATE TABLE half (id int)"))
            s.execute(sql("SELECT pg_sleep(10)", line=4), path="slow.sql")
    killer.join()
    assert "slow.sql:4" in str(err.value)
    with pg.session(transactional=True) as s:  # reconnects
        assert s.query("SELECT to_regclass('half') AS t") == [{"t": None}]
        s.execute(sql("CREATE TABLE whole (id int)"))
        s.commit()
    assert pg.conn.info.backend_pid != pid
    assert pg.mirror_rows("x/y") == []


def test_tenant_session_uses_the_tenant_schema(pg):
    pg.conn.execute("CREATE SCHEMA acme; CREATE SCHEMA globex")
    for tenant in ("acme", "globex"):
        with pg.session(transactional=True, tenant=tenant) as s:
            s.execute(sql("CREATE TABLE prefs (id int)"))
            s.commit()
    got = pg.conn.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'prefs' ORDER BY 1").fetchall()
    assert got == [("acme",), ("globex",)]
    assert pg.conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
    with pg.session(transactional=False, tenant="acme") as s:
        s.execute(sql("CREATE INDEX CONCURRENTLY prefs_id ON prefs(id)"))
    assert pg.conn.execute("SELECT to_regclass('acme.prefs_id')").fetchone()[0] == "acme.prefs_id"
    assert pg.conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
    with pytest.raises(UnknownTenant):
        with pg.session(transactional=True, tenant="initech"):
            pass


def test_backfill_by_key_range_binds_parameters(pg):
    pg.conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, email_verified boolean)")
    pg.conn.execute("INSERT INTO users SELECT g, 'u' || g || '@x%y', NULL FROM generate_series(3, 2502) g")
    assert pg.backfill_range("users", "id") == (3, 2502)
    assert pg.backfill_range("public.users", "id") == (3, 2502)
    update = ("UPDATE users SET email_verified = (email LIKE '%@x\\%y') "
              "WHERE id >= :lo AND id < :hi AND email_verified IS NULL AND id::bigint > 0")
    lo, hi = pg.backfill_range("users", "id")
    ranges = list(batches(lo, hi, 1000))
    assert ranges == [(3, 1003), (1003, 2003), (2003, 2503)]
    counts = []
    for a, b in ranges:
        with pg.session(transactional=True) as s:
            counts.append(s.run_batch(update, a, b))
            s.commit()
    assert counts == [1000, 1000, 500]
    assert pg.conn.execute("SELECT count(*) FROM users WHERE email_verified").fetchone()[0] == 2500
    pg.conn.execute("CREATE TABLE empty (id int)")
    assert pg.backfill_range("empty", "id") is None


def test_integer_batch_travels_with_its_begin_in_one_round_trip(pg):
    """An integer key range is written into the statement, so BEGIN, the SET LOCALs and the batch go
    in one simple query; ``commit(last=)`` sends the progress statement with the COMMIT."""
    pg.conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, v int)")
    pg.conn.execute("CREATE TABLE progress (k int PRIMARY KEY, next_key bigint)")
    pg.conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(-5, 20) g")
    pg.conn.execute("INSERT INTO progress VALUES (1, -5)")
    sent: list[str] = []
    real = pg._simple

    def spy(conn, text, meanwhile=None, every=False):
        sent.append(text)
        return real(conn, text, meanwhile, every)

    pg._simple = spy
    with pg.session(transactional=True, lock_timeout_ms=1500) as s:
        assert s.run_batch("UPDATE t SET v = v + 1 WHERE id >= :lo AND id-:lo >= 0 AND id < :hi", -5, 10) == 15
        assert 0 < s.server_s < 1
        s.commit(last="UPDATE progress SET next_key = 10 WHERE k = 1")
    assert len(sent) == 2
    assert sent[0].startswith("BEGIN; SET LOCAL lock_timeout") and "id >= (-5) AND id-(-5) >= 0 AND id < 10" in sent[0]
    assert sent[0].endswith(SERVER_TIME)  # the server's own time on the batch comes back in the same trip
    assert sent[1] == "UPDATE progress SET next_key = 10 WHERE k = 1;\nCOMMIT"
    pg._simple = real
    assert pg.conn.execute("SELECT sum(v), min(id) FILTER (WHERE v = 1) FROM t").fetchone() == (15, -5)
    assert pg.conn.execute("SELECT next_key FROM progress").fetchone()[0] == 10


def test_a_batchs_server_time_leaves_out_the_round_trip_and_the_clients_delays(pg):
    """``run_timed`` reports the server's time on a query, from its arrival to its last statement's
    end: here the server sleeps 50 ms and the client reads the answer only 300 ms after sending it.
    A batch whose statement ends with a comment is still timed; a failing one raises its error and
    leaves the connection usable."""
    t0 = time.monotonic()
    count, server = pg.run_timed(pg.conn, "SELECT pg_sleep(0.05)", meanwhile=lambda: time.sleep(0.3))
    client = time.monotonic() - t0
    assert count == 1 and 0.05 <= server < 0.2 and client >= 0.3, (server, client)
    pg.conn.execute("CREATE TABLE tt (id int PRIMARY KEY)")
    pg.conn.execute("INSERT INTO tt SELECT generate_series(1, 10)")
    with pg.session(transactional=True) as s:
        assert s.run_batch("UPDATE tt SET id = id WHERE id >= :lo AND id < :hi -- to the end", 2, 5) == 3
        assert s.server_s is not None and s.server_s < 1
        s.commit()
    with pytest.raises(StepFailed, match="division by zero"):
        with pg.session(transactional=True) as s:
            s.run_batch("UPDATE tt SET id = id / 0 WHERE id >= :lo AND id < :hi", 1, 3)
    with pg.session(transactional=True) as s:  # bounds bound as parameters: not timed
        assert s.run_batch("UPDATE tt SET id = id WHERE id >= :lo AND id < :hi", "1", "3") == 2
        assert s.server_s is None
        s.commit()
    assert pg.conn.execute("SELECT count(*) FROM tt").fetchone()[0] == 10


def test_commit_last_statement_in_every_path_and_a_refused_one_commits_nothing(pg):
    pg.conn.execute("CREATE TABLE c (k int PRIMARY KEY)")
    # nothing sent yet: BEGIN, the statement and COMMIT together
    with pg.session(transactional=True) as s:
        s.commit(last="INSERT INTO c VALUES (1)")
    # after a statement
    with pg.session(transactional=True) as s:
        s.execute(sql("INSERT INTO c VALUES (2)"))
        s.commit(last="INSERT INTO c VALUES (3)")
    assert [r[0] for r in pg.conn.execute("SELECT k FROM c ORDER BY k")] == [1, 2, 3]
    # a refused last statement: nothing of the transaction stays, the session is usable after
    with pytest.raises(Exception, match="duplicate key|c_pkey"):
        with pg.session(transactional=True) as s:
            s.execute(sql("INSERT INTO c VALUES (4)"))
            s.commit(last="INSERT INTO c VALUES (1)")
    assert [r[0] for r in pg.conn.execute("SELECT k FROM c ORDER BY k")] == [1, 2, 3]
    with pg.session(transactional=True) as s:
        assert s.literal("it's") == "'it''s'"
        s.commit(last=f"INSERT INTO c SELECT length({s.literal('four')})")
    assert [r[0] for r in pg.conn.execute("SELECT k FROM c ORDER BY k")] == [1, 2, 3, 4]


def test_bind_range_leaves_casts_and_literals_alone():
    text = "UPDATE t SET a = b::int WHERE k >= :lo AND k < :hi AND c LIKE 'x%'"
    assert bind_range(text) == "UPDATE t SET a = b::int WHERE k >= %(lo)s AND k < %(hi)s AND c LIKE 'x%%'"
    assert inline_range(text, -3, 7) == "UPDATE t SET a = b::int WHERE k >= (-3) AND k < 7 AND c LIKE 'x%'"
    assert inline_range("SELECT :lo::bigint, x::lo, :hi", 1, 2) == "SELECT 1::bigint, x::lo, 2"
    assert list(batches(0, 9, 4, start=4)) == [(4, 8), (8, 10)]
    assert list(batches(5, 4, 10)) == []
    from registry.targets.sqlcommon import BackfillKeyError

    with pytest.raises(BackfillKeyError):
        list(batches("a", "z", 10))
    with pytest.raises(BackfillKeyError):
        list(batches(1, 10, 0))


def test_shadow_database_is_created_and_dropped(pg):
    url = pg.create_shadow()
    name = dbname_of(url)
    assert name.startswith("mreg_shadow_")
    shadow = PostgresAdapter(Target("shadow", "postgresql", url, "test"), url)
    shadow.connect()
    with shadow.session(transactional=True) as s:
        s.execute(sql("CREATE TABLE scratch (id int)"))
        s.commit()
    shadow.close()
    pg.drop_shadow(url)
    assert pg.conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0] == 0
    with pytest.raises(ShadowUnavailable):
        pg.drop_shadow(pg.url)


def test_step_runs_multi_statement_text_as_written(pg):
    with pg.session(transactional=True) as s:
        s.execute(sql("CREATE TABLE a (id int); CREATE TABLE b (id int)"))
        s.commit()
    assert pg.conn.execute("SELECT to_regclass('a') IS NOT NULL AND to_regclass('b') IS NOT NULL").fetchone()[0]


def test_a_killed_operators_long_statement_is_cancelled_and_frees_its_locks(pg, pg_dsn):
    import os
    import signal
    import subprocess
    import sys

    pg.conn.execute("CREATE TABLE hot (id int)")
    script = (
        "import sys\n"
        "from registry.config import Target\n"
        "from registry.model import Step\n"
        "from registry.targets.postgres import PostgresAdapter\n"
        "dsn = sys.argv[1]\n"
        "a = PostgresAdapter(Target('main', 'postgresql', dsn, 'test'), dsn)\n"
        "with a.session(transactional=True) as s:\n"
        "    s.execute(Step('LOCK TABLE hot IN ACCESS EXCLUSIVE MODE'))\n"
        "    print('locked', flush=True)\n"
        "    s.execute(Step('SELECT pg_sleep(60)'))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, pg_dsn], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        time.sleep(0.3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    started = time.monotonic()
    with pg.session(transactional=True, lock_timeout_ms=10_000) as s:
        s.execute(sql("ALTER TABLE hot ADD COLUMN note text"))  # needs the lock the dead operator held
        s.commit()
    assert time.monotonic() - started < 5


def test_check_result_counts_ok_results_and_raises_the_servers_error(pg):
    """The fast path of check_result (its status numbers written out, psycopg imported lazily) agrees
    with psycopg's own statuses on real results."""
    from psycopg import errors, pq

    from registry.targets.sqlcommon import _RESULT_OK, check_result

    assert _RESULT_OK == (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)
    pgconn = pg.conn.pgconn
    assert check_result(pg.conn, pgconn.exec_(b"SELECT generate_series(1, 3)")) == 3
    assert check_result(pg.conn, pgconn.exec_(b"")) == -1  # an empty query
    assert check_result(pg.conn, pgconn.exec_(b"CREATE TEMP TABLE cr (k int)")) == -1
    assert check_result(pg.conn, pgconn.exec_(b"INSERT INTO cr VALUES (1), (2)")) == 2
    with pytest.raises(errors.DivisionByZero):
        check_result(pg.conn, pgconn.exec_(b"SELECT 1 / 0"))
