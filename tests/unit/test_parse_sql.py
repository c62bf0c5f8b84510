"""SQL migrations: the seed's worked examples, the template's wrappers, autocommit statements, errors."""

from __future__ import annotations

import pytest

from registry.parse import ParseError, parse_migration

EMAIL_VERIFIED = """\
-- Migration: Add email verification
-- ID: 20251120_143000_schema_add_email_verification
-- Version: 1.1.0
-- Database: postgresql
-- Author: dev@example.com
-- Created: 2025-11-20
-- Breaking: false
-- Dependencies: [20251101_090000_schema_create_users]

-- Phase 1: EXPAND (Deploy DB change first)
-- Add nullable column with default
BEGIN;
ALTER TABLE users ADD COLUMN email_verified BOOLEAN DEFAULT FALSE;
COMMIT;
CREATE INDEX CONCURRENTLY idx_users_email_verified ON users(email_verified);

-- Phase 2: MIGRATE (Background job)
-- Backfill: table=users key=id batch_size=500
UPDATE users
SET email_verified = (
  CASE
    WHEN email_confirmed_at IS NOT NULL THEN TRUE
    ELSE FALSE
  END
)
WHERE email_verified IS NULL AND id >= :lo AND id < :hi;

-- Phase 3: CONTRACT (After all instances updated)
ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL;

-- Rollback (contract): relax the constraint
ALTER TABLE users ALTER COLUMN email_verified DROP NOT NULL;

-- Rollback: drop the column and its index
BEGIN;
DROP INDEX IF EXISTS idx_users_email_verified;
ALTER TABLE users DROP COLUMN IF EXISTS email_verified;
COMMIT;

-- Validation:
-- check column_exists (post): sql:SELECT count(*) AS count FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email_verified'; expect: {"count": 1}
-- check no_nulls (post, noncritical): SELECT count(*) AS count FROM users WHERE email_verified IS NULL; expect: {"count": 0}
-- SELECT COUNT(*) FROM new_table; -- a comment, not a check
"""

USER_PREFERENCES = """\
-- Migration: Add user preferences table
-- Version: 2.1.0
-- Author: developer@intelgraph.com
-- Breaking: false

BEGIN;

CREATE TABLE user_preferences (
  id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
  user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  preferences JSONB NOT NULL DEFAULT '{}',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE(user_id)
);

CREATE INDEX CONCURRENTLY idx_user_preferences_user_id
  ON user_preferences(user_id);

COMMIT;

-- Rollback: Drop user preferences table
BEGIN;
DROP TABLE IF EXISTS user_preferences CASCADE;
COMMIT;
"""

TIMESCALE = """\
-- Migration: Analytics traces hypertable
-- ID: 20251121_100000_schema_analytics_traces
-- Version: 1.0.0
-- Database: timescale
-- Author: data@example.com
-- Created: 2025-11-21
-- Breaking: false
-- Dependencies: []
-- txmode: none

-- Phase 1: EXPAND
CREATE TABLE analytics_traces (
  time TIMESTAMPTZ NOT NULL,
  trace_id TEXT NOT NULL,
  service TEXT NOT NULL,
  duration_ms DOUBLE PRECISION
);
SELECT create_hypertable('analytics_traces', 'time');
ALTER TABLE analytics_traces SET (timescaledb.compress, timescaledb.compress_segmentby = 'service');
SELECT add_compression_policy('analytics_traces', INTERVAL '7 days');
CREATE MATERIALIZED VIEW traces_hourly WITH (timescaledb.continuous) AS
  SELECT time_bucket('1 hour', time) AS bucket, service, avg(duration_ms) AS avg_ms
  FROM analytics_traces GROUP BY bucket, service
  WITH NO DATA;
CALL refresh_continuous_aggregate('traces_hourly', NULL, NULL);

-- Rollback:
DROP MATERIALIZED VIEW IF EXISTS traces_hourly;
DROP TABLE IF EXISTS analytics_traces;
"""

PATH_EV = "migrations/20251120_143000_schema_add_email_verification.sql"


def parse(text: str, path: str = PATH_EV, **kw):
    return parse_migration(path, text.encode(), **kw)


def test_email_verified_three_phases():
    m = parse(EMAIL_VERIFIED)
    assert m.id == "20251120_143000_schema_add_email_verification"
    assert (m.version, m.database, m.author, m.created, m.breaking) == (
        "1.1.0", "postgresql", "dev@example.com", "2025-11-20", False)
    assert m.dependencies == ["20251101_090000_schema_create_users"]
    assert m.phase_names == ["expand", "migrate", "contract"]
    expand = m.phases["expand"]
    assert [s.content.split()[0:2] for s in expand] == [["ALTER", "TABLE"], ["CREATE", "INDEX"]]
    assert [s.line for s in expand] == [13, 15]
    assert [s.transactional for s in expand] == [True, False]
    assert m.backfill.table == "users" and m.backfill.key == "id"
    assert ":lo" in m.backfill.update and m.backfill.update.startswith("UPDATE users")
    assert m.settings.batch_size == 500
    assert "migrate" not in m.phases  # the backfill is the migrate phase
    assert [s.content for s in m.phases["contract"]] == [
        "ALTER TABLE users ALTER COLUMN email_verified SET NOT NULL"]
    assert [s.content for s in m.rollback["contract"]] == [
        "ALTER TABLE users ALTER COLUMN email_verified DROP NOT NULL"]
    assert [s.line for s in m.rollback["expand"]] == [36, 37]
    assert m.metadata["transaction_wrappers"] == 4
    assert [r.name for r in m.validation] == ["column_exists", "no_nulls"]
    assert m.validation[0].expected == {"count": 1}
    assert m.validation[0].check.startswith("sql:SELECT count(*)")
    assert m.validation[1].critical is False
    # CREATE INDEX CONCURRENTLY without txmode: none is reported, not hidden
    assert any("CREATE INDEX CONCURRENTLY" in w and "line 15" in w for w in m.metadata["warnings"])


def test_user_preferences_legacy_header_without_id():
    m = parse(USER_PREFERENCES, path="migrations/20251120_150000_schema_add_user_preferences.sql")
    assert m.id == "20251120_150000_schema_add_user_preferences"
    assert m.name == "Add user preferences table" and m.version == "2.1.0"
    assert m.type == "schema" and m.database == "postgresql"
    assert [s.content.split()[:2] for s in m.phases["expand"]] == [["CREATE", "TABLE"], ["CREATE", "INDEX"]]
    assert m.rollback["expand"][0].content == "DROP TABLE IF EXISTS user_preferences CASCADE"
    assert m.created == "2025-11-20"


def test_timescale_txmode_none():
    m = parse(TIMESCALE, path="migrations/timescale/20251121_100000_schema_analytics_traces.sql")
    assert m.database == "timescale" and m.txmode == "none"
    steps = m.phases["expand"]
    assert len(steps) == 6
    assert all(not s.transactional for s in steps)
    assert steps[4].content.startswith("CREATE MATERIALIZED VIEW traces_hourly")
    assert steps[5].content == "CALL refresh_continuous_aggregate('traces_hourly', NULL, NULL)"
    assert m.metadata["warnings"] == []


def test_timescale_detected_from_content_without_header():
    m = parse("CREATE TABLE t (time timestamptz);\nSELECT create_hypertable('t', 'time');\n",
              path="server/db/migrations/timescale/001_init.sql")
    assert m.database == "timescale" and m.scheme == "numbered"
    assert parse("CREATE TABLE t (a int);", path="x/001_a.sql").database == "postgresql"
    assert parse("CREATE TABLE t (a int);", path="x/001_a.sql", database="timescale").database == "timescale"


def test_dollar_quoted_bodies_survive():
    text = """CREATE FUNCTION touch() RETURNS trigger AS $$
BEGIN
  NEW.updated_at := now(); -- ; inside
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DO $body$ BEGIN RAISE NOTICE 'a;b'; END $body$;
CREATE TRIGGER t BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
"""
    m = parse(text, path="db/migrations/V7__touch.sql")
    steps = m.phases["expand"]
    assert len(steps) == 3
    assert steps[0].content.endswith("LANGUAGE plpgsql") and "RETURN NEW;" in steps[0].content
    assert [s.line for s in steps] == [1, 7, 8]


def test_legacy_flyway_defaults():
    m = parse("CREATE TABLE a (id int);", path="db/migrations/V3__create_a.sql")
    assert m.id == "V3__create_a" and m.scheme == "flyway" and m.phase_names == ["expand"]
    assert m.metadata["legacy"] == {"scheme": "flyway", "version": "3", "description": "create_a",
                                    "kind": "versioned"}
    assert m.metadata["header"] is False


@pytest.mark.parametrize("text,line,field,needle", [
    ("-- Version: 1.2\nSELECT 1;", 1, "Version", "not semantic"),
    ("-- Database: mysql\nSELECT 1;", 1, "Database", "unknown database"),
    ("-- Database: postgresql | neo4j | timescale\n", 1, "Database", "unknown database"),
    ("-- Breaking: maybe\n", 1, "Breaking", "true or false"),
    ("-- Created: 20-11-2025\n", 1, "Created", "ISO 8601"),
    ("-- Dependencies: [a, b\n", 1, "Dependencies", "unbalanced"),
    ("-- Type: cosmetic\n", 1, "Type", "unknown migration type"),
    ("-- txmode: sometimes\n", 1, "txmode", "not understood"),
    ("-- Version: 1.0.0\n-- Version: 1.0.1\n", 2, "Version", "given twice"),
    ("-- Phase 2: EXPAND\nSELECT 1;", 1, "phase", "Phase 2"),
    ("-- Phase 2: MIGRATE\nSELECT 1;\n-- Phase 1: EXPAND\nSELECT 2;", 3, "phase", "after"),
    ("-- Phase 1: EXPAND\nSELECT 1;\n\nSELEC 2;", 4, "sql", "syntax error"),
    ("SELECT 1;\nROLLBACK;\n", 2, "sql", "transaction control"),
    ("-- Rollback:\nSELECT 1;\n-- Rollback: drop\nSELECT 2;", 3, "rollback", "second rollback"),
    ("-- Phase 1: EXPAND\n-- Backfill: table=t key=id\nUPDATE t SET a = 1 WHERE id >= :lo AND id < :hi;",
     2, "Backfill", "outside the MIGRATE"),
    ("-- Phase 2: MIGRATE\n-- Backfill: table=t\nUPDATE t SET a = 1;", 2, "Backfill", "table= and key="),
    ("-- Phase 2: MIGRATE\n-- Backfill: table=t key=id\nUPDATE t SET a = 1;", 3, "Backfill", ":lo and :hi"),
    ("-- Phase 2: MIGRATE\n-- Backfill: table=t key=id\n", 2, "Backfill", "not followed"),
    ("-- Validation:\n-- check x: sql:SELECT 1; expect: {count: 1}\n", 2, "expect", "not JSON"),
    ("-- Validation:\n-- check (sideways): SELECT 1\n", 2, "check", "unknown check option"),
    ("-- Validation:\n-- check:\n", 2, "check", "needs a query"),
])
def test_errors_name_file_line_field(text, line, field, needle):
    path = "m/20250101_000000_schema_x.sql"
    with pytest.raises(ParseError) as info:
        parse(text, path=path)
    err = info.value
    assert (err.path, err.line, err.field) == (path, line, field)
    assert needle in err.reason
    assert str(err).startswith(f"{path}:{line}:")
    assert err.hint and err.exit_code == 2


def test_legacy_header_values_are_warnings_not_errors():
    text = "-- Version: 3\n-- Created: Jan 5 2019\n-- Database: oracle\nCREATE TABLE a (id int);\n"
    m = parse(text, path="db/migrations/V3__a.sql")
    assert (m.version, m.created, m.database) == ("0.0.0", "", "postgresql")
    assert [w.split(":")[0] for w in m.metadata["warnings"]] == ["line 1", "line 2", "line 3"]
    with pytest.raises(ParseError):   # an ID: header makes the file canonical: values must be valid
        parse("-- ID: a_1\n" + text, path="db/migrations/V3__a.sql")


def test_binary_and_non_utf8_are_parse_errors():
    with pytest.raises(ParseError) as info:
        parse_migration("a/001_x.sql", b"SELECT 1;\n\x00\x01\x02\xff")
    assert info.value.field == "encoding" and info.value.line == 2
    with pytest.raises(ParseError) as info:
        parse_migration("a/001_x.sql", b"-- ok\n-- ok\nSELECT '\xe9';")
    assert info.value.field == "encoding" and info.value.line == 3


def test_crlf_and_bom_do_not_change_lines_or_checksum():
    lf = EMAIL_VERIFIED.encode()
    crlf = b"\xef\xbb\xbf" + lf.replace(b"\n", b"\r\n")
    a, b = parse_migration(PATH_EV, lf), parse_migration(PATH_EV, crlf)
    assert a.checksum == b.checksum
    assert [s.line for s in a.phases["expand"]] == [s.line for s in b.phases["expand"]]
    assert a.phases["expand"][0].content == b.phases["expand"][0].content


def test_autocommit_statements_are_marked():
    text = ("CREATE INDEX CONCURRENTLY i ON t(x);\nREINDEX INDEX CONCURRENTLY i;\nVACUUM t;\nANALYZE t;\n"
            "ALTER TYPE mood ADD VALUE 'meh';\nDROP INDEX CONCURRENTLY i;\nCREATE TABLE u (a int);\n")
    steps = parse(text, path="x/001_a.sql").phases["expand"]
    assert [s.transactional for s in steps] == [False, False, False, True, False, False, True]


def test_header_database_wins_over_caller_with_warning():
    m = parse("-- Database: timescale\nSELECT 1;", path="x/001_a.sql", database="postgresql")
    assert m.database == "timescale"
    assert any("header wins" in w for w in m.metadata["warnings"])
    with pytest.raises(ParseError) as info:
        parse("-- Database: neo4j\nSELECT 1;", path="x/001_a.sql")
    assert info.value.field == "Database"


def test_unknown_extension():
    with pytest.raises(ParseError) as info:
        parse_migration("x/notes.txt", b"hello")
    assert info.value.field == "extension"


def test_validation_options_and_bare_statements():
    text = ("SELECT 1;\n-- Validation: checks\n-- check ready (pre): SELECT 1; expect: [1]\n"
            "-- Check table sizes (free text, not a rule)\nSELECT count(*) FROM users;\n")
    m = parse(text, path="x/001_a.sql")
    assert [(r.name, r.type, r.check, r.expected) for r in m.validation] == [
        ("ready", "pre", "sql:SELECT 1", [1]),
        ("validation_2", "post", "sql:SELECT count(*) FROM users", None)]
    assert [s.content for s in m.phases["expand"]] == ["SELECT 1"]


def test_decorated_markers():
    text = "-- ===== Phase 1: EXPAND =====\nSELECT 1;\n--- Phase 3: CONTRACT\nSELECT 3;\n-- ** Rollback: **\nSELECT 4;\n"
    m = parse(text, path="x/001_a.sql")
    assert [s.content for s in m.phases["expand"]] == ["SELECT 1"]
    assert [s.content for s in m.phases["contract"]] == ["SELECT 3"]
    assert [s.content for s in m.rollback["expand"]] == ["SELECT 4"]


def test_continuous_aggregate_with_data_refuses_a_transaction():
    cagg = "CREATE MATERIALIZED VIEW v WITH (timescaledb.continuous) AS SELECT time_bucket('1h', t) b FROM x GROUP BY b"
    steps = parse(f"{cagg};\n{cagg} WITH NO DATA;\n{cagg} WITH DATA;\n", path="x/001_a.sql").phases["expand"]
    assert [s.transactional for s in steps] == [False, True, False]
