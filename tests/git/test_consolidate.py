"""`mreg consolidate`: dry run shows the moves; the real run keeps history and identity."""

from __future__ import annotations

import json

from registry import config
from registry.cli.main import run
from registry.registration import list_migrations, scan_and_register
from tests.git import seedrepo


def scan():
    return list(scan_and_register(config.load()))[-1]


def active(rows):
    return {m["id"]: m for m in rows if m["status"] == "active"}


def test_dry_run_shows_moves_and_changes_nothing(seed_project, capsys):
    scan()
    head = seedrepo.git(seed_project.root, "rev-parse", "HEAD")
    assert run(["consolidate", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    legacy = {m["path"] for m in active(list_migrations(config.load())).values()
              if m["scheme"] != "canonical"}
    assert {m["from"] for m in report["moves"]} == legacy
    assert all(m["to"].startswith("migrations/") for m in report["moves"])
    assert seedrepo.git(seed_project.root, "rev-parse", "HEAD") == head
    assert seedrepo.git(seed_project.root, "status", "--porcelain") == ""


def test_consolidate_moves_with_history_and_a_second_scan_finds_the_same_migrations(seed_project):
    scan()
    before = active(list_migrations(config.load()))
    assert run(["consolidate"]) == 0
    root = seed_project.root
    after = active(list_migrations(config.load()))
    assert set(after) == set(before)
    for mid, m in after.items():
        assert m["path"].startswith("migrations/") and m["path"].rpartition("/")[2].startswith(mid), m["path"]
        assert m["first_commit"] == before[mid]["first_commit"]
        assert m["checksum"] == m["registered_checksum"]
    # History: the rename is followed by git itself.
    edited = next(m for m in after.values() if m["id"].endswith("add_email_index"))
    log = seedrepo.git(root, "log", "--follow", "--format=%H", "--", edited["path"]).split()
    assert seed_project.commits[0] in log and seed_project.commits[1] in log
    # Converted TypeScript: a canonical .sql with the extracted steps and the header.
    prefs = next(m for m in after.values() if m["id"].endswith("add_user_preferences"))
    text = (root / prefs["path"]).read_text()
    assert prefs["path"].endswith(".sql")
    assert "CREATE TABLE user_preferences" in text and "-- Phase 1: EXPAND" in text
    assert "-- Version: 2.1.0" in text and "-- Rollback:" in text
    assert not (root / "server/src/migrations/20251120_150000_add_user_preferences.js").exists()
    # Mapping file in the repository.
    mapping = json.loads((root / "migrations/MAPPING.json").read_text())["mapping"]
    assert mapping["db/migrations/V14__add_orders.sql"]["id"] == next(i for i in after if i.endswith("add_orders"))
    assert mapping[seedrepo.DUPLICATE[1]]["id"] == mapping[seedrepo.DUPLICATE[0]]["id"]
    # The consolidation is ledgered and its header edits are not findings.
    result, _ = scan()
    kinds = [f["kind"] for f in result.findings]
    assert kinds.count("edited_after_commit") == 1  # the one planted before consolidation
    assert "duplicate_content" not in kinds and "version_conflict" not in kinds
    from ledger.log import parse_leaf
    from ledger.store import LedgerStore

    store = LedgerStore(seed_project.catalog)
    try:
        types = [parse_leaf(x).statement["type"] for x in store.leaves("seed/registry")]
    finally:
        store.close()
    assert types.count("consolidate") == len([m for m in before.values() if m["scheme"] != "canonical"])


def test_consolidated_files_pass_the_migration_parser(seed_project):
    from registry.parse import parse_migration

    scan()
    assert run(["consolidate"]) == 0
    for m in active(list_migrations(config.load())).values():
        parsed = parse_migration(m["path"], (seed_project.root / m["path"]).read_bytes())
        assert parsed.database == m["database"]
