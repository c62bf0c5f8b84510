"""TimescaleDB specifics: hypertables, compression, continuous aggregates, the single-connection server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psycopg
import pytest

from registry.config import Target
from registry.model import Step
from registry.targets.sqlcommon import ShadowUnavailable, StepRefused, batches
from registry.targets.timescale import TimescaleAdapter


@pytest.fixture
def ts(timescale_dsn):
    a = TimescaleAdapter(Target("analytics", "timescale", timescale_dsn, "test"), timescale_dsn)
    a.connect()
    yield a
    a.close()


def sql(text: str, line: int = 1) -> Step:
    return Step(content=text, line=line, name="s")


TRACES = [
    "CREATE TABLE traces (time timestamptz NOT NULL, service text NOT NULL, duration_ms integer)",
    "SELECT create_hypertable('traces', 'time', chunk_time_interval => interval '1 day')",
    "INSERT INTO traces SELECT now() - g * interval '1 hour', 's' || (g % 3), g FROM generate_series(1, 120) g",
]
CAGG = ("CREATE MATERIALIZED VIEW traces_hourly WITH (timescaledb.continuous) AS "
        "SELECT time_bucket('1 hour', time) AS bucket, service, avg(duration_ms) AS avg_ms "
        "FROM traces GROUP BY 1, 2 WITH DATA")


def make_traces(ts) -> None:
    with ts.session(transactional=True) as s:
        for text in TRACES:
            s.execute(sql(text))
        s.commit()


def test_hypertable_compression_policy_and_continuous_aggregate(ts):
    make_traces(ts)
    assert ts.hypertables() == ["public.traces"]
    assert ts.is_hypertable(None, "traces") and ts.is_hypertable("public", "traces")
    with ts.session(transactional=True) as s:
        s.execute(sql("ALTER TABLE traces SET (timescaledb.compress, timescaledb.compress_segmentby = 'service')"))
        s.execute(sql("SELECT add_compression_policy('traces', interval '7 days')"))
        s.commit()
    with ts.session(transactional=False) as s:  # txmode: none
        s.execute(sql(CAGG))
        s.execute(sql("CALL refresh_continuous_aggregate('traces_hourly', NULL, NULL)"))
        assert s.query("SELECT count(*) AS n FROM traces_hourly") == [{"n": 120}]
    jobs = ts.conn.execute("SELECT proc_name FROM timescaledb_information.jobs "
                           "WHERE hypertable_name = 'traces'").fetchall()
    assert ("policy_compression",) in jobs
    views = ts.conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates").fetchall()
    assert views == [("traces_hourly",)]


def test_continuous_aggregate_with_data_is_refused_inside_a_transaction(ts):
    make_traces(ts)
    with pytest.raises(StepRefused) as err:
        with ts.session(transactional=True) as s:
            s.execute(sql(CAGG, line=12), path="migrations/timescale/x.sql")
    assert "txmode: none" in err.value.hint
    assert "migrations/timescale/x.sql:12" in str(err.value)
    with pytest.raises(StepRefused):
        with ts.session(transactional=True) as s:
            s.execute(sql("CALL refresh_continuous_aggregate('traces_hourly', NULL, NULL)"))
    with ts.session(transactional=True) as s:  # WITH NO DATA is fine in a transaction
        s.execute(sql(CAGG.replace("WITH DATA", "WITH NO DATA")))
        s.commit()
    assert ts.conn.execute("SELECT count(*) FROM timescaledb_information.continuous_aggregates").fetchone()[0] == 1


def test_concurrent_index_on_a_hypertable_is_refused_before_it_is_sent(ts):
    make_traces(ts)
    assert ts.supports_concurrent_index is False
    with pytest.raises(StepRefused) as err:
        with ts.session(transactional=False) as s:
            s.execute(sql("CREATE INDEX CONCURRENTLY traces_service ON public.traces (service)", line=3))
    assert "hypertable" in str(err.value) and "transaction_per_chunk" in err.value.hint
    assert err.value.exit_code == 2
    # nothing reached the server: it still works and has no such index
    assert ts.conn.execute("SELECT to_regclass('traces_service')").fetchone()[0] is None
    with ts.session(transactional=True) as s:
        s.execute(sql("DROP TABLE traces"))
        s.commit()


def test_transaction_per_chunk_index_outside_a_transaction(ts):
    make_traces(ts)
    text = "CREATE INDEX traces_service ON traces (service) WITH (timescaledb.transaction_per_chunk)"
    with pytest.raises(StepRefused):
        with ts.session(transactional=True) as s:
            s.execute(sql(text))
    with ts.session(transactional=False) as s:
        s.execute(sql(text))
    assert ts.conn.execute("SELECT to_regclass('traces_service')").fetchone()[0] == "traces_service"
    with ts.session(transactional=True) as s:  # the server is healthy afterwards
        s.execute(sql("DROP TABLE traces"))
        s.commit()


def test_concurrent_index_on_a_plain_table(ts):
    with ts.session(transactional=False) as s:
        s.execute(sql("CREATE TABLE services (id integer PRIMARY KEY, name text)"))
        s.execute(sql("CREATE INDEX CONCURRENTLY services_name ON services (name)"))
    assert ts.conn.execute("SELECT to_regclass('services_name')").fetchone()[0] == "services_name"
    with ts.session(transactional=True) as s:
        s.execute(sql("DROP TABLE services"))
        s.commit()


def test_backfill_by_key_range_on_timescale(ts):
    with ts.session(transactional=True) as s:
        s.execute(sql("CREATE TABLE events (id bigint PRIMARY KEY, kind text, kind_upper text)"))
        s.execute(sql("INSERT INTO events SELECT g, 'k' || g, NULL FROM generate_series(1, 250) g"))
        s.commit()
    lo, hi = ts.backfill_range("events", "id")
    done = []
    for a, b in batches(lo, hi, 100):
        with ts.session(transactional=True) as s:
            done.append(s.run_batch("UPDATE events SET kind_upper = upper(kind) WHERE id >= :lo AND id < :hi", a, b))
            s.commit()
    assert done == [100, 100, 50]
    assert ts.conn.execute("SELECT count(*) FROM events WHERE kind_upper = upper(kind)").fetchone()[0] == 250


def test_shadow_is_unavailable_on_the_single_connection_server(ts):
    if not ts.single_connection:
        pytest.skip("a real TimescaleDB server makes shadow databases like PostgreSQL")
    with pytest.raises(ShadowUnavailable) as err:
        ts.create_shadow()
    assert "single database" in str(err.value)


def test_a_crashed_clients_open_transaction_is_rolled_back(timescale_dsn):
    script = textwrap.dedent(f"""
        import psycopg, time
        c = psycopg.connect({timescale_dsn!r}, autocommit=True, prepare_threshold=None, sslmode="disable")
        c.execute("BEGIN")
        c.execute("CREATE TABLE half_done (id int)")
        c.execute("SET application_name = 'crashy'")
        print("open", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    a = TimescaleAdapter(Target("analytics", "timescale", timescale_dsn, "test"), timescale_dsn)
    a.connect()
    try:
        if not a.single_connection:
            pytest.skip("only the single-connection server shares one session between clients")
        assert a.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert a.conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        assert a.conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
    finally:
        a.close()


def test_sessions_with_settings_keep_the_search_path(ts):
    from registry.model import Settings

    with ts.session(transactional=False, settings=Settings(lock_timeout=1000, timeout=5000)) as s:
        s.execute(sql("CREATE TABLE kept (id int)"))
    with ts.session(transactional=True, settings=Settings()) as s:
        s.execute(sql("INSERT INTO kept VALUES (1)"))  # unqualified: still resolves to public
        s.commit()
    assert ts.conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
    assert ts.conn.execute("SELECT count(*) FROM public.kept").fetchone()[0] == 1
