"""Canonical ids, legacy schemes, and type inference from content."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from hypothesis import given, strategies as st

from registry.model import Migration, Step
from registry.naming import (NamingError, canonical_id, describe, infer_type, parse_canonical_name,
                             parse_legacy_name, snake)
from registry.parse import parse_migration


def test_canonical_id_and_back():
    cid = canonical_id(datetime(2025, 11, 20, 14, 30), "schema", "Add email verification")
    assert cid == "20251120_143000_schema_add_email_verification"
    parsed = parse_canonical_name(f"migrations/postgresql/{cid}.sql")
    assert parsed.id == cid and parsed.type == "schema" and parsed.ext == "sql"
    assert parsed.timestamp == datetime(2025, 11, 20, 14, 30)
    assert canonical_id(date(2025, 1, 2), "perf", "x").startswith("20250102_000000_perf_")


def test_canonical_id_refuses_unknown_type():
    with pytest.raises(NamingError) as info:
        canonical_id(datetime(2025, 1, 1), "cosmetic", "x")
    assert info.value.hint and info.value.exit_code == 2


@pytest.mark.parametrize("name", [
    "20251320_143000_schema_x.sql",      # month 13
    "20251120_143000_misc_x.sql",        # unknown type
    "20251120_143000_schema_Add.sql",    # not snake case
    "V3__x.sql", "README.md",
])
def test_not_canonical(name):
    assert parse_canonical_name(name) is None


@pytest.mark.parametrize("name,scheme,version,description,kind", [
    ("V3__create_users.sql", "flyway", (3,), "create_users", "versioned"),
    ("V1.2__add_col.sql", "flyway", (1, 2), "add_col", "versioned"),
    ("V14__b.sql", "flyway", (14,), "b", "versioned"),
    ("U3__create_users.sql", "flyway", (3,), "create_users", "undo"),
    ("R__refresh_views.sql", "flyway", (), "refresh_views", "repeatable"),
    ("V1_2_3__add_index.cypher", "neo4j-migrations", (1, 2, 3), "add_index", "versioned"),
    ("20231120143000_add_users.js", "knex", (20231120143000,), "add_users", "versioned"),
    ("20231120143000_add_users.ts", "knex", (20231120143000,), "add_users", "versioned"),
    ("20231120_add_users.sql", "date", (20231120,), "add_users", "versioned"),
    ("20231120_143000_add_users.sql", "date", (20231120, 143000), "add_users", "versioned"),
    ("20231120143000_add_users.sql", "date", (20231120, 143000), "add_users", "versioned"),
    ("001_init.sql", "numbered", (1,), "init", "versioned"),
    ("12-seed-data.sql", "numbered", (12,), "seed-data", "versioned"),
    ("0003_x.down.sql", "numbered", (3,), "x", "undo"),
])
def test_legacy_schemes(name, scheme, version, description, kind):
    got = parse_legacy_name(f"server/db/migrations/{name}")
    assert (got.scheme, got.version, got.description, got.kind) == (scheme, version, description, kind)


def test_legacy_none_for_canonical_and_others():
    assert parse_legacy_name("20251120_143000_schema_add_x.sql") is None
    assert parse_legacy_name("migrationFramework.ts") is None
    assert parse_legacy_name("99999999_x.sql") is None  # 8 digits, no valid date, too long for numbered


def test_describe_and_snake():
    assert describe("V3__CreateUsers.sql") == "create_users"
    assert describe("20231120143000_addUserPrefs.js") == "add_user_prefs"
    assert snake("Ajouter l'élément") == "ajouter_l_element"
    assert snake("!!!") == "migration"


@given(st.text(max_size=200))
def test_snake_is_always_a_valid_description(text):
    out = snake(text)
    assert out and len(out) <= 64
    assert parse_canonical_name(f"20250101_000000_schema_{out}.sql") is not None


def _sql(*statements: str) -> Migration:
    return Migration(id="x", name="x", database="postgresql", path="x.sql", checksum="",
                     phases={"expand": [Step(s) for s in statements]})


@pytest.mark.parametrize("statements,expected", [
    (["CREATE INDEX CONCURRENTLY i ON t(x)"], "perf"),
    (["CREATE INDEX i ON t(x)", "DROP INDEX j", "REINDEX INDEX k"], "perf"),
    (["GRANT SELECT ON t TO app"], "security"),
    (["CREATE POLICY p ON t USING (true)", "ALTER TABLE t ENABLE ROW LEVEL SECURITY"], "security"),
    (["CREATE ROLE reader", "REVOKE ALL ON t FROM public"], "security"),
    (["UPDATE users SET a = 1"], "data"),
    (["INSERT INTO t VALUES (1)", "DELETE FROM t WHERE a = 2"], "data"),
    (["MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DO NOTHING"], "data"),
    (["CREATE TABLE t (a int)", "CREATE INDEX i ON t(a)"], "schema"),
    (["ALTER TABLE t ADD COLUMN b int", "UPDATE t SET b = 1"], "schema"),
    (["SET lock_timeout = '5s'", "CREATE INDEX i ON t(a)"], "perf"),
    # a string mentioning GRANT is not a grant: the parse tree decides
    (["INSERT INTO audit (note) VALUES ('GRANT ALL')"], "data"),
])
def test_infer_type_sql(statements, expected):
    assert infer_type(_sql(*statements)) == expected


def test_infer_type_cypher_and_redis():
    idx = parse_migration("n/a.cypher", b"CREATE INDEX e_id IF NOT EXISTS FOR (e:Entity) ON (e.id);")
    assert idx.type == "perf"
    con = parse_migration("n/b.cypher", b"CREATE CONSTRAINT c IF NOT EXISTS FOR (e:E) REQUIRE e.id IS UNIQUE;")
    assert con.type == "schema"
    data = parse_migration("n/c.cypher", b"MATCH (e:Entity) SET e.x = 'CREATE INDEX' RETURN count(e);")
    assert data.type == "data"
    assert parse_migration("r/a.redis", b"RENAME a b\n").type == "data"


def test_type_from_header_or_name_wins():
    m = parse_migration("m/20250101_000000_perf_x.sql", b"CREATE TABLE t (a int);")
    assert m.type == "perf"
    m = parse_migration("m/001_x.sql", b"-- Type: security\nCREATE TABLE t (a int);")
    assert m.type == "security"


def test_timescale_policies_are_schema_not_data():
    assert infer_type(_sql("SELECT add_compression_policy('t', INTERVAL '7 days')")) == "schema"
    assert infer_type(_sql("SELECT time_bucket('1 hour', now())")) == "data"
