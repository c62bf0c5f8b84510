"""``mreg status``: per target, what its log says is applied, pending, interrupted, and who holds its lock.

Read-only for the targets (no lock taken); catalog.db receives whatever the mirrors hold beyond it
(the same verified replication as ``mreg sync``), and its ``target_status`` table what this found
(one row per migration of each target reached; Datasette's "Pending per target").

One object per configured target (the shape of ``mreg status --json``, documented in docs/applying.md):

- ``name``, ``type``, ``url`` (password removed), ``available`` (false: ``error`` says why);
- ``version``: the highest semantic version among migrations with at least one phase applied
  (``null`` when none);
- ``applied``: ids of migrations whose every phase is applied (for every tenant);
- ``pending``: ids of registered migrations for this target not fully applied, in plan order;
- ``partial``: for pending migrations with some phases done, ``{"id", "phases_done", "phases_pending"}``;
- ``interrupted``: ``{"migration", "phase", "tenant", "steps_done", "statement", "rolling_back"}`` for each
  phase whose last attempt has no outcome (a process died): ``statement`` is the 1-based statement it
  reached (``steps_done + 1``) — ``mreg apply`` resumes there, ``mreg rollback`` undoes it;
- ``failed``: ``{"migration", "phase", "tenant", "error"}`` for phases whose last attempt failed;
- ``lock_holder``: who holds the target's lock now, or ``null``;
- ``log_size``: entries in the target's log.
"""

from __future__ import annotations

from registry.apply.context import engine_targets, load_migrations, open_engine
from registry.errors import DatabaseError


def _semver_key(v: str) -> tuple:
    try:
        return tuple(int(x) for x in v.split(".")[:3])
    except ValueError:
        return (0, 0, 0)


def target_status(cfg, name: str, migrations: list, state, lock_holder) -> dict:
    """One target's object (the module docstring), plus ``rows``: (migration, state, phases done,
    phases pending, detail) per migration of the target, for catalog.db's ``target_status``."""
    from registry.plan import _tenants, targets_for

    target = cfg.targets[name]
    mine = [m for m in migrations if name in targets_for(m, cfg.targets)]
    applied, pending, partial = [], [], []
    versions = []
    phases: dict[str, tuple[list, list]] = {}
    for m in mine:
        tenants = _tenants(m, target)
        done = [p for p in m.phase_names if all(state.done(m.id, p, t) for t in tenants)]
        phases[m.id] = (done, [p for p in m.phase_names if p not in done])
        if any(state.done(m.id, p, t) for p in m.phase_names for t in tenants):
            versions.append(m.version)
        if m.phase_names and len(done) == len(m.phase_names):
            applied.append(m.id)
        else:
            pending.append(m.id)
            if done:
                partial.append({"id": m.id, "phases_done": done, "phases_pending": phases[m.id][1]})
    interrupted, failed = [], []
    trouble: dict[str, tuple[str, str]] = {}  # migration -> (state, detail): interrupted over failed
    for (mid, phase, tenant), ps in sorted(state.phases.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        where = f"{phase}{f' (tenant {tenant})' if tenant else ''}"
        if ps.status == "interrupted":
            interrupted.append({"migration": mid, "phase": phase, "tenant": tenant, "steps_done": ps.steps_done,
                                "statement": ps.steps_done + 1, "rolling_back": ps.rolling_back,
                                "backfill_next": ps.backfill_next})
            trouble[mid] = ("interrupted", f"{where}: interrupted at statement {ps.steps_done + 1}")
        elif ps.status == "failed":
            failed.append({"migration": mid, "phase": phase, "tenant": tenant, "error": ps.error,
                           "steps_done": ps.steps_done})
            trouble.setdefault(mid, ("failed", f"{where}: {ps.error}"))
    rows = []
    for mid, (done, todo) in phases.items():
        kind, detail = trouble.get(mid, (None, None)) if todo else (None, None)
        rows.append((mid, kind or ("applied" if not todo else "partial" if done else "pending"), done, todo, detail))
    return {
        "name": name, "type": target.type, "url": target.safe_url, "available": True,
        "version": max(versions, key=_semver_key) if versions else None,
        "applied": applied, "pending": pending, "partial": partial,
        "interrupted": interrupted, "failed": failed, "lock_holder": lock_holder, "log_size": state.size,
        "rows": rows,
    }


def refresh(cfg, eng, migrations: list) -> None:
    """After ``mreg apply`` or ``mreg rollback`` (still holding the locks): the rows of catalog.db's
    ``target_status`` for every target ``eng`` has open, as their logs now say, so Datasette's
    "Pending per target" is current without an ``mreg status``. The lock holder is not read (it is
    this operator, until it lets go). Best effort: a catalog that cannot be written is left as it
    was (the command's own outcome is what it reports); ``mreg status`` writes the rows as well."""
    import sqlite3

    from registry.plan import log_state

    try:  # the rows alone are recorded: the migrations' order, which only the lists have, does not matter
        _record(cfg, [target_status(cfg, name, migrations, log_state(log.statements()), None)
                      for name, log in sorted(eng.logs.items())])
    except (sqlite3.Error, OSError):
        pass


def _record(cfg, targets: list[dict]) -> None:
    """``targets`` (``target_status`` objects) into catalog.db's ``target_status``, checked now."""
    from datetime import datetime, timezone
    from pathlib import Path

    from registry.catalog import record_status

    record_status(Path(cfg.catalog.value), targets, datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def status(cfg, *, target: str | None = None) -> dict:
    """``{"targets": [...]}``: one object per target (see the module docstring)."""
    from registry.graph import order
    from registry.plan import log_state

    migrations = order(load_migrations(cfg))
    names = engine_targets(cfg, target)
    eng = open_engine(cfg, names, required=target, sign=False)
    out = []
    try:
        for name in names:
            t = cfg.targets[name]
            if name not in eng.logs:
                out.append({"name": name, "type": t.type, "url": t.safe_url, "available": False,
                            "error": eng.unavailable.get(name), "version": None, "applied": [], "pending": [],
                            "partial": [], "interrupted": [], "failed": [], "lock_holder": None, "log_size": 0})
                continue
            log = eng.logs[name]
            try:
                log.sync()
                holder = log.adapter.lock_holder()
            except DatabaseError as exc:
                out.append({"name": name, "type": t.type, "url": t.safe_url, "available": False,
                            "error": exc.message, "version": None, "applied": [], "pending": [], "partial": [],
                            "interrupted": [], "failed": [], "lock_holder": None, "log_size": 0})
                continue
            out.append(target_status(cfg, name, migrations, log_state(log.statements()), holder))
    finally:
        eng.close()
    _record(cfg, out)
    for t in out:
        t.pop("rows", None)
    return {"targets": out}
