"""Registration: migrations found in Git become ``register`` statements in the registry log.

The registry log is ``<project>/registry`` in catalog.db. A migration is registered
once, with its id, version, checksum, path and, in ``details.record``, its database,
scheme and Git provenance (first commit, revisions, renames, deletion). When its
record changes (a new location, a deletion, a new revision) it is registered again
with the *registered* checksum unchanged: a changed checksum is a finding
(``edited_after_commit``) until an operator accepts it (``mreg repair``, a ``repair``
statement). Every command that appends writes a checkpoint.

This module imports no sqlite-utils, dulwich or rich at module level: the post-commit
hook (:mod:`registry.postcommit`) uses :func:`register_records` directly.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from registry import catalog
from registry.errors import ConfigError

RECORD_KEYS = ("path", "paths", "database", "scheme", "version", "version_raw", "status", "first_commit",
               "revisions", "renames", "deleted", "declared_id", "dependencies", "type", "name", "kind")


@dataclass
class Registered:
    """What one registration pass did."""

    registered: list[str] = field(default_factory=list)  # ids registered for the first time
    updated: list[str] = field(default_factory=list)  # ids registered again (record changed)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # not committed yet: registered on commit
    checkpoint: str | None = None


def record_of(m: dict) -> dict:
    return {k: m.get(k) for k in RECORD_KEYS}


def actor_name() -> str:
    try:
        return getpass.getuser() or "mreg"
    except (KeyError, OSError):
        return "mreg"


def plan_statements(conn: sqlite3.Connection, origin: str, migrations: list[dict], actor: str,
                    ) -> tuple[list[dict], list[bytes], Registered]:
    """The ``register`` statements ``migrations`` need, given what the catalog projection holds,
    with their canonical bytes (validated and serialised once, by ``new_statement_bytes``)."""
    return _plan(_known(conn, migrations), origin, migrations, actor)


def _known(conn: sqlite3.Connection, migrations: list[dict]) -> dict[str, tuple[str, dict]]:
    """``{id: (registered checksum, record)}`` of the ``migrations`` the catalog holds."""
    ids = [m["id"] for m in migrations]
    known = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        known.update({r[0]: (r[1], json.loads(r[2])) for r in conn.execute(
            f"SELECT id, registered_checksum, record FROM migrations WHERE id IN ({','.join('?' * len(chunk))})",
            chunk)})
    return known


def _plan(known: dict[str, tuple[str, dict]], origin: str, migrations: list[dict], actor: str,
          ) -> tuple[list[dict], list[bytes], Registered]:
    from ledger.statement import new_statement_bytes

    done = Registered()
    out = []
    payloads = []
    for m in migrations:
        if not m.get("first_commit") or not m.get("checksum"):
            done.skipped.append(m["id"])
            continue
        rec = record_of(m)
        prev = known.get(m["id"])
        if prev is None:
            registered, change = m["checksum"], "new"
        else:
            registered, old = prev
            old_rec = {k: old.get(k) for k in RECORD_KEYS}
            if old_rec == json.loads(json.dumps(rec)) and old.get("checksum") == m["checksum"]:
                done.unchanged += 1
                continue
            change = "updated"
        stmt, payload = new_statement_bytes(
            ledger=origin, type="register", actor=actor,
            migration={"id": m["id"], "version": str(m.get("version") or "0.0.0"), "checksum": registered,
                       "path": m["path"]},
            details={"change": change, "current_checksum": m["checksum"], "record": rec},
        )
        out.append(stmt)
        payloads.append(payload)
        (done.registered if change == "new" else done.updated).append(m["id"])
    return out, payloads, done


def register_records(cfg, migrations: list[dict], *, parse_errors: list[dict] | None = None,
                     contents: list[tuple[str, str]] | None = None, actor: str | None = None,
                     findings: bool = True, conn: sqlite3.Connection | None = None,
                     prepared: "Prepared | None" = None) -> Registered:
    """Register ``migrations`` (scan records) in the registry log and project them into the catalog.

    ``findings=False`` leaves the findings table for the next scan. ``conn`` is an open catalog
    connection to use (the post-commit hook's; left open), else one is opened and closed.
    ``prepared``: the statements for ``migrations`` planned and signed in a worker process while
    the scan saved its state (:func:`prepare_ahead`); used when the catalog has not changed since.
    """
    path = Path(cfg.catalog.value)
    origin = catalog.registry_origin(cfg)
    own = conn is None
    conn = catalog.connect(path) if own else conn
    try:
        planned = prepared.take(conn) if prepared is not None else None
        if planned is not None:
            stmts, payloads, signatures, done = planned
        else:
            stmts, payloads, done = plan_statements(conn, origin, migrations, actor or actor_name())
            signatures = None
        if stmts:
            from ledger.keys import load_signer
            from ledger.log import parse_leaf
            from ledger.store import LedgerStore

            signer = load_signer(cfg.key.value)
            if signatures is not None and signer.keyid != prepared.keyid:
                stmts, payloads, done = plan_statements(conn, origin, migrations, actor or actor_name())
                signatures = None
            store = LedgerStore(path)
            try:
                leaves = store.append_many(origin, stmts, signer, payloads=payloads, signatures=signatures)
                done.checkpoint = store.checkpoint(origin, signer)
            finally:
                store.close()
        with conn:  # the projection, contents and findings: one transaction (one fsync)
            if stmts:
                # append_many wrote the statements in order at consecutive positions: the first leaf
                # says where they start, and each leaf carries its statement's canonical bytes, so the
                # statements themselves project as their parsed leaves would.
                first = parse_leaf(leaves[0]).seq
                catalog.project_many(conn, [(stmt, first + i) for i, stmt in enumerate(stmts)])
            if contents:
                catalog.store_contents(conn, contents)
            if findings:
                catalog.refresh_findings(conn, parse_errors)
    finally:
        if own:
            conn.close()
    return done


def scan_and_register(cfg, *, path: Path | None = None, rev: str | None = None, all_refs: bool = False,
                      full: bool = False):
    """``mreg scan``: discover, register, project. Yields Progress records, then ``(ScanResult, Registered)``."""
    from registry.discovery import Scope, ScanResult, discover

    root = Path(path).resolve() if path else cfg.root
    result = None
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        accepted = catalog.accepted_commits(conn)
    finally:
        conn.close()
    ahead: list[Prepared] = []

    def prepare(migrations: list[dict], changed: set[str] | None, pool, close) -> None:
        try:
            prepared = prepare_ahead(cfg, _todo(cfg, migrations, changed), pool, close)
        except BaseException:
            close()
            raise
        if prepared is None:
            close()
        else:
            ahead.append(prepared)

    try:
        for item in discover(root, Path(cfg.catalog.value), Scope.from_config(cfg), rev=rev, all_refs=all_refs,
                             full=full, accepted=accepted, ahead=prepare):
            if isinstance(item, ScanResult):
                result = item
            else:
                yield item
        parse_errors = [f for f in result.findings if f["kind"] == "parse_error"]
        todo = ahead[0].migrations if ahead else _todo(cfg, result.migrations, result.changed)
        contents = [(m["checksum"], m["content"]) for m in todo if m.get("checksum") and m.get("content")]
        quiet = result.new_commits == 0 and not todo and _same_errors(cfg, parse_errors)
        done = register_records(cfg, todo, parse_errors=parse_errors, contents=contents, findings=not quiet,
                                prepared=ahead[0] if ahead else None)
    finally:
        for p in ahead:
            p.close()
    done.unchanged += len(result.migrations) - len(todo)
    if contents:
        catalog.enable_search(Path(cfg.catalog.value))
    yield result, done


def _todo(cfg, migrations: list[dict], changed: set[str] | None) -> list[dict]:
    """The scan records that may need a statement (and a content row): only migrations whose lineage
    changed in this scan (``changed``; None: all), new to the catalog, or not committed yet; the
    others were compared when they last changed. A full scan compares everything."""
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        known = {r[0] for r in conn.execute("SELECT id FROM migrations")}
    finally:
        conn.close()
    return [m for m in migrations if changed is None or m["id"] in changed
            or m["id"] not in known or not m.get("first_commit")]


def sign_planned(known: dict, origin: str, migrations: list[dict], actor: str, seed: bytes, comment: str,
                 ) -> tuple[list[bytes], list[str], Registered]:
    """Run in a scan's worker process: plan the ``register`` statements of ``migrations`` (given the
    catalog's ``known`` records) and sign them: ``(canonical payloads, signatures, what they do)``."""
    from ledger.keys import Signer
    from ledger.store import sign_payloads

    _stmts, payloads, done = _plan(known, origin, migrations, actor)
    return payloads, sign_payloads(payloads, Signer.from_seed(seed, comment)), done


class Prepared:
    """Statements planned and signed in the scan's worker process (:func:`prepare_ahead`) while the
    scan saves its state; :meth:`take` gives them if the catalog still holds what they were planned
    against (else None: plan here), and :meth:`close` ends the pool."""

    def __init__(self, migrations: list[dict], known: dict, keyid: str, future, close) -> None:
        self.migrations, self.known, self.keyid, self.future, self._close = migrations, known, keyid, future, close

    def take(self, conn: sqlite3.Connection):
        import orjson

        try:
            payloads, signatures, done = self.future.result()
        except Exception:  # a worker that died, or a pool shut down: plan and sign here
            return None
        if _known(conn, self.migrations) != self.known:
            return None  # another process registered meanwhile
        return [orjson.loads(p) for p in payloads], payloads, signatures, done

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def prepare_ahead(cfg, migrations: list[dict], pool, close=None) -> Prepared | None:
    """Send the planning and signing of ``migrations``' statements to ``pool`` (the scan's worker);
    ``close`` ends the pool (:meth:`Prepared.close`). None when the pool is broken (a worker died)."""
    from concurrent.futures.process import BrokenProcessPool

    from ledger.keys import load_signer

    signer = load_signer(cfg.key.value)
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        known = _known(conn, migrations)
    finally:
        conn.close()
    try:
        future = pool.submit(sign_planned, known, catalog.registry_origin(cfg), migrations, actor_name(),
                             signer.seed, signer.comment)
    except BrokenProcessPool:
        return None
    return Prepared(migrations, known, signer.keyid, future, close)


def _same_errors(cfg, parse_errors: list[dict]) -> bool:
    """Whether the stored parse errors equal ``parse_errors`` (then findings need no refresh)."""
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        stored = [(k, json.loads(p), m) for k, p, m in
                  conn.execute("SELECT kind, paths, message FROM scan_findings ORDER BY n")]
        has_findings = conn.execute("SELECT count(*) FROM migrations").fetchone()[0] > 0
    finally:
        conn.close()
    return has_findings and stored == [(f["kind"], f["paths"], f["message"]) for f in parse_errors]


def list_migrations(cfg, *, database: str | None = None, status: str | None = None) -> list[dict]:
    """``mreg list``: the catalog's migrations (public JSON shape), filtered."""
    from registry.discovery.store import migration_refs

    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        rows = catalog.records(conn)
        refs = migration_refs(conn)
    finally:
        conn.close()
    return [{**r, "refs": refs.get(r["id"], [])} for r in rows if (database is None or r["database"] == database)
            and (status is None or r["status"] == status)]


class MigrationNotFound(ConfigError):
    """``mreg show ID`` names no migration the catalog knows."""


def show_migration(cfg, mid: str) -> dict:
    """``mreg show``: one migration with its revisions, locations, dependencies and findings."""
    from registry.discovery.store import migration_refs

    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        catalog_rows = catalog.records(conn)
        rows = [r for r in catalog_rows if r["id"] == mid or r.get("declared_id") == mid or mid in r["paths"]]
        if not rows:
            raise MigrationNotFound(f"no migration {mid!r} in the catalog", id=mid,
                                    hint="run `mreg scan` first, or `mreg list` to see the ids")
        found = [f for f in catalog.findings(conn) if rows[0]["id"] in f["ids"]]
        content = conn.execute("SELECT content FROM migration_contents WHERE checksum = ?",
                               (rows[0]["checksum"],)).fetchone()
        pairs = undo_pairs(conn)
        refs = migration_refs(conn)
    finally:
        conn.close()
    out = dict(rows[0])
    out["refs"] = refs.get(out["id"], [])  # the refs whose tip holds it, as of the last scan
    out["findings"] = found
    out["content"] = content[0] if content else None
    path_of = {r["id"]: r["path"] for r in catalog_rows}
    undo = next((u for u, v in pairs.items() if v == out["id"]), None)
    out["undo"] = {"id": undo, "path": path_of.get(undo)} if undo else None  # its Flyway U<n>__ file
    out["undo_of"] = pairs.get(out["id"])  # the migration this undo file rolls back
    return out


def registered_migrations(cfg) -> list:
    """What the registry knows, as ``registry.model.Migration`` objects read from the working tree.

    Active registered migrations whose file is present and parses; ids are the registered
    (canonical) ids. The engine plans from these. A Flyway undo file (``U<n>__``) is never a
    migration to apply: its statements become the rollback of the ``V<n>__`` migration it
    undoes (:func:`registry.discovery.findings.undo_pairs`) when that file has no rollback
    section of its own.
    """
    from registry.parse import ParseError, parse_migration

    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        rows = conn.execute("SELECT id, path, database, registered_checksum, scheme FROM migrations "
                            "WHERE status = 'active' ORDER BY id").fetchall()
        pairs = undo_pairs(conn)
    finally:
        conn.close()
    paths = {row[0]: row[1] for row in rows}
    undo_file = {versioned: paths[undo] for undo, versioned in pairs.items() if undo in paths}

    def read(rel: str, database: str | None):
        file = Path(cfg.root) / rel
        if not file.is_file():
            return None
        try:
            return parse_migration(rel, file.read_bytes(), database=database)
        except ParseError:
            return None

    out = []
    for mid, rel, database, _registered, scheme in rows:
        if scheme == "flyway-undo":
            continue
        m = read(rel, database)
        if m is None:
            continue
        m.id = mid
        if mid in undo_file and not any(m.rollback.values()):
            undo = read(undo_file[mid], database)
            steps = [step for phase in (undo.phases.values() if undo else ()) for step in phase]
            if steps:  # the undo file undoes the whole migration: it runs when expand is undone
                m.rollback = {"expand": steps}
        out.append(m)
    return out


def undo_pairs(conn: sqlite3.Connection) -> dict[str, str]:
    """``{undo id: id of the migration it undoes}`` among the catalog's active migrations."""
    from registry.discovery.findings import undo_pairs as pair

    records = [{"id": mid, "path": path, "scheme": scheme, "status": status,
                "paths": json.loads(paths) if paths else [path], "version_raw": version}
               for mid, path, scheme, status, paths, version in conn.execute(
                   "SELECT id, path, scheme, status, json_extract(record, '$.paths'), "
                   "json_extract(record, '$.version_raw') FROM migrations "
                   "WHERE scheme IN ('flyway', 'neo4j-migrations', 'flyway-undo')")]
    return pair(records)[0]


def accept_checksum(cfg, migration_id: str, *, reason: str | None = None, actor: str | None = None) -> dict | None:
    """Accept a registered migration's current checksum: a ``repair`` statement in the registry log.

    Returns ``{"migration", "old_checksum", "new_checksum"}``, or None when nothing differs.
    ``mreg repair`` (the engine's command) calls this for the registry's side of a repair.
    """
    from ledger.keys import load_signer
    from ledger.log import parse_leaf
    from ledger.statement import new_statement
    from ledger.store import LedgerStore

    path = Path(cfg.catalog.value)
    conn = catalog.connect(path)
    try:
        row = conn.execute("SELECT id, path, version, checksum, registered_checksum FROM migrations WHERE id = ?",
                           (migration_id,)).fetchone()
        if row is None:
            raise MigrationNotFound(f"no migration {migration_id!r} in the catalog", id=migration_id,
                                    hint="run `mreg scan` first, or `mreg list` to see the ids")
        mid, rel, version, current, registered = row
        if current == registered:
            return None
        origin = catalog.registry_origin(cfg)
        stmt = new_statement(ledger=origin, type="repair", actor=actor or actor_name(),
                             migration={"id": mid, "version": str(version or "0.0.0"), "checksum": current,
                                        "path": rel},
                             details={"old_checksum": registered, "new_checksum": current,
                                      **({"reason": reason} if reason else {})})
        signer = load_signer(cfg.key.value)
        store = LedgerStore(path)
        try:
            leaf = store.append(origin, stmt, signer)
            store.checkpoint(origin, signer)
        finally:
            store.close()
        with conn:
            parsed = parse_leaf(leaf)
            catalog.project(conn, parsed.statement, parsed.seq)
            catalog.refresh_findings(conn)
    finally:
        conn.close()
    return {"migration": mid, "old_checksum": registered, "new_checksum": current}
