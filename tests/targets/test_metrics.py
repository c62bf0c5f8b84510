"""`mreg metrics`: Prometheus exposition of the ledger replica, after real applications,
failures and rollbacks on PostgreSQL, read back with prometheus_client's own parser."""

from __future__ import annotations

import time

import pytest
from engine_support import Project, events
from prometheus_client.parser import text_string_to_metric_families

PREFS = "20251120_150000_schema_add_user_preferences"


def _samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def proj(tmp_path, pg_dsn):
    return Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})


def test_metrics_count_what_the_ledger_holds(proj):
    code, out, err = proj.run("metrics")
    assert code == 2 and "no catalog at" in err and "mreg scan" in err  # nothing created
    assert not (proj.root / "catalog.db").exists()

    proj.copy_examples("postgresql")
    assert proj.run("apply", "--confirm-contract")[0] == 0
    proj.write("postgresql/20251201_000000_schema_broken.sql", """
        -- Dependencies: [20251120_150000_schema_add_user_preferences]
        -- Phase 1: EXPAND
        ALTER TABLE no_such_table ADD COLUMN x int;
    """)
    assert proj.run("apply")[0] == 3
    assert proj.run("rollback", "--migration-id", PREFS, "--backup-ref", "s3://bk/1")[0] == 0

    code, out, err = proj.run("metrics")
    assert code == 0, err
    got = _samples(out)
    log = proj.statements("main")
    main = (("origin", "t/main"),)
    assert got[("mreg_ledger_statements", main)] == len(log)
    for kind in {s["type"] for s in log}:
        assert got[("mreg_statements_total", (("origin", "t/main"), ("type", kind)))] == len(events(log, kind=kind))
    for phase in ("expand", "migrate", "contract"):
        ok = [s for s in events(log, kind="apply_succeeded") if s["details"]["phase"] == phase]
        key = (("outcome", "succeeded"), ("phase", phase), ("target", "main"))
        assert got[("mreg_applications_total", key)] == len(ok) > 0
        # every applied or failed phase is in the histogram once
        failed = [s for s in events(log, kind="apply_failed") if s["details"]["phase"] == phase]
        count = got.get(("mreg_apply_duration_seconds_count", (("phase", phase), ("target", "main"))))
        assert count == len(ok) + len(failed)
        assert got[("mreg_apply_duration_seconds_bucket", (("le", "+Inf"), ("phase", phase), ("target", "main")))] \
            == count
    assert got[("mreg_applications_total", (("outcome", "failed"), ("phase", "expand"), ("target", "main")))] == 1
    assert got[("mreg_rollbacks_total", (("outcome", "succeeded"), ("target", "main")))] == 1
    assert {dict(labels)["origin"] for name, labels in got if name == "mreg_ledger_statements"} == {"t/main"}
    assert not any(name.endswith("_created") for name, _ in got)
    last = max(s["time"] for s in log)
    from datetime import datetime

    assert got[("mreg_ledger_last_statement_timestamp_seconds", main)] == pytest.approx(
        datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp())
    # the states the last apply and rollback wrote to target_status: what `mreg status` then finds
    states = {dict(labels)["state"]: v for (name, labels), v in got.items() if name == "mreg_migrations"}
    status = proj.json("status")["targets"][0]
    assert states.get("applied") == len(status["applied"]) > 0
    assert states.get("failed") == 1 and states.get("pending") == 1  # the broken one; the rolled-back one
    assert sum(states.values()) == len(status["applied"]) + len(status["pending"])
    assert abs(got[("mreg_status_checked_timestamp_seconds", (("target", "main"),))] - time.time()) < 120
