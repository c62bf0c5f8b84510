"""The JSON readings of a statement (autocommit reason, change class) equal the pglast-tree ones.

``registry.parse.sql.split`` keeps each statement's fields as PostgreSQL's parser gives them in
JSON (``parse_sql_json``), and the scan reads the autocommit reason and the class from them
instead of building pglast's Python tree. These tests hold both readings together, on the
repository's example migrations, the benchmark's generated files and statements chosen to
reach every branch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from registry.parse import sql
from registry.parse.classify import classify_sql_json, classify_sql_node
from registry.parse.sections import read_script

ROOT = Path(__file__).resolve().parents[2]

TRICKY = [
    "CREATE INDEX CONCURRENTLY i ON t (a)",
    "CREATE INDEX i ON t (a)",
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON t USING btree (lower(a)) WHERE b",
    "DROP INDEX CONCURRENTLY i",
    "DROP INDEX i, j",
    "DROP TABLE t",
    "DROP POLICY p ON t",
    "DROP ROLE r",
    "DROP ACCESS METHOD am",
    "REINDEX (CONCURRENTLY) TABLE t",
    "REINDEX (VERBOSE, CONCURRENTLY) INDEX i",
    "REINDEX TABLE t",
    "REINDEX (CONCURRENTLY false) TABLE t",
    "REINDEX (concurrently 0) INDEX i",
    "REINDEX (CONCURRENTLY 'OFF', VERBOSE) TABLE t",
    "REINDEX (concurrently 1) TABLE t",
    "REINDEX (CONCURRENTLY on) SCHEMA s",
    "REINDEX SCHEMA s",
    "REINDEX (VERBOSE) DATABASE d",
    "REINDEX SYSTEM d",
    "VACUUM t",
    "VACUUM (ANALYZE) t",
    "ANALYZE t",
    "ALTER TYPE e ADD VALUE 'x'",
    "ALTER TYPE e ADD VALUE IF NOT EXISTS 'x' BEFORE 'y'",
    "ALTER TYPE e RENAME VALUE 'a' TO 'b'",
    "CREATE DATABASE d",
    "DROP DATABASE d",
    "ALTER SYSTEM SET work_mem = '64MB'",
    "CREATE TABLESPACE ts LOCATION '/x'",
    "DROP TABLESPACE ts",
    "CALL refresh_continuous_aggregate('v', NULL, NULL)",
    "CALL public.refresh_continuous_aggregate('v', NULL, NULL)",
    "CALL other_proc(1)",
    "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT 1 WITH DATA",
    "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT 1",
    "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT 1 WITH NO DATA",
    "CREATE MATERIALIZED VIEW v AS SELECT 1",
    "CREATE TABLE t2 AS SELECT * FROM t",
    "ALTER TABLE t DETACH PARTITION p CONCURRENTLY",
    "ALTER TABLE t DETACH PARTITION p",
    "ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1)",
    "ALTER TABLE t ADD COLUMN c int",
    "ALTER TABLE t ADD COLUMN IF NOT EXISTS c int, DROP COLUMN d",
    "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY",
    "ALTER TABLE t ENABLE ROW LEVEL SECURITY, ADD COLUMN c int",
    "ALTER TABLE t NO FORCE ROW LEVEL SECURITY",
    "SELECT 1",
    "SELECT * INTO t2 FROM t",
    "SELECT create_hypertable('t', 'ts')",
    "SELECT public.add_retention_policy('t', INTERVAL '7 days')",
    "SELECT time_bucket('1 hour', ts) FROM t",
    "WITH x AS (SELECT add_compression_policy('t', INTERVAL '1 day')) SELECT * FROM x",
    "SELECT (SELECT set_chunk_time_interval('t', INTERVAL '1 day'))",
    "SELECT f(g(add_dimension('t', by_hash('id', 4))))",
    "INSERT INTO t VALUES (1)",
    "UPDATE t SET a = 1 WHERE id BETWEEN 0 AND 10",
    "DELETE FROM t",
    "TRUNCATE t",
    "COPY t FROM STDIN",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "GRANT SELECT ON t TO r",
    "REVOKE SELECT ON t FROM r",
    "CREATE POLICY p ON t USING (true)",
    "CREATE ROLE r",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r",
    "SET lock_timeout = '5s'",
    "SHOW work_mem",
    "LOCK TABLE t",
    "NOTIFY c",
    "CLUSTER t USING i",
    "CREATE EXTENSION IF NOT EXISTS timescaledb",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT create_hypertable('t', 'ts') $$",
    "DO $$ BEGIN PERFORM 1; END $$",
    "CREATE VIEW v AS SELECT add_retention_policy('t', INTERVAL '1 day')",
    "COMMENT ON TABLE t IS 'x'",
]


def _statements(text: str) -> list[sql.Statement]:
    return sql.split("x.sql", text)[0]


def _sql_of_files() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "migrations").rglob("*.sql"))]
    out = []
    for text in texts:
        for section in read_script("x.sql", text, "sql").sections:
            if section.role in ("phase", "rollback") and section.text.strip():
                out.append(section.text)
    return out


def _bench_sql() -> list[str]:
    sys.path.insert(0, str(ROOT / "bench" / "registry"))
    try:
        import build
    finally:
        sys.path.pop(0)
    return [build.content(f"db/migrations/V{n}__x.sql", n, rev).decode() for n in range(1, 3) for rev in range(3)]


CASES = TRICKY + _sql_of_files() + _bench_sql()


@pytest.mark.parametrize("text", CASES)
def test_json_readings_equal_the_tree_ones(text):
    statements = _statements(text)
    assert statements
    for st in statements:
        node = sql.parse(st.text)[0].stmt
        assert st.fields is not None
        assert sql.statement_autocommit_reason(st) == sql.autocommit_reason(node), st.text
        assert classify_sql_json(st.kind, st.fields) == classify_sql_node(node), st.text


def test_every_autocommit_reason_is_reached():
    reasons = {sql.statement_autocommit_reason(st) for text in TRICKY for st in _statements(text)}
    assert len(reasons - {None}) == 16  # every branch of autocommit_reason
    classes = {classify_sql_json(st.kind, st.fields) for text in TRICKY for st in _statements(text)}
    assert classes == {None, "schema", "security", "data", "perf"}


def test_reindex_runs_outside_a_transaction_only_when_concurrently_is_on():
    """``REINDEX (CONCURRENTLY false)`` is an ordinary REINDEX: it may run in the phase's transaction
    (defGetBoolean: no value is true; 0, false and off, in any case, are false). ``REINDEX
    SCHEMA/DATABASE/SYSTEM`` may not, concurrently or not (checked on a real server: "REINDEX SCHEMA
    cannot run inside a transaction block")."""
    on = ["REINDEX (CONCURRENTLY) TABLE t", "REINDEX TABLE CONCURRENTLY t", "REINDEX (concurrently 1) TABLE t",
          "REINDEX (CONCURRENTLY on) SCHEMA s", "REINDEX (CONCURRENTLY TRUE) INDEX i"]
    off = ["REINDEX TABLE t", "REINDEX (CONCURRENTLY false) TABLE t", "REINDEX (concurrently 0) INDEX i",
           "REINDEX (CONCURRENTLY 'OFF', VERBOSE) TABLE t"]
    many = {"REINDEX SCHEMA s": "REINDEX SCHEMA", "REINDEX (CONCURRENTLY false) SCHEMA s": "REINDEX SCHEMA",
            "REINDEX (VERBOSE) DATABASE d": "REINDEX DATABASE", "REINDEX SYSTEM d": "REINDEX SYSTEM"}
    for text in on + off + list(many):
        (st,) = _statements(text)
        expected = "REINDEX CONCURRENTLY" if text in on else many.get(text)
        assert sql.statement_autocommit_reason(st) == expected, text
        assert sql.autocommit_reason(sql.parse(text)[0].stmt) == expected, text


def test_json_nodes_names_wrapped_nodes_only():
    fields = _statements("SELECT f(1)")[0].fields
    assert sorted(k for k, _ in sql.json_nodes(fields)) == ["A_Const", "FuncCall", "ResTarget", "String"]


@pytest.mark.parametrize("text", [";\n".join(TRICKY[i:i + 5]) for i in range(0, len(TRICKY), 5)]
                         + ["BEGIN; CREATE INDEX i ON t (a); COMMIT", "", "SELEC broken"])
def test_classify_step_equals_the_tree_reading(text):
    from pglast.parser import ParseError as PgParseError

    from registry.model import Step
    from registry.parse.classify import classify_step, combine

    try:
        expected = combine({k for k in (classify_sql_node(r.stmt) for r in sql.parse(text)) if k})
    except PgParseError:
        expected = "schema"
    assert classify_step(Step(text, "sql", "expand.1", 1)) == expected
