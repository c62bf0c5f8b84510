"""The planner, in memory: log states folded from statements, plans computed from them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from registry.model import Backfill, Migration, Step, checksum_bytes
from registry.plan import ChecksumMismatch, UnknownMigration, build_plan, log_state, targets_for

PG = {"postgres": SimpleNamespace(type="postgresql", tenants=[]),
      "neo4j": SimpleNamespace(type="neo4j", tenants=[])}


def mig(mid, phases=("expand",), deps=(), database="postgresql", **kw):
    return Migration(id=mid, name=mid, database=database, path=f"migrations/{mid}.sql",
                     checksum=checksum_bytes(mid.encode()), dependencies=list(deps),
                     phases={p: [Step(f"-- {mid} {p}")] for p in phases}, **kw)


def ev(kind, m, phase=None, **details):
    d = dict(details)
    if phase:
        d["phase"] = phase
    return {"type": kind, "migration": {"id": m.id, "checksum": m.checksum, "version": m.version},
            "details": d, "time": "2026-01-01T00:00:00Z"}


def applied(m, *phases):
    out = []
    for p in phases:
        out += [ev("apply_started", m, p), ev("apply_succeeded", m, p)]
    return out


def steps(plan):
    return [(e.migration.id, e.phase, e.target) for e in plan.entries]


def test_fresh_target_plans_every_phase_in_order_contract_needs_confirmation():
    a, b = mig("20250101_000000_schema_a"), mig("20250102_000000_schema_b", ("expand", "migrate", "contract"),
                                                deps=["20250101_000000_schema_a"])
    plan = build_plan([a, b], PG, {"postgres": log_state([])}, ordered=True)
    assert steps(plan) == [(a.id, "expand", "postgres"), (b.id, "expand", "postgres"),
                           (b.id, "migrate", "postgres"), (b.id, "contract", "postgres")]
    assert [e.needs_confirmation for e in plan.entries] == [False, False, False, True]
    confirmed = build_plan([a, b], PG, {"postgres": log_state([])}, ordered=True, confirm_contract=True)
    assert not any(e.needs_confirmation for e in confirmed.entries)


def test_applied_phases_are_not_planned_again():
    a = mig("a", ("expand", "migrate"))
    plan = build_plan([a], PG, {"postgres": log_state(applied(a, "expand"))}, ordered=True)
    assert steps(plan) == [("a", "migrate", "postgres")]


def test_contract_waits_for_migrate():
    a = mig("a", ("expand", "migrate", "contract"))
    plan = build_plan([a], PG, {"postgres": log_state(applied(a, "expand"))}, ordered=True, phase="contract",
                      confirm_contract=True)
    assert plan.entries == []
    assert plan.blocked[0].reason.startswith("contract waits for migrate")
    plan = build_plan([a], PG, {"postgres": log_state(applied(a, "expand", "migrate"))}, ordered=True,
                      phase="contract", confirm_contract=True)
    assert steps(plan) == [("a", "contract", "postgres")]


def test_contract_without_migrate_waits_for_expand():
    a = mig("a", ("expand", "contract"))
    plan = build_plan([a], PG, {"postgres": log_state([])}, ordered=True, phase="contract", confirm_contract=True)
    assert plan.entries == [] and "expand" in plan.blocked[0].reason


def test_phase_expand_only_runs_expands_and_dependencies_are_per_phase():
    a = mig("a", ("expand", "migrate"))
    b = mig("b", ("expand", "migrate"), deps=["a"])
    plan = build_plan([a, b], PG, {"postgres": log_state([])}, ordered=True, phase="expand")
    assert steps(plan) == [("a", "expand", "postgres"), ("b", "expand", "postgres")]
    plan = build_plan([a, b], PG, {"postgres": log_state(applied(a, "expand") + applied(b, "expand"))},
                      ordered=True, phase="migrate")
    assert steps(plan) == [("a", "migrate", "postgres"), ("b", "migrate", "postgres")]


def test_failed_and_rolled_back_phases_are_pending_again():
    a = mig("a")
    failed = [ev("apply_started", a, "expand"), ev("apply_failed", a, "expand", error="x")]
    assert steps(build_plan([a], PG, {"postgres": log_state(failed)}, ordered=True)) == [("a", "expand", "postgres")]
    rolled = applied(a, "expand") + [ev("rollback_started", a, "expand"), ev("rollback_succeeded", a, "expand")]
    assert steps(build_plan([a], PG, {"postgres": log_state(rolled)}, ordered=True)) == [("a", "expand", "postgres")]


def test_interrupted_txmode_none_resumes_after_last_checkpoint():
    a = mig("a", txmode="none")
    a.phases["expand"] = [Step("s1"), Step("s2"), Step("s3")]
    log = [ev("apply_started", a, "expand"), ev("batch_checkpoint", a, "expand", steps_done=1),
           ev("batch_checkpoint", a, "expand", steps_done=2)]
    st = log_state(log)
    assert st.get("a", "expand").status == "interrupted" and st.get("a", "expand").steps_done == 2
    entry = build_plan([a], PG, {"postgres": st}, ordered=True).entries[0]
    assert entry.recover and entry.resume_from == 2
    # recorded as failed (resumable) by the next run: still resumes from the same statement
    log.append(ev("apply_failed", a, "expand", reason="interrupted", resumable=True, steps_done=2))
    entry = build_plan([a], PG, {"postgres": log_state(log)}, ordered=True).entries[0]
    assert not entry.recover and entry.resume_from == 2


def test_interrupted_backfill_resumes_from_its_last_key():
    a = mig("a", ("expand", "migrate"))
    a.backfill = Backfill("users", "id", "UPDATE users SET x = 1 WHERE id >= :lo AND id < :hi")
    log = applied(a, "expand") + [ev("apply_started", a, "migrate"),
                                  ev("batch_checkpoint", a, "migrate", backfill={"next": 2001, "rows": 2000})]
    entry = build_plan([a], PG, {"postgres": log_state(log)}, ordered=True).entries[0]
    assert (entry.phase, entry.backfill_from, entry.backfill_rows) == ("migrate", 2001, 2000)


def test_dependency_not_applied_blocks():
    a, b = mig("a"), mig("b", deps=["a"])
    plan = build_plan([a, b], PG, {"postgres": log_state([])}, ordered=True, to="a")
    assert steps(plan) == [("a", "expand", "postgres")]
    plan = build_plan([b], PG, {"postgres": log_state([])}, ordered=True)
    assert plan.entries == [] and "not registered" in plan.blocked[0].reason


def test_to_must_name_a_migration():
    with pytest.raises(UnknownMigration):
        build_plan([mig("a")], PG, {"postgres": log_state([])}, ordered=True, to="nope")


def test_targets_by_database_and_by_name():
    many = {"p1": SimpleNamespace(type="postgresql"), "p2": SimpleNamespace(type="postgresql"),
            "n": SimpleNamespace(type="neo4j")}
    assert targets_for(mig("a"), many) == ["p1", "p2"]
    assert targets_for(mig("a", metadata={"target": "p2"}), many) == ["p2"]
    assert targets_for(mig("c", database="neo4j"), many) == ["n"]


def test_edited_applied_migration_is_refused_until_repaired():
    a = mig("a", ("expand", "migrate"))
    log = applied(a, "expand")
    edited = mig("a", ("expand", "migrate"))
    edited.checksum = checksum_bytes(b"edited")
    with pytest.raises(ChecksumMismatch) as err:
        build_plan([edited], PG, {"postgres": log_state(log)}, ordered=True)
    assert err.value.data["expected"] == a.checksum and err.value.data["found"] == edited.checksum
    assert "mreg repair" in err.value.hint
    log.append({"type": "repair", "migration": {"id": "a", "checksum": edited.checksum},
                "details": {"new_checksum": edited.checksum}})
    assert steps(build_plan([edited], PG, {"postgres": log_state(log)}, ordered=True)) == [("a", "migrate", "postgres")]


def test_baseline_marks_phases_applied():
    a = mig("a", ("expand", "migrate"))
    log = [{"type": "baseline", "migration": {"id": "a", "checksum": a.checksum},
            "details": {"phases": ["expand", "migrate"]}}]
    assert build_plan([a], PG, {"postgres": log_state(log)}, ordered=True).entries == []


def test_tenant_scoped_migrations_plan_once_per_tenant():
    targets = {"postgres": SimpleNamespace(type="postgresql", tenants=["acme", "globex"])}
    a = mig("a", tenant_scoped=True)
    log = [ev("apply_started", a, "expand", tenant="acme"), ev("apply_succeeded", a, "expand", tenant="acme")]
    plan = build_plan([a], targets, {"postgres": log_state(log)}, ordered=True)
    assert [(e.migration.id, e.tenant) for e in plan.entries] == [("a", "globex")]


def test_targets_without_state_are_skipped():
    a, n = mig("a"), mig("n", database="neo4j")
    plan = build_plan([a, n], PG, {"neo4j": log_state([])}, ordered=True)
    assert steps(plan) == [("n", "expand", "neo4j")]


def test_validation_results_are_compared_by_column_and_value():
    from registry.apply.runner import rule_holds

    assert rule_holds([{"count": 1}], {"count": 1}) == (True, {"count": 1})
    assert rule_holds([{"COUNT": 1}], {"count": 1})[0]
    from decimal import Decimal

    assert rule_holds([{"n": Decimal("2")}], 2)[0]
    assert rule_holds([{"is_nullable": "NO"}], {"is_nullable": "NO"})[0]
    assert rule_holds([{"count": 0}], {"count": 1}) == (False, {"count": 0})
    assert rule_holds([], {"count": 0}) == (False, {"count": None})
    assert rule_holds([{"ok": True}], None)[0] and not rule_holds([{"ok": False}], None)[0]


def test_rules_belong_to_the_phase_their_name_says():
    from registry.apply.runner import rule_phase
    from registry.model import ValidationRule

    assert rule_phase(ValidationRule("migrate.backfilled"), "contract") == "migrate"
    assert rule_phase(ValidationRule("table_exists"), "contract") == "contract"
    assert rule_phase(ValidationRule("expanded"), "expand") == "expand"


def test_only_sql_that_postgres_runs_in_a_transaction_shares_its_checkpoint():
    from types import SimpleNamespace

    from registry.apply.runner import shares_transaction

    pg = SimpleNamespace(kind="postgresql")
    assert shares_transaction(pg, Step("INSERT INTO t VALUES (1)"))
    assert not shares_transaction(pg, Step("CREATE INDEX CONCURRENTLY i ON t (x)"))
    assert not shares_transaction(pg, Step("VACUUM t"))
    assert shares_transaction(SimpleNamespace(kind="neo4j"), Step("MATCH (n) SET n.x = 1", kind="cypher"))
    assert not shares_transaction(SimpleNamespace(kind="neo4j"), Step("CREATE INDEX i IF NOT EXISTS FOR (n:N) ON (n.x)", kind="cypher"))
