"""`mreg serve` for an auditor: the ledger readable in Datasette and the canned queries (failed
applications, pending per target, edited after apply, verification status, a migration's timeline),
after real applications, a failure, a rollback and an edit on PostgreSQL; a real Datasette process
read over HTTP, its answers compared with the ledger and with `mreg status --json`."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from engine_support import Project, events

PREFS = "20251120_150000_schema_add_user_preferences"
BROKEN = "20251201_000000_schema_broken"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _commit(proj: Project, message: str) -> None:
    """Commit the project's files and register what the commit brings (`mreg scan`), as a team does."""
    git = ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", "-C", str(proj.root)]
    if not (proj.root / ".git").exists():
        subprocess.run(git + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git + ["add", "-A", "migrations"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", message], check=True)
    code, out, err = proj.run("scan")
    assert code in (0, 1), err  # 1: findings (an edited migration is one)


@pytest.fixture
def audited(tmp_path, pg_dsn):
    """The PostgreSQL examples applied, a migration that fails, a rollback, an applied file edited,
    `mreg status` run; then `mreg serve` on a free loopback port (stopped by its PID)."""
    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})
    proj.copy_examples("postgresql")
    _commit(proj, "the examples")
    assert proj.run("apply", "--confirm-contract")[0] == 0
    proj.write(f"postgresql/{BROKEN}.sql", f"""
        -- Dependencies: [{PREFS}]
        -- Phase 1: EXPAND
        ALTER TABLE no_such_table ADD COLUMN x int;
    """)
    _commit(proj, "a broken migration")
    assert proj.run("apply")[0] == 3
    assert proj.run("rollback", "--migration-id", PREFS, "--backup-ref", "s3://bk/1")[0] == 0
    edited = sorted((proj.root / "migrations" / "postgresql").glob("*email_verification*.sql"))[0]
    edited.write_text(edited.read_text() + "\n-- a comment added after it was applied\n")
    _commit(proj, "an applied migration edited")
    code, out, err = proj.run("status", "--json")
    assert code == 0, err
    status = json.loads(out)
    port = _free_port()
    proc = proj.popen("serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/-/versions.json", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "slow"
                time.sleep(0.1)
        yield proj, base, status, edited
    finally:
        proc.kill()
        proc.wait()


def _rows(base: str, query: str, **params) -> list[dict]:
    url = f"{base}/catalog/{query}.json?" + urllib.parse.urlencode({"_shape": "array", **params})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_failed_applications_are_the_ledgers_failures(audited):
    proj, base, _, _ = audited
    log = proj.statements("main")
    failed = [s for s in log if s["type"] in ("apply_failed", "rollback_failed", "validation_failed")]
    rows = _rows(base, "failed_applications")
    assert len(rows) == len(failed) == 1
    row, st = rows[0], failed[0]
    assert (row["migration"], row["phase"], row["event_type"], row["target"], row["time"]) == \
        (BROKEN, "expand", "apply_failed", "main", st["time"])
    assert "no_such_table" in row["error"] and row["error"] == st["details"]["error"]
    assert row["sqlstate"] == "42P01"


def test_pending_per_target_is_what_status_said(audited):
    _, base, status, _ = audited
    target = status["targets"][0]
    rows = _rows(base, "pending_per_target")
    assert sorted(r["migration_id"] for r in rows) == sorted(target["pending"])
    assert PREFS in target["pending"] and BROKEN in target["pending"]  # rolled back; failed
    by_id = {r["migration_id"]: r for r in rows}
    assert by_id[BROKEN]["state"] == "failed" and "no_such_table" in by_id[BROKEN]["detail"]
    assert by_id[PREFS]["state"] == "pending" and json.loads(by_id[PREFS]["phases_done"]) == []
    assert {r["target"] for r in rows} == {"main"} and all(r["checked_at"] for r in rows)
    applied = _rows(base, "target_status_all")
    assert sorted(r["migration_id"] for r in applied if r["state"] == "applied") == sorted(target["applied"])


def test_edited_after_apply_names_the_file_and_both_checksums(audited):
    proj, base, _, edited = audited
    import hashlib

    rows = _rows(base, "edited_after_apply")
    now = "sha256:" + hashlib.sha256(edited.read_bytes()).hexdigest()
    assert [r["path"] for r in rows] == [str(edited.relative_to(proj.root))]
    row = rows[0]
    applied = [s for s in events(proj.statements("main"), kind="apply_succeeded")
               if s["migration"]["id"] == row["migration_id"]]
    assert row["applied_checksum"] == applied[-1]["migration"]["checksum"] != now
    assert row["target"] == "main"


def test_verification_status_recomputes_every_leaf_hash_and_chain_link(audited):
    proj, base, _, _ = audited
    rows = {r["origin"]: r for r in _rows(base, "verification_status")}
    log = proj.statements("main")
    main = rows["t/main"]
    assert main["leaves"] == len(log) and main["wrong_hashes"] == 0 and main["broken_links"] == 0
    assert main["checkpoint_size"] == len(log) and main["checkpoint_covers_log"] == 1
    assert rows["t/registry"]["wrong_hashes"] == 0


def test_timeline_of_a_migration_has_its_git_history_and_every_ledger_event(audited):
    proj, base, _, _ = audited
    rows = _rows(base, "timeline", id=PREFS)
    ledgered = [r for r in rows if r["source"] == "t/main"]
    mine = [s for s in proj.statements("main") if (s.get("migration") or {}).get("id") == PREFS]
    assert [r["event"] for r in ledgered] == [s["type"] for s in mine]
    assert ledgered[-1]["event"] == "rollback_succeeded"
    sources = [r["source"] for r in rows]
    assert sources[0] == "git" and [r["event"] for r in rows if r["source"] == "t/registry"][0] == "register"
    assert sources.index("t/registry") < sources.index("t/main")  # registered before it was applied


def test_a_leaf_is_shown_as_the_statement_it_carries(audited):
    proj, base, _, _ = audited
    first = proj.statements("main")[0]
    with urllib.request.urlopen(f"{base}/catalog/ledger_leaves?origin=t%2Fmain&seq=0", timeout=10) as r:
        page = r.read().decode()
    from markupsafe import escape

    from ledger.store import LedgerStore

    with LedgerStore(proj.root / "catalog.db") as store:
        leaf = next(iter(store.leaves("t/main")))
    from ledger.log import parse_leaf

    parsed = parse_leaf(leaf)
    assert str(escape(parsed.payload.decode())) in page  # the leaf cell: the statement, byte for byte
    assert parsed.hash.hex() in page and "Binary:" not in page  # its hash in hex
    sql = "select json_extract(mreg_statement(leaf), '$.event_id') as e from ledger_leaves where seq = 0 " \
          "and origin = 't/main'"
    got = json.loads(urllib.request.urlopen(f"{base}/catalog.json?" + urllib.parse.urlencode(
        {"sql": sql, "_shape": "array"}), timeout=10).read())
    assert got == [{"e": first["event_id"]}]


@pytest.mark.browser
def test_an_auditor_browses_the_ledger_in_a_real_headless_browser(audited, browser):
    """Chromium, driven by chromedriver, follows the links an auditor would: the database page's canned
    query "Failed applications", the ledger's table with its facet on event_type, a leaf shown as its
    statement, and the timeline form filled in and submitted."""
    from selenium.webdriver.common.by import By

    proj, base, _, _ = audited
    browser.get(f"{base}/catalog")
    browser.find_element(By.LINK_TEXT, "Failed applications").click()
    assert browser.current_url.startswith(f"{base}/catalog/failed_applications")
    table = browser.find_element(By.CSS_SELECTOR, "table.rows-and-columns").text
    assert BROKEN in table and "no_such_table" in table and "42P01" in table

    browser.get(f"{base}/catalog/ledger_leaves?origin=t%2Fmain")
    facet = browser.find_element(By.CSS_SELECTOR, ".facet-info[data-column='event_type']")
    facet.find_element(By.PARTIAL_LINK_TEXT, "apply_failed").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
    assert len(rows) == 1
    leaf = rows[0].find_element(By.CSS_SELECTOR, "td.col-leaf").text
    failed = events(proj.statements("main"), kind="apply_failed")[0]
    assert json.loads(leaf) == failed  # the cell is the signed statement, whole

    browser.get(f"{base}/catalog/timeline")
    field = browser.find_element(By.CSS_SELECTOR, "input[name='id']")
    field.send_keys(PREFS)
    field.submit()
    table = browser.find_element(By.CSS_SELECTOR, "table.rows-and-columns").text
    assert "register" in table and "apply_succeeded" in table and "rollback_succeeded" in table
    assert browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")


def _snapshot(proj: Project) -> dict[str, tuple[str, str]]:
    import sqlite3

    conn = sqlite3.connect(proj.root / "catalog.db")
    try:
        return {mid: (state, at) for mid, state, at in conn.execute(
            "SELECT migration_id, state, checked_at FROM target_status WHERE target = 'main'")}
    finally:
        conn.close()


def test_apply_and_rollback_keep_pending_per_target_current(tmp_path, pg_dsn):
    """`mreg apply` and `mreg rollback` rewrite their targets' rows of target_status as they finish
    (a failed apply too); a dry run leaves them alone."""
    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})
    proj.copy_examples("postgresql")
    assert proj.run("apply", "--confirm-contract")[0] == 0
    examples = {p.stem for p in (proj.root / "migrations" / "postgresql").glob("*.sql")}
    snap = _snapshot(proj)
    assert set(snap) == examples and {state for state, _ in snap.values()} == {"applied"}
    assert proj.run("rollback", "--migration-id", PREFS, "--backup-ref", "s3://bk/1")[0] == 0
    assert _snapshot(proj)[PREFS][0] == "pending"
    proj.write(f"postgresql/{BROKEN}.sql", """
        -- Phase 1: EXPAND
        ALTER TABLE no_such_table ADD COLUMN x int;
    """)
    assert proj.run("apply", "--dry-run")[0] == 3
    assert BROKEN not in _snapshot(proj)  # the dry run wrote nothing
    assert proj.run("apply")[0] == 3
    snap = _snapshot(proj)
    assert snap[BROKEN][0] == "failed" and snap[PREFS][0] == "applied"  # applied again before the broken one
    assert json.loads(proj.run("status", "--json")[1])["targets"][0]["failed"][0]["migration"] == BROKEN


def test_what_an_apply_knows_of_its_log_at_the_end_is_the_replica(tmp_path, pg_dsn, monkeypatch):
    """The statements a log knows without parsing (the events this process committed, kept as built)
    equal the replica's leaves parsed afresh, when `mreg apply` refreshes target_status: after
    transactional phases, a backfill's checkpoints and the outcomes."""
    from ledger.log import parse_leaf
    from registry import config, status
    from registry.apply import apply

    proj = Project(tmp_path / "proj", {"main": ("postgresql", pg_dsn)})
    proj.copy_examples("postgresql")
    for key in ("MREG_ROOT", "MREG_CATALOG", "MREG_KEY"):
        monkeypatch.setenv(key, proj.env[key])
    monkeypatch.chdir(proj.root)
    seen, real = [], status.refresh

    def spy(cfg, eng, migrations):
        for log in eng.logs.values():
            seen.append((log.statements(), [parse_leaf(leaf).statement for leaf in log.store.leaves(log.origin)]))
        real(cfg, eng, migrations)

    monkeypatch.setattr(status, "refresh", spy)
    for _ in apply(config.load(), confirm_contract=True):
        pass
    (known, parsed), = seen
    assert known == parsed and {"apply_succeeded", "batch_checkpoint"} <= {s["type"] for s in known}
