"""A real round trip on each of the four servers, through the session fixtures of tests/conftest.py."""

from __future__ import annotations

import psycopg
import pytest


def test_postgres_ddl_in_a_transaction_rolls_back(pg_dsn):
    with psycopg.connect(pg_dsn) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("CREATE TABLE smoke_t (id integer PRIMARY KEY, note text NOT NULL)")
            conn.execute("INSERT INTO smoke_t VALUES (1, 'inside')")
            assert conn.execute("SELECT note FROM smoke_t").fetchone() == ("inside",)
        assert conn.execute("SELECT to_regclass('smoke_t')").fetchone() == (None,)
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("16")


def test_postgres_databases_are_per_test(pg_dsn, pg_server):
    other = pg_server.new_database()
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
    finally:
        pg_server.drop_database(other)


def test_timescale_hypertable_gets_a_chunk(timescale_dsn):
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        assert version is not None and version[0].startswith("2.")
        conn.execute("CREATE TABLE traces (time timestamptz NOT NULL, span text, ms integer)")
        created = conn.execute("SELECT * FROM create_hypertable('traces', 'time')").fetchone()
        assert created[-1] is True
        assert conn.execute("SELECT count(*) FROM show_chunks('traces')").fetchone() == (0,)
        conn.execute("INSERT INTO traces VALUES ('2026-01-01T00:00:00Z', 'a', 3), ('2026-01-01T00:00:01Z', 'b', 4)")
        assert conn.execute("SELECT count(*) FROM show_chunks('traces')").fetchone() == (1,)
        assert conn.execute("SELECT sum(ms) FROM traces").fetchone() == (7,)


def test_timescale_is_wiped_between_tests(timescale_dsn):
    # the previous test's hypertable must be gone; run twice in any order, each sees a clean place
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('traces')").fetchone() == (None,)
        count = conn.execute("SELECT count(*) FROM timescaledb_information.hypertables").fetchone()[0]
        assert count == 0
        conn.execute("CREATE SCHEMA tenant_a")
        conn.execute("CREATE TABLE tenant_a.t (x int)")
        conn.execute("CREATE TABLE traces (x int)")


def test_timescale_wipe_removes_schemas_tables_roles(timescale_server):
    with timescale_server.connect() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS left_over")
        conn.execute("CREATE TABLE IF NOT EXISTS left_over.t (x int)")
        conn.execute("CREATE TYPE mood AS ENUM ('ok')")
        conn.execute("CREATE FUNCTION f_left() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        conn.execute("CREATE ROLE smoke_role")
    timescale_server.wipe()
    with timescale_server.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'left_over'").fetchone() == (0,)
        assert conn.execute("SELECT to_regtype('mood')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'f_left'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'smoke_role'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (1,)


def test_neo4j_constraint_then_write_and_read(neo4j_uri):
    import neo4j

    with neo4j.GraphDatabase.driver(neo4j_uri, auth=None) as driver:
        driver.execute_query(
            "CREATE CONSTRAINT smoke_user_id IF NOT EXISTS FOR (u:SmokeUser) REQUIRE u.id IS UNIQUE")
        driver.execute_query(  # the same again: IF NOT EXISTS makes it a no-op
            "CREATE CONSTRAINT smoke_user_id IF NOT EXISTS FOR (u:SmokeUser) REQUIRE u.id IS UNIQUE")
        driver.execute_query("CREATE (:SmokeUser {id: $id, email: $email})", id=1, email="a@example.com")
        records, _, _ = driver.execute_query("MATCH (u:SmokeUser {id: 1}) RETURN u.email AS email")
        assert [r["email"] for r in records] == ["a@example.com"]
        with pytest.raises(neo4j.exceptions.ConstraintError):
            driver.execute_query("CREATE (:SmokeUser {id: 1})")
        names = [r["name"] for r in driver.execute_query("SHOW CONSTRAINTS YIELD name").records]
        assert names == ["smoke_user_id"]


def test_neo4j_is_emptied_between_tests(neo4j_uri):
    import neo4j

    with neo4j.GraphDatabase.driver(neo4j_uri, auth=None) as driver:
        assert driver.execute_query("MATCH (n) RETURN count(n) AS n").records[0]["n"] == 0
        assert driver.execute_query("SHOW CONSTRAINTS YIELD name").records == []
        driver.execute_query("CREATE CONSTRAINT smoke_user_id IF NOT EXISTS FOR (u:SmokeUser) REQUIRE u.id IS UNIQUE")
        driver.execute_query("CREATE (:SmokeUser {id: 2})")


def test_redis_xadd_explicit_ids_refuse_a_smaller_one(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        assert client.xadd("mreg:smoke", {"seq": "0"}, id="0-1") == b"0-1"
        assert client.xadd("mreg:smoke", {"seq": "1"}, id="1-0") == b"1-0"
        with pytest.raises(redis.exceptions.ResponseError, match="equal or smaller"):
            client.xadd("mreg:smoke", {"seq": "0"}, id="0-5")
        with pytest.raises(redis.exceptions.ResponseError, match="equal or smaller"):
            client.xadd("mreg:smoke", {"seq": "1"}, id="1-0")
        assert [entry_id for entry_id, _ in client.xrange("mreg:smoke")] == [b"0-1", b"1-0"]
    finally:
        client.close()


def test_redis_indexes_are_fresh_per_test(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        assert int(redis_url.rsplit("/", 1)[1]) >= 1
        client.set("left", "behind")
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# `mreg dev up | status | down` through the real CLI, in a tmp project of its own


def _mreg(*args: str, env: dict, cwd) -> tuple[int, str, str]:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "registry.cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr


def _alive(pid: int) -> bool:
    from registry.dev import process

    return process.start_time(pid) is not None


@pytest.fixture
def dev_project(tmp_path):
    """A project root outside pytest's tmp folder, for `mreg dev up` there.

    PostgreSQL runs as an unprivileged user when we are root, and must reach its data folder;
    every new pytest session resets /tmp/pytest-of-<user> to mode 0700, so a project inside
    tmp_path could become unreachable while initdb runs.
    """
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="mreg-dev-cli-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_dev_up_status_down_through_the_cli(dev_project, tmp_path):
    import json
    import os
    import re

    from registry.dev import process

    mreg_project = dev_project
    env = {**os.environ, "MREG_ROOT": str(dev_project)}
    # 1. Without launchers (an empty tools folder) Neo4j and TimescaleDB cannot start:
    #    each is reported with its reason and PostgreSQL and Redis still start.
    empty = tmp_path / "no-tools"
    empty.mkdir()
    code, out, err = _mreg("dev", "up", "--json", env={**env, "MREG_TOOLS_DIR": str(empty)}, cwd=mreg_project)
    try:
        assert code == 0, err
        first = {r["name"]: r for r in json.loads(out)}
        assert first["postgres"]["outcome"] == "started", first["postgres"]
        assert first["redis"]["outcome"] == "started", first["redis"]
        for name in ("neo4j", "timescale"):
            assert first[name]["outcome"] == "unavailable" and "launcher is missing" in first[name]["reason"]
            assert f"{name} did not start" in err

        # 2. Up again with the launchers: the two running ones are left alone, the others start.
        code, out, err = _mreg("dev", "up", "--json", env=env, cwd=mreg_project)
        assert code == 0, err
        second = {r["name"]: r for r in json.loads(out)}
        assert second["postgres"]["outcome"] == "already running"
        assert second["postgres"]["pid"] == first["postgres"]["pid"]
        assert second["neo4j"]["outcome"] == "started" and second["timescale"]["outcome"] == "started"

        # 3. Status lists four running targets on loopback URLs, passwords removed.
        code, out, err = _mreg("dev", "status", "--json", env=env, cwd=mreg_project)
        assert code == 0, err
        status = json.loads(out)
        assert sorted(r["name"] for r in status) == ["neo4j", "postgres", "redis", "timescale"]
        for r in status:
            assert r["running"] is True and _alive(r["pid"])
            assert re.match(r"^(postgresql|bolt|redis)://([^@]*@)?127\.0\.0\.1:\d+(/|$)", r["url"]), r["url"]
            assert r["version"]
            assert ":postgres@" not in r["url"]  # the Timescale password is redacted
        types = {r["name"]: r["type"] for r in status}
        assert types == {"postgres": "postgresql", "timescale": "timescale", "neo4j": "neo4j", "redis": "redis"}
        state = json.loads((mreg_project / ".mreg" / "dev" / "state.json").read_text())
        assert set(state["servers"]) == set(types)
        pg_family = process.descendants(state["servers"]["postgres"]["pid"])
        assert pg_family, "PostgreSQL has background processes"
    finally:
        # 4. Down stops exactly those processes, PostgreSQL's children included.
        code, out, err = _mreg("dev", "down", "--json", env=env, cwd=mreg_project)
    assert code == 0, err
    assert {r["outcome"] for r in json.loads(out)} == {"stopped"}
    for r in status:
        assert not _alive(r["pid"]), f"{r['name']} pid {r['pid']} still alive"
    assert not any(process.is_ours(pid, started) for pid, started in pg_family)
    code, out, _ = _mreg("dev", "status", "--json", env=env, cwd=mreg_project)
    assert [r["running"] for r in json.loads(out)] == [False] * 4


def test_resolve_url_of_a_dev_target_without_servers_says_run_dev_up(mreg_project):
    from registry import config
    from registry.dev import resolve_url
    from registry.errors import TargetUnavailable

    cfg = config.load()
    target = cfg.target("postgres")
    with pytest.raises(TargetUnavailable) as info:
        resolve_url(cfg, target)
    assert info.value.exit_code == 2 and "mreg dev up" in info.value.hint and "postgres" in info.value.message
    explicit = config.Target("x", "redis", "redis://127.0.0.1:1/0", "test")
    assert resolve_url(cfg, explicit) == "redis://127.0.0.1:1/0"


# --------------------------------------------------------------------------------------------
# The CI rule: under CI=true a skipped target fails the session


def test_ci_true_turns_a_skipped_target_into_a_failed_session(tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "conftest.py", suite / "conftest.py")
    (suite / "test_x.py").write_text(
        "import pytest\n"
        "def test_runs():\n    assert True\n"
        "def test_skips_a_target():\n    pytest.skip('target neo4j: the dev server did not start: no java')\n"
        "def test_skips_for_another_reason():\n    pytest.skip('only on Windows')\n",
        encoding="utf-8")

    def run(ci: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "CI": ci}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
                              cwd=suite, env=env, capture_output=True, text=True, timeout=120)

    relaxed = run("false")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    strict = run("true")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "targets skipped under CI=true" in strict.stdout
    assert "test_skips_a_target" in strict.stdout and "only on Windows" not in strict.stdout.split("CI=true")[-1]


def test_a_server_that_exits_is_reported_with_its_log_and_the_others_still_start(tmp_path, monkeypatch):
    import sys

    from registry.dev import manager
    from registry.dev.base import DevServer, Launch

    class Broken(DevServer):
        name, type, start_timeout = "broken", "broken", 20.0

        def launch(self, data_dir, port):
            code = f"import sys; print('boom: cannot listen on {port}'); sys.exit(3)"
            return Launch([sys.executable, "-c", code], data_dir)

        def probe(self, port):
            return None

        def url(self, port):
            return f"broken://127.0.0.1:{port}"

    monkeypatch.setitem(manager.SERVERS, "broken", Broken())
    state_dir = tmp_path / ".mreg"
    try:
        results = {r.name: r for r in manager.up(state_dir, ["broken", "redis"])}
        assert results["redis"].outcome == "started" and results["redis"].running
        broken = results["broken"]
        assert broken.outcome == "failed" and not broken.running
        assert "exited with status 3" in broken.reason and "boom: cannot listen" in broken.reason
        log = (state_dir / "dev" / "logs" / "broken.log").read_text()
        assert log.count("boom") == 2, "a server that exits is tried once more, on another port"
        assert "broken" not in manager.read_state(state_dir)["servers"]
    finally:
        stopped = {r.name: r for r in manager.down(state_dir, ["redis"])}
    assert stopped["redis"].outcome == "stopped"
    assert not _alive(results["redis"].pid)


def test_stop_leaves_a_recycled_pid_alone_and_stops_its_own_group(tmp_path):
    import sys
    import time

    from registry.dev import process

    # a process group of two: a leader and its child, as a server and its workers
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    spawned = process.spawn([sys.executable, "-c", code], cwd=tmp_path, log=tmp_path / "p.log")
    try:
        for _ in range(50):
            family = process.descendants(spawned.pid)
            if family:
                break
            time.sleep(0.1)
        assert family, "the child started"
        # the recorded start time differs: this pid is someone else's now; nothing is signalled
        assert process.stop(spawned.pid, spawned.started + 1, timeout=1) is True
        assert process.is_ours(spawned.pid, spawned.started)
        # with the right start time the whole group goes, the child included
        assert process.stop(spawned.pid, spawned.started, timeout=5) is True
        assert not process.is_ours(spawned.pid, spawned.started)
        assert not any(process.is_ours(pid, started) for pid, started in family)
        assert not process.group_alive(spawned.pid)
    finally:
        if process.is_ours(spawned.pid, spawned.started):
            process.stop(spawned.pid, spawned.started, timeout=1)
