"""The executor: takes the plan to the targets under their locks, ledgering every fact.

``apply(cfg, …)`` is a generator of :class:`~registry.apply.progress.Progress` records; the CLI
renders them. Its sequence (CONTRACTS.md, "the mirror protocol"):

1. open catalog.db, the signing key, and an adapter per target (unavailable ones reported, skipped);
2. take every target's lock (name order), ``ensure_mirror``, pull the mirror into catalog.db;
3. plan from the logs as they are *now* (after the lock, so two operators never plan the same work);
4. run each entry (``registry.apply.runner``), stopping at the first failure;
5. always: checkpoint each log that grew (catalog.db, the target, Git ``refs/notes/mreg``), release locks.
"""

from __future__ import annotations

from registry.apply import group
from registry.apply.context import (
    engine_targets,
    load_migrations,
    lock_all,
    open_engine,
    start_loading,
    sync_all,
    write_checkpoints,
)
from registry.apply.logio import actor
from registry.apply.progress import Progress
from registry.apply.runner import ValidationFailed, run_entry
from registry.errors import ConfigError
from registry.model import PHASES

__all__ = ["apply", "compute_plan", "Progress", "ValidationFailed", "ContractNotConfirmed"]

DEFAULT_LOCK_WAIT_S = 60.0


class ContractNotConfirmed(ConfigError):
    """``--phase contract`` was asked without ``--confirm-contract``."""


def _owner() -> str:
    import os

    return f"{actor()} pid {os.getpid()}"


def compute_plan(cfg, *, target: str | None = None, phase: str = "all", to: str | None = None,
                 confirm_contract: bool = False):
    """(plan, notices): the plan from the targets' mirrors, read without taking locks."""
    from registry.plan import build_plan, log_state

    if phase not in (*PHASES, "all"):
        raise ConfigError(f"unknown phase {phase!r}", hint="use expand, migrate, contract or all")
    migrations = load_migrations(cfg)
    eng = open_engine(cfg, engine_targets(cfg, target), required=target, sign=False)
    try:
        for log in eng.logs.values():
            log.sync()
        states = {name: log_state(log.statements()) for name, log in eng.logs.items()}
        plan = build_plan(migrations, cfg.targets, states, phase=phase, to=to, only_target=target,
                          confirm_contract=confirm_contract)
        return plan, list(eng.notices)
    finally:
        eng.close()


def apply(cfg, *, target: str | None = None, phase: str = "all", to: str | None = None,
          dry_run: bool = False, confirm_contract: bool = False, lock_wait_s: float = DEFAULT_LOCK_WAIT_S):
    """Apply pending phases; yields Progress. Raises the failure after ledgering it (exit 1 or 3)."""
    from registry.plan import build_plan, log_state

    if phase not in (*PHASES, "all"):
        raise ConfigError(f"unknown phase {phase!r}", hint="use expand, migrate, contract or all")
    if phase == "contract" and not confirm_contract and not dry_run:
        raise ContractNotConfirmed(
            "the contract phase removes what older application versions may still read",
            hint="deploy the application version that no longer needs the old schema, "
                 "then run `mreg apply --phase contract --confirm-contract`")
    loading = start_loading(cfg)  # a large folder parses in a worker while the engine connects
    migrations = None
    try:
        eng = open_engine(cfg, engine_targets(cfg, target), required=target, sign=True)
    except BaseException:
        loading.result()  # a bad migration file is reported first, as if parsed before connecting
        raise
    try:
        yield from eng.notices
        if eng.unavailable and not eng.logs:  # nothing could be applied: not a success
            from registry.errors import TargetUnavailable

            raise TargetUnavailable(
                "no target could be reached: " + "; ".join(f"{n}: {why}" for n, why in sorted(eng.unavailable.items())),
                hint="start the servers (`mreg dev up` for the development ones) or fix targets.<name>.url",
                targets=sorted(eng.unavailable))
        try:
            lock_all(eng, _owner(), lock_wait_s)
        except BaseException:
            loading.result()
            raise
        for name in sorted(eng.locks):
            yield Progress("lock_acquired", target=name, message=f"lock on {name} taken")
        pulled = sync_all(eng)
        for name, n in pulled.items():
            if n:
                yield Progress("synced", target=name, done=n, message=f"{n} entries pulled from {name}'s mirror")
        migrations = loading.result()
        states = {name: log_state(log.statements()) for name, log in eng.logs.items()}
        plan = build_plan(migrations, cfg.targets, states, phase=phase, to=to, only_target=target,
                          confirm_contract=confirm_contract)
        runnable = [e for e in plan.entries if not e.needs_confirmation]
        yield Progress("planned", total=len(runnable), message=f"{len(runnable)} phase(s) to apply",
                       data={"plan": plan.as_dict()})
        skipped_contracts = set()
        checked: dict = {}
        for e in plan.entries:
            if e.needs_confirmation:
                skipped_contracts.add((e.target, e.migration.id))
                yield Progress("skipped", e.target, e.migration.id, e.phase, e.tenant,
                               message=f"{e.migration.id} contract waits for --confirm-contract")
        if dry_run:
            from registry.apply.dryrun import dry_run as run_dry

            yield from run_dry(eng, runnable)
            return
        grouping = {name: group.enabled(a) for name, a in eng.adapters.items()}
        singles = idx = 0  # singles: entries to run one transaction each (a group of them failed)
        while idx < len(runnable):
            entry = runnable[idx]
            if _depends_on_skipped(entry, skipped_contracts):
                yield Progress("skipped", entry.target, entry.migration.id, entry.phase, entry.tenant,
                               message=f"{entry.migration.id} {entry.phase} waits for a contract not confirmed")
                idx += 1
                continue
            adapter, log = eng.adapters[entry.target], eng.logs[entry.target]
            check = getattr(adapter, "lock_alive", None)
            if check is not None and _due(checked, entry.target) and not check():
                from registry.targets.base import LockTimeout

                raise LockTimeout(f"the lock on target {entry.target} was lost (its connection ended)",
                                  hint="run `mreg apply` again; nothing after the last recorded step ran",
                                  target=entry.target)
            if not singles and grouping[entry.target]:
                try:
                    n = yield from group.run_group(log, adapter, runnable, idx,
                                                   skip=lambda e: _depends_on_skipped(e, skipped_contracts))
                except group.GroupFailed as exc:  # rolled back: run them again one by one
                    singles = exc.tried
                    continue
                if n:
                    yield from _notices(adapter, runnable[idx + n - 1])
                    idx += n
                    continue
            try:
                yield from run_entry(log, adapter, entry)
            except Exception:  # what the adapter did on the way (an autovacuum it cancelled) is told still
                yield from _notices(adapter, entry)
                raise
            yield from _notices(adapter, entry)
            singles = max(0, singles - 1)
            idx += 1
        yield Progress("finished", total=len(runnable), message="done")
    finally:
        loading.cancel()
        try:
            for rec in write_checkpoints(eng):
                pass
            if migrations is not None and not dry_run:  # what is pending now, for catalog.db's target_status
                from registry.status import refresh

                refresh(cfg, eng, migrations)
        finally:
            eng.close()


def _notices(adapter, entry):
    """The adapter's notices about the entry just run (e.g. an autovacuum it cancelled), as warnings."""
    for note in getattr(adapter, "take_notices", list)():
        yield Progress("warning", entry.target, entry.migration.id, entry.phase, entry.tenant,
                       message=f"{entry.migration.id} {entry.phase}: {note}")


def _due(checked: dict, target: str, every_s: float = 1.0) -> bool:
    """Whether to ask the adapter again if its lock is still held (at most once a second per target)."""
    import time

    now = time.monotonic()
    if now - checked.get(target, -every_s) >= every_s:
        checked[target] = now
        return True
    return False


def _depends_on_skipped(entry, skipped: set) -> bool:
    if entry.phase != "contract":
        return False
    return any((entry.target, dep) in skipped for dep in entry.migration.dependencies)
