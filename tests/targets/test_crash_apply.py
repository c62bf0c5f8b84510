"""Crash safety on a real PostgreSQL: `kill -9` at random points, concurrent operators, killed backends.

A mixed set of migrations — transactional ones, a `txmode: none` file whose every statement
leaves a mark, and a batched backfill that adds 1 to every row — is applied by a real `mreg apply`
subprocess killed with SIGKILL after a random delay; then `mreg apply` runs again. Whatever the
moment of the kill: every statement's mark is there exactly once, every row was incremented
exactly once, each phase has exactly one `apply_succeeded`, no checkpoint is repeated, the
mirror equals catalog.db and `mreg verify` passes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest
from engine_support import Project, mirror_events, pg_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TRIALS = int(os.environ.get("MREG_CRASH_TRIALS", "30"))
ROWS, BATCH = 3000, 250
TAGS = ["m1", "m2", "m3", "n.1", "n.2", "n.3", "n.4", "n.5", "n.6", "m9"]

MIGRATIONS = {
    "20250101_000001_schema_base.sql": """
        -- Phase 1: EXPAND
        CREATE TABLE effects (tag text NOT NULL);
        CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0);
        INSERT INTO items (id) SELECT g FROM generate_series(1, {rows}) AS g;
        INSERT INTO effects VALUES ('m1');
    """,
    "20250101_000002_schema_two.sql": """
        -- Dependencies: [20250101_000001_schema_base]
        -- Phase 1: EXPAND
        ALTER TABLE items ADD COLUMN note text;
        INSERT INTO effects SELECT 'm2' FROM pg_sleep(0.05);
    """,
    "20250101_000003_schema_three.sql": """
        -- Dependencies: [20250101_000002_schema_two]
        -- Phase 1: EXPAND
        CREATE INDEX items_note ON items (note);
        INSERT INTO effects SELECT 'm3' FROM pg_sleep(0.05);
    """,
    "20250101_000004_data_steps.sql": """
        -- Dependencies: [20250101_000003_schema_three]
        -- txmode: none
        -- Phase 1: EXPAND
        INSERT INTO effects SELECT 'n.1' FROM pg_sleep(0.04);
        INSERT INTO effects SELECT 'n.2' FROM pg_sleep(0.04);
        INSERT INTO effects SELECT 'n.3' FROM pg_sleep(0.04);
        CREATE INDEX CONCURRENTLY IF NOT EXISTS items_v ON items (v);
        INSERT INTO effects SELECT 'n.4' FROM pg_sleep(0.04);
        INSERT INTO effects SELECT 'n.5' FROM pg_sleep(0.04);
        INSERT INTO effects SELECT 'n.6' FROM pg_sleep(0.04);
    """,
    "20250101_000005_data_backfill.sql": """
        -- Dependencies: [20250101_000004_data_steps]
        -- Pause-Between-Batches: 15
        -- Phase 2: MIGRATE
        -- Backfill: table=items key=id batch_size={batch}
        UPDATE items SET v = v + 1 WHERE id >= :lo AND id < :hi;
    """,
    "20250101_000009_schema_last.sql": """
        -- Dependencies: [20250101_000005_data_backfill]
        -- Phase 1: EXPAND
        INSERT INTO effects SELECT 'm9' FROM pg_sleep(0.05);
    """,
}
PHASES = {"20250101_000001_schema_base": ["expand"], "20250101_000002_schema_two": ["expand"],
          "20250101_000003_schema_three": ["expand"], "20250101_000004_data_steps": ["expand"],
          "20250101_000005_data_backfill": ["migrate"], "20250101_000009_schema_last": ["expand"]}


@pytest.fixture
def crash_project(tmp_path, pg_server):
    dsn = pg_server.new_database()
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    for name, text in MIGRATIONS.items():
        proj.write(name, text.format(rows=ROWS, batch=BATCH))
    return proj


def point_at(proj: Project, dsn: str, catalog: str) -> None:
    text = (proj.root / "mreg.toml").read_text()
    start = text.index('url = "') + len('url = "')
    end = text.index('"', start)
    (proj.root / "mreg.toml").write_text(text[:start] + dsn + text[end:])
    proj.env["MREG_CATALOG"] = catalog


def check_consistent(proj: Project, dsn: str) -> None:
    tags = Counter(t for (t,) in pg_rows(dsn, "SELECT tag FROM effects"))
    assert tags == Counter(TAGS), f"statement effects not exactly once: {tags}"
    assert pg_rows(dsn, "SELECT min(v), max(v), count(*) FROM items") == [(1, 1, ROWS)], "backfill not exactly once"
    log = proj.statements("main")
    assert [s["type"] for s in log] == [r[1] for r in mirror_events(dsn)], "catalog.db differs from the mirror"
    ok = Counter((s["migration"]["id"], s["details"]["phase"]) for s in log if s["type"] == "apply_succeeded")
    assert ok == Counter({(m, p): 1 for m, ps in PHASES.items() for p in ps}), ok
    seen = Counter()
    for s in log:
        if s["type"] != "batch_checkpoint":
            continue
        d = s["details"]
        key = d["backfill"]["next"] if "backfill" in d else d["steps_done"]
        seen[(s["migration"]["id"], d["phase"], key)] += 1
    assert all(n == 1 for n in seen.values()), f"a checkpoint was recorded twice: {seen}"
    ids = [s["event_id"] for s in log]
    assert len(ids) == len(set(ids))
    started = Counter(s["refs"][0] for s in log if s["type"] in ("apply_succeeded", "apply_failed") and s.get("refs"))
    assert all(n == 1 for n in started.values()), "an attempt has two outcomes"


def test_kill_9_at_random_points_then_apply_again(crash_project, pg_server, tmp_path):
    proj = crash_project
    rng = random.Random(int(os.environ.get("MREG_CRASH_SEED", "5")))
    # one uninterrupted run tells how long a whole apply takes here
    dsn = pg_server.new_database()
    point_at(proj, dsn, str(tmp_path / "cat-warm.db"))
    t0 = time.monotonic()
    code, out, err = proj.run("apply")
    full = time.monotonic() - t0
    assert code == 0, err
    total = len(mirror_events(dsn))
    interrupted = 0
    for trial in range(TRIALS):
        dsn = pg_server.new_database()
        point_at(proj, dsn, str(tmp_path / f"cat-{trial}.db"))
        proc = proj.popen("apply")
        time.sleep(rng.uniform(0.15, full))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = len(mirror_events(dsn)) if pg_rows(dsn, "SELECT to_regclass('schema_versions')")[0][0] else 0
        interrupted += 0 < before < total or before == 0 and proc.returncode == -signal.SIGKILL
        code, out, err = proj.run("apply")
        assert code == 0, f"trial {trial}: {err}"
        check_consistent(proj, dsn)
        if trial % 3 == 0 or trial == TRIALS - 1:  # verify is a process of its own: every third trial
            code, out, err = proj.run("verify")
            assert code == 0, f"trial {trial}: {out}{err}"
    assert interrupted >= TRIALS // 2, f"only {interrupted} of {TRIALS} kills landed mid-run"


def test_concurrent_operators_apply_each_migration_once(crash_project, pg_server, tmp_path):
    proj = crash_project
    dsn = pg_server.new_database()
    point_at(proj, dsn, str(tmp_path / "shared.db"))
    procs = [proj.popen("apply", "--lock-wait", "120") for _ in range(6)]
    results = [(p.wait(180), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    check_consistent(proj, dsn)
    assert proj.run("verify")[0] == 0


def test_concurrent_operators_with_separate_catalogs(crash_project, pg_server, tmp_path):
    """Operators on different machines: one mirror, one catalog.db each; the mirror keeps one history."""
    proj = crash_project
    dsn = pg_server.new_database()
    point_at(proj, dsn, str(tmp_path / "c0.db"))
    procs = []
    for i in range(4):
        proj.env["MREG_CATALOG"] = str(tmp_path / f"c{i}.db")
        procs.append(proj.popen("apply", "--lock-wait", "120"))
    results = [(p.wait(180), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    proj.env["MREG_CATALOG"] = str(tmp_path / "c3.db")
    assert proj.run("sync")[0] == 0
    check_consistent(proj, dsn)


def _wait_for_query(dsn: str, needle: str, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = pg_rows(dsn, "SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                       (f"%{needle}%",))
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError(f"no backend ran {needle!r}")


@pytest.mark.parametrize("txmode", ["transaction", "none"])
def test_backend_terminated_mid_migration(tmp_path, pg_dsn, txmode):
    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})
    path = proj.write("20250101_000001_schema_slow.sql", f"""
        -- txmode: {txmode}
        -- Phase 1: EXPAND
        CREATE TABLE marks (tag text);
        INSERT INTO marks VALUES ('before');
        SELECT pg_sleep(30);
        INSERT INTO marks VALUES ('after');
    """)
    proc = proj.popen("apply")
    pid = _wait_for_query(pg_dsn, "pg_sleep(30)")
    pg_rows(pg_dsn, "SELECT pg_terminate_backend(%s)", (pid,))
    code = proc.wait(60)
    err = proc.stderr.read()
    assert code == 3, err
    assert "terminat" in err.lower() or "connection" in err.lower()
    log = proj.statements("main")
    assert log[-1]["type"] == "apply_failed"
    if txmode == "transaction":
        assert pg_rows(pg_dsn, "SELECT to_regclass('marks') IS NULL") == [(True,)], "the transaction was rolled back"
    else:
        assert pg_rows(pg_dsn, "SELECT tag FROM marks") == [("before",)]
        assert log[-1]["details"]["steps_done"] == 2
    path.write_text(path.read_text().replace("pg_sleep(30)", "pg_sleep(0)"))
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert sorted(pg_rows(pg_dsn, "SELECT tag FROM marks")) == [("after",), ("before",)]
    assert proj.run("verify")[0] == 0
