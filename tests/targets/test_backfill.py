"""The batched backfill on a real PostgreSQL (and the single-connection TimescaleDB dev server): exact
resume from the progress row, sparse ledger checkpoints, batches bounded in time, the duty cycle.

Every backfill here runs a non-idempotent UPDATE (``v = v + 1``): a batch run twice, or skipped,
shows in the data.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from engine_support import Project, events, pg_rows

pytestmark = pytest.mark.slow

MID = "20250101_000002_data_bump"


def _project(tmp_path, dsn: str, rows: int, header: str, *, update: str = "v = v + 1") -> Project:
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    proj.write("20250101_000001_schema_items.sql", f"""
        -- Phase 1: EXPAND
        CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0);
        INSERT INTO items (id) SELECT g FROM generate_series(1, {rows}) AS g;
    """)
    proj.write(f"{MID}.sql", f"""
        -- Dependencies: [20250101_000001_schema_items]
        {header}
        -- Phase 2: MIGRATE
        -- Backfill: table=items key=id
        UPDATE items SET {update} WHERE id >= :lo AND id < :hi;
    """.replace("\n        \n", "\n"))
    return proj


# how batches travel: one round trip each (the default), in runs on the server, or two round trips each
_MODES = {"one trip": "", "runs": "backfill_server_runs = true\n", "two trips": "backfill_one_trip = false\n"}


def _mode(proj: Project, mode: str, target: str = "main") -> None:
    if _MODES[mode]:
        toml = proj.root / "mreg.toml"
        toml.write_text(toml.read_text() + f"\n[targets.{target}.options]\n" + _MODES[mode])


def _trips(batch: dict) -> int | str:
    """How a batch travelled: ``run`` (in a run of batches on the server), or its round trips."""
    return "run" if "run" in batch else batch["trips"]


def _progress(dsn: str) -> list[tuple]:
    if not pg_rows(dsn, "SELECT to_regclass('mreg_backfill_progress')")[0][0]:
        return []
    return pg_rows(dsn, "SELECT next_key, rows_done FROM mreg_backfill_progress")


def _backfill_checkpoints(proj: Project) -> list[dict]:
    return [s["details"]["backfill"] for s in events(proj.statements("main"), MID, "batch_checkpoint")
            if "backfill" in s["details"]]


_SERVER_WORK = ("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND state = 'active' "
                "AND query LIKE '%mreg_backfill_%'")


def _kill_when(proc, dsn: str, cond, timeout: float = 60) -> tuple:
    """SIGKILL the process once the progress row meets ``cond``; the row once the server has
    finished what the killed process left running: a run of batches stops at its next batch, when it
    finds the lock's connection gone (at most the batch in flight commits), well within a second."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = _progress(dsn)
        if rows and cond(rows[0]):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = time.time()
            while pg_rows(dsn, _SERVER_WORK) != [(0,)]:
                assert time.time() - killed < 1.0, "the killed process's batches ran on"
                time.sleep(0.005)
            return _progress(dsn)[0]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the backfill never got that far")


@pytest.mark.parametrize("mode", ["one trip", "runs", "two trips"])
def test_killed_backfill_resumes_exactly_where_its_last_batch_committed(tmp_path, pg_dsn, mode):
    # one ledgered checkpoint a minute: the kill lands long before the first one
    proj = _project(tmp_path, pg_dsn, 4000, "-- Batch-Size: 100\n-- Pause-Between-Batches: 20\n"
                                            "-- Checkpoint-Interval: 60000")
    _mode(proj, mode)
    proc = proj.popen("apply")
    next_key, rows = _kill_when(proc, pg_dsn, lambda r: r[0] >= 1001)
    assert rows == next_key - 1
    assert _backfill_checkpoints(proj) == []  # the ledger knows nothing of these batches...
    assert pg_rows(pg_dsn, "SELECT count(*) FROM items WHERE v = 1") == [(rows,)]
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert f"committed up to key {next_key} ({rows} rows); resuming there" in out
    assert pg_rows(pg_dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, 4000)]
    done = _backfill_checkpoints(proj)
    # ...so the resumed attempt ledgers the recovered position first, then the last batch
    assert [(d["next"], d["rows"], d.get("recovered")) for d in done] == [(next_key, rows, True), (4001, 4000, None)]
    assert _progress(pg_dsn) == []
    log = proj.statements("main")
    failed = events(log, MID, "apply_failed")
    assert len(failed) == 1 and failed[0]["details"]["reason"] == "interrupted"
    assert proj.run("verify")[0] == 0


def test_killed_twice_before_any_batch_of_the_second_attempt(tmp_path, pg_dsn):
    """A resumed attempt killed before its first batch: the third attempt still finds the row."""
    proj = _project(tmp_path, pg_dsn, 3000, "-- Batch-Size: 100\n-- Pause-Between-Batches: 30\n"
                                            "-- Checkpoint-Interval: 60000")
    proc = proj.popen("apply")
    first, _ = _kill_when(proc, pg_dsn, lambda r: r[0] >= 501)
    proc = proj.popen("apply")
    second, _ = _kill_when(proc, pg_dsn, lambda r: r[0] >= first + 300)
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, 3000)]
    recovered = [d["next"] for d in _backfill_checkpoints(proj) if d.get("recovered")]
    assert recovered == [first, second]
    assert proj.run("verify")[0] == 0


def test_failed_batch_resumes_after_the_fix_without_repeating_committed_batches(tmp_path, pg_dsn):
    proj = _project(tmp_path, pg_dsn, 3000, "-- Batch-Size: 200\n-- Checkpoint-Interval: 60000",
                    update="v = v + 1 + 0 / (id - 2345)")
    code, out, err = proj.run("apply")
    assert code == 3 and "division by zero" in err
    failed = events(proj.statements("main"), MID, "apply_failed")[-1]["details"]
    assert failed["resumable"] is True and failed["backfill_next"] == 2201
    assert pg_rows(pg_dsn, "SELECT count(*) FROM items WHERE v = 1") == [(2200,)]
    path = proj.root / "migrations" / f"{MID}.sql"
    path.write_text(path.read_text().replace(" + 0 / (id - 2345)", ""))
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, 3000)]
    assert proj.run("verify")[0] == 0


def test_checkpoint_interval_zero_ledgers_every_batch(tmp_path, pg_dsn):
    proj = _project(tmp_path, pg_dsn, 1000, "-- Batch-Size: 300\n-- Checkpoint-Interval: 0")
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert [(d["next"], d["rows"]) for d in _backfill_checkpoints(proj)] == [
        (301, 300), (601, 600), (901, 900), (1001, 1000)]


def test_batches_bounded_in_time_and_the_duty_cycle(tmp_path, pg_dsn):
    proj = _project(tmp_path, pg_dsn, 60000, "-- Batch-Size: 5000\n-- Max-Batch-Ms: 10\n-- Duty-Cycle: 50")
    code, out, err = proj.run("apply", "--json")
    assert code == 0, err
    batches = [r for r in json.loads(out)["records"] if r["event"] == "batch_done"]
    keys = [r["data"]["keys"] for r in batches]
    assert keys[0] == 100 and max(keys) <= 5000
    assert keys[1] <= 200, "a batch at most doubles the last one"
    assert len(set(keys)) > 3, "the size adapts to the batches' speed"
    assert sum(keys) == 60000
    # half the time in batches, half in pauses: the phase lasts at least twice its batches
    ms = sum(r["data"]["ms"] for r in batches)
    took = events(proj.statements("main"), MID, "apply_succeeded")[0]["details"]["execution_time_ms"]
    assert took >= 1.8 * ms, (took, ms)
    assert pg_rows(pg_dsn, "SELECT min(v), max(v) FROM items") == [(1, 1)]


@pytest.mark.parametrize("header, backs_off, mode", [("", True, "one trip"), ("\n-- Commit-Backoff: 0", False, "one trip"),
                                                  ("", True, "runs"), ("", True, "two trips")])
def test_a_commit_that_waits_makes_the_backfill_back_off(tmp_path, pg_dsn, header, backs_off, mode):
    """A batch whose COMMIT waits (here a deferred constraint trigger on the row with key 200,000
    waits for an advisory lock another session holds for 0.3 s; in production a congested WAL flush)
    is followed by a pause of Commit-Backoff (default 4) times that wait, at most 0.5 s: the engine
    leaves the server to the application. Not with 0. The same whether the batch runs in a run of
    batches on the server (which ends after that commit), commits in its own round trip (the server
    times the COMMIT) or in a second one (``backfill_one_trip = false``)."""
    import psycopg

    proj = _project(tmp_path, pg_dsn, 400_000, "-- Batch-Size: 2000\n-- Max-Batch-Ms: 2" + header)
    proj.write("20250101_000001_schema_items.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0);
        INSERT INTO items (id) SELECT g FROM generate_series(1, 400000) AS g;
        CREATE FUNCTION items_wait() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER items_wait AFTER UPDATE ON items DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.id = 200000) EXECUTE FUNCTION items_wait();
    """)
    _mode(proj, mode)
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(4242)")
        proc = proj.popen("apply", "--json")
        waiting = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted"
        deadline = time.time() + 60
        while time.time() < deadline and not pg_rows(pg_dsn, waiting) and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.3)
        other.execute("SELECT pg_advisory_unlock(4242)")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    batches = [r["data"] for r in json.loads(out)["records"] if r["event"] == "batch_done"]
    waited = [d for d in batches if d["commit_ms"] >= 250]
    assert len(waited) == 1, sorted(d["commit_ms"] for d in batches)[-5:]
    assert waited[0]["next"] > 200_000 >= waited[0]["next"] - waited[0]["keys"]
    # the ledgered ones take two round trips
    assert {_trips(d) for d in batches[:-1]} == {"runs": {"run", 2}, "one trip": {1, 2}, "two trips": {2}}[mode]
    backed = [d for d in batches if "backoff_ms" in d]
    if backs_off:
        assert waited[0] in backed and waited[0]["backoff_ms"] == 500.0  # 4 x ~300 ms, at most 0.5 s
    else:
        assert backed == []
    assert pg_rows(pg_dsn, "SELECT min(v), max(v) FROM items") == [(1, 1)]


def test_bad_duty_cycle_is_one_error_naming_the_line(tmp_path, pg_dsn):
    proj = _project(tmp_path, pg_dsn, 10, "-- Duty-Cycle: 0")
    code, out, err = proj.run("apply")
    assert code == 2
    assert f"{MID}.sql" in err and "Duty-Cycle is a percentage from 1 to 100, not 0" in err


@pytest.mark.timescale
@pytest.mark.parametrize("mode", ["one trip", "runs"])
def test_backfill_on_the_single_connection_timescale_server(tmp_path, timescale_dsn, mode):
    """PGlite has PL/pgSQL and procedures that commit: batches take one round trip each, or run on the
    server (its one connection holds the lock too, so there is no other connection to watch)."""
    proj = Project(tmp_path / "proj", {"ts": ("timescale", timescale_dsn)})
    _mode(proj, mode, "ts")
    proj.write("timescale/20250101_000001_schema_items.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0);
        INSERT INTO items (id) SELECT g FROM generate_series(1, 2500) AS g;
    """)
    proj.write(f"timescale/{MID}.sql", """
        -- Dependencies: [20250101_000001_schema_items]
        -- Batch-Size: 1000
        -- Max-Batch-Ms: 50
        -- Duty-Cycle: 90
        -- Checkpoint-Interval: 60000
        -- Phase 2: MIGRATE
        -- Backfill: table=items key=id
        UPDATE items SET v = v + 1 WHERE id >= :lo AND id < :hi;
    """)
    code, out, err = proj.run("apply", "--json")
    assert code == 0, err
    trips = [_trips(r["data"]) for r in json.loads(out)["records"] if r["event"] == "batch_done"]
    assert set(trips[:-1]) == {{"runs": "run", "one trip": 1}[mode]} and trips[-1] == 2  # the last is ledgered
    done = [s["details"]["backfill"] for s in events(proj.statements("ts"), MID, "batch_checkpoint")
            if "backfill" in s["details"]]
    assert done[-1]["next"] == 2501 and done[-1]["rows"] == 2500
    assert pg_rows(timescale_dsn, "SELECT min(v), max(v) FROM items") == [(1, 1)]
    assert pg_rows(timescale_dsn, "SELECT count(*) FROM mreg_backfill_progress") == [(0,)]
    assert proj.run("verify")[0] == 0


def test_batch_settings_follow_the_options_and_the_roles_privileges(pg_dsn):
    """A superuser (the test server's) gets SET LOCAL wal_init_zero = off in every batch unless
    backfill_sparse_wal = false, and SET LOCAL wal_compression with backfill_wal_compression = true;
    every role gets backend_flush_after = 32 unless backfill_flush_writes = false or it is set already;
    a role without the privilege gets nothing (and no error), one granted SET ON PARAMETER gets that
    setting; a server compressing already needs no wal_compression."""
    import uuid

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from registry.config import Target
    from registry.targets.postgres import PostgresAdapter

    def settings(dsn: str, **options) -> list[str]:
        adapter = PostgresAdapter(Target("main", "postgresql", dsn, "test", options), dsn)
        adapter.connect()
        try:
            return adapter.backfill_settings()
        finally:
            adapter.close()

    methods = pg_rows(pg_dsn, "SELECT enumvals FROM pg_settings WHERE name = 'wal_compression'")[0][0]
    compress = f"SET LOCAL wal_compression = {'lz4' if 'lz4' in methods else 'pglz'}"
    sparse = "SET LOCAL wal_init_zero = off"
    flush = "SET LOCAL backend_flush_after = 32"
    on = {"backfill_wal_compression": True}
    assert settings(pg_dsn) == [sparse, flush]
    assert settings(pg_dsn, **on) == [sparse, compress, flush]
    assert settings(pg_dsn, backfill_sparse_wal=False) == [flush]
    assert settings(pg_dsn, backfill_sparse_wal="off", backfill_flush_writes=False, **on) == [compress]
    assert settings(pg_dsn, backfill_sparse_wal=False, backfill_flush_writes="no") == []
    role = "nobody_" + uuid.uuid4().hex[:6]
    pg_rows(pg_dsn, f"CREATE ROLE {role} LOGIN")
    try:
        assert settings(make_conninfo(pg_dsn, user=role), **on) == [flush]  # any role may set that one
        pg_rows(pg_dsn, f"GRANT SET ON PARAMETER wal_compression TO {role}")
        assert settings(make_conninfo(pg_dsn, user=role), **on) == [compress, flush]
        pg_rows(pg_dsn, f"GRANT SET ON PARAMETER wal_init_zero TO {role}")
        assert settings(make_conninfo(pg_dsn, user=role)) == [sparse, flush]
        db = conninfo_to_dict(pg_dsn).get("dbname")
        pg_rows(pg_dsn, f"ALTER ROLE {role} IN DATABASE {db} SET wal_compression = pglz")
        pg_rows(pg_dsn, f"ALTER ROLE {role} IN DATABASE {db} SET backend_flush_after = 64")  # a DBA's choice stays
        assert settings(make_conninfo(pg_dsn, user=role), **on) == [sparse]
    finally:
        pg_rows(pg_dsn, f"REVOKE SET ON PARAMETER wal_compression FROM {role}")
        pg_rows(pg_dsn, f"REVOKE SET ON PARAMETER wal_init_zero FROM {role}")
        pg_rows(pg_dsn, f"DROP OWNED BY {role}")
        pg_rows(pg_dsn, f"DROP ROLE {role}")


@pytest.mark.parametrize("sparse", [True, False])
def test_every_batch_runs_with_its_settings(tmp_path, pg_dsn, sparse):
    """The batches' own transactions carry the settings: the UPDATE reads wal_init_zero and
    backend_flush_after itself."""
    proj = _project(tmp_path, pg_dsn, 900, "-- Batch-Size: 100",
                    update="v = CASE current_setting('wal_init_zero') WHEN 'off' THEN 1 ELSE 2 END "
                           "+ CASE current_setting('backend_flush_after') WHEN '256kB' THEN 10 ELSE 20 END")
    if not sparse:
        toml = proj.root / "mreg.toml"
        toml.write_text(toml.read_text() + "\n[targets.main.options]\nbackfill_sparse_wal = false\n"
                                           "backfill_flush_writes = false\n")
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT v, count(*) FROM items GROUP BY v") == [(11 if sparse else 22, 900)]
    assert pg_rows(pg_dsn, "SHOW wal_init_zero") == [("on",)]  # the server's own settings untouched
    assert pg_rows(pg_dsn, "SHOW backend_flush_after") == [("0",)]


def test_the_progress_row_moves_on_with_quotes_and_percent_signs_in_its_key(pg_dsn):
    """advance_sql quotes the row's key once per backfill and fills in the anchor and the integers at
    every batch: values with quotes, backslashes and ``%`` (which the template's own formatting
    uses) still name the one row, and a new anchor is quoted anew."""
    from types import SimpleNamespace

    from registry.apply.backfill import _Rows
    from registry.config import Target
    from registry.targets.postgres import PostgresAdapter

    adapter = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
    adapter.connect()
    try:
        adapter.ensure_mirror()
        entry = SimpleNamespace(migration=SimpleNamespace(id="20250101_000000_x%(mid)s"), phase="migrate",
                                tenant="t'%d\\")
        rows = _Rows(adapter, "origin %s 'o'", entry)
        with adapter.session(transactional=False) as s:
            rows.ensure(s)
        with adapter.session(transactional=True) as s:
            rows.write(s, "first", 1, 0)
            s.commit()
        for anchor, next_key, done in [("a'1", 101, 100), ("a'1", 201, 199), ("b%(x)s", 301, 299)]:
            with adapter.session(transactional=True) as s:
                s.commit(last=rows.advance_sql(s, anchor, next_key, done))
            with adapter.session(transactional=False) as s:
                assert rows.read(s) == (anchor, next_key, done)
        table = f"{adapter.mirror_schema}.mreg_backfill_progress"
        assert pg_rows(pg_dsn, f"SELECT count(*) FROM {table} WHERE tenant = 't''%d\\'") == [(1,)]
        with adapter.session(transactional=True) as s:
            s.commit(last=rows.delete_sql(s))
        with adapter.session(transactional=False) as s:
            assert rows.read(s) is None
    finally:
        adapter.close()


@pytest.mark.parametrize("mode", ["runs", "one trip"])
def test_one_trip_batches_run_a_statement_holding_the_dollar_quote_tag(tmp_path, pg_dsn, mode):
    """The batch's statement travels dollar-quoted to mreg_backfill_batch: one that holds the quote's
    own tag (and the next one tried) still runs as written, once per row, in one round
    trip; the function's row count is the statement's. In a run of batches the statement is a
    parameter of the procedure, with ``$1``/``$2`` for ``:lo``/``:hi``: the same."""
    proj = _project(tmp_path, pg_dsn, 3000, "-- Batch-Size: 100\n-- Checkpoint-Interval: 60000",
                    update="v = v + 1 + 0 * length('$mreg_batch$ $mreg_batch_$ x')")
    _mode(proj, mode)
    code, out, err = proj.run("apply", "--json")
    assert code == 0, err
    batches = [r["data"] for r in json.loads(out)["records"] if r["event"] == "batch_done"]
    assert [_trips(d) for d in batches] == [{"runs": "run", "one trip": 1}[mode]] * 29 + [2]  # the last is ledgered
    assert sum(d["keys"] for d in batches) == 3000 and batches[-1]["rows"] == 3000
    assert pg_rows(pg_dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, 3000)]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM pg_proc WHERE proname = 'mreg_backfill_batch'") == [(1,)]
    assert [c["rows"] for c in _backfill_checkpoints(proj)] == [3000]


def test_the_batch_function_refuses_a_batch_whose_progress_row_is_gone(pg_dsn):
    """mreg_backfill_batch moves the progress row on in the batch's transaction; without the row
    (never the case under the target's lock) it raises, so no batch commits untracked."""
    import psycopg

    from registry.apply.backfill import _FUNCTION, PROGRESS_TABLE

    pg_rows(pg_dsn, "CREATE TABLE IF NOT EXISTS fn_items (id int PRIMARY KEY, v int)")
    pg_rows(pg_dsn, "INSERT INTO fn_items SELECT g, 0 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING")
    pg_rows(pg_dsn, f"CREATE TABLE IF NOT EXISTS public.{PROGRESS_TABLE} (origin TEXT, migration_id TEXT, phase TEXT, "
                    "tenant TEXT, anchor TEXT, next_key BIGINT, rows_done BIGINT, updated_at TIMESTAMPTZ, "
                    "PRIMARY KEY (origin, migration_id, phase, tenant))")
    pg_rows(pg_dsn, _FUNCTION.format(s="public"))
    call = "SELECT public.mreg_backfill_batch($b$UPDATE fn_items SET v = v + 1 WHERE id < 6$b$, 'o', 'm', 'p', '', 6)"
    with pytest.raises(psycopg.errors.RaiseException, match="no backfill progress row for o m p"):
        pg_rows(pg_dsn, call)
    pg_rows(pg_dsn, f"INSERT INTO public.{PROGRESS_TABLE} VALUES ('o', 'm', 'p', '', 'a', 1, 0, now())")
    assert pg_rows(pg_dsn, call) == [(5,)]
    assert pg_rows(pg_dsn, f"SELECT next_key, rows_done FROM public.{PROGRESS_TABLE} WHERE origin = 'o'") == [(6, 5)]
    assert pg_rows(pg_dsn, "SELECT sum(v) FROM fn_items") == [(5,)]  # the refused batch left nothing


def test_a_run_of_batches_stops_without_the_lock_holder_and_refuses_a_moved_progress_row(pg_dsn):
    """mreg_backfill_run commits batch after batch on the server. Before each it checks that the
    connection holding the target's lock still exists (after a kill -9 of mreg the run stops at its
    next batch) and that the progress row stands at the batch's first key (compared and set: no
    batch runs twice, whoever else walks the range); either refusal leaves nothing. It ends before the
    range's last batch (the client ledgers that one), once its time is up, and after a congested commit."""
    import psycopg

    from registry.apply.backfill import _PROCEDURE, PROGRESS_TABLE

    pg_rows(pg_dsn, "CREATE TABLE run_items (id int PRIMARY KEY, v int)")
    pg_rows(pg_dsn, "INSERT INTO run_items SELECT g, 0 FROM generate_series(1, 100) g")
    pg_rows(pg_dsn, f"CREATE TABLE public.{PROGRESS_TABLE} (origin TEXT, migration_id TEXT, phase TEXT, "
                    "tenant TEXT, anchor TEXT, next_key BIGINT, rows_done BIGINT, updated_at TIMESTAMPTZ, "
                    "PRIMARY KEY (origin, migration_id, phase, tenant))")
    pg_rows(pg_dsn, _PROCEDURE.format(s="public"))
    pg_rows(pg_dsn, f"INSERT INTO public.{PROGRESS_TABLE} VALUES ('o', 'm', 'p', '', 'a', 1, 0, now())")
    update = "UPDATE run_items SET v = v + 1 WHERE id >= $1 AND id < $2"

    def call(holder, lo, size, budget_ms=1e6, congested_ms=1e12):
        return pg_rows(pg_dsn, "CALL public.mreg_backfill_run(%s, 'o', 'm', 'p', '', %s, %s, %s, 100, %s, 10, 0, "
                               "0, 100, %s, %s)",
                       (update, ["lock_timeout", "1500"], holder, lo, size, budget_ms, congested_ms))[0]

    def state():
        return pg_rows(pg_dsn, f"SELECT next_key, rows_done FROM public.{PROGRESS_TABLE}")[0], \
            pg_rows(pg_dsn, "SELECT sum(v) FROM run_items")[0][0]

    gone = psycopg.connect(pg_dsn)
    gone_pid = gone.info.backend_pid
    gone.close()
    while pg_rows(pg_dsn, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (gone_pid,)):
        time.sleep(0.01)
    with pytest.raises(psycopg.errors.RaiseException, match=f"holding the target's lock \\(pid {gone_pid}\\) has ended"):
        call(gone_pid, 1, 10)
    with pytest.raises(psycopg.errors.RaiseException, match="progress row for o m p is gone or not at key 11"):
        call(None, 11, 10)
    assert state() == ((1, 0), 0)  # both refused before any batch
    with psycopg.connect(pg_dsn) as holder:
        nxt, size, rows, stats = call(holder.info.backend_pid, 1, 10, budget_ms=0)  # time is up after one batch
        assert (nxt, size, rows, stats[:2]) == (11, 10, 10, [10, 10]) and len(stats) == 4
        nxt, size, rows, stats = call(holder.info.backend_pid, 11, 10, congested_ms=-1)  # every commit "congested"
        assert (nxt, rows, len(stats)) == (21, 10, 4)
        nxt, size, rows, stats = call(holder.info.backend_pid, 21, 10)
    # batches [21, 31) ... [81, 91) ran; [91, 101) would reach past 100, the last key: the client's (ledgered)
    assert (nxt, rows, stats[0::4]) == (91, 70, [10] * 7)
    assert state() == ((91, 90), 90)
    assert pg_rows(pg_dsn, "SELECT count(*) FROM run_items WHERE v <> (id < 91)::int") == [(0,)]


@pytest.mark.parametrize("mode", ["one trip", "runs"])
def test_a_one_trip_batch_that_times_out_on_a_row_lock_is_retried_and_runs_once(tmp_path, pg_dsn, mode):
    """The batch's UPDATE runs inside mreg_backfill_batch: a lock timeout there keeps its SQLSTATE
    (55P03), so the batch is rolled back whole (its progress row too) and retried like any other
    step; every row is updated exactly once. In a run of batches the timeout ends the run: the
    batches it committed stand (reported as one record, ``cut_short``), and the batch that timed out
    is retried on its own."""
    import psycopg

    proj = _project(tmp_path, pg_dsn, 3000, "-- Batch-Size: 100\n-- Checkpoint-Interval: 60000\n"
                                            "-- Lock-Timeout: 100\n-- Max-Retries: 10",
                    update="v = v + 1 + 0 * nextval('attempts')")  # a sequence counts rolled-back tries too
    _mode(proj, mode)
    assert proj.run("apply", "--phase", "expand")[0] == 0
    pg_rows(pg_dsn, "CREATE SEQUENCE attempts")
    with psycopg.connect(pg_dsn) as holder:
        holder.execute("SELECT 1 FROM items WHERE id = 1500 FOR UPDATE")  # held until the block ends
        proc = proj.popen("apply", "--json")
        deadline = time.time() + 60  # until the batch with key 1500 waits for the lock
        while time.time() < deadline and proc.poll() is None and not pg_rows(
                pg_dsn, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"):
            time.sleep(0.01)
        time.sleep(0.5)  # it times out (100 ms) and is retried, maybe more than once, meanwhile
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    batches = [r["data"] for r in json.loads(out)["records"] if r["event"] == "batch_done"]
    assert sum(d["keys"] for d in batches) == 3000 and batches[-1]["rows"] == 3000
    assert 1 in {d.get("trips") for d in batches}  # after the run cut short, the batch on its own is retried
    cut = [d for d in batches if "cut_short" in d]
    if mode == "runs":
        assert len(cut) == 1 and "lock timeout" in cut[0]["cut_short"] and cut[0]["next"] <= 1500, cut
    else:
        assert cut == [] and {d["trips"] for d in batches} == {1, 2}
    assert pg_rows(pg_dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, 3000)]
    assert pg_rows(pg_dsn, "SELECT last_value > 3000 FROM attempts") == [(True,)]  # a batch was retried
    assert proj.run("verify")[0] == 0
