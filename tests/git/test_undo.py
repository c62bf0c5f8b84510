"""Flyway undo files (`U<n>__x.sql`) are the rollback of their `V<n>__x.sql` (SPEC §4)."""

from __future__ import annotations

import psycopg
import pytest

from registry import config
from registry.cli.main import run
from registry.registration import list_migrations, registered_migrations, show_migration
from tests.git import seedrepo
from tests.git.test_scan import scan

UNDO_USERS = "DROP TABLE users;\n"


def by_path(rows, path):
    return next(m for m in rows if m["path"] == path)


def test_undo_file_is_the_rollback_of_its_versioned_migration(seed_project, capsys):
    seedrepo.write_commit(seed_project.root, seedrepo.BOB, "2024-03-01T00:00:00Z", {
        "db/migrations/U1__drop_users.sql": UNDO_USERS,  # pairs by version, whatever the description
        "db/migrations/U7__nothing_to_undo.sql": "DROP TABLE nothing;\n",
        "db/migrations/U14__add_orders.sql": "DROP TABLE orders;\n",  # V14 is claimed twice
    }, {}, "undo files")
    result, _ = scan()
    v1 = by_path(result.migrations, "db/migrations/V1__create_users.sql")
    u1 = by_path(result.migrations, "db/migrations/U1__drop_users.sql")
    assert u1["scheme"] == "flyway-undo" and u1["undo_of"] == v1["id"]
    assert v1["undo"] == {"id": u1["id"], "path": "db/migrations/U1__drop_users.sql"}
    unpaired = {f["paths"][0]: f["message"] for f in result.findings if f["kind"] == "unpaired_undo"}
    assert set(unpaired) == {"db/migrations/U7__nothing_to_undo.sql", "db/migrations/U14__add_orders.sql"}
    assert "no versioned migration in db/migrations/ has version 7" in unpaired["db/migrations/U7__nothing_to_undo.sql"]
    assert "2 migrations in db/migrations/ claim version 14" in unpaired["db/migrations/U14__add_orders.sql"]

    cfg = config.load()
    shown = show_migration(cfg, v1["id"])
    assert shown["undo"] == {"id": u1["id"], "path": "db/migrations/U1__drop_users.sql"}
    assert show_migration(cfg, "db/migrations/U1__drop_users.sql")["undo_of"] == v1["id"]
    assert run(["show", v1["id"]]) == 0
    assert "rollback:" in capsys.readouterr().out
    assert any(f["kind"] == "unpaired_undo" for f in show_migration(cfg, "db/migrations/U7__nothing_to_undo.sql")["findings"])

    # The engine's view: undo files are never migrations to apply; U1's statement rolls V1 back.
    engine = {m.id: m for m in registered_migrations(cfg)}
    assert not {u1["id"]} & set(engine)
    assert not any(m.path.split("/")[-1].startswith("U") for m in engine.values())
    assert [s.content for s in engine[v1["id"]].rollback["expand"]] == ["DROP TABLE users"]
    v2 = by_path(result.migrations, "db/migrations/V2__add_email_index.sql")
    assert not any(engine[v2["id"]].rollback.values())  # no U2: still no rollback steps


@pytest.fixture
def pg_git_project(empty_project, pg_dsn):
    root = empty_project.root
    (root / "mreg.toml").write_text(f'[project]\nname = "seed"\n[targets.main]\ntype = "postgresql"\n'
                                    f'url = "{pg_dsn}"\n')
    seedrepo.write_commit(root, seedrepo.ALICE, "2024-06-01T00:00:00Z", {
        "db/migrations/V1__create_things.sql": "CREATE TABLE things (id int);\n",
        "db/migrations/U1__create_things.sql": "DROP TABLE things;\n",
        "db/migrations/V2__create_others.sql": "CREATE TABLE others (id int);\n",
    }, {}, "migrations")
    return empty_project, pg_dsn


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_rollback_runs_the_undo_file(pg_git_project, capsys):
    project, dsn = pg_git_project
    assert run(["scan"]) == 0
    rows = list_migrations(config.load())
    v1 = by_path(rows, "db/migrations/V1__create_things.sql")["id"]
    v2 = by_path(rows, "db/migrations/V2__create_others.sql")["id"]
    assert run(["apply"]) == 0
    assert {"things", "others"} <= tables(dsn)
    capsys.readouterr()
    assert run(["rollback", "--migration-id", v2, "--confirm"]) == 2  # no U2: refused
    assert "no rollback steps" in capsys.readouterr().err
    assert run(["rollback", "--migration-id", v1, "--confirm"]) == 0
    assert "things" not in tables(dsn) and "others" in tables(dsn)
