"""`mreg serve`: a real Datasette process on catalog.db, read over HTTP: every table, its descriptions, read-only."""

from __future__ import annotations

import hashlib

import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from markupsafe import escape  # Datasette's templates escape with it

from registry import catalog
from registry.cli.main import run

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/ as a package
from tests.git import seedrepo  # noqa: E402
from tests.git.conftest import isolate  # noqa: E402

BROWSED = ("migrations", "revisions", "locations", "dependencies", "findings", "consolidations",
           "migration_contents", "scan_findings", "ledger_leaves", "ledger_nodes", "ledger_checkpoints",
           "ledger_witness_state")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_sql(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The seed repository scanned, then `mreg serve` on a free loopback port; stopped by its PID."""
    root = tmp_path / "repo"
    seedrepo.build(root)
    db, _key = isolate(tmp_path, monkeypatch, root)
    assert run(["scan", "--json"]) == 0
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:  # a file, not a pipe: nobody drains a pipe while the server runs
        proc = subprocess.Popen([sys.executable, "-m", "registry.cli.main", "serve", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/-/versions.json", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("mreg serve exited: " + log.read_text(errors="replace"))
                time.sleep(0.2)
        else:
            pytest.fail("datasette did not start within 60 s")
        yield base, db
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_table_is_served_with_its_rows_and_descriptions(served):
    base, db = served
    conn = sqlite3.connect(db)
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BROWSED}
        columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in BROWSED}
    finally:
        conn.close()
    assert counts["migrations"] == len(seedrepo.EXPECTED) - 1 and counts["ledger_leaves"] > 0
    assert counts["findings"] > 0 and counts["dependencies"] > 0 and counts["ledger_checkpoints"] > 0
    meta = json.loads(get(base + "/-/metadata.json")[1])["databases"]["catalog"]["tables"]
    for table in BROWSED:
        # every column of every browsed table is described (a new column must be documented)
        assert set(meta[table]["columns"]) == set(columns[table]), table
        assert all(meta[table]["columns"].values()) and meta[table]["description"], table
        status, body = get(f"{base}/catalog/{table}.json?_shape=objects&_size=max")
        assert status == 200, (table, body[:300])
        data = json.loads(body)
        assert data["filtered_table_rows_count"] == counts[table], table
        status, page = get(f"{base}/catalog/{table}")
        text = page.decode()
        assert status == 200 and escape(meta[table]["description"]) in text, table
        assert '<dl class="column-descriptions">' in text
        for column, description in meta[table]["columns"].items():
            assert f"<dt>{column}</dt><dd>{escape(description)}</dd>" in text, (table, column)
    assert meta == catalog.metadata()["databases"]["catalog"]["tables"]
    served_ids = [r["id"] for r in json.loads(get(base + "/catalog/migrations.json?_shape=array&_size=max")[1])]
    assert sorted(served_ids) == [r["id"] for r in run_sql(db, "SELECT id FROM migrations ORDER BY id")]
    kinds = json.loads(get(base + "/catalog/findings_by_kind.json?_shape=array")[1])
    assert {k["kind"] for k in kinds} >= {"duplicate_content", "version_conflict", "missing_dependency"}


def test_the_catalog_is_read_only(served):
    base, db = served
    before = digest(db)
    databases = json.loads(get(base + "/-/databases.json")[1])
    assert [d["is_mutable"] for d in databases if d["name"] == "catalog"] == [False]
    for sql in ("insert into findings (n, kind, migration_ids, paths, message, data) "
                "values (999, 'x', '[]', '[]', 'x', '{}')",
                "delete from migrations", "update migrations set status = 'deleted'", "drop table findings",
                "pragma journal_mode = delete", "attach database ':memory:' as other"):
        status, body = get(f"{base}/catalog.json?sql={urllib.parse.quote(sql)}")
        assert status >= 400, (sql, body[:300])
        assert b"Statement must be a SELECT" in body or b"not allowed" in body, (sql, body[:300])
    # Datasette 0.65 has no write API; a POST to where a 1.0 write endpoint would be is refused too
    # (with a 500: Datasette's exception hook fails when rich is installed; nothing is written either way).
    req = urllib.request.Request(f"{base}/catalog/findings/-/insert", method="POST",
                                 data=json.dumps({"row": {"kind": "x"}}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        status = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status >= 400
    rows = json.loads(get(base + "/catalog/findings.json?_shape=array&_size=max")[1])
    assert all(r["kind"] != "x" for r in rows)
    assert digest(db) == before


def test_serve_without_a_catalog_says_what_to_do(tmp_path, monkeypatch, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    isolate(tmp_path, monkeypatch, root)
    assert run(["serve", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "no catalog at" in err and "mreg scan" in err
