"""Group commit on a real PostgreSQL: consecutive phases that only create new objects share one
transaction (registry.apply.group); anything else, a failure, or the option turned off, and each
phase has a transaction of its own. The transaction of a mirror row is read from its ``xmin``."""

from __future__ import annotations

import pytest
from engine_support import Project, events, pg_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _proj(tmp_path, dsn, *, group_commit=None) -> Project:
    proj = Project(tmp_path / "proj", {"main": ("postgresql", dsn)})
    if group_commit is not None:
        with open(proj.root / "mreg.toml", "a") as fh:
            fh.write(f"[targets.main.options]\ngroup_commit = {str(group_commit).lower()}\n")
    return proj


def _write(proj: Project, n: int, body: str, database: str = "postgresql") -> str:
    mid = f"20250101_{n:06d}_schema_m{n}"
    proj.write(f"{mid}.sql", f"-- Database: {database}\n-- Phase 1: EXPAND\n" + body + "\n")
    return mid


def _transactions(dsn: str) -> list[tuple[str, str, str]]:
    """(migration, event, transaction id) of every mirror row, in log order."""
    return [(m, e, x) for m, e, x in pg_rows(dsn, "SELECT migration_id, event_type, xmin::text FROM schema_versions "
                                                  "ORDER BY seq")]


def _groups(dsn: str) -> list[list[str]]:
    """The migrations of each transaction, in order."""
    out: list[list[str]] = []
    last = None
    for mid, _event, xid in _transactions(dsn):
        if xid != last:
            out.append([])
            last = xid
        if mid not in out[-1]:
            out[-1].append(mid)
    return out


def test_creating_phases_share_a_commit_and_others_do_not(tmp_path, pg_dsn):
    proj = _proj(tmp_path, pg_dsn)
    pg_rows(pg_dsn, "CREATE TABLE existing (id int PRIMARY KEY)")
    a = _write(proj, 1, "CREATE TABLE a (id int PRIMARY KEY);\nCREATE INDEX a_id ON a (id);")
    b = _write(proj, 2, "CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id));\nINSERT INTO b VALUES (1, NULL);")
    c = _write(proj, 3, "CREATE TYPE mood AS ENUM ('ok', 'sad');\nCOMMENT ON TABLE b IS 'bees';")
    d = _write(proj, 4, "ALTER TABLE existing ADD COLUMN note text;")          # locks a table in use
    e = _write(proj, 5, "CREATE TABLE e (id int);")
    f = _write(proj, 6, "CREATE INDEX a_id2 ON a (id);")                        # a is not new any more
    g = _write(proj, 7, "CREATE TABLE g (x int REFERENCES existing (id));")    # locks existing
    h = _write(proj, 8, "CREATE TABLE h (id int);")
    i = _write(proj, 9, "CREATE TABLE i (id int);")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[a, b, c], [d], [e], [f], [g], [h, i]]
    assert "one commit with 2 other phase(s)" in out
    # every phase still has its own two events, started before succeeded, chained in order
    log = proj.statements("main")
    for mid in (a, b, c, d, e, f, g, h, i):
        assert [s["type"] for s in events(log, mid)] == ["apply_started", "apply_succeeded"]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM b") == [(1,)]
    code, out, err = proj.run("verify")
    assert code == 0, out + err


def test_the_option_turns_grouping_off(tmp_path, pg_dsn):
    proj = _proj(tmp_path, pg_dsn, group_commit=False)
    mids = [_write(proj, n, f"CREATE TABLE t{n} (id int);") for n in range(1, 4)]
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[m] for m in mids]


def test_a_failure_rolls_the_group_back_and_its_phases_run_one_by_one(tmp_path, pg_dsn):
    proj = _proj(tmp_path, pg_dsn)
    pg_rows(pg_dsn, "CREATE TABLE taken (id int)")
    a = _write(proj, 1, "CREATE TABLE a (id int);")
    b = _write(proj, 2, "CREATE TABLE b (id int);")
    bad = _write(proj, 3, "CREATE TABLE taken (id int);")  # lock-free by its text, fails on the server
    d = _write(proj, 4, "CREATE TABLE d (id int);")
    code, out, err = proj.run("apply")
    assert code != 0 and "taken" in (out + err)
    # a and b were applied again one transaction each; the failing phase failed on its own
    assert _groups(pg_dsn) == [[a], [b], [bad]]
    log = proj.statements("main")
    assert [s["type"] for s in events(log, bad)] == ["apply_started", "apply_failed"]
    assert events(log, d) == []
    assert pg_rows(pg_dsn, "SELECT to_regclass('a') IS NOT NULL, to_regclass('d') IS NULL") == [(True, True)]
    code, out, err = proj.run("verify")
    assert code == 0, out + err
    # fixed, the rest is applied (grouped again)
    pg_rows(pg_dsn, "DROP TABLE taken")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn)[-1] == [bad, d]
    assert proj.run("verify")[0] == 0


def test_validation_rules_and_tenants_keep_a_phase_out_of_groups(tmp_path, pg_dsn):
    proj = _proj(tmp_path, pg_dsn)
    a = _write(proj, 1, "CREATE TABLE a (id int);")
    checked = _write(proj, 2, "CREATE TABLE c (id int);\n\n-- Validation:\n"
                              "-- check empty (post): sql:SELECT count(*) AS n FROM c; expect: {\"n\": 0}")
    z = _write(proj, 3, "CREATE TABLE z (id int);")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[a], [checked], [z]]


def test_the_templates_set_statements_do_not_keep_a_phase_out(tmp_path, pg_dsn):
    proj = _proj(tmp_path, pg_dsn)
    a = _write(proj, 1, "BEGIN;\nSET lock_timeout = '5s';\nCREATE TABLE a (id int);\nCOMMIT;")
    b = _write(proj, 2, "BEGIN;\nSET LOCAL statement_timeout = '30s';\nCREATE TABLE b (id int);\nCOMMIT;")
    c = _write(proj, 3, "SET search_path = elsewhere, public;\nCREATE TABLE c (id int);")  # changes what names mean
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[a, b], [c]]


def test_kill_9_in_the_middle_of_groups_then_apply_again(tmp_path, pg_server):
    """A group commits whole or not at all: killed at random moments, the next run applies every
    phase exactly once, the mirror equals catalog.db and verify passes."""
    import os
    import random
    import signal
    import time
    from collections import Counter

    from engine_support import mirror_events

    n = 60
    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_server.new_database())})
    mids = [_write(proj, i, f"CREATE TABLE t{i} (id int);\n"
                            f"INSERT INTO t{i} SELECT 1 FROM pg_sleep(0.01);") for i in range(1, n + 1)]
    rng = random.Random(int(os.environ.get("MREG_CRASH_SEED", "7")))
    landed = 0
    for trial in range(int(os.environ.get("MREG_GROUP_CRASH_TRIALS", "8"))):
        dsn = pg_server.new_database()
        text = (proj.root / "mreg.toml").read_text()
        start = text.index('url = "') + len('url = "')
        (proj.root / "mreg.toml").write_text(text[:start] + dsn + text[text.index('"', start):])
        proj.env["MREG_CATALOG"] = str(tmp_path / f"cat-{trial}.db")
        proc = proj.popen("apply")
        deadline = time.monotonic() + 60  # from its mirror's creation on, however slow its start-up
        while time.monotonic() < deadline and proc.poll() is None and not pg_rows(
                dsn, "SELECT to_regclass('schema_versions') IS NOT NULL")[0][0]:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        has_mirror = pg_rows(dsn, "SELECT to_regclass('schema_versions') IS NOT NULL")[0][0]
        before = len(mirror_events(dsn)) if has_mirror else 0
        landed += 0 < before < 2 * n
        assert before % 2 == 0, "a group left half of a phase's events"
        code, out, err = proj.run("apply")
        assert code == 0, f"trial {trial}: {out}{err}"
        rows = pg_rows(dsn, "SELECT " + " + ".join(f"(SELECT count(*) FROM t{i})" for i in range(1, n + 1)))
        assert rows == [(n,)], f"trial {trial}: a phase ran twice or not at all"
        log = proj.statements("main")
        assert [s["type"] for s in log] == [r[1] for r in mirror_events(dsn)], "catalog.db differs from the mirror"
        ok = Counter(s["migration"]["id"] for s in log if s["type"] == "apply_succeeded")
        assert ok == Counter(mids)
        assert max(len(g) for g in _groups(dsn)) > 1, "no phases were grouped"
        if trial % 4 == 0:
            code, out, err = proj.run("verify")
            assert code == 0, f"trial {trial}: {out}{err}"
    assert landed >= 2, f"only {landed} kills landed mid-run"


@pytest.mark.timescale
def test_groups_on_the_timescale_dev_server(tmp_path, timescale_dsn):
    """The single-connection TimescaleDB server: creating phases grouped, a hypertable call not."""
    proj = Project(tmp_path / "proj", {"ts": ("timescale", timescale_dsn)})
    a = _write(proj, 1, "CREATE TABLE metrics (ts timestamptz NOT NULL, v int);", "timescale")
    b = _write(proj, 2, "CREATE INDEX metrics_v ON metrics (v);", "timescale")
    c = _write(proj, 3, "SELECT create_hypertable('metrics', 'ts');", "timescale")
    d = _write(proj, 4, "CREATE TABLE notes (id int);", "timescale")
    e = _write(proj, 5, "CREATE TABLE tags (id int);", "timescale")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(timescale_dsn) == [[a, b], [c], [d, e]]
    code, out, err = proj.run("verify")
    assert code == 0, out + err


def test_a_grouped_phase_rolls_back_on_its_own_and_applies_again(tmp_path, pg_dsn):
    """Grouping changes nothing after the commit: each phase has its own events, so one of a group
    can be rolled back (after the safety checks) and applied again."""
    proj = _proj(tmp_path, pg_dsn)
    a = _write(proj, 1, "CREATE TABLE a (id int PRIMARY KEY);\n\n-- Rollback:\nDROP TABLE a;")
    b = _write(proj, 2, "CREATE TABLE b (id int);\n\n-- Rollback:\nDROP TABLE b;")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[a, b]]
    code, out, err = proj.run("rollback", "--migration-id", b, "--backup-ref", "none: empty table")
    assert code == 0, out + err
    assert pg_rows(pg_dsn, "SELECT to_regclass('b') IS NULL, to_regclass('a') IS NOT NULL") == [(True, True)]
    assert b in proj.json("status")["targets"][0]["pending"]
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert pg_rows(pg_dsn, "SELECT to_regclass('b') IS NOT NULL") == [(True,)]
    log = proj.statements("main")
    assert [s["type"] for s in events(log, b)] == ["apply_started", "apply_succeeded", "rollback_started",
                                                   "rollback_succeeded", "apply_started", "apply_succeeded"]
    assert proj.run("verify")[0] == 0


def test_create_if_not_exists_does_not_make_a_table_in_use_new(tmp_path, pg_dsn):
    """`CREATE TABLE IF NOT EXISTS t` when t exists (in use) is a no-op: an index on t after it must
    not be held in a long transaction, so it ends the group."""
    proj = _proj(tmp_path, pg_dsn)
    pg_rows(pg_dsn, "CREATE TABLE users (id int PRIMARY KEY, email text)")
    a = _write(proj, 1, "CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, email text);")
    b = _write(proj, 2, "CREATE INDEX users_email ON users (email);")
    c = _write(proj, 3, "CREATE TABLE IF NOT EXISTS audit (id int);")
    d = _write(proj, 4, "CREATE TABLE notes (id int);")
    code, out, err = proj.run("apply")
    assert code == 0, out + err
    assert _groups(pg_dsn) == [[a], [b], [c, d]]
