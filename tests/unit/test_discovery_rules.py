"""Discovery's scheme names and versions (docs/registry.md, "Schemes") read through registry.naming."""

from __future__ import annotations

import pytest

from registry.discovery.rules import naming


@pytest.mark.parametrize("path,scheme,version,description,kind", [
    ("migrations/20251120_150000_schema_add_user_preferences.sql", "canonical", "20251120150000",
     "add_user_preferences", "sql"),
    ("db/migrations/V14__add_orders.sql", "flyway", "14", "add_orders", "sql"),
    ("db/migrations/V1.2__x.sql", "flyway", "1.2", "x", "sql"),
    ("db/migrations/U14__add_orders.sql", "flyway-undo", "14", "add_orders", "sql"),
    ("db/migrations/R__refresh_views.sql", "flyway-repeatable", None, "refresh_views", "sql"),
    ("db/migrations/V1_2_3__add_index.cypher", "neo4j-migrations", "1.2.3", "add_index", "cypher"),
    ("db/migrations/V2__add_index.cql", "neo4j-migrations", "2", "add_index", "cypher"),
    ("db/migrations/20240110_add_sessions.sql", "date", "20240110", "add_sessions", "sql"),
    ("db/migrations/20240110_120000_x.sql", "date", "20240110120000", "x", "sql"),
    ("db/migrations/001_init.sql", "numbered", "1", "init", "sql"),
    ("db/migrations/12-init.sql", "numbered", "12", "init", "sql"),
    ("db/migrations/20240110093000_create_jobs.js", "knex", "20240110093000", "create_jobs", "module"),
    ("db/migrations/20240110093000_create_jobs.mts", "knex", "20240110093000", "create_jobs", "module"),
    ("db/migrations/add_tenant_settings.ts", "module", None, "add_tenant_settings", "module"),
    ("db/migrations/relationships.cypher", "script", None, "relationships", "cypher"),
])
def test_schemes_of_the_docs_table(path, scheme, version, description, kind):
    got = naming(path)
    assert (got.scheme, got.version, got.description, got.kind) == (scheme, version, description, kind)


@pytest.mark.parametrize("path", ["db/migrations/index.ts", "db/migrations/types.d.ts", "db/migrations/helper.py",
                                  "db/migrations/x.test.ts", "db/migrations/README.md"])
def test_not_migration_names(path):
    assert naming(path) is None


def test_legacy_ids_take_their_description_as_naming_describes_it():
    from registry.discovery.lineage import migration_id
    from registry.naming import describe

    path = "server/migrations/20231120143000_addUserPrefs.js"
    taken: set[str] = set()
    first = migration_id(path, naming(path), "schema", 1_700_000_000, taken)
    assert first == f"20231114_221320_schema_{describe(path)}" and describe(path) == "add_user_prefs"
    again = migration_id(path, naming(path), None, 1_700_000_000, taken)
    assert again == "20231114_221321_schema_add_user_prefs"  # the next free second
    canonical = "migrations/20251120_150000_schema_add_user_preferences.sql"
    assert migration_id(canonical, naming(canonical), "data", 0, taken) == canonical[11:-4]


@pytest.mark.parametrize("path,body", [
    ("migrations/20251121_090000_schema_add_widgets.sql",
     "-- Migration: widgets\n-- ID: 20251121_090000_schema_add_widgets\n-- Version: 1.0.0\n"
     "-- Dependencies: [20251120_090000_schema_a]\n-- Author: ann\nCREATE TABLE w (id int);\n"),
    ("migrations/20251121_090000_data_x.sql", "-- Type: perf\n-- Breaking: true\nCREATE INDEX i ON t (a);\n"),
    ("migrations/20251121_090000_schema_ts.sql", "-- Version: 1.0.0\nSELECT create_hypertable('m', 'ts');\n"),
    ("migrations/timescale/20251121_090000_schema_t.sql", "CREATE TABLE t (ts timestamptz);\n"),
    ("migrations/20251121_090000_schema_g.cypher", "// Version: 1.0.0\nCREATE CONSTRAINT c FOR (n:X) REQUIRE n.id IS UNIQUE;\n"),
    ("migrations/20251121_090000_data_r.redis", "# Database: redis\nSET a 1\n"),
])
def test_header_only_read_agrees_with_the_full_parse(path, body):
    """The post-commit hook reads canonical scripts without their statements; the scan parses them."""
    from registry.discovery.inspect import inspect

    quick = inspect(path, body.encode(), naming(path), check=False)
    full = inspect(path, body.encode(), naming(path), check=True)
    assert quick["error"] is None and full["error"] is None
    assert quick == {k: full[k] for k in quick}
