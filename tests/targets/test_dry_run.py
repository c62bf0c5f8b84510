"""``mreg apply --dry-run`` against real servers: what runs where, and that nothing persists
(no ledger event, no mirror row, no schema change, no leftover shadow database)."""

from __future__ import annotations

import json

import psycopg
import pytest
from engine_support import Project, mirror_events, pg_rows

BASE = "20250101_000001_schema_users"
STEPS = "20250101_000002_schema_steps"
COLUMN = "20250101_000003_schema_column"


def _pg_project(tmp_path, dsn: str, steps: str | None = None) -> Project:
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    proj.write(f"{BASE}.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE users (id bigint PRIMARY KEY, email text, confirmed boolean);
        INSERT INTO users SELECT g, 'u' || g || '@example.com', g % 2 = 0 FROM generate_series(1, 500) AS g;
    """)
    proj.write(f"{STEPS}.sql", steps or f"""
        -- Dependencies: [{BASE}]
        -- txmode: none
        -- Phase 1: EXPAND
        CREATE TABLE audit (id bigint, note text);
        CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);
        INSERT INTO audit SELECT id, email FROM users WHERE id < 10;
    """)
    proj.write(f"{COLUMN}.sql", f"""
        -- Dependencies: [{STEPS}]
        -- Phase 1: EXPAND
        ALTER TABLE users ADD COLUMN verified boolean;
        -- Phase 2: MIGRATE
        -- Backfill: table=users key=id batch_size=100
        UPDATE users SET verified = confirmed WHERE id >= :lo AND id < :hi;
        -- Phase 3: CONTRACT
        ALTER TABLE users ALTER COLUMN verified SET NOT NULL;
        -- Validation:
        -- check contract.required (post): sql:SELECT is_nullable FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'verified'; expect: {{"is_nullable": "NO"}}
    """)
    return proj


def _shadows(dsn: str) -> list:
    return pg_rows(dsn, "SELECT datname FROM pg_database WHERE datname LIKE 'mreg_shadow%%'")


def _schema(dsn: str) -> list:
    return pg_rows(dsn, "SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' ORDER BY 1, 2") + \
        pg_rows(dsn, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1")


def _records(out: str) -> list[dict]:
    return [r for r in json.loads(out)["records"] if r["event"] == "dry_run_step" and r.get("data", {}).get("status")]


@pytest.mark.postgres
def test_postgres_dry_run_uses_a_shadow_for_what_a_transaction_cannot_hold(tmp_path, pg_dsn):
    proj = _pg_project(tmp_path, pg_dsn)
    assert proj.run("apply", "--to", BASE)[0] == 0
    before_log, before_schema = mirror_events(pg_dsn), _schema(pg_dsn)
    before_catalog = len(proj.statements("main"))
    code, out, err = proj.run("apply", "--dry-run", "--confirm-contract", "--json")
    assert code == 0, err
    steps = _records(out)
    how = [(r["migration"], r["phase"], r["data"]["status"], r["data"]["how"], r["message"].split(": ", 1)[-1])
           for r in steps]
    assert how[0] == (STEPS, "expand", "ok", "shadow", "CREATE TABLE audit (id bigint, note text)")
    assert how[1][2:] == ("ok", "shadow, on its own",
                          "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email)")
    assert how[2][:4] == (STEPS, "expand", "ok", "shadow")
    assert how[3][:4] == (COLUMN, "expand", "ok", "shadow")
    # the copy has no rows: the backfill updates none there, and says what it would walk on the target
    assert how[4][:4] == (COLUMN, "migrate", "ok", "shadow") and "on main it would walk keys 1..500" in how[4][4]
    assert how[5][:4] == (COLUMN, "contract", "ok", "shadow")
    notes = " ".join(r["message"] for r in json.loads(out)["records"])
    assert "schema-only copy of main made with pg_dump" in notes and "dropped; nothing recorded" in notes
    # nothing persisted
    assert mirror_events(pg_dsn) == before_log and len(proj.statements("main")) == before_catalog
    assert _schema(pg_dsn) == before_schema and _shadows(pg_dsn) == []
    # and the real run does what the dry run showed
    code, out, err = proj.run("apply", "--confirm-contract")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT count(*) FROM users WHERE verified IS NULL") == [(0,)]


@pytest.mark.postgres
def test_postgres_dry_run_of_transactional_phases_rolls_back_on_the_target(tmp_path, pg_dsn):
    proj = _pg_project(tmp_path, pg_dsn, f"""
        -- Dependencies: [{BASE}]
        -- Phase 1: EXPAND
        CREATE TABLE audit (id bigint, note text);
        INSERT INTO audit SELECT id, email FROM users WHERE id < 10;
        -- Validation:
        -- check expand.nine (post): sql:SELECT count(*) AS n FROM audit; expect: {{"n": 9}}
    """)
    assert proj.run("apply", "--to", BASE)[0] == 0
    before = _schema(pg_dsn)
    code, out, err = proj.run("apply", "--dry-run", "--to", STEPS, "--json")
    assert code == 0, err
    assert [(r["data"]["status"], r["data"]["how"]) for r in _records(out)] == [("ok", "rolled back")] * 2
    assert not [r for r in json.loads(out)["records"] if r["event"] == "validation_failed"]
    assert _schema(pg_dsn) == before and _shadows(pg_dsn) == []


@pytest.mark.postgres
def test_postgres_dry_run_failure_exits_3_and_leaves_nothing(tmp_path, pg_dsn):
    proj = _pg_project(tmp_path, pg_dsn, f"""
        -- Dependencies: [{BASE}]
        -- txmode: none
        -- Phase 1: EXPAND
        CREATE INDEX CONCURRENTLY users_email ON users (email);
        INSERT INTO audit VALUES (1, 'no such table');
    """)
    assert proj.run("apply", "--to", BASE)[0] == 0
    before = _schema(pg_dsn)
    code, out, err = proj.run("apply", "--dry-run")
    assert code == 3, out + err
    assert f"{STEPS}.sql:5" in err and 'relation "audit" does not exist' in err
    assert "on the shadow database" in out
    assert _schema(pg_dsn) == before and _shadows(pg_dsn) == []
    assert len(mirror_events(pg_dsn)) == 2


@pytest.mark.postgres
def test_postgres_dry_run_drops_a_shadow_a_killed_dry_run_left(tmp_path, pg_dsn):
    import hashlib

    from registry.targets.postgres import dbname_of

    proj = _pg_project(tmp_path, pg_dsn)
    assert proj.run("apply", "--to", BASE)[0] == 0
    tag = hashlib.sha256(dbname_of(pg_dsn).encode()).hexdigest()[:8]
    pg_rows(pg_dsn, f"CREATE DATABASE mreg_shadow_{tag}_0123456789ab")
    pg_rows(pg_dsn, "CREATE DATABASE mreg_shadow_othertarget_0123456789ab")
    try:
        code, out, err = proj.run("apply", "--dry-run")
        assert code == 0, err
        assert _shadows(pg_dsn) == [("mreg_shadow_othertarget_0123456789ab",)]
    finally:
        pg_rows(pg_dsn, "DROP DATABASE IF EXISTS mreg_shadow_othertarget_0123456789ab")


@pytest.mark.postgres
def test_postgres_dry_run_without_createdb_lists_what_it_could_not_run(tmp_path, pg_dsn):
    pg_rows(pg_dsn, "DROP ROLE IF EXISTS mreg_dry")
    pg_rows(pg_dsn, "CREATE ROLE mreg_dry LOGIN NOCREATEDB")
    dbname = pg_rows(pg_dsn, "SELECT current_database()")[0][0]
    pg_rows(pg_dsn, f'ALTER DATABASE "{dbname}" OWNER TO mreg_dry')
    pg_rows(pg_dsn, "ALTER SCHEMA public OWNER TO mreg_dry")
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, user="mreg_dry")
    try:
        proj = _pg_project(tmp_path, dsn)
        assert proj.run("apply", "--to", BASE)[0] == 0
        before = _schema(pg_dsn)
        code, out, err = proj.run("apply", "--dry-run", "--json")
        assert code == 0, err
        steps = _records(out)
        cic = [r for r in steps if "CONCURRENTLY" in r["message"]][0]
        assert cic["data"]["status"] == "not_run"
        assert "no shadow database" in cic["data"]["how"] and "CREATEDB" in cic["data"]["how"]
        assert [r["data"]["status"] for r in steps if r["migration"] == STEPS] == ["ok", "not_run", "ok"]
        backfill = [r for r in steps if r["phase"] == "migrate"][0]
        assert "first batch [1, 101) updated 100 rows" in backfill["message"]
        assert _schema(pg_dsn) == before and _shadows(pg_dsn) == []
    finally:
        pg_rows(pg_dsn, "REASSIGN OWNED BY mreg_dry TO CURRENT_USER")
        pg_rows(pg_dsn, "DROP OWNED BY mreg_dry")
        pg_rows(pg_dsn, "DROP ROLE IF EXISTS mreg_dry")


@pytest.mark.timescale
def test_timescale_dry_run_rolls_back_and_says_why_there_is_no_shadow(tmp_path, timescale_dsn):
    proj = Project(tmp_path / "proj", {"ts": ("timescale", timescale_dsn)})
    proj.write("timescale/20250101_000001_schema_metrics.sql", """
        -- txmode: none
        -- Phase 1: EXPAND
        CREATE TABLE metrics (id bigint, v int);
        CREATE INDEX CONCURRENTLY IF NOT EXISTS metrics_v ON metrics (v);
        INSERT INTO metrics VALUES (1, 1);
    """)
    code, out, err = proj.run("apply", "--dry-run", "--json")
    assert code == 0, err
    steps = _records(out)
    assert [r["data"]["status"] for r in steps] == ["ok", "not_run", "ok"], out
    assert "TimescaleDB targets have no shadow database" in steps[1]["data"]["how"]
    with psycopg.connect(timescale_dsn) as conn:
        assert conn.execute("SELECT to_regclass('metrics') IS NULL").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM schema_versions").fetchone() == (0,)


@pytest.mark.neo4j
def test_neo4j_dry_run_rolls_back_data_and_explains_schema_commands(tmp_path, neo4j_uri):
    from neo4j import GraphDatabase

    proj = Project(tmp_path / "proj", {"graph": ("neo4j", neo4j_uri)})
    proj.write("20250101_000001_schema_people.cypher", """
        // Phase 1: EXPAND
        CREATE CONSTRAINT person_id IF NOT EXISTS FOR (p:Person) REQUIRE p.id IS UNIQUE;
        UNWIND range(1, 5) AS i CREATE (:Person {id: i});
        MATCH (p:Person) SET p.seen = true;
    """)
    code, out, err = proj.run("apply", "--dry-run", "--json")
    assert code == 0, err
    steps = _records(out)
    assert [(r["data"]["status"], r["data"]["how"]) for r in steps] == [
        ("checked", "a schema command commits on its own; EXPLAIN accepted it"),
        ("ok", "rolled back"), ("ok", "rolled back")]
    with GraphDatabase.driver(neo4j_uri) as driver:
        records, _, _ = driver.execute_query("MATCH (p:Person) RETURN count(p) AS n")
        assert records[0]["n"] == 0
        records, _, _ = driver.execute_query("SHOW CONSTRAINTS YIELD name WHERE name = 'person_id' RETURN name")
        assert records == []
        records, _, _ = driver.execute_query("MATCH (v:SchemaVersion) RETURN count(v) AS n")
        assert records[0]["n"] == 0


@pytest.mark.neo4j
def test_neo4j_dry_run_reports_a_statement_the_server_refuses(tmp_path, neo4j_uri):
    proj = Project(tmp_path / "proj", {"graph": ("neo4j", neo4j_uri)})
    proj.write("20250101_000001_schema_bad.cypher", """
        // Phase 1: EXPAND
        CREATE INDEX person_name IF NOT EXISTS FOR (p:Person) ON (p.name;
    """)
    code, out, err = proj.run("apply", "--dry-run")
    assert code == 3, out + err
    assert "20250101_000001_schema_bad.cypher" in err


@pytest.mark.redis
def test_redis_dry_run_checks_commands_and_runs_none(tmp_path, redis_url):
    import redis

    proj = Project(tmp_path / "proj", {"cache": ("redis", redis_url)})
    proj.write("20250101_000001_data_flags.redis", """
        # Phase 1: EXPAND
        SET flag:new on
        HSET profile:1 name alice email alice@example.com
        RESHAPE user:*:name COUNT 100 "return 0"
    """)
    r = redis.Redis.from_url(redis_url, decode_responses=True)

    def keys() -> list[str]:  # the lock's fencing counter is the one key every mreg command leaves
        return sorted(k for k in r.keys() if not k.startswith("mreg:lock:fence:"))

    before = keys()
    code, out, err = proj.run("apply", "--dry-run", "--json")
    assert code == 0, err
    steps = _records(out)
    assert [r_["data"]["status"] for r_ in steps] == ["checked"] * 3
    assert steps[0]["data"]["how"] == "known command, keys flag:new"
    assert "SCAN MATCH user:*:name COUNT 100" in steps[2]["data"]["how"]
    assert keys() == before and r.get("flag:new") is None
    proj.write("20250101_000002_data_bad.redis", """
        # Phase 1: EXPAND
        SET only-a-key
    """)
    code, out, err = proj.run("apply", "--dry-run")
    assert code == 3 and "SET takes at least 3 words, this has 2" in err
    assert keys() == before
