"""``mreg rollback``: run a migration's rollback steps after the seed's safety checks (``canRollback``).

Checks, in the seed's order:

1. the migration has rollback steps for every phase to undo (else ``RollbackRefused``);
2. no migration that depends on it has an applied phase that needs a phase being undone (a
   dependent's phase Q needs this migration's phases up to Q, as in the planner) — else
   ``RollbackRefused``, naming them;
3. a backup is recorded (``--backup-ref``, or a ``backup`` field in the details of one of its
   events) — else a warning: "rollback may result in data loss";
4. it was applied less than 30 days ago — else a warning: "consider restore from backup instead".

Warnings need ``--confirm`` to proceed (``--dry-run`` shows them and what would run, changing nothing).

Phases are undone last first (contract, migrate, expand), each as ``rollback_started`` +
``rollback_succeeded`` (or ``rollback_failed``): a transactional phase's rollback steps and both
events commit in one transaction; otherwise ``rollback_started`` commits first and each step runs
on its own. Tenant-scoped migrations are undone per tenant (``--tenant T`` or ``all``), each tenant
with its own events.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from registry.apply.context import load_migrations, lock_all, open_engine, sync_all, write_checkpoints
from registry.apply.logio import actor
from registry.apply.progress import Progress
from registry.errors import ConfigError
from registry.model import PHASES
from registry.targets.base import StepFailed

MAX_AGE_DAYS = 30


class RollbackRefused(ConfigError):
    """A safety check forbids the rollback (no rollback steps, applied dependents, nothing applied).

    ``data``: migration, target, reason, and ``dependents`` when that is the reason.
    """


class RollbackNeedsConfirmation(ConfigError):
    """A safety check warned (no backup recorded, older than 30 days): ``--confirm`` proceeds."""


def _age_days(time_text: str | None) -> float | None:
    if not time_text:
        return None
    try:
        then = datetime.fromisoformat(time_text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (datetime.now(timezone.utc) - then).total_seconds() / 86400


def _phases_to_undo(m, state, tenant, phase):
    """Applied (or interrupted) phases of ``m`` for ``tenant``, last first."""
    out = []
    for p in reversed(m.phase_names):
        if phase and p != phase:
            continue
        ps = state.get(m.id, p, tenant)
        if ps.status in ("applied", "interrupted") or (ps.status == "failed" and ps.steps_done):
            out.append(p)
    return out


def check(cfg, m, migrations, states: dict, names: list[str], *, phase, tenant, backup_ref) -> tuple[dict, list[str]]:
    """Run the safety checks; return ({target: [(tenant, phase), ...]}, warnings) or raise RollbackRefused."""
    from registry.plan import _tenants

    work: dict[str, list] = {}
    warnings: list[str] = []
    for name in names:
        state = states[name]
        target = cfg.targets[name]
        tenants = _tenants(m, target)
        if tenant and tenant != "all":
            if m.tenant_scoped and tenant not in tenants:
                raise RollbackRefused(f"target {name} has no tenant {tenant!r}",
                                      hint=f"use one of: {', '.join(t for t in tenants if t)} or all",
                                      migration=m.id, target=name, reason="tenant")
            tenants = [tenant] if m.tenant_scoped else tenants
        items = [(t, p) for t in tenants for p in _phases_to_undo(m, state, t, phase)]
        if items:
            work[name] = items
    if not work:
        raise RollbackRefused(f"{m.id} has nothing applied to roll back" + (f" in phase {phase}" if phase else ""),
                              hint="`mreg status` shows what is applied", migration=m.id, reason="not applied")
    # 1. rollback steps exist
    missing = sorted({p for items in work.values() for _t, p in items if not m.rollback.get(p)})
    if missing:
        raise RollbackRefused(f"{m.path}: {m.id} has no rollback steps for phase(s) {', '.join(missing)}",
                              hint="add a `Rollback (<phase>):` section to the file (and `mreg repair` it "
                                   "if it was applied), or restore from a backup", migration=m.id,
                              reason="no rollback steps", phases=missing)
    # 2. no applied dependent
    # (per phase, as the planner orders them: a dependent's phase Q needs this migration's phases up to Q)
    undone = {p for items in work.values() for _t, p in items}
    first = min(PHASES.index(p) for p in undone)
    dependents = []
    for other in migrations:
        if m.id not in other.dependencies:
            continue
        for name, state in states.items():
            if any(ps.status in ("applied", "interrupted") and PHASES.index(q) >= first
                   for (mid, q, _t), ps in state.phases.items() if mid == other.id):
                dependents.append(other.id)
                break
    if dependents:
        raise RollbackRefused(f"cannot roll back {m.id}: {len(dependents)} dependent migration(s) applied: "
                              f"{', '.join(dependents)}", hint="roll the dependents back first",
                              migration=m.id, reason="dependents", dependents=dependents)
    # 3. a backup is recorded
    has_backup = bool(backup_ref)
    first_time = None
    for name in work:
        for (mid, _p, _t), ps in states[name].phases.items():
            if mid == m.id and ps.time and (first_time is None or ps.time < first_time):
                first_time = ps.time
    for name in work:
        has_backup = has_backup or states[name].backups.get(m.id, False)
    if not has_backup:
        warnings.append("no backup found - rollback may result in data loss (record one with --backup-ref)")
    # 4. not too old
    age = _age_days(first_time)
    if age is not None and age > MAX_AGE_DAYS:
        warnings.append(f"migration is over {MAX_AGE_DAYS} days old ({int(age)} days) - "
                        "consider restore from backup instead")
    return work, warnings


def rollback(cfg, migration_id: str, *, phase: str | None = None, tenant: str | None = None,
             target: str | None = None, dry_run: bool = False, confirm: bool = False,
             backup_ref: str | None = None, lock_wait_s: float = 60.0):
    """Roll back ``migration_id``; yields Progress. Raises RollbackRefused / RollbackNeedsConfirmation."""
    from registry.graph import order
    from registry.plan import UnknownMigration, log_state, targets_for

    migrations = order(load_migrations(cfg))
    by_id = {m.id: m for m in migrations}
    if migration_id not in by_id:
        raise UnknownMigration(f"{migration_id!r} is not a registered migration",
                               hint="`mreg status` lists the applied ones", migration=migration_id)
    m = by_id[migration_id]
    names = [n for n in targets_for(m, cfg.targets) if target in (None, n)]
    if not names:
        raise ConfigError(f"{m.id} goes to no configured target" + (f" named {target}" if target else ""),
                          hint="check the migration's Database: header and mreg.toml's targets")
    eng = open_engine(cfg, names, required=target, sign=not dry_run)
    try:
        yield from eng.notices
        if not dry_run:
            lock_all(eng, f"{actor()} rollback", lock_wait_s)
            sync_all(eng)
        else:
            for log in eng.logs.values():
                log.sync()
        states = {name: _with_backups(log_state(log.statements()), log.statements()) for name, log in eng.logs.items()}
        work, warnings = check(cfg, m, migrations, states, sorted(eng.logs), phase=phase, tenant=tenant,
                               backup_ref=backup_ref)
        for w in warnings:
            yield Progress("warning", migration=m.id, message=w)
        if dry_run:
            for name, items in work.items():
                for ten, p in items:
                    for i, step in enumerate(m.rollback[p]):
                        yield Progress("dry_run_step", name, m.id, p, ten, i + 1, len(m.rollback[p]),
                                       message="would run: " + " ".join(step.content.split())[:100])
            return
        if warnings and not confirm:
            raise RollbackNeedsConfirmation(f"rollback of {m.id} has warnings: " + "; ".join(warnings),
                                            hint="re-run with --confirm to proceed (add --backup-ref to record "
                                                 "the backup)", migration=m.id, warnings=warnings)
        for name, items in work.items():
            for ten, p in items:
                yield from _undo_phase(eng.logs[name], eng.adapters[name], m, p, ten, backup_ref)
        yield Progress("finished", migration=m.id, message=f"{m.id} rolled back")
    finally:
        try:
            if not dry_run:
                write_checkpoints(eng)
                from registry.status import refresh

                refresh(cfg, eng, migrations)
        finally:
            eng.close()


def _with_backups(state, statements):
    state.backups = {}
    for st in statements:
        mid = (st.get("migration") or {}).get("id")
        if mid and (st.get("details") or {}).get("backup"):
            state.backups[mid] = True
    return state


def _session(adapter, transactional, m, tenant):
    kwargs = {"settings": m.settings}
    if tenant:
        kwargs["tenant"] = tenant
    return adapter.session(transactional, **kwargs)


def _undo_phase(log, adapter, m, phase: str, tenant: str | None, backup_ref: str | None):
    steps = m.rollback[phase]
    details = {"phase": phase, "tenant": tenant, "steps": len(steps), "backup": backup_ref}
    t0 = time.monotonic()
    yield Progress("rollback_started", log.target.name, m.id, phase, tenant, 0, len(steps),
                   message=f"{m.id} {phase}: {len(steps)} rollback step(s)")
    transactional = m.txmode != "none" and all(s.transactional for s in steps)
    if transactional:
        try:
            with _session(adapter, True, m, tenant) as s:
                rid = log.stage(s, "rollback_started", m, details)
                for step in steps:
                    s.execute(step, path=m.path)
                log.stage(s, "rollback_succeeded", m, {"phase": phase, "tenant": tenant,
                                                       "execution_time_ms": int((time.monotonic() - t0) * 1000)},
                          refs=[rid])
                s.commit()
            log.committed()
        except StepFailed as exc:
            log.discard()
            with adapter.session(True) as s:
                rid = log.stage(s, "rollback_started", m, details)
                log.stage(s, "rollback_failed", m, {"phase": phase, "tenant": tenant, "error": str(exc)[:2000]},
                          refs=[rid])
                s.commit()
            log.committed()
            raise
    else:
        rid = log.record("rollback_started", m, details)
        try:
            for step in steps:
                with _session(adapter, step.transactional and m.txmode != "none", m, tenant) as s:
                    s.execute(step, path=m.path)
                    s.commit()
        except StepFailed as exc:
            log.discard()
            log.record("rollback_failed", m, {"phase": phase, "tenant": tenant, "error": str(exc)[:2000]},
                       refs=[rid])
            raise
        log.record("rollback_succeeded", m, {"phase": phase, "tenant": tenant,
                                             "execution_time_ms": int((time.monotonic() - t0) * 1000)}, refs=[rid])
    yield Progress("rollback_succeeded", log.target.name, m.id, phase, tenant, len(steps), len(steps),
                   message=f"{m.id} {phase} rolled back" + (f" [{tenant}]" if tenant else ""))
