"""The engine on a real PostgreSQL: plan, apply, phases, validation, retries, resume, rollback, tenants,
baseline, repair, dry run, sync — through the CLI, checked in the database, the mirror and catalog.db."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from engine_support import Project, events, mirror_events, pg_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

USERS = "postgresql/20251120_140000_schema_create_users.sql"
EMAIL = "20251120_143000_schema_add_email_verification"
PREFS = "20251120_150000_schema_add_user_preferences"


@pytest.fixture
def proj(tmp_path, pg_dsn):
    return Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})


def test_examples_apply_in_three_phases_then_nothing_is_pending(proj, pg_dsn):
    proj.copy_examples("postgresql")
    plan = proj.json("plan")
    assert [(s["migration"][:15], s["phase"]) for s in plan["steps"]] == [
        ("20251120_140000", "expand"), ("20251120_143000", "expand"), ("20251120_143000", "migrate"),
        ("20251120_143000", "contract"), ("20251120_150000", "expand")]
    assert plan["steps"][3]["needs_confirmation"] is True

    code, out, err = proj.run("apply")
    assert code == 0, err
    st = proj.json("status")["targets"][0]
    assert st["partial"] == [{"id": EMAIL, "phases_done": ["expand", "migrate"], "phases_pending": ["contract"]}]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM users WHERE email_verified IS NULL") == [(0,)]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM users WHERE email_verified") == [(3334,)]

    code, out, err = proj.run("apply", "--confirm-contract")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT is_nullable FROM information_schema.columns WHERE table_name = 'users' "
                           "AND column_name = 'email_verified'") == [("NO",)]
    st = proj.json("status")["targets"][0]
    assert st["pending"] == [] and len(st["applied"]) == 3 and st["version"] == "1.2.0"
    assert st["interrupted"] == [] and st["lock_holder"] is None

    size = len(mirror_events(pg_dsn))
    code, out, err = proj.run("apply", "--confirm-contract")
    assert code == 0 and "0 phase(s) to apply" in out
    assert len(mirror_events(pg_dsn)) == size
    code, out, err = proj.run("verify")
    assert code == 0, out + err
    # the backfill: 5 batches of 1000 ids, quicker than Checkpoint-Interval: the last one is ledgered
    log = proj.statements("main")
    done = [s["details"]["backfill"] for s in events(log, EMAIL, "batch_checkpoint") if "backfill" in s["details"]]
    assert [(d["next"], d["rows"]) for d in done] == [(5001, 5000)]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM mreg_backfill_progress") == [(0,)]
    # catalog.db and the mirror hold the same log
    assert [s["type"] for s in log] == [r[1] for r in mirror_events(pg_dsn)]


def test_contract_phase_alone_needs_confirmation_and_waits_for_migrate(proj):
    proj.copy_examples("postgresql")
    code, out, err = proj.run("apply", "--phase", "expand")
    assert code == 0, err
    code, out, err = proj.run("apply", "--phase", "contract")
    assert code == 2 and "--confirm-contract" in err
    plan = proj.json("plan", "--phase", "contract")
    assert plan["steps"] == [] and "migrate" in plan["blocked"][0]["reason"]
    assert proj.run("apply", "--phase", "migrate")[0] == 0
    assert proj.run("apply", "--phase", "contract", "--confirm-contract")[0] == 0
    assert proj.json("status")["targets"][0]["partial"] == []


def test_failed_critical_validation_rolls_the_phase_back_and_ledgers_both(proj, pg_dsn):
    proj.write("20250101_000000_schema_t.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE t (id int);
        INSERT INTO t VALUES (1);
        -- Validation:
        -- check two_rows (post): sql:SELECT count(*) AS count FROM t; expect: {"count": 2}
    """)
    code, out, err = proj.run("apply")
    assert code == 1 and "two_rows" in err
    assert pg_rows(pg_dsn, "SELECT to_regclass('t') IS NULL") == [(True,)]
    log = proj.statements("main")
    assert [s["type"] for s in log] == ["apply_started", "validation_failed", "apply_failed"]
    assert log[1]["details"]["expected"] == {"count": 2} and log[1]["details"]["found"] == {"count": 1}
    assert proj.json("status")["targets"][0]["failed"][0]["migration"] == "20250101_000000_schema_t"


def test_failed_validation_of_a_stepwise_phase_runs_its_rollback_steps(proj, pg_dsn):
    proj.write("20250101_000000_schema_t.sql", """
        -- txmode: none
        -- Phase 1: EXPAND
        CREATE TABLE t (id int);
        CREATE INDEX CONCURRENTLY t_id ON t (id);
        -- Rollback: EXPAND
        DROP TABLE IF EXISTS t;
        -- Validation:
        -- check has_rows (post): sql:SELECT count(*) AS count FROM t; expect: {"count": 1}
    """)
    code, out, err = proj.run("apply")
    assert code == 1
    assert pg_rows(pg_dsn, "SELECT to_regclass('t') IS NULL") == [(True,)]
    kinds = [s["type"] for s in proj.statements("main")]
    assert kinds == ["apply_started", "batch_checkpoint", "batch_checkpoint", "validation_failed",
                     "rollback_started", "rollback_succeeded", "apply_failed"]


def test_failed_step_exits_3_ledgers_and_the_next_run_proceeds(proj, pg_dsn):
    path = proj.write("20250101_000000_schema_t.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE t (id int);
        INSERT INTO t VALUES ('not a number');
    """)
    code, out, err = proj.run("apply")
    assert code == 3 and "invalid input syntax" in err and "20250101_000000_schema_t.sql:3" in err
    assert [s["type"] for s in proj.statements("main")] == ["apply_started", "apply_failed"]
    assert pg_rows(pg_dsn, "SELECT to_regclass('t') IS NULL") == [(True,)]
    path.write_text(path.read_text().replace("'not a number'", "1"))
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT count(*) FROM t") == [(1,)]


def test_txmode_none_failure_resumes_from_the_failed_statement(proj, pg_dsn):
    path = proj.write("20250101_000000_data_steps.sql", """
        -- txmode: none
        -- Phase 1: EXPAND
        CREATE TABLE effects (tag text);
        INSERT INTO effects VALUES ('one');
        INSERT INTO effects VALUES (2 / 0);
        INSERT INTO effects VALUES ('three');
    """)
    code, out, err = proj.run("apply")
    assert code == 3 and "division by zero" in err
    st = proj.json("status")["targets"][0]
    assert st["failed"][0]["steps_done"] == 2
    plan = proj.json("plan")
    assert plan["steps"][0]["resume_from"] == 2
    path.write_text(path.read_text().replace("2 / 0", "'two'"))
    code, out, err = proj.run("apply")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT tag FROM effects ORDER BY tag") == [("one",), ("three",), ("two",)]
    assert proj.run("verify")[0] == 0


def test_lock_timeout_is_retried_per_max_retries(proj, pg_dsn):
    pg_rows(pg_dsn, "CREATE TABLE busy (id int)")
    proj.write("20250101_000000_schema_busy.sql", """
        -- Lock-Timeout: 200
        -- Max-Retries: 8
        -- Phase 1: EXPAND
        ALTER TABLE busy ADD COLUMN note text;
    """)
    holder = psycopg.connect(pg_dsn)
    holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")

    def release_once_waited_on():
        for _ in range(1200):  # up to a minute for the subprocess to start on a busy machine
            waiting = pg_rows(pg_dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND query LIKE '%%ALTER TABLE busy%%'")
            if waiting[0][0]:
                break
            time.sleep(0.05)
        time.sleep(0.6)
        holder.rollback()

    releaser = threading.Thread(target=release_once_waited_on)
    releaser.start()
    code, out, err = proj.run("apply")
    releaser.join()
    holder.close()
    assert code == 0, err
    started = events(proj.statements("main"), kind="apply_started")
    assert len(started) == 1 and started[0]["details"]["attempt"] > 1


def test_lock_timeout_exhausted_fails_with_exit_3(proj, pg_dsn):
    pg_rows(pg_dsn, "CREATE TABLE busy (id int)")
    proj.write("20250101_000000_schema_busy.sql", """
        -- Lock-Timeout: 100
        -- Max-Retries: 1
        -- Phase 1: EXPAND
        ALTER TABLE busy ADD COLUMN note text;
    """)
    with psycopg.connect(pg_dsn) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        code, out, err = proj.run("apply")
    assert code == 3 and "55P03" in err
    failed = events(proj.statements("main"), kind="apply_failed")
    assert failed[0]["details"]["sqlstate"] == "55P03" and failed[0]["details"]["attempts"] == 2


def test_dry_run_changes_nothing(proj, pg_dsn):
    proj.copy_examples("postgresql")
    code, out, err = proj.run("apply", "--dry-run")
    assert code == 0, err
    assert "dry-run" in out and "CREATE TABLE IF NOT EXISTS users" in out
    assert pg_rows(pg_dsn, "SELECT to_regclass('users') IS NULL") == [(True,)]
    assert mirror_events(pg_dsn) == []


def test_rollback_safety_checks_and_ledgered_rollback(proj, pg_dsn):
    proj.copy_examples("postgresql")
    assert proj.run("apply", "--confirm-contract")[0] == 0
    code, out, err = proj.run("rollback", "--migration-id", "20251120_140000_schema_create_users")
    assert code == 2 and "dependent" in err and PREFS in err
    code, out, err = proj.run("rollback", "--migration-id", PREFS)
    assert code == 2 and "no backup" in err and "--confirm" in err
    code, out, err = proj.run("rollback", "--migration-id", PREFS, "--dry-run")
    assert code == 0 and "DROP TABLE IF EXISTS user_preferences" in out
    assert pg_rows(pg_dsn, "SELECT to_regclass('user_preferences') IS NOT NULL") == [(True,)]
    code, out, err = proj.run("rollback", "--migration-id", PREFS, "--backup-ref", "s3://bk/1")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT to_regclass('user_preferences') IS NULL") == [(True,)]
    log = proj.statements("main")
    assert [s["type"] for s in events(log, PREFS)][-2:] == ["rollback_started", "rollback_succeeded"]
    assert events(log, PREFS, "rollback_started")[0]["details"]["backup"] == "s3://bk/1"
    assert PREFS in proj.json("status")["targets"][0]["pending"]
    # the three phases of email_verified are undone last first
    code, out, err = proj.run("rollback", "--migration-id", EMAIL, "--confirm")
    assert code == 0, err
    phases = [s["details"]["phase"] for s in events(proj.statements("main"), EMAIL, "rollback_succeeded")]
    assert phases == ["contract", "migrate", "expand"]
    assert pg_rows(pg_dsn, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'email_verified'") \
        == [(0,)]
    code, out, err = proj.run("rollback", "--migration-id", EMAIL, "--confirm")
    assert code == 2 and "nothing applied" in err
    assert proj.run("apply", "--confirm-contract")[0] == 0
    assert proj.run("verify")[0] == 0


def test_rollback_without_rollback_steps_is_refused(proj):
    proj.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    assert proj.run("apply")[0] == 0
    code, out, err = proj.run("rollback", "--migration-id", "20250101_000000_schema_t", "--confirm")
    assert code == 2 and "no rollback steps" in err


def test_tenant_scoped_migration_runs_per_tenant_with_its_own_events(tmp_path, pg_dsn):
    pg_rows(pg_dsn, "CREATE SCHEMA acme; CREATE SCHEMA globex")
    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)}, tenants={"main": ["acme", "globex"]})
    proj.write("20250101_000000_schema_accounts.sql", """
        -- Tenant-Scoped: true
        -- Phase 1: EXPAND
        CREATE TABLE accounts (id int);
        -- Rollback: EXPAND
        DROP TABLE accounts;
    """)
    assert proj.run("apply")[0] == 0
    assert pg_rows(pg_dsn, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'accounts' "
                           "ORDER BY 1") == [("acme",), ("globex",)]
    ok = events(proj.statements("main"), kind="apply_succeeded")
    assert sorted(s["details"]["tenant"] for s in ok) == ["acme", "globex"]
    code, out, err = proj.run("rollback", "--migration-id", "20250101_000000_schema_accounts", "--tenant", "acme",
                              "--confirm")
    assert code == 0, err
    assert pg_rows(pg_dsn, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'accounts'") \
        == [("globex",)]
    plan = proj.json("plan")
    assert [(s["migration"], s["tenant"]) for s in plan["steps"]] == [("20250101_000000_schema_accounts", "acme")]


def test_baseline_adopts_what_knex_already_ran(proj, pg_dsn):
    pg_rows(pg_dsn, "CREATE TABLE knex_migrations (id serial, name text, batch int, migration_time timestamptz);"
                    "INSERT INTO knex_migrations (name, batch) VALUES "
                    "('20250101_000000_schema_a.sql', 1), ('20240101000000_unknown.js', 1);"
                    "CREATE TABLE a (id int)")
    proj.write("20250101_000000_schema_a.sql", "-- Phase 1: EXPAND\nCREATE TABLE a (id int);\n")
    proj.write("20250102_000000_schema_b.sql", "-- Phase 1: EXPAND\nCREATE TABLE b (id int);\n")
    data = proj.json("baseline", "--target", "main")
    assert data["source"] == "knex_migrations"
    assert [m["migration"] for m in data["matched"]] == ["20250101_000000_schema_a"]
    assert [u["name"] for u in data["unmatched"]] == ["20240101000000_unknown.js"]
    assert [s["migration"] for s in proj.json("plan")["steps"]] == ["20250102_000000_schema_b"]
    assert proj.run("apply")[0] == 0
    again = proj.json("baseline", "--target", "main")
    assert again["matched"] == [] and again["skipped"] == ["20250101_000000_schema_a"]
    assert [s["type"] for s in proj.statements("main")][0] == "baseline"


def test_edited_applied_file_is_reported_until_repaired(proj):
    path = proj.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    assert proj.run("apply")[0] == 0
    path.write_text(path.read_text() + "-- a comment added later\n")
    code, out, err = proj.run("verify")
    assert code == 1 and "mreg repair 20250101_000000_schema_t" in out + err and "field=checksum" in out + err
    code, out, err = proj.run("apply")
    assert code == 1 and "edited after it was applied" in err
    data = proj.json("repair", "20250101_000000_schema_t", "--reason", "comment only")
    assert data["repaired"][0]["new_checksum"].startswith("sha256:")
    assert proj.run("verify")[0] == 0
    assert proj.statements("main")[-1]["type"] == "repair"


def test_second_operator_syncs_and_sees_the_same_state(tmp_path, pg_dsn):
    a = Project(tmp_path / "a", {"main": ("postgresql", pg_dsn)})
    b = Project(tmp_path / "b", {"main": ("postgresql", pg_dsn)})
    for p in (a, b):
        p.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    assert a.run("apply")[0] == 0
    data = b.json("sync")
    assert data["targets"][0]["pulled"] == 2
    assert b.json("status")["targets"][0]["applied"] == ["20250101_000000_schema_t"]
    code, out, err = b.run("apply")
    assert code == 0 and "0 phase(s)" in out
    assert [s["event_id"] for s in a.statements("main")] == [s["event_id"] for s in b.statements("main")]


def test_tampered_mirror_row_is_caught_by_verify(proj, pg_dsn):
    proj.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    assert proj.run("apply")[0] == 0
    pg_rows(pg_dsn, "ALTER TABLE schema_versions DISABLE TRIGGER USER; "
                    "UPDATE schema_versions SET migration_id = 'other' WHERE seq = 1; "
                    "ALTER TABLE schema_versions ENABLE TRIGGER USER")
    code, out, err = proj.run("verify")
    assert code == 1 and "seq=1 field=migration_id" in out


def test_lock_holder_is_reported_and_a_second_operator_gives_up_naming_it(proj, pg_dsn):
    from registry.config import Target
    from registry.targets.postgres import PostgresAdapter

    proj.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    other = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
    other.connect()
    other.ensure_mirror()
    handle = other.acquire_lock("alice@elsewhere pid 42", 5)
    try:
        holder = proj.json("status")["targets"][0]["lock_holder"]
        assert "alice@elsewhere" in holder
        code, out, err = proj.run("apply", "--lock-wait", "0.5")
        assert code == 3 and "alice@elsewhere" in err
        assert pg_rows(pg_dsn, "SELECT to_regclass('t') IS NULL") == [(True,)]
    finally:
        other.release_lock(handle)
        other.close()
    code, out, err = proj.run("apply", "--lock-wait", "5")
    assert code == 0, err
    assert proj.json("status")["targets"][0]["lock_holder"] is None


def test_apply_names_the_registration_and_notes_the_checkpoint_in_git(proj):
    import subprocess

    from ledger.log import parse_leaf
    from ledger.store import LedgerStore

    proj.write("20250101_000000_schema_t.sql", "-- Phase 1: EXPAND\nCREATE TABLE t (id int);\n")
    git = ["git", "-C", str(proj.root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "migrations"], check=True)
    subprocess.run([*git, "commit", "-qm", "migrations"], check=True)
    assert proj.run("scan")[0] == 0
    assert proj.run("apply")[0] == 0
    with LedgerStore(proj.env["MREG_CATALOG"]) as store:
        registered = [parse_leaf(leaf).statement for leaf in store.leaves("t/registry")]
    reg = [s["event_id"] for s in registered if s["type"] == "register"]
    started = events(proj.statements("main"), kind="apply_started")[0]
    assert started["refs"] == reg
    note = subprocess.run([*git, "notes", "--ref=mreg", "show", "HEAD"], capture_output=True, text=True)
    assert note.returncode == 0 and note.stdout.startswith("t/main\n2\n")


def test_reindex_of_a_schema_runs_outside_the_transaction_a_plain_reindex_inside(proj, pg_dsn):
    """``REINDEX SCHEMA`` (concurrently or not) is refused in a transaction block, so its phase runs
    step by step; ``REINDEX (CONCURRENTLY false) TABLE`` is an ordinary REINDEX and shares the phase's
    transaction (its mirror rows have the step's xmin)."""
    proj.write("20250101_000000_schema_t.sql", """
        -- Phase 1: EXPAND
        CREATE TABLE t (id int PRIMARY KEY);
        REINDEX SCHEMA public;
    """)
    proj.write("20250101_000001_schema_u.sql", """
        -- Dependencies: [20250101_000000_schema_t]
        -- Phase 1: EXPAND
        CREATE TABLE u (id int PRIMARY KEY);
        REINDEX (CONCURRENTLY false) TABLE u;
    """)
    code, out, err = proj.run("apply")
    assert code == 0, err
    plans = {s["migration"]["id"]: s["details"].get("txmode") for s in proj.statements("main")
             if s["type"] == "apply_started"}
    assert len(plans) == 2
    xmins = pg_rows(pg_dsn, "SELECT event_type, xmin::text FROM schema_versions "
                            "WHERE migration_id = '20250101_000001_schema_u' ORDER BY seq")
    assert [e for e, _ in xmins] == ["apply_started", "apply_succeeded"]
    assert len({x for _, x in xmins}) == 1  # one transaction: the REINDEX ran inside it
    assert pg_rows(pg_dsn, "SELECT count(*) FROM pg_indexes WHERE tablename IN ('t', 'u')") == [(2,)]
