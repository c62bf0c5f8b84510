"""The catalog: tables an auditor reads in catalog.db, projected from the registry log.

Projection tables (rebuilt by :func:`rebuild` from the log ``<project>/registry``,
giving the same rows):

- ``migrations``: one row per registered migration (latest ``register`` statement
  wins; ``repair`` accepts a new checksum; ``consolidate`` moves it);
- ``revisions``: every content a migration had in Git (commit, date, checksum);
- ``locations``: every path where it stands or stood (``current`` 1/0);
- ``dependencies``: declared dependencies (``migration_id`` -> ``depends_on``);
- ``consolidations``: every move ``mreg consolidate`` made (legacy path -> canonical path);
- ``findings``: what the registry reports (computed from the rows above plus the
  last scan's parse errors, kept in ``scan_findings``).

``migration_contents`` (checksum -> text) holds file contents for full-text search
(``migration_contents_fts``); it is content-addressed, filled by the scan from Git.

Row writes use plain ``sqlite3`` so the post-commit hook stays lean; table creation,
full-text search and rebuild use sqlite-utils. Table and column descriptions for
Datasette come from :func:`metadata` (written to ``.mreg/datasette-metadata.json`` by ``mreg serve``).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

PROJECTION_TABLES = ("migrations", "revisions", "locations", "dependencies", "consolidations", "findings")

SCHEMA = """
CREATE TABLE IF NOT EXISTS migrations (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, database TEXT NOT NULL, scheme TEXT NOT NULL,
    version TEXT, type TEXT, name TEXT, kind TEXT, status TEXT NOT NULL,
    checksum TEXT NOT NULL, registered_checksum TEXT NOT NULL,
    first_sha TEXT, first_author TEXT, first_date TEXT, deleted_sha TEXT, deleted_date TEXT,
    declared_id TEXT, registered_seq INTEGER NOT NULL, updated_seq INTEGER NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions (
    migration_id TEXT NOT NULL, n INTEGER NOT NULL, sha TEXT, date TEXT, checksum TEXT,
    PRIMARY KEY (migration_id, n));
CREATE TABLE IF NOT EXISTS locations (
    migration_id TEXT NOT NULL, path TEXT NOT NULL, current INTEGER NOT NULL,
    PRIMARY KEY (migration_id, path));
CREATE TABLE IF NOT EXISTS dependencies (
    migration_id TEXT NOT NULL, depends_on TEXT NOT NULL, PRIMARY KEY (migration_id, depends_on));
CREATE TABLE IF NOT EXISTS findings (
    n INTEGER PRIMARY KEY, kind TEXT NOT NULL, migration_ids TEXT NOT NULL, paths TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scan_findings (
    n INTEGER PRIMARY KEY, kind TEXT NOT NULL, paths TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS consolidations (
    migration_id TEXT NOT NULL, from_path TEXT NOT NULL, to_path TEXT NOT NULL, move_commit TEXT,
    commit_sha TEXT, old_checksum TEXT, checksum TEXT, seq INTEGER NOT NULL, PRIMARY KEY (seq));
CREATE TABLE IF NOT EXISTS migration_contents (checksum TEXT PRIMARY KEY, content TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS target_status (
    target TEXT NOT NULL, type TEXT NOT NULL, migration_id TEXT NOT NULL, state TEXT NOT NULL,
    phases_done TEXT NOT NULL, phases_pending TEXT NOT NULL, detail TEXT, checked_at TEXT NOT NULL,
    PRIMARY KEY (target, migration_id));
CREATE INDEX IF NOT EXISTS migrations_database ON migrations(database);
CREATE INDEX IF NOT EXISTS migrations_status ON migrations(status);
CREATE INDEX IF NOT EXISTS migrations_checksum ON migrations(checksum);
CREATE INDEX IF NOT EXISTS locations_path ON locations(path);
"""


def connect(path: Path) -> sqlite3.Connection:
    """catalog.db with the projection tables (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def registry_origin(cfg) -> str:
    return f"{cfg.project.value}/registry"


# -- projection of one statement ------------------------------------------------------

def project(conn: sqlite3.Connection, stmt: dict, seq: int) -> None:
    """Apply one registry-log statement to the projection tables (no commit)."""
    kind = stmt.get("type")
    mig = stmt.get("migration") or {}
    details = stmt.get("details") or {}
    if kind == "register":
        _register(conn, mig, details, seq)
    elif kind == "repair" and mig.get("id"):
        conn.execute("UPDATE migrations SET registered_checksum = ?, updated_seq = ? WHERE id = ?",
                     (mig["checksum"], seq, mig["id"]))
    elif kind == "consolidate" and mig.get("id"):
        new_path = details.get("to") or mig.get("path")
        row = conn.execute("SELECT record FROM migrations WHERE id = ?", (mig["id"],)).fetchone()
        if row and new_path:
            record = json.loads(row[0])
            record["path"] = new_path
            record["paths"] = sorted({p for p in record.get("paths", []) if p != details.get("from")} | {new_path})
            record.setdefault("renames", []).append(
                {"sha": details.get("commit"), "date": stmt.get("time"), "from": details.get("from"), "to": new_path})
            if details.get("checksum"):
                record["checksum"] = details["checksum"]
            # The header the consolidation added is accepted by this statement.
            _write(conn, mig["id"], record, mig["checksum"], seq)
        conn.execute(
            "INSERT OR REPLACE INTO consolidations (migration_id, from_path, to_path, move_commit, commit_sha, "
            "old_checksum, checksum, seq) VALUES (?,?,?,?,?,?,?,?)",
            (mig["id"], details.get("from") or "", new_path or "", details.get("move_commit"), details.get("commit"),
             details.get("old_checksum"), mig["checksum"], seq))


def accepted_commits(conn: sqlite3.Connection) -> set[str]:
    """Commits whose content changes a ``consolidate`` statement accepted (not edits)."""
    return {r[0] for r in conn.execute("SELECT commit_sha FROM consolidations WHERE commit_sha IS NOT NULL")}


def _register(conn, mig: dict, details: dict, seq: int) -> None:
    _write(conn, mig["id"], _register_record(mig, details), mig["checksum"], seq)


def _register_record(mig: dict, details: dict) -> dict:
    """The record a ``register`` statement projects: its ``details.record`` with path and checksum."""
    record = dict(details.get("record") or {})
    record.setdefault("path", mig.get("path"))
    record.setdefault("paths", [mig.get("path")])
    record["checksum"] = details.get("current_checksum") or mig["checksum"]
    return record


def _write(conn, mid: str, record: dict, registered: str, seq: int) -> None:
    row = conn.execute("SELECT registered_seq FROM migrations WHERE id = ?", (mid,)).fetchone()
    _write_rows(conn, [_rows(mid, record, registered, seq, row[0] if row else seq)])


def _rows(mid: str, record: dict, registered: str, seq: int, reg_seq: int) -> tuple:
    """The rows one migration's record gives: ``(migrations row, revisions, locations, dependencies)``."""
    first = record.get("first_commit") or {}
    deleted = record.get("deleted") or {}
    migration = (mid, record.get("path"), record.get("database") or "postgresql", record.get("scheme") or "canonical",
                 record.get("version"), record.get("type"), record.get("name"), record.get("kind"),
                 record.get("status") or "active", record["checksum"], registered, first.get("sha"),
                 first.get("author"), first.get("date"), deleted.get("sha"), deleted.get("date"),
                 record.get("declared_id"), reg_seq, seq, json.dumps(record, sort_keys=True))
    revisions = [(mid, i, r.get("sha"), r.get("date"), r.get("checksum"))
                 for i, r in enumerate(record.get("revisions") or [])]
    current = set(record.get("paths") or []) if record.get("status", "active") == "active" else set()
    places = set(record.get("paths") or []) | {r.get("from") for r in record.get("renames") or []} | {
        record.get("path")}
    locations = [(mid, p, int(p in current)) for p in sorted(x for x in places if x)]
    dependencies = [(mid, d) for d in sorted(set(record.get("dependencies") or []))]
    return migration, revisions, locations, dependencies


def _write_rows(conn, rows: list[tuple]) -> None:
    """Replace the rows of these migrations (each id once) with ``rows`` (from :func:`_rows`)."""
    ids = [r[0][0] for r in rows]
    conn.executemany(
        "INSERT OR REPLACE INTO migrations (id, path, database, scheme, version, type, name, kind, status, "
        "checksum, registered_checksum, first_sha, first_author, first_date, deleted_sha, deleted_date, "
        "declared_id, registered_seq, updated_seq, record) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [r[0] for r in rows])
    for table in ("revisions", "locations", "dependencies"):
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            conn.execute(f"DELETE FROM {table} WHERE migration_id IN ({','.join('?' * len(chunk))})", chunk)
    conn.executemany("INSERT INTO revisions (migration_id, n, sha, date, checksum) VALUES (?,?,?,?,?)",
                     [x for r in rows for x in r[1]])
    conn.executemany("INSERT INTO locations (migration_id, path, current) VALUES (?,?,?)",
                     [x for r in rows for x in r[2]])
    conn.executemany("INSERT INTO dependencies (migration_id, depends_on) VALUES (?,?)",
                     [x for r in rows for x in r[3]])


def project_many(conn: sqlite3.Connection, items: list[tuple[dict, int]]) -> None:
    """:func:`project` each ``(statement, seq)`` in order (no commit), giving the same rows; runs of
    ``register`` statements for distinct migrations are written with one ``executemany`` per table."""
    run: dict[str, tuple[dict, dict, int]] = {}  # id -> (migration, record, seq)

    def flush() -> None:
        if not run:
            return
        ids = list(run)
        seen = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            seen.update(conn.execute(
                f"SELECT id, registered_seq FROM migrations WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        _write_rows(conn, [_rows(mid, record, mig["checksum"], seq, seen.get(mid, seq))
                           for mid, (mig, record, seq) in run.items()])
        run.clear()

    for stmt, seq in items:
        mig = stmt.get("migration") or {}
        if stmt.get("type") == "register" and mig.get("id") not in run:
            run[mig["id"]] = (mig, _register_record(mig, stmt.get("details") or {}), seq)
        else:
            flush()
            project(conn, stmt, seq)
    flush()


# -- reading ---------------------------------------------------------------------------

def records(conn: sqlite3.Connection) -> list[dict]:
    """Every migration the catalog holds, as the public JSON shape of ``mreg list --json``."""
    out = []
    for row in conn.execute("SELECT id, record, registered_checksum, registered_seq FROM migrations ORDER BY id"):
        rec = json.loads(row[1])
        out.append(public(row[0], rec, row[2], row[3]))
    return out


def public(mid: str, rec: dict, registered: str, seq: int | None) -> dict:
    return {
        "id": mid,
        "path": rec.get("path"),
        "paths": rec.get("paths") or [rec.get("path")],
        "database": rec.get("database"),
        "scheme": rec.get("scheme"),
        "checksum": rec.get("checksum"),
        "status": rec.get("status") or "active",
        "first_commit": rec.get("first_commit"),
        "version": rec.get("version"),
        "type": rec.get("type"),
        "name": rec.get("name"),
        "registered_checksum": registered,
        "registered_seq": seq,
        "declared_id": rec.get("declared_id"),
        "dependencies": rec.get("dependencies") or [],
        "revisions": rec.get("revisions") or [],
        "renames": rec.get("renames") or [],
        "deleted": rec.get("deleted"),
    }


def findings(conn: sqlite3.Connection) -> list[dict]:
    return [{"kind": k, "paths": json.loads(p), "message": m, "ids": json.loads(i)}
            for k, i, p, m in conn.execute("SELECT kind, migration_ids, paths, message FROM findings ORDER BY n")]


# -- findings and contents ------------------------------------------------------------

def refresh_findings(conn: sqlite3.Connection, parse_errors: list[dict] | None = None) -> list[dict]:
    """Recompute the ``findings`` table from the projection (and store ``parse_errors`` if given).

    Every finding is recomputed from every migration (what one change implies for the others, a
    version claimed twice or a dependency now provided, needs them all), but only the rows from
    the first one that differs are rewritten: a post-commit hook that adds a migration with no
    finding writes none. JSON is read and written with orjson (compact, keys sorted in ``data``).
    """
    import orjson

    from registry.discovery.findings import compute, finding

    if parse_errors is not None:
        conn.execute("DELETE FROM scan_findings")
        conn.executemany("INSERT INTO scan_findings (kind, paths, message) VALUES (?,?,?)",
                         [(f["kind"], json.dumps(f["paths"]), f["message"]) for f in parse_errors])
    errors = [finding(k, json.loads(p), m) for k, p, m in
              conn.execute("SELECT kind, paths, message FROM scan_findings ORDER BY n")]
    recs = []
    for mid, record, registered in conn.execute("SELECT id, record, registered_checksum FROM migrations ORDER BY id"):
        rec = orjson.loads(record)
        rec["id"] = mid
        rec["registered_checksum"] = registered
        rec.setdefault("paths", [rec.get("path")])
        rec.setdefault("revisions", [])
        rec.setdefault("status", "active")
        recs.append(rec)
    found = compute(recs, errors, accepted_commits(conn))
    for rec in recs:
        if rec["status"] == "active" and rec.get("checksum") != rec["registered_checksum"]:
            found.append(finding(
                "edited_after_commit", [rec["path"]],
                f"{rec['id']} ({rec['path']}) changed after it was registered: registered "
                f"{rec['registered_checksum']}, now {rec['checksum']}; accept with `mreg repair {rec['id']}`",
                [rec["id"]], registered=rec["registered_checksum"], checksum=rec["checksum"], registry=True))
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    rows = [(i, f["kind"], dumps(f["ids"]).decode(), dumps(f["paths"]).decode(), f["message"],
             dumps(f.get("data") or {}, option=sort).decode()) for i, f in enumerate(found)]
    stored = conn.execute("SELECT n, kind, migration_ids, paths, message, data FROM findings ORDER BY n").fetchall()
    same = 0
    while same < min(len(rows), len(stored)) and rows[same] == stored[same]:
        same += 1
    if same < len(stored):
        conn.execute("DELETE FROM findings WHERE n >= ?", (same,))
    conn.executemany("INSERT INTO findings (n, kind, migration_ids, paths, message, data) VALUES (?,?,?,?,?,?)",
                     rows[same:])
    return found


def store_contents(conn: sqlite3.Connection, items: list[tuple[str, str]]) -> None:
    conn.executemany("INSERT OR IGNORE INTO migration_contents (checksum, content) VALUES (?, ?)", items)


def enable_search(path: Path) -> None:
    """Full-text search over migration contents: an FTS5 table with triggers (idempotent).

    The table and triggers are sqlite-utils' ``enable_fts(["content"], create_triggers=True)``,
    written here as the SQL it runs (:data:`FTS_SQL`), so a first scan need not import
    sqlite-utils; tests/unit/test_catalog_fts.py holds the two to the same schema and rows.
    """
    conn = sqlite3.connect(str(path), timeout=60)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'migration_contents_fts'").fetchone():
            return  # already there (every scan after the first)
        with conn:
            for statement in FTS_SQL:
                conn.execute(statement)
    finally:
        conn.close()


FTS_SQL = (
    'CREATE VIRTUAL TABLE "migration_contents_fts" USING FTS5 (\n    "content",\n    content="migration_contents"\n)',
    'INSERT INTO "migration_contents_fts" (rowid, "content")\n    SELECT rowid, "content" FROM "migration_contents";',
    'CREATE TRIGGER "migration_contents_ai" AFTER INSERT ON "migration_contents" BEGIN\n'
    '  INSERT INTO "migration_contents_fts" (rowid, "content") VALUES (new.rowid, new."content");\nEND;',
    'CREATE TRIGGER "migration_contents_ad" AFTER DELETE ON "migration_contents" BEGIN\n'
    '  INSERT INTO "migration_contents_fts" ("migration_contents_fts", rowid, "content") '
    'VALUES(\'delete\', old.rowid, old."content");\nEND;',
    'CREATE TRIGGER "migration_contents_au" AFTER UPDATE ON "migration_contents" BEGIN\n'
    '  INSERT INTO "migration_contents_fts" ("migration_contents_fts", rowid, "content") '
    'VALUES(\'delete\', old.rowid, old."content");\n'
    '  INSERT INTO "migration_contents_fts" (rowid, "content") VALUES (new.rowid, new."content");\nEND;',
)


def search(conn: sqlite3.Connection, query: str) -> list[dict]:
    rows = conn.execute(
        "SELECT m.id, m.path, snippet(migration_contents_fts, 0, '[', ']', '…', 12) FROM migration_contents_fts "
        "JOIN migration_contents c ON c.rowid = migration_contents_fts.rowid "
        "JOIN migrations m ON m.checksum = c.checksum WHERE migration_contents_fts MATCH ? ORDER BY m.id",
        (query,))
    return [{"id": r[0], "path": r[1], "snippet": r[2]} for r in rows]


# -- rebuild ---------------------------------------------------------------------------

def statements(store, origin: str) -> list[tuple[int, dict]]:
    from ledger.log import parse_leaf

    out = []
    for leaf in store.leaves(origin):
        parsed = parse_leaf(leaf)
        out.append((parsed.seq, parsed.statement))
    return out


def rebuild(cfg) -> dict:
    """Drop and re-project every projection table from the registry log; return row counts."""
    from ledger.store import LedgerStore

    path = cfg.catalog.value
    conn = connect(path)
    store = LedgerStore(path)
    try:
        with conn:
            for t in ("migrations", "revisions", "locations", "dependencies", "consolidations", "findings"):
                conn.execute(f"DELETE FROM {t}")
            for seq, stmt in statements(store, registry_origin(cfg)):
                project(conn, stmt, seq)
            refresh_findings(conn)
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in PROJECTION_TABLES}
    finally:
        store.close()
        conn.close()
    enable_search(path)
    return counts


PLUGINS_DIR = Path(__file__).resolve().parent / "datasette_plugins"
SQL_TIME_LIMIT_MS = 10_000  # the canned queries decode every leaf they read (Datasette's default: 1 s)


def serve_args(catalog_path: Path, metadata_file: Path, host: str, port: int) -> list[str]:
    """The ``datasette`` command line that serves catalog.db read-only (``-i``) with the metadata and
    the plugin that makes the ledger readable (``PLUGINS_DIR``)."""
    return ["serve", "-i", str(catalog_path), "--metadata", str(metadata_file), "--host", host,
            "--port", str(port), "--plugins-dir", str(PLUGINS_DIR), "--setting", "sql_time_limit_ms",
            str(SQL_TIME_LIMIT_MS)]


def record_status(path: Path, targets: list[dict], checked_at: str) -> None:
    """Replace each checked target's rows of ``target_status`` (what ``mreg status`` found: one row per
    migration of the target, ``rows`` of each target object); unavailable targets keep their rows."""
    conn = connect(path)
    try:
        with conn:
            for t in targets:
                if not t.get("available"):
                    continue
                conn.execute("DELETE FROM target_status WHERE target = ?", (t["name"],))
                conn.executemany(
                    "INSERT INTO target_status (target, type, migration_id, state, phases_done, phases_pending, "
                    "detail, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t["name"], t["type"], mid, state, json.dumps(done), json.dumps(pending), detail, checked_at)
                     for mid, state, done, pending, detail in t["rows"]])
    finally:
        conn.close()


# -- Datasette -------------------------------------------------------------------------

TABLES = {
    "migrations": ("Migrations", "One row per registered migration, projected from the registry log.", {
        "id": "Canonical id YYYYMMDD_HHMMSS_<type>_<description>",
        "path": "Current path (the last one if deleted)",
        "database": "postgresql, timescale, neo4j or redis",
        "scheme": "Naming scheme of the file (canonical, flyway, neo4j-migrations, date, numbered, knex, module, script)",
        "version": "Declared version (header or module), else the scheme's version",
        "type": "schema, data, security or perf",
        "name": "Human-readable name",
        "kind": "Language of the file: sql, cypher, redis, module, python",
        "status": "active or deleted",
        "checksum": "sha256 of the file as it is in Git now (BOM removed, CRLF as LF)",
        "registered_checksum": "Checksum registered (or accepted by repair/consolidate); differs from checksum when edited",
        "first_sha": "Commit that added the file", "first_author": "Author of that commit",
        "first_date": "Date of that commit (UTC)", "deleted_sha": "Commit that deleted the file",
        "deleted_date": "Date of the deletion", "declared_id": "Id the file declares (header ID or module id)",
        "registered_seq": "Registry-log sequence number of the first register statement",
        "updated_seq": "Registry-log sequence number of the latest statement about it",
        "record": "The full record of the latest register statement (JSON)",
    }),
    "revisions": ("Revisions", "Every content a migration had in Git, in commit order.", {
        "migration_id": "Migration", "n": "0 for the first commit, then 1, 2, ...", "sha": "Commit",
        "date": "Commit date (UTC)", "checksum": "sha256 of the file at that commit"}),
    "locations": ("Locations", "Every path where a migration stands or stood.", {
        "migration_id": "Migration", "path": "Path in the repository", "current": "1 if it stands there now"}),
    "dependencies": ("Dependencies", "Declared dependencies.", {
        "migration_id": "Migration", "depends_on": "Id (or declared name) it depends on"}),
    "consolidations": ("Consolidations", "Moves made by mreg consolidate.", {
        "migration_id": "Migration", "from_path": "Legacy path", "to_path": "Canonical path",
        "move_commit": "Commit with the rename", "commit_sha": "Commit with the header",
        "old_checksum": "Checksum before", "checksum": "Checksum after", "seq": "Registry-log sequence number"}),
    "findings": ("Findings", "What the registry reports and never hides.", {
        "n": "Order", "kind": "duplicate_content, version_conflict, edited_after_commit, missing_dependency, "
                            "dependency_cycle, unpaired_undo or parse_error",
        "migration_ids": "Migrations involved (JSON)", "paths": "Paths involved (JSON)",
        "message": "What is wrong", "data": "Details (JSON): checksums, versions, commits"}),
    "migration_contents": ("Migration contents", "File contents by checksum, searchable.", {
        "checksum": "sha256 of the content", "content": "The text (capped at 200,000 characters)"}),
    "scan_findings": ("Parse errors of the last scan", "Files in migration folders that could not be read as "
                      "migrations (and the post-commit hook's); part of the findings table.", {
        "n": "Order", "kind": "parse_error", "paths": "Path (JSON)", "message": "path:line: what the parser says"}),
    "target_status": ("Status per target", "What the last `mreg status`, `mreg apply` or `mreg rollback` found "
                      "on each target it reached: one row per registered migration of the target (a target it could "
                      "not reach keeps its rows).", {
        "target": "Target name (mreg.toml)", "type": "postgresql, timescale, neo4j or redis",
        "migration_id": "Migration", "state": "applied, pending, partial (some phases done), interrupted "
                                              "(an attempt without an outcome) or failed (the last attempt failed)",
        "phases_done": "Phases applied for every tenant (JSON)", "phases_pending": "Phases not yet applied (JSON)",
        "detail": "interrupted: the phase and the statement reached; failed: the phase and the error",
        "checked_at": "When `mreg status` checked (UTC)"}),
}

# The ledger's own tables (docs/ledger-format.md): the signed logs themselves, append-only.
LEDGER_TABLES = {
    "ledger_leaves": ("Ledger leaves", "Every entry of every log: the exact leaf bytes (hash-chained, signed "
                      "statement inside) and, for browsing, fields read from them. Append-only.", {
        "origin": "The log: <project>/registry or <project>/<target>",
        "seq": "Position in its log (0, 1, 2, ...)",
        "leaf": "The leaf's exact bytes: canonical JSON of {v, seq, prev, envelope}; the only thing hashed "
                "(`mreg serve` shows the statement it carries; SQL: mreg_statement(leaf))",
        "leaf_hash": "SHA-256 of 0x00 || leaf (RFC 9162 leaf hash)",
        "event_type": "The statement's type: register, repair, consolidate, apply_started, apply_succeeded, ...",
        "event_id": "The statement's unique event id",
        "actor": "Who signed it", "time": "When, as the statement says (UTC)",
        "keyid": "The signing key's OpenSSH SHA256: fingerprint"}),
    "ledger_nodes": ("Merkle tree nodes", "Hashes of complete perfect subtrees of each log's Merkle tree "
                     "(level >= 1); roots and proofs are computed from them.", {
        "origin": "The log", "level": "Height of the subtree (2^level leaves)",
        "idx": "Its index among the subtrees of that level", "hash": "The subtree's hash (RFC 9162)"}),
    "ledger_checkpoints": ("Checkpoints", "Signed notes stating a log's origin, size and Merkle root "
                           "(C2SP tlog-checkpoint), written after every command that appends or received.", {
        "id": "Row number", "origin": "The log", "size": "Number of leaves the checkpoint commits to",
        "root": "Merkle root at that size", "note": "The signed note, as text",
        "created": "When this catalog stored it (UTC)"}),
    "ledger_witness_state": ("Witness cosignatures", "Cosignatures of checkpoints observed per witness.", {
        "id": "Row number", "origin": "The log", "witness": "The witness's name",
        "size": "Size it cosigned", "root": "Root it cosigned", "timestamp": "Cosignature time (seconds since "
                                                                             "the epoch)",
        "note": "The cosigned note"}),
}

# The scan's memory of Git (registry.discovery.store): hidden from browsing, rebuilt by `mreg scan --full`.
SCAN_TABLES = ("scan_commits", "scan_errors", "scan_files", "scan_lineages", "scan_meta", "scan_migration_refs",
               "scan_parsed", "scan_refs")

# Canned queries (SPEC §8). Those over the ledger read each leaf's statement with the SQL functions
# the serve plugin adds (registry/datasette_plugins/mreg_ledger.py: mreg_statement, mreg_leaf_hash,
# mreg_leaf_prev); they work in `mreg serve`, not in a bare SQLite client.
_STATEMENTS = "(SELECT origin, seq, time, actor, event_type, mreg_statement(leaf) AS s FROM ledger_leaves{where})"
CANNED = {
    "failed_applications": {
        "title": "Failed applications",
        "description": "Every failed apply, rollback and validation in every target's log, newest first: the "
                       "migration, phase, tenant, the error and SQLSTATE (a validation: the rule), who and when.",
        "sql": "SELECT time, json_extract(s, '$.target.id') AS target, event_type, "
               "json_extract(s, '$.migration.id') AS migration, json_extract(s, '$.details.phase') AS phase, "
               "json_extract(s, '$.details.tenant') AS tenant, json_extract(s, '$.details.reason') AS reason, "
               "json_extract(s, '$.details.error') AS error, json_extract(s, '$.details.sqlstate') AS sqlstate, "
               "json_extract(s, '$.details.rule') AS rule, actor, origin, seq FROM "
               + _STATEMENTS.format(where=" WHERE event_type IN ('apply_failed', 'rollback_failed', "
                                          "'validation_failed')") + " ORDER BY time DESC, origin, seq DESC"},
    "pending_per_target": {
        "title": "Pending per target",
        "description": "Per target, the registered migrations not fully applied, as the last `mreg status`, "
                       "apply or rollback found them (checked_at): pending, partial (some phases done), "
                       "interrupted or failed.",
        "sql": "SELECT target, migration_id, state, phases_done, phases_pending, detail, checked_at "
               "FROM target_status WHERE state != 'applied' ORDER BY target, migration_id"},
    "target_status_all": {
        "title": "Status per target",
        "description": "Every registered migration of every target and its state, as the last `mreg status`, "
                       "apply or rollback found them.",
        "sql": "SELECT target, type, migration_id, state, phases_done, phases_pending, detail, checked_at "
               "FROM target_status ORDER BY target, migration_id"},
    "edited_after_apply": {
        "title": "Edited after apply",
        "description": "Migrations whose file (as the last scan saw it) differs from what was applied on a "
                       "target: the checksum the last apply_succeeded recorded, the one now, and whether a "
                       "`mreg repair` accepted the edit.",
        "sql": "SELECT a.target, a.migration_id, m.path, a.applied_checksum, m.checksum AS checksum_now, "
               "m.registered_checksum = m.checksum AS accepted_by_repair, a.applied_at FROM "
               "(SELECT json_extract(s, '$.target.id') AS target, json_extract(s, '$.migration.id') AS migration_id, "
               "json_extract(s, '$.migration.checksum') AS applied_checksum, max(seq) AS seq, time AS applied_at "
               "FROM " + _STATEMENTS.format(where=" WHERE event_type = 'apply_succeeded'") + " GROUP BY 1, 2) a "
               "JOIN migrations m ON m.id = a.migration_id WHERE m.checksum != a.applied_checksum "
               "ORDER BY a.migration_id, a.target"},
    "verification_status": {
        "title": "Verification status",
        "description": "Per log, what the catalog alone proves: every leaf's bytes hash to its stored leaf_hash, "
                       "every leaf names the previous one's hash (the chain), the newest stored checkpoint covers "
                       "the whole log. Signatures, Merkle roots and mirrors: `mreg verify`.",
        "sql": "SELECT l.origin, count(*) AS leaves, max(l.time) AS last_statement, "
               "sum(mreg_leaf_hash(l.leaf) IS NOT l.leaf_hash) AS wrong_hashes, "
               "sum(mreg_leaf_prev(l.leaf) IS NOT coalesce((SELECT p.leaf_hash FROM ledger_leaves p "
               "WHERE p.origin = l.origin AND p.seq = l.seq - 1), CASE WHEN l.seq = 0 THEN zeroblob(32) END)) "
               "AS broken_links, c.size AS checkpoint_size, coalesce(c.size = count(*), 0) AS checkpoint_covers_log, "
               "c.created AS checkpoint_stored FROM ledger_leaves l LEFT JOIN (SELECT origin, max(size) AS size, "
               "created FROM ledger_checkpoints GROUP BY origin) c ON c.origin = l.origin "
               "GROUP BY l.origin ORDER BY l.origin"},
    "edited_after_registration": {
        "title": "Edited after registration",
        "sql": "SELECT id, path, registered_checksum, checksum FROM migrations "
               "WHERE status = 'active' AND checksum != registered_checksum ORDER BY id"},
    "findings_by_kind": {"title": "Findings by kind",
                         "sql": "SELECT kind, count(*) AS n FROM findings GROUP BY kind ORDER BY n DESC"},
    "timeline": {
        "title": "Timeline of a migration",
        "description": "One migration's life: its commits in Git (added, changed), then every statement about it "
                       "in the registry's log and in each target's log (registered, applied phase by phase, "
                       "failed, rolled back, repaired), in time order.",
        "sql": "SELECT at, source, event, phase, actor, detail FROM ("
               "SELECT date AS at, 'git' AS source, 0 AS rank, n AS seq, "
               "CASE n WHEN 0 THEN 'added' ELSE 'changed' END AS event, NULL AS phase, NULL AS actor, "
               "'commit ' || sha || ' ' || checksum AS detail FROM revisions WHERE migration_id = :id "
               "UNION ALL SELECT time, origin, CASE WHEN event_type IN ('register', 'repair', 'consolidate') "
               "THEN 1 ELSE 2 END, seq, event_type, json_extract(s, '$.details.phase'), actor, "
               "coalesce(json_extract(s, '$.details.error'), json_extract(s, '$.migration.checksum')) FROM "
               + _STATEMENTS.format(where="") + " WHERE json_extract(s, '$.migration.id') = :id) "
               "ORDER BY julianday(at), rank, seq"},
}


def metadata(database: str = "catalog") -> dict:
    """Datasette metadata: titles and descriptions of every catalog table and column."""
    tables = {name: {"title": title, "description": desc, "columns": cols,
                     **({"facets": ["database", "scheme", "status", "type"]} if name == "migrations" else {}),
                     **({"facets": ["kind"]} if name == "findings" else {}),
                     **({"facets": ["origin", "event_type"]} if name == "ledger_leaves" else {}),
                     **({"facets": ["target", "state"]} if name == "target_status" else {})}
              for name, (title, desc, cols) in {**TABLES, **LEDGER_TABLES}.items()}
    tables.update({name: {"hidden": True, "description": "The scan's memory of Git; rebuilt by `mreg scan --full`."}
                   for name in SCAN_TABLES})
    return {"title": "mreg catalog", "description": "Migrations found in Git, their provenance and findings; "
                                                    "ledger tables hold the signed logs.",
            "databases": {database: {"tables": tables, "queries": CANNED}}}


def serve(cfg, *, host: str = "127.0.0.1", port: int = 8001) -> None:
    """Run Datasette on catalog.db, read-only (immutable), with :func:`metadata`."""
    from registry.errors import ConfigError

    path = Path(cfg.catalog.value)
    if not path.is_file():
        raise ConfigError(f"no catalog at {path}", hint="run `mreg scan` first", path=str(path))
    meta = Path(cfg.state_dir) / "datasette-metadata.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(metadata(path.stem), indent=2), encoding="utf-8")
    try:
        from datasette.cli import cli
    except ImportError:
        raise ConfigError("mreg serve needs Datasette", hint="pip install 'mreg[serve]'") from None
    cli.main(args=serve_args(path, meta, host, port), prog_name="datasette", standalone_mode=True)
