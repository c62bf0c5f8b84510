"""catalog.enable_search writes the FTS5 table and triggers sqlite-utils' enable_fts would."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from registry import catalog


def _fill(path):
    conn = catalog.connect(path)
    with conn:
        catalog.store_contents(conn, [("sha256:a", "CREATE TABLE users (id int);"),
                                      ("sha256:b", "SELECT create_hypertable('metrics', 'ts');")])
    conn.close()


def _schema(path):
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def _after_changes(path):
    conn = catalog.connect(path)
    with conn:  # the triggers keep the index current
        catalog.store_contents(conn, [("sha256:c", "ALTER TABLE metrics ADD COLUMN hypertable_note text;")])
        conn.execute("DELETE FROM migration_contents WHERE checksum = 'sha256:a'")
        conn.execute("UPDATE migration_contents SET content = 'DROP TABLE users;' WHERE checksum = 'sha256:b'")
    try:
        return [[(h["id"], h["path"]) for h in catalog.search(conn, q)] for q in ("hypertable", "users", "create")], \
            conn.execute("SELECT rowid, content FROM migration_contents_fts ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_enable_search_equals_sqlite_utils(tmp_path):
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    _fill(ours)
    _fill(theirs)
    catalog.enable_search(ours)
    catalog.enable_search(ours)  # idempotent
    db = sqlite_utils.Database(str(theirs))
    db["migration_contents"].enable_fts(["content"], create_triggers=True)
    db.close()
    assert _schema(ours) == _schema(theirs)
    assert sqlite_utils.Database(str(ours))["migration_contents"].detect_fts() == "migration_contents_fts"
    assert _after_changes(ours) == _after_changes(theirs)
