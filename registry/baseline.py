"""Adopting existing databases (``mreg baseline``) and accepting edited files (``mreg repair``).

``baseline`` reads a legacy tracking table of a live PostgreSQL/TimescaleDB target and records one
``baseline`` statement per registered migration it matches (every phase counted as applied):

| ``--from`` | read | matched by |
|---|---|---|
| ``knex_migrations`` | ``name`` | the file name (``20240101120000_add_x.js``), with or without extension |
| ``flyway_schema_history`` | ``version``, ``description``, ``script`` (``success`` rows) | ``script`` file name, or ``V<version>__<description>`` |
| ``schema_migrations`` | ``version`` (Rails, golang-migrate; ``dirty`` rows refused) | the version prefix of the file name |
| ``schema_versions`` | the seed's table: ``migration_id``, ``checksum`` | migration id, then SHA-256 checksum |

``auto`` picks the first of these tables that exists (an mreg mirror is never read as legacy).
A match by name whose legacy checksum is known and differs from the file's is reported, not
baselined. Migrations already applied or baselined are skipped; rows matching nothing are reported.

``repair ID`` ledgers a ``repair`` statement (``old_checksum``, ``new_checksum``, ``reason``) on every
target whose log holds a different checksum for the migration: from then on the new file is the
applied one (``mreg verify`` and ``mreg apply`` accept it). When the registry knows the migration,
its registry log gets the matching ``repair`` too (``registry.registration.accept_checksum``).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from registry.apply.context import load_migrations, lock_all, open_engine, sync_all, write_checkpoints
from registry.apply.logio import actor
from registry.errors import ConfigError

SOURCES = ("knex_migrations", "flyway_schema_history", "schema_migrations", "schema_versions")

QUERIES = {
    "knex_migrations": "SELECT name, NULL AS checksum FROM knex_migrations ORDER BY id",
    "flyway_schema_history": "SELECT coalesce(script, '') AS name, version, description, checksum::text AS checksum "
                             "FROM flyway_schema_history WHERE success ORDER BY installed_rank",
    "schema_migrations": "SELECT version::text AS name, NULL AS checksum FROM schema_migrations ORDER BY version",
    "schema_versions": "SELECT migration_id AS name, checksum FROM schema_versions ORDER BY id",
}


class BaselineError(ConfigError):
    """The legacy table cannot be read (missing, an mreg mirror, a dirty golang-migrate row, wrong target type)."""


def _stem(name: str) -> str:
    base = PurePosixPath(str(name)).name
    return base.split(".", 1)[0] if "." in base else base


def _keys(m) -> set[str]:
    """Names a legacy table may know this migration by."""
    keys = {m.id, _stem(m.path), PurePosixPath(m.path).name}
    legacy = m.metadata.get("legacy")
    if isinstance(legacy, dict):
        for v in legacy.values():
            if isinstance(v, str):
                keys.update({v, _stem(v), PurePosixPath(v).name})
    elif isinstance(legacy, str):
        keys.update({legacy, _stem(legacy), PurePosixPath(legacy).name})
    for k in list(keys):
        mt = re.match(r"^[VU]?(\d+(?:[._]\d+)*)", k)
        if mt:
            keys.add("version:" + mt.group(1).replace("_", "."))
    return {k.lower() for k in keys if k}


def _match(row: dict, source: str, migrations: list) -> tuple[object, str]:
    name = str(row.get("name") or "")
    candidates = {name.lower(), _stem(name).lower(), PurePosixPath(name).name.lower()}
    if source == "flyway_schema_history":
        v, d = str(row.get("version") or ""), str(row.get("description") or "").replace(" ", "_")
        candidates |= {f"v{v}__{d}".lower(), "version:" + v.replace("_", ".")}
    if source == "schema_migrations":
        candidates.add("version:" + name)
    for m in migrations:
        if candidates & _keys(m):
            return m, "name"
    if row.get("checksum"):
        want = str(row["checksum"]).removeprefix("sha256:").lower()
        for m in migrations:
            if m.checksum.removeprefix("sha256:") == want:
                return m, "checksum"
    return None, "no registered migration has this name or checksum"


def _pick_source(session, source: str) -> str:
    names = SOURCES if source == "auto" else (source,)
    if source not in ("auto", *SOURCES):
        raise BaselineError(f"unknown --from {source!r}", hint=f"use auto or one of: {', '.join(SOURCES)}")
    for name in names:
        rows = session.query("SELECT to_regclass(%s) IS NOT NULL AS present" % _literal(name))
        if not rows or not rows[0]["present"]:
            continue
        if name == "schema_versions":
            cols = session.query("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = "
                                 "'schema_versions' AND column_name = 'leaf'")
            if cols and cols[0]["n"]:
                if source != "auto":
                    raise BaselineError("schema_versions here is mreg's own mirror, not a legacy table",
                                        hint="nothing to adopt: the target is already managed by mreg")
                continue
        return name
    raise BaselineError(f"no legacy tracking table ({', '.join(names)}) in this database",
                        hint="name the table with --from, or check the target's URL")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def baseline(cfg, *, target: str, source: str = "auto", dry_run: bool = False) -> dict:
    """Adopt ``target``; return {"source", "rows", "matched", "unmatched", "skipped"}."""
    from registry.plan import log_state, targets_for

    t = cfg.target(target)
    if t.type not in ("postgresql", "timescale"):
        raise BaselineError(f"baseline reads SQL tracking tables; target {target} is {t.type}",
                            hint="baseline a PostgreSQL or TimescaleDB target")
    migrations = [m for m in load_migrations(cfg) if target in targets_for(m, cfg.targets)]
    eng = open_engine(cfg, [target], required=target, sign=not dry_run)
    try:
        if not dry_run:
            lock_all(eng, f"{actor()} baseline", 60.0)
            sync_all(eng)
        else:
            eng.logs[target].sync()
        log, adapter = eng.logs[target], eng.adapters[target]
        state = log_state(log.statements())
        with adapter.session(True) as s:
            chosen = _pick_source(s, source)
            if chosen == "schema_migrations":
                dirty = s.query("SELECT count(*) AS n FROM information_schema.columns WHERE "
                                "table_name = 'schema_migrations' AND column_name = 'dirty'")
                if dirty and dirty[0]["n"] and s.query("SELECT count(*) AS n FROM schema_migrations WHERE dirty")[0]["n"]:
                    raise BaselineError("schema_migrations has a dirty row (an interrupted golang-migrate run)",
                                        hint="finish or undo that migration by hand, clear the flag, then baseline")
            rows = s.query(QUERIES[chosen])
        matched, unmatched, skipped = [], [], []
        for row in rows:
            m, how = _match(row, chosen, migrations)
            if m is None:
                unmatched.append({"name": str(row.get("name")), "reason": how})
                continue
            legacy_sum = str(row.get("checksum") or "").removeprefix("sha256:").lower()
            if chosen == "schema_versions" and legacy_sum and legacy_sum != m.checksum.removeprefix("sha256:"):
                unmatched.append({"name": str(row.get("name")), "reason":
                                  f"matched {m.id} by name but its checksum differs (legacy {legacy_sum[:12]}…, "
                                  f"file {m.checksum[7:19]}…)"})
                continue
            if any(state.done(m.id, p) for p in m.phase_names) or any(x["migration"] == m.id for x in matched):
                skipped.append(m.id)
                continue
            matched.append({"migration": m.id, "name": str(row.get("name")), "by": how, "m": m})
        if not dry_run:
            for item in matched:
                m = item["m"]
                log.record("baseline", m, {"phases": m.phase_names, "source": chosen, "legacy_name": item["name"],
                                           "matched_by": item["by"]})
        return {"target": target, "source": chosen, "rows": [str(r.get("name")) for r in rows],
                "matched": [{k: v for k, v in x.items() if k != "m"} for x in matched],
                "unmatched": unmatched, "skipped": skipped, "dry_run": dry_run}
    finally:
        try:
            if not dry_run:
                write_checkpoints(eng)
        finally:
            eng.close()


def repair(cfg, migration_id: str, *, target: str | None = None, reason: str | None = None) -> dict:
    """Ledger a ``repair`` on every target whose log holds another checksum for ``migration_id``."""
    from registry.plan import UnknownMigration, log_state, targets_for

    by_id = {m.id: m for m in load_migrations(cfg)}
    if migration_id not in by_id:
        raise UnknownMigration(f"{migration_id!r} is not a registered migration",
                               hint="`mreg status` lists the applied ones", migration=migration_id)
    m = by_id[migration_id]
    names = [n for n in targets_for(m, cfg.targets) if target in (None, n)]
    eng = open_engine(cfg, names, required=target, sign=True)
    out = []
    try:
        lock_all(eng, f"{actor()} repair", 60.0)
        sync_all(eng)
        for name, log in sorted(eng.logs.items()):
            old = log_state(log.statements()).accepted_checksum(m.id)
            if old is None or old == m.checksum:
                continue
            log.record("repair", m, {"old_checksum": old, "new_checksum": m.checksum, "reason": reason})
            out.append({"target": name, "old_checksum": old, "new_checksum": m.checksum})
        return {"migration": m.id, "repaired": out, "registry": _accept_in_registry(cfg, m.id, reason),
                "unavailable": sorted(eng.unavailable)}
    finally:
        try:
            write_checkpoints(eng)
        finally:
            eng.close()


def _accept_in_registry(cfg, migration_id: str, reason: str | None):
    """The registry's side of a repair (a ``repair`` in the registry log), when the registry knows the file."""
    from registry.errors import MregError
    from registry.registration import accept_checksum

    try:
        return accept_checksum(cfg, migration_id, reason=reason)
    except MregError:
        return None  # not registered (a project that was never scanned): the targets' repair stands alone
