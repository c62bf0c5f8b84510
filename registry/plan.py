"""The planner: what is pending on each target, in dependency order, phase by phase.

Pure: it reads migrations (``registry.model.Migration``) and the statements of
each target's log (dicts, as ``ledger.log.parse_leaf(leaf).statement`` gives
them) and returns a :class:`Plan` whose entries are data. The executor
(``registry.apply``) runs them; nothing here touches a database.

State of one phase of one migration on one target (and tenant), from its log:

- ``applied``: the last outcome is ``apply_succeeded`` (or a ``baseline`` naming the phase);
- ``pending``: never started, or its last outcome is ``apply_failed`` / ``rollback_succeeded``;
- ``interrupted``: an ``apply_started`` (or ``rollback_started``) with no outcome after it — the
  process died. Transactional phases left nothing behind (the transaction died with it) and are
  run again; ``txmode: none`` phases resume after the last step their ``batch_checkpoint``
  statements record, and a backfill resumes from its last checkpointed key.

Ordering: migrations in ``registry.graph.order`` (topological, ties by canonical id);
``--phase all`` takes each migration through its phases before the next one.
Dependencies are per phase: phase P of B needs the phases of A up to P (A's expand for B's
expand, A's expand and migrate for B's migrate, all of A for B's contract), applied before or
planned earlier in the same plan.

Contract: planned only when the migration's migrate phase succeeded (or it has no migrate phase
and its expand succeeded), and marked ``needs_confirmation`` unless ``confirm_contract``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.errors import CheckFailed, ConfigError
from registry.model import PHASES, Migration, Step

# Event types the planner reads (ledger.statement.EVENT_TYPES holds them all).
OUTCOMES = {"apply_succeeded", "apply_failed", "rollback_succeeded", "rollback_failed"}


class UnknownMigration(ConfigError):
    """``--to`` or ``--migration-id`` names a migration that is not registered."""


class ChecksumMismatch(CheckFailed):
    """A migration's file changed after one of its phases was applied.

    ``data``: migration, path, applied (the checksum the log recorded), found (the file's now).
    """


@dataclass
class PhaseState:
    """What a target's log says about one phase of one migration (for one tenant)."""

    status: str = "pending"           # pending | applied | interrupted | failed | rolled_back
    steps_done: int = 0               # txmode none: steps recorded done by the current attempt
    backfill_next: int | None = None  # the next key of an interrupted backfill
    backfill_rows: int = 0
    checksum: str | None = None       # checksum of the applied (or attempted) file
    time: str | None = None           # time of the last event
    last_event: str | None = None
    rolling_back: bool = False        # interrupted during rollback (rollback_started, no outcome)
    resumable: bool = False           # the last attempt failed part-way and said it may be resumed
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "applied"


Key = tuple[str, str, str | None]  # (migration id, phase, tenant)


@dataclass
class LogState:
    """Everything the planner needs from one target's log."""

    phases: dict[Key, PhaseState] = field(default_factory=dict)
    repaired: dict[str, str] = field(default_factory=dict)  # migration id -> accepted checksum
    size: int = 0

    def get(self, mid: str, phase: str, tenant: str | None = None) -> PhaseState:
        return self.phases.get((mid, phase, tenant)) or PhaseState()

    def done(self, mid: str, phase: str, tenant: str | None = None) -> bool:
        return self.get(mid, phase, tenant).done

    def migration_ids(self) -> list[str]:
        return sorted({k[0] for k in self.phases})

    def accepted_checksum(self, mid: str) -> str | None:
        """The checksum the log holds for ``mid``: the last repair, else the last applied phase's."""
        if mid in self.repaired:
            return self.repaired[mid]
        found = None
        for (m, _p, _t), st in self.phases.items():
            if m == mid and st.status in ("applied", "interrupted") and st.checksum:
                found = st.checksum
        return found


def log_state(statements: list[dict]) -> LogState:
    """Fold a target's log (statements in seq order) into phase states."""
    state = LogState(size=len(statements))
    for st in statements:
        kind = st.get("type")
        mig = st.get("migration") or {}
        mid = mig.get("id")
        details = st.get("details") or {}
        if not mid:
            continue
        tenant = details.get("tenant")
        if kind == "repair":
            state.repaired[mid] = details.get("new_checksum") or mig.get("checksum")
            continue
        if kind == "baseline":
            for phase in details.get("phases") or ["expand"]:
                ps = state.phases.setdefault((mid, phase, tenant), PhaseState())
                ps.status, ps.checksum, ps.time, ps.last_event = "applied", mig.get("checksum"), st.get("time"), kind
            continue
        phase = details.get("phase")
        if phase not in PHASES:
            continue
        ps = state.phases.setdefault((mid, phase, tenant), PhaseState())
        ps.time, ps.last_event = st.get("time"), kind
        if kind == "apply_started":
            resume = details.get("resume_from") or 0
            ps.status, ps.checksum, ps.rolling_back = "interrupted", mig.get("checksum"), False
            ps.steps_done, ps.resumable = resume, False
            if not details.get("resume_backfill"):
                ps.backfill_next, ps.backfill_rows = None, 0
        elif kind == "batch_checkpoint":
            if "steps_done" in details:
                ps.steps_done = int(details["steps_done"])
            backfill = details.get("backfill") or {}
            if "next" in backfill:
                ps.backfill_next = int(backfill["next"])
                ps.backfill_rows = int(backfill.get("rows", 0))
        elif kind == "apply_succeeded":
            ps.status, ps.steps_done, ps.backfill_next, ps.error = "applied", 0, None, None
        elif kind == "apply_failed":
            ps.status, ps.error = "failed", details.get("error")
            ps.resumable = bool(details.get("resumable"))
            if not ps.resumable:
                ps.steps_done, ps.backfill_next = 0, None
        elif kind == "rollback_started":
            ps.rolling_back = True
            ps.status = "interrupted"
        elif kind == "rollback_succeeded":
            ps.status, ps.rolling_back, ps.steps_done, ps.backfill_next = "rolled_back", False, 0, None
        elif kind == "rollback_failed":
            # The rollback did not finish; the phase's changes are still there.
            ps.status, ps.rolling_back, ps.error = "applied", False, details.get("error")
    return state


@dataclass
class PlanEntry:
    """One phase of one migration to run on one target (and tenant).

    ``steps`` are the phase's steps; ``resume_from`` how many of them an interrupted
    ``txmode: none`` attempt already ran; ``backfill_from`` the key a backfill resumes at.
    ``recover`` names an interrupted attempt the executor first records as failed; ``resumes`` says the
    entry continues an earlier attempt (interrupted, or failed part-way with ``resumable``), so a
    backfill picks up the progress that attempt committed.
    """

    migration: Migration
    phase: str
    target: str
    tenant: str | None = None
    steps: list[Step] = field(default_factory=list)
    resume_from: int = 0
    backfill_from: int | None = None
    backfill_rows: int = 0
    recover: bool = False
    resumes: bool = False
    needs_confirmation: bool = False

    def as_dict(self) -> dict:
        return {
            "migration": self.migration.id,
            "phase": self.phase,
            "target": self.target,
            "tenant": self.tenant,
            "version": self.migration.version,
            "steps": len(self.steps),
            "txmode": self.migration.txmode,
            "resume_from": self.resume_from,
            "backfill": bool(self.migration.backfill) and self.phase == "migrate",
            "backfill_from": self.backfill_from,
            "interrupted": self.recover,
            "needs_confirmation": self.needs_confirmation,
            "path": self.migration.path,
        }


@dataclass
class Blocked:
    """A pending phase the plan cannot take yet, and why."""

    migration: str
    phase: str
    target: str
    reason: str
    tenant: str | None = None

    def as_dict(self) -> dict:
        return {"migration": self.migration, "phase": self.phase, "target": self.target,
                "tenant": self.tenant, "reason": self.reason}


@dataclass
class Plan:
    entries: list[PlanEntry] = field(default_factory=list)
    blocked: list[Blocked] = field(default_factory=list)

    def for_target(self, name: str) -> list[PlanEntry]:
        return [e for e in self.entries if e.target == name]

    def as_dict(self) -> dict:
        return {"steps": [e.as_dict() for e in self.entries], "blocked": [b.as_dict() for b in self.blocked]}


def targets_for(migration: Migration, targets: dict) -> list[str]:
    """Names of the targets a migration goes to.

    By ``migration.database``: every target of that type, unless the migration names
    one (a ``Target:`` header line, or ``metadata["target"]``: a name or comma-separated names) —
    then only those.
    """
    extra = {str(k).lower(): v for k, v in (migration.metadata.get("extra_header") or {}).items()}
    named = (migration.metadata.get("target") or migration.metadata.get("targets")
             or extra.get("target") or extra.get("targets"))
    if isinstance(named, str):
        named = [n.strip() for n in named.split(",") if n.strip()]
    out = []
    for name, t in sorted(targets.items()):
        if t.type != migration.database:
            continue
        if named and name not in named:
            continue
        out.append(name)
    return out


def _phase_steps(m: Migration, phase: str) -> list[Step]:
    return list(m.phases.get(phase) or [])


def _tenants(m: Migration, target) -> list[str | None]:
    if m.tenant_scoped and getattr(target, "tenants", None):
        return list(target.tenants)
    return [None]


def _needed_phases(dep: Migration, phase: str) -> list[str]:
    """Phases of dependency ``dep`` that phase ``phase`` of a dependent needs."""
    upto = PHASES[: PHASES.index(phase) + 1]
    return [p for p in dep.phase_names if p in upto]


def build_plan(migrations: list[Migration], targets: dict, states: dict[str, LogState], *,
               phase: str = "all", to: str | None = None, only_target: str | None = None,
               confirm_contract: bool = False, ordered: bool = False) -> Plan:
    """The pending phases of every target in ``states`` (targets without a state are skipped).

    ``migrations`` must already be in dependency order when ``ordered`` is true; otherwise they are
    ordered with ``registry.graph.order``. ``to`` stops after that migration (inclusive).
    """
    if phase not in (*PHASES, "all"):
        raise ConfigError(f"unknown phase {phase!r}", hint="use expand, migrate, contract or all")
    if not ordered:
        from registry.graph import order

        migrations = order(migrations)
    by_id = {m.id: m for m in migrations}
    if to is not None and to not in by_id:
        raise UnknownMigration(f"--to names {to!r}, which is not a registered migration",
                               hint="`mreg list` shows the registered migrations", migration=to)
    if to is not None:
        cut = [m.id for m in migrations].index(to)
        migrations = migrations[: cut + 1]
    phases_wanted = PHASES if phase == "all" else (phase,)
    plan = Plan()
    planned: set[tuple[str, str, str, str | None]] = set()  # (target, mid, phase, tenant)

    def satisfied(tname: str, mid: str, ph: str, tenant: str | None) -> bool:
        st = states[tname]
        return st.done(mid, ph, tenant) or (tname, mid, ph, tenant) in planned

    for m in migrations:
        for tname in targets_for(m, targets):
            if only_target and tname != only_target:
                continue
            if tname not in states:
                continue
            st = states[tname]
            _check_checksum(m, st)
            for tenant in _tenants(m, targets[tname]):
                for ph in m.phase_names:
                    if ph not in phases_wanted:
                        continue
                    ps = st.get(m.id, ph, tenant)
                    if ps.done:
                        continue
                    if ps.rolling_back:
                        plan.blocked.append(Blocked(m.id, ph, tname, "a rollback of this phase was interrupted: "
                                                    "run `mreg rollback` again to finish it", tenant))
                        continue
                    reason = _blocked_reason(m, ph, tname, tenant, by_id, targets, states, satisfied)
                    if reason:
                        plan.blocked.append(Blocked(m.id, ph, tname, reason, tenant))
                        continue
                    entry = PlanEntry(m, ph, tname, tenant, _phase_steps(m, ph))
                    if ps.status == "interrupted" or (ps.status == "failed" and (ps.steps_done or ps.resumable)):
                        entry.recover = ps.status == "interrupted"
                        entry.resumes = True
                        # only step-by-step phases record steps_done; a transactional one is always 0
                        entry.resume_from = ps.steps_done
                        if ps.backfill_next is not None:
                            entry.backfill_from, entry.backfill_rows = ps.backfill_next, ps.backfill_rows
                    if ph == "contract" and not confirm_contract:
                        entry.needs_confirmation = True
                    plan.entries.append(entry)
                    planned.add((tname, m.id, ph, tenant))
    return plan


def _check_checksum(m: Migration, st: LogState) -> None:
    accepted = st.accepted_checksum(m.id)
    if accepted and accepted != m.checksum:
        raise ChecksumMismatch(
            f"{m.path}: migration {m.id} was edited after it was applied "
            f"(applied {accepted}, file now {m.checksum})",
            hint=f"restore the applied file, or accept the edit with `mreg repair {m.id}`",
            migration=m.id, path=m.path, expected=accepted, found=m.checksum)


def _blocked_reason(m, ph, tname, tenant, by_id, targets, states, satisfied) -> str | None:
    # Earlier phases of the same migration.
    for earlier in m.phase_names[: m.phase_names.index(ph)]:
        if not satisfied(tname, m.id, earlier, tenant):
            if ph == "contract":
                return f"contract waits for {earlier} to succeed"
            return f"waits for its {earlier} phase"
    for dep_id in m.dependencies:
        dep = by_id.get(dep_id)
        if dep is None:
            return f"depends on {dep_id}, which is not registered"
        dep_targets = targets_for(dep, targets)
        known = [t for t in dep_targets if t in states]
        if not known:
            if dep_targets:
                continue  # the dependency's target is unavailable; it cannot be checked here
            return f"depends on {dep_id}, whose database has no target"
        for dt in known:
            dep_tenant = tenant if dep.tenant_scoped and dt == tname else None
            for need in _needed_phases(dep, ph):
                if not satisfied(dt, dep_id, need, dep_tenant):
                    return f"depends on {dep_id} ({need} not applied on {dt})"
    return None


def dependents(mid: str, migrations: list[Migration]) -> list[Migration]:
    """Migrations that declare ``mid`` as a dependency (directly)."""
    return [m for m in migrations if mid in m.dependencies]
