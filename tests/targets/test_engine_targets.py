"""The repository's example migrations applied by the engine on each of the four real targets,
then verified (ledger, mirror column by column, files), rolled back where they can be, and re-applied."""

from __future__ import annotations

import pytest
from engine_support import Project, events

pytestmark = pytest.mark.slow


def _apply_examples(proj: Project, target: str, expected: dict[str, list[str]]) -> None:
    code, out, err = proj.run("apply", "--confirm-contract")
    assert code == 0, out + err
    st = proj.json("status")["targets"][0]
    assert st["available"] and st["pending"] == [] and sorted(st["applied"]) == sorted(expected)
    log = proj.statements(target)
    done = {(s["migration"]["id"], s["details"]["phase"]) for s in events(log, kind="apply_succeeded")}
    assert done == {(m, p) for m, ps in expected.items() for p in ps}
    code, out, err = proj.run("verify")
    assert code == 0, out + err
    code, out, err = proj.run("apply", "--confirm-contract")
    assert code == 0 and "0 phase(s) to apply" in out


@pytest.mark.postgres
def test_postgresql_examples(tmp_path, pg_dsn):
    proj = Project(tmp_path / "proj", {"pg": ("postgresql", pg_dsn)})
    proj.copy_examples("postgresql")
    _apply_examples(proj, "pg", {
        "20251120_140000_schema_create_users": ["expand"],
        "20251120_143000_schema_add_email_verification": ["expand", "migrate", "contract"],
        "20251120_150000_schema_add_user_preferences": ["expand"]})


@pytest.mark.timescale
def test_timescale_examples(tmp_path, timescale_dsn):
    import psycopg

    proj = Project(tmp_path / "proj", {"ts": ("timescale", timescale_dsn)})
    proj.copy_examples("timescale")
    _apply_examples(proj, "ts", {"20251120_160000_schema_create_analytics_traces": ["expand"]})
    with psycopg.connect(timescale_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM timescaledb_information.hypertables "
                            "WHERE hypertable_name = 'analytics_traces'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM timescaledb_information.continuous_aggregates "
                            "WHERE view_name = 'analytics_traces_hourly'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM timescaledb_information.jobs "
                            "WHERE proc_name = 'policy_compression'").fetchone() == (1,)
        assert conn.execute("SELECT sum(calls) FROM analytics_traces_hourly").fetchone()[0] > 0
    # txmode none: one checkpoint per statement, in order
    log = proj.statements("ts")
    done = [s["details"]["steps_done"] for s in events(log, kind="batch_checkpoint")]
    assert done == list(range(1, len(done) + 1)) and len(done) == 10


@pytest.mark.neo4j
def test_neo4j_examples(tmp_path, neo4j_uri):
    from neo4j import GraphDatabase

    proj = Project(tmp_path / "proj", {"graph": ("neo4j", neo4j_uri)})
    proj.copy_examples("neo4j")
    _apply_examples(proj, "graph", {
        "20251120_152000_data_seed_entities": ["expand"],
        "20251120_153000_schema_add_canonical_id": ["expand", "migrate", "contract"]})
    with GraphDatabase.driver(neo4j_uri) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (e:Entity) RETURN count(e) AS n, count(e.canonical_id) AS c, count(e.legacy_id) AS l")
        assert (records[0]["n"], records[0]["c"], records[0]["l"]) == (50, 50, 0)
        records, _, _ = driver.execute_query("SHOW INDEXES YIELD name WHERE name = 'entity_canonical_id' RETURN name")
        assert len(records) == 1
    code, out, err = proj.run("rollback", "--migration-id", "20251120_153000_schema_add_canonical_id", "--confirm")
    assert code == 0, err
    with GraphDatabase.driver(neo4j_uri) as driver:
        records, _, _ = driver.execute_query("MATCH (e:Entity) RETURN count(e.canonical_id) AS c, "
                                             "count(e.legacy_id) AS l")
        assert (records[0]["c"], records[0]["l"]) == (0, 50)
    assert proj.run("apply", "--confirm-contract")[0] == 0
    assert proj.run("verify")[0] == 0


@pytest.mark.redis
def test_redis_examples(tmp_path, redis_url):
    import redis

    proj = Project(tmp_path / "proj", {"cache": ("redis", redis_url)})
    proj.copy_examples("redis")
    _apply_examples(proj, "cache", {
        "20251120_165000_data_seed_legacy_user_keys": ["expand"],
        "20251120_170000_data_reshape_user_profiles": ["migrate", "contract"]})
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert sorted(k for k in r.keys() if not k.startswith("mreg:")) == ["profile:1", "profile:2", "profile:3"]
    assert r.hgetall("profile:1") == {"name": "alice", "email": "alice@example.com"}
    code, out, err = proj.run("rollback", "--migration-id", "20251120_170000_data_reshape_user_profiles", "--confirm")
    assert code == 0, err
    assert sorted(k for k in r.keys() if not k.startswith("mreg:")) == [
        "user:1:email", "user:1:name", "user:2:email", "user:2:name", "user:3:name"]
    assert proj.run("apply", "--confirm-contract")[0] == 0
    assert proj.run("verify")[0] == 0


@pytest.mark.redis
def test_redis_phase_runs_step_by_step_and_resumes_after_a_failed_command(tmp_path, redis_url):
    import redis

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.set("label", "not a number")
    proj = Project(tmp_path / "proj", {"cache": ("redis", redis_url)})
    path = proj.write("redis/20250101_000000_data_counters.redis", """
        # Phase 1: EXPAND
        INCR first
        INCR label
        INCR second
    """)
    code, out, err = proj.run("apply")
    assert code == 3 and "not an integer" in err
    assert r.get("first") == "1" and r.get("second") is None
    log = proj.statements("cache")
    assert [s["type"] for s in log] == ["apply_started", "batch_checkpoint", "apply_failed"]
    assert log[-1]["details"]["steps_done"] == 1 and log[-1]["details"]["resumable"] is True
    path.write_text(path.read_text().replace("INCR label", "SET label 0"))
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert (r.get("first"), r.get("label"), r.get("second")) == ("1", "0", "1"), "the first command ran once"
    assert proj.run("verify")[0] == 0


@pytest.mark.neo4j
def test_neo4j_phase_with_a_schema_command_resumes_without_repeating_data_steps(tmp_path, neo4j_uri):
    from neo4j import GraphDatabase

    proj = Project(tmp_path / "proj", {"graph": ("neo4j", neo4j_uri)})
    path = proj.write("neo4j/20250101_000000_schema_marks.cypher", """
        // Phase 1: EXPAND
        CREATE INDEX mark_tag IF NOT EXISTS FOR (m:Mark) ON (m.tag);
        CREATE (:Mark {tag: 'one'});
        UNWIND [1, 0] AS d RETURN 1 / d;
        CREATE (:Mark {tag: 'two'});
    """)
    code, out, err = proj.run("apply")
    assert code == 3, out + err
    log = proj.statements("graph")
    assert [s["type"] for s in log] == ["apply_started", "batch_checkpoint", "batch_checkpoint", "apply_failed"]
    path.write_text(path.read_text().replace("UNWIND [1, 0] AS d RETURN 1 / d", "RETURN 1"))
    code, out, err = proj.run("apply")
    assert code == 0, err
    with GraphDatabase.driver(neo4j_uri) as driver:
        records, _, _ = driver.execute_query("MATCH (m:Mark) RETURN m.tag AS tag ORDER BY tag")
    assert [r["tag"] for r in records] == ["one", "two"]
    assert proj.run("verify")[0] == 0
