"""`mreg scan` on the seed-shaped repository finds exactly what it should."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from registry import config
from registry.cli.main import run
from registry.naming import canonical_id, describe
from registry.registration import list_migrations, scan_and_register
from tests.git import seedrepo


def scan(**kw):
    cfg = config.load()
    items = list(scan_and_register(cfg, **kw))
    return items[-1]


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def first_commit_of(path: str, project) -> tuple[int, str]:
    """(commit index, file path at that commit) where the file at ``path`` first appeared."""
    origin = seedrepo.RENAMED[0] if path == seedrepo.RENAMED[1] else path
    for i, (_a, _d, files, _r) in enumerate(seedrepo.COMMITS):
        if origin in files and files[origin] is not None:
            return i, origin
    raise AssertionError(path)


def test_scan_finds_every_migration_with_database_scheme_and_provenance(seed_project):
    result, done = scan()
    rows = {p: m for m in list_migrations(config.load()) for p in m["paths"]}
    assert set(rows) == set(seedrepo.EXPECTED)
    assert result.migrations and len(result.migrations) == len(seedrepo.EXPECTED) - 1  # the duplicate is one
    for path, (database, scheme) in seedrepo.EXPECTED.items():
        m = rows[path]
        assert (m["database"], m["scheme"]) == (database, scheme), path
        index, origin = first_commit_of(path, seed_project)
        author, date, _files, _renames = seedrepo.COMMITS[index]
        assert m["first_commit"] == {"sha": seed_project.commits[index], "author": f"{author[0]} <{author[1]}>",
                                     "date": date}, path
        name = path.rpartition("/")[2]
        if scheme == "canonical":
            assert m["id"] == name.rpartition(".")[0]
        else:
            when = datetime.fromisoformat(date.replace("Z", "+00:00")).astimezone(timezone.utc)
            assert m["id"] == canonical_id(when, m["type"], describe(origin.rpartition("/")[2])), path
    assert len(done.registered) == len(result.migrations)


def test_not_migrations_are_not_counted(seed_project):
    scan()
    paths = {p for m in list_migrations(config.load()) for p in m["paths"]}
    for rel in ("server/src/migrations/migrationFramework.ts", "server/src/migrations/index.ts",
                "server/src/migrations/types.d.ts", "server/src/migrations/__tests__/framework.test.ts",
                "server/src/migrations/fixtures/V99__fixture.sql", "server/migrations/knexfile.js",
                "server/src/migrations/20251120_150000_add_user_preferences.js",  # compiled twin
                "server/dist/migrations/20251120_150000_add_user_preferences.js", "db/migrations/README.md",
                "src/app.ts"):
        assert rel not in paths


def test_planted_findings_are_reported(seed_project):
    result, _ = scan()
    by_kind: dict[str, list] = {}
    for f in result.findings:
        by_kind.setdefault(f["kind"], []).append(f)
    assert sorted(by_kind) == ["dependency_cycle", "duplicate_content", "edited_after_commit",
                               "missing_dependency", "version_conflict"]
    assert [f["paths"] for f in by_kind["duplicate_content"]] == [list(seedrepo.DUPLICATE)]
    assert [f["paths"] for f in by_kind["version_conflict"]] == [
        ["db/migrations/V14__add_audit_log.sql", "db/migrations/V14__add_orders.sql"]]
    (edited,) = by_kind["edited_after_commit"]
    first = seedrepo.COMMITS[0][2][seedrepo.EDITED]
    now = seedrepo.COMMITS[1][2][seedrepo.EDITED]
    assert edited["paths"] == [seedrepo.EDITED]
    assert sha256(first) in edited["message"] and sha256(now) in edited["message"]
    (missing,) = by_kind["missing_dependency"]
    assert "missing_migration_xyz" in missing["message"]
    (cycle,) = by_kind["dependency_cycle"]
    assert cycle["paths"] == ["migrations/20240105_100000_schema_cycle_a.sql",
                              "migrations/20240105_110000_schema_cycle_b.sql"]


def test_revisions_rename_and_deletion(seed_project):
    scan()
    rows = {m["path"]: m for m in list_migrations(config.load())}
    edited = rows[seedrepo.EDITED]
    assert [r["sha"] for r in edited["revisions"]] == seed_project.commits
    assert [r["checksum"] for r in edited["revisions"]] == [
        sha256(seedrepo.COMMITS[0][2][seedrepo.EDITED]), sha256(seedrepo.COMMITS[1][2][seedrepo.EDITED])]
    renamed = rows[seedrepo.RENAMED[1]]
    assert [(r["from"], r["to"], r["sha"]) for r in renamed["renames"]] == [
        (*seedrepo.RENAMED, seed_project.commits[1])]
    deleted = rows[seedrepo.DELETED]
    assert deleted["status"] == "deleted"
    assert deleted["deleted"]["sha"] == seed_project.commits[1]
    assert all(m["status"] == "active" for p, m in rows.items() if p != seedrepo.DELETED)


def test_typescript_module_steps_are_extracted(seed_project):
    from registry.parse import ParseError, parse_migration

    found = parse_migration("x.ts", seedrepo.PREFS_TS.encode())
    assert found.id == "20251120_150000_add_user_preferences"
    assert found.version == "2.1.0"
    assert "CREATE TABLE user_preferences" in found.phases["expand"][0].content
    assert "DROP TABLE IF EXISTS user_preferences" in found.rollback["expand"][0].content
    knex = parse_migration("x.js", seedrepo.KNEX_JS.encode())
    assert knex.metadata["code_steps"] and "CREATE TABLE jobs" in knex.phases["expand"][0].content
    with pytest.raises(ParseError) as info:
        parse_migration("f.ts", seedrepo.FRAMEWORK_TS.encode())
    assert info.value.field == "migration"


def test_rescan_walks_only_new_commits_and_registers_only_new(seed_project):
    first, _ = scan()
    assert first.new_commits == 2
    again, done = scan()
    assert again.new_commits == 0 and done.registered == [] and done.updated == []
    seedrepo.write_commit(seed_project.root, seedrepo.BOB, "2024-03-01T08:00:00Z",
                          {"server/migrations/20240301080000_add_queue.js": seedrepo.KNEX_JS.replace("jobs", "queue")},
                          {}, "new knex migration")
    third, done = scan()
    assert third.new_commits == 1
    assert len(done.registered) == 1 and done.registered[0].endswith("_add_queue")
    assert done.updated == []


def test_registry_log_holds_one_register_statement_per_migration(seed_project):
    from ledger.log import parse_leaf
    from ledger.store import LedgerStore

    result, _ = scan()
    store = LedgerStore(seed_project.catalog)
    try:
        leaves = [parse_leaf(x).statement for x in store.leaves("seed/registry")]
        assert store.latest_checkpoint("seed/registry") is not None
    finally:
        store.close()
    assert {s["type"] for s in leaves} == {"register"}
    ids = sorted(s["migration"]["id"] for s in leaves)
    assert ids == sorted(m["id"] for m in result.migrations)
    prefs = next(s for s in leaves if s["migration"]["path"].endswith("add_user_preferences.ts"))
    assert prefs["migration"]["version"] == "2.1.0"
    assert prefs["details"]["record"]["first_commit"]["sha"] == seed_project.commits[0]


def test_registered_checksum_change_is_a_finding_until_repaired(seed_project):
    scan()
    seedrepo.write_commit(seed_project.root, seedrepo.BOB, "2024-03-02T08:00:00Z",
                          {"db/migrations/V1__create_users.sql": "CREATE TABLE users (id bigint);\n"}, {}, "edit")
    result, done = scan()
    row = next(m for m in list_migrations(config.load()) if m["path"] == "db/migrations/V1__create_users.sql")
    assert row["checksum"] != row["registered_checksum"]
    assert row["id"] in done.updated
    from registry import catalog

    conn = catalog.connect(seed_project.catalog)
    found = catalog.findings(conn)
    conn.close()
    assert any(f["kind"] == "edited_after_commit" and "mreg repair" in f["message"] and row["id"] in f["ids"]
               for f in found)
    from registry.registration import accept_checksum

    accepted = accept_checksum(config.load(), row["id"], reason="test")
    assert accepted == {"migration": row["id"], "old_checksum": row["registered_checksum"],
                        "new_checksum": row["checksum"]}
    conn = catalog.connect(seed_project.catalog)
    found = catalog.findings(conn)
    conn.close()
    assert not any("mreg repair" in f["message"] for f in found)
    assert accept_checksum(config.load(), row["id"]) is None
    # The catalog rebuilt from the log agrees (the repair statement is projected).
    assert run(["catalog", "rebuild"]) == 0
    again = next(m for m in list_migrations(config.load()) if m["id"] == row["id"])
    assert again["registered_checksum"] == row["checksum"]


def test_catalog_rebuild_gives_the_same_rows(seed_project):
    import sqlite3

    scan()

    def dump():
        conn = sqlite3.connect(seed_project.catalog)
        out = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
               for t in ("migrations", "revisions", "locations", "dependencies", "findings")}
        conn.close()
        return out

    before = dump()
    assert run(["catalog", "rebuild"]) == 0
    assert dump() == before
    assert before["migrations"] and before["findings"]


def test_full_text_search_over_contents(seed_project):
    from registry import catalog

    scan()
    conn = catalog.connect(seed_project.catalog)
    try:
        hits = catalog.search(conn, "hypertable")
    finally:
        conn.close()
    assert [h["path"] for h in hits] == ["server/db/migrations/timescale/20240110_create_traces.sql"]


def test_scan_all_refs_sees_other_branches(seed_project):
    root = seed_project.root
    seedrepo.git(root, "checkout", "-q", "-b", "feature")
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-04-01T00:00:00Z",
                          {"db/migrations/V30__feature_only.sql": "CREATE TABLE feature (id int);\n"}, {}, "f")
    seedrepo.git(root, "checkout", "-q", "main")
    only_head, _ = scan(rev="main")
    assert not any(m["path"].endswith("V30__feature_only.sql") for m in only_head.migrations)
    everything, _ = scan(all_refs=True)
    assert any(m["path"].endswith("V30__feature_only.sql") for m in everything.migrations)


def test_unknown_revision_is_a_clear_error(seed_project, capsys):
    assert run(["scan", "--rev", "no-such-branch"]) == 2
    assert "no-such-branch" in capsys.readouterr().err


@pytest.mark.parametrize("paths", [["db/migrations"], ["server/**/migrations"]])
def test_configured_paths_limit_discovery(seed_project, paths):
    (seed_project.root / "mreg.toml").write_text("[discovery]\npaths = " + json.dumps(paths) + "\n")
    result, _ = scan()
    found = {p for m in result.migrations for p in m["paths"]}
    assert found
    if paths == ["db/migrations"]:
        assert all(p.startswith("db/migrations/") for p in found)
    else:
        assert all(p.startswith("server/") for p in found)
        assert "server/db/migrations/neo4j/relationships.cypher" in found


def test_a_scan_without_a_key_registers_on_the_next_scan(seed_project, monkeypatch, tmp_path):
    monkeypatch.setenv("MREG_KEY", str(tmp_path / "missing" / "id_ed25519"))
    assert run(["scan"]) != 0  # the signing key is missing: a clear error
    monkeypatch.setenv("MREG_KEY", str(seed_project.key))
    result, done = scan()
    assert result.new_commits == 0 and len(done.registered) == len(result.migrations)


def test_registered_migrations_for_the_engine(seed_project):
    from registry.registration import registered_migrations

    result, _ = scan()
    got = registered_migrations(config.load())
    active = {m["id"]: m for m in result.migrations if m["status"] == "active"}
    assert {m.id for m in got} == set(active)
    users = next(m for m in got if active[m.id]["path"] == "db/migrations/V1__create_users.sql")
    assert users.database == "postgresql" and "CREATE TABLE users" in users.phases["expand"][0].content
    traces = next(m for m in got if active[m.id]["path"].endswith("20240110_create_traces.sql"))
    assert traces.database == "timescale"


def test_packed_repository_scans_like_a_loose_one(seed_project, tmp_path, monkeypatch):
    loose, _ = scan()
    seedrepo.git(seed_project.root, "repack", "-adq", "--depth=50", "--window=10")
    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "packed" / "catalog.db"))
    packed, _ = scan()
    assert not list((seed_project.root / ".git" / "objects").glob("[0-9a-f][0-9a-f]/*"))  # all packed

    def strip(ms):
        return [{k: v for k, v in m.items() if k != "lineages"} for m in ms]

    assert strip(packed.migrations) == strip(loose.migrations)
    assert packed.findings == loose.findings


def test_a_merge_does_not_duplicate_what_a_branch_added(seed_project):
    root = seed_project.root
    seedrepo.git(root, "checkout", "-q", "-b", "side")
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-05-01T00:00:00Z",
                          {"db/migrations/V40__side.sql": "CREATE TABLE side (id int);\n"}, {}, "side")
    seedrepo.git(root, "checkout", "-q", "main")
    seedrepo.write_commit(root, seedrepo.BOB, "2024-05-02T00:00:00Z",
                          {"db/migrations/V41__main.sql": "CREATE TABLE main_t (id int);\n"}, {}, "main")
    seedrepo.git(root, "merge", "-q", "--no-edit", "--no-ff", "side",
                 env=seedrepo.commit_env(seedrepo.BOB, "2024-05-03T00:00:00Z"))
    result, _ = scan()
    side = [m for m in result.migrations if any(p.endswith("V40__side.sql") for p in m["paths"])]
    assert len(side) == 1 and len(side[0]["revisions"]) == 1
    assert side[0]["paths"] == ["db/migrations/V40__side.sql"]
    assert not [f for f in result.findings if "V40__side.sql" in " ".join(f["paths"])]
    assert side[0]["first_commit"]["date"] == "2024-05-01T00:00:00Z"


def test_canonical_python_and_redis_migrations(empty_project):
    root = empty_project.root
    py = '''migration = Migration(
    id="20251122_100000_schema_add_graph_index",
    name="Graph index",
    type="neo4j",
    version="1.3.0",
    dependencies=[],
    phases={"expand": [Step(id="idx", type="cypher",
                            content="CREATE INDEX e_name IF NOT EXISTS FOR (e:Entity) ON (e.name)")]},
)
'''
    redis = "# Migration: session keys\n# Version: 1.0.0\n# Database: redis\nSET mreg:demo 1\n"
    seedrepo.write_commit(root, seedrepo.ALICE, "2025-11-22T10:00:00Z", {
        "migrations/20251122_100000_schema_add_graph_index.py": py,
        "migrations/20251122_110000_data_session_keys.redis": redis,
        "migrations/helpers.py": "def f():\n    return 1\n",
    }, {}, "py and redis")
    result, _ = scan()
    by_path = {m["path"]: m for m in result.migrations}
    assert set(by_path) == {"migrations/20251122_100000_schema_add_graph_index.py",
                            "migrations/20251122_110000_data_session_keys.redis"}
    assert by_path["migrations/20251122_100000_schema_add_graph_index.py"]["database"] == "neo4j"
    assert by_path["migrations/20251122_100000_schema_add_graph_index.py"]["version"] == "1.3.0"
    assert by_path["migrations/20251122_110000_data_session_keys.redis"]["database"] == "redis"


def test_parsing_in_worker_processes_gives_the_same_scan(seed_project, tmp_path, monkeypatch):
    from registry.discovery import prefetch
    from registry.discovery import scan as scan_mod

    seedrepo.write_commit(seed_project.root, seedrepo.ALICE, "2024-03-01T00:00:00Z", {
        "db/migrations/V50__later.sql": "CREATE TABLE later (id int);\n",
        "db/migrations/V2__add_email_index.sql": "CREATE INDEX idx_users_email ON users (upper(email));\n",
    }, {}, "later")
    in_place, _ = scan()
    used = []
    real_take = prefetch.Prefetch.take

    def take(self, key, path, mode):
        hit = real_take(self, key, path, mode)
        used.append(hit is not None)
        return hit

    monkeypatch.setattr(scan_mod, "PREFETCH_COMMITS", 0)
    monkeypatch.setattr(prefetch, "START_AT", 2)
    monkeypatch.setattr(prefetch, "CHUNK", 2)
    monkeypatch.setattr(prefetch, "DIFF_CHUNK", 2)  # trees compared in the worker and here, chunk by chunk
    monkeypatch.setattr(prefetch, "worker_count", lambda: 1)
    monkeypatch.setattr(prefetch.Prefetch, "take", take)
    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "pooled" / "catalog.db"))
    pooled, _ = scan()
    assert used and all(used)  # every file came from the pool (or was parsed here in its place)
    assert pooled.migrations == in_place.migrations
    assert pooled.findings == in_place.findings


def test_a_first_scan_parses_the_tips_files_during_the_walk(seed_project, tmp_path, monkeypatch):
    from registry.discovery import prefetch
    from registry.discovery import scan as scan_mod

    in_place, _ = scan()
    ahead = []
    real_ahead = prefetch.Prefetch.ahead

    def spy(self, files):
        ahead.append(len(files))
        return real_ahead(self, files)

    monkeypatch.setattr(scan_mod, "PREFETCH_COMMITS", 10**9)  # only the first scan's early pool
    monkeypatch.setattr(scan_mod, "EARLY_FILES", 1)
    monkeypatch.setattr(prefetch, "START_AT", 2)
    monkeypatch.setattr(prefetch, "CHUNK", 2)
    monkeypatch.setattr(prefetch, "worker_count", lambda: 1)
    monkeypatch.setattr(prefetch.Prefetch, "ahead", spy)
    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "early" / "catalog.db"))
    early, _ = scan()
    assert ahead and ahead[0] >= len(in_place.migrations)
    assert early.migrations == in_place.migrations
    assert early.findings == in_place.findings
    again, _ = scan()  # a re-scan starts no early pool
    assert len(ahead) == 1 and again.migrations == in_place.migrations


def _registered(catalog_path):
    """The catalog's migrations and the registry log's statements, without what differs per run."""
    import base64
    import json
    import sqlite3

    from registry import catalog as cat

    conn = sqlite3.connect(str(catalog_path))
    try:
        records = cat.records(conn)
        leaves = [json.loads(r[0]) for r in conn.execute("SELECT leaf FROM ledger_leaves ORDER BY seq")]
    finally:
        conn.close()
    stmts = [json.loads(base64.b64decode(leaf["envelope"]["payload"])) for leaf in leaves]
    return records, [{k: v for k, v in s.items() if k not in ("event_id", "time")} for s in stmts]


@pytest.mark.parametrize("dies", [False, True])
def test_statements_planned_and_signed_in_the_worker(seed_project, tmp_path, monkeypatch, dies):
    import os

    from registry import registration
    from registry.discovery import prefetch
    from registry.discovery import scan as scan_mod

    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "in-place" / "catalog.db"))
    in_place, in_place_done = scan()
    taken = []
    real_take = registration.Prepared.take

    def take(self, conn):
        hit = real_take(self, conn)
        taken.append(hit is not None)
        return hit

    monkeypatch.setattr(scan_mod, "PREFETCH_COMMITS", 0)
    monkeypatch.setattr(prefetch, "START_AT", 2)
    monkeypatch.setattr(prefetch, "CHUNK", 2)
    monkeypatch.setattr(prefetch, "worker_count", lambda: 1)
    monkeypatch.setattr(registration.Prepared, "take", take)
    if dies:
        monkeypatch.setitem(_DYING, "parent", os.getpid())
        monkeypatch.setattr(registration, "sign_planned", _dying)
    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "pooled" / "catalog.db"))
    pooled, pooled_done = scan()
    assert taken == [not dies]  # planned and signed in the worker (else, when it died, here)
    assert pooled.migrations == in_place.migrations
    assert pooled_done.registered == in_place_done.registered and pooled_done.updated == in_place_done.updated
    assert _registered(tmp_path / "pooled" / "catalog.db") == _registered(tmp_path / "in-place" / "catalog.db")


_DYING: dict = {}


def _dying(*args):
    """A worker's task (``inspect_blobs``, ``diff_chunk``) killed mid-task (out of memory, a signal)."""
    import os

    if os.getpid() != _DYING["parent"]:
        os._exit(1)
    raise AssertionError("a task meant for a worker ran in the scan's own process")


# When a worker dies, Python 3.11's executor thread may try to fail a future the scan had cancelled
# (to parse that chunk itself) and report InvalidStateError from its own thread; results are unaffected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_worker_that_dies_leaves_the_scan_whole(seed_project, tmp_path, monkeypatch):
    import os

    from registry.discovery import prefetch
    from registry.discovery import scan as scan_mod

    in_place, _ = scan()
    monkeypatch.setitem(_DYING, "parent", os.getpid())
    monkeypatch.setattr(scan_mod, "PREFETCH_COMMITS", 0)
    monkeypatch.setattr(prefetch, "START_AT", 2)
    monkeypatch.setattr(prefetch, "CHUNK", 2)
    monkeypatch.setattr(prefetch, "DIFF_CHUNK", 2)
    monkeypatch.setattr(prefetch, "worker_count", lambda: 1)
    monkeypatch.setattr(prefetch, "inspect_blobs", _dying)
    monkeypatch.setattr(prefetch, "diff_chunk", _dying)
    monkeypatch.setenv("MREG_CATALOG", str(tmp_path / "broken" / "catalog.db"))
    broken, _ = scan()
    assert broken.migrations == in_place.migrations and broken.findings == in_place.findings
