"""A Git repository shaped like the seed's audit, written with real `git` in a temporary folder.

Twelve migration folders, every scheme, TypeScript migrations with compiled twins, two
``V14__`` files, a file duplicated between ``server/db/migrations/postgres`` and
``server/src/db/migrations/postgres``, a migration edited after its first commit, a
rename, a deletion, a dependency cycle, a missing dependency and non-migration files.
``COMMITS`` is the single source: tests derive what they expect from it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ALICE = ("Alice", "alice@example.com")
BOB = ("Bob", "bob@example.com")

PREFS_TS = """import { Migration } from './migrationFramework';

export const migration: Migration = {
  id: '20251120_150000_add_user_preferences',
  name: 'Add user preferences table',
  description: 'Create user_preferences table for personalization',
  type: 'postgresql',
  version: '2.1.0',
  dependencies: [],
  phases: {
    expand: [
      {
        id: 'create_preferences_table',
        name: 'Create user_preferences table',
        type: 'sql',
        content: `
          CREATE TABLE user_preferences (
            id UUID PRIMARY KEY,
            user_id UUID NOT NULL,
            preferences JSONB NOT NULL DEFAULT '{}'
          );
        `,
        retryable: false,
      },
    ],
  },
  rollback: {
    expand: [
      { id: 'drop_preferences_table', name: 'Drop', type: 'sql', content: `DROP TABLE IF EXISTS user_preferences;` },
    ],
  },
  metadata: { author: 'platform-team', createdAt: new Date('2025-11-20'), estimatedDuration: 30,
              breakingChange: false, tenantScoped: false },
  settings: { timeout: 60000, maxRetries: 3 },
};
"""

TENANT_TS = """import { Migration } from './migrationFramework';

export const migration: Migration = {
  id: 'add_tenant_settings',
  name: 'Tenant settings',
  description: 'Settings per tenant',
  type: 'postgresql',
  version: '2.2.0',
  dependencies: ['20251120_150000_add_user_preferences', 'missing_migration_xyz'],
  phases: {
    expand: [{ id: 's1', name: 'create', type: 'sql', content: `CREATE TABLE tenant_settings (id int);` }],
  },
  metadata: { author: 'platform-team', createdAt: new Date('2025-11-21'), estimatedDuration: 5,
              breakingChange: false, tenantScoped: true },
  settings: {},
};
"""

NEO4J_JS = """const migration = {
  id: 'neo4j_canonical_ids',
  name: 'Canonical ids',
  description: 'Add canonical_id to entities',
  type: 'neo4j',
  version: '1.1.0',
  dependencies: [],
  phases: {
    expand: [{ id: 'idx', name: 'index', type: 'cypher',
               content: 'CREATE INDEX entity_canonical_id IF NOT EXISTS FOR (e:Entity) ON (e.canonical_id)' }],
  },
};
module.exports = { migration };
"""

KNEX_JS = """exports.up = async function (knex) {
  await knex.raw(`CREATE TABLE jobs (id bigserial PRIMARY KEY, name text NOT NULL)`);
};
exports.down = async function (knex) {
  await knex.raw(`DROP TABLE jobs`);
};
"""

FRAMEWORK_TS = """export interface Migration { id: string; phases: Record<string, unknown>; }
export class MigrationFramework {
  async run(m: Migration): Promise<void> { console.log(m.id); }
}
"""

DUP_SQL = "CREATE TABLE entities (id uuid PRIMARY KEY, kind text NOT NULL);\n"

CYCLE_A = """-- Migration: cycle a
-- ID: 20240105_100000_schema_cycle_a
-- Version: 1.0.0
-- Database: postgresql
-- Dependencies: [20240105_110000_schema_cycle_b]
CREATE TABLE cycle_a (id int);
"""
CYCLE_B = """-- Migration: cycle b
-- ID: 20240105_110000_schema_cycle_b
-- Version: 1.0.0
-- Database: postgresql
-- Dependencies: [20240105_100000_schema_cycle_a]
CREATE TABLE cycle_b (id int);
"""

FIRST = {
    "db/migrations/V1__create_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n",
    "db/migrations/V2__add_email_index.sql": "CREATE INDEX idx_users_email ON users (email);\n",
    "db/migrations/V14__add_audit_log.sql": "CREATE TABLE audit_log (id bigint PRIMARY KEY);\n",
    "db/migrations/V14__add_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n",
    "db/migrations/20240110_120000_add_sessions.sql": "CREATE TABLE sessions (id text PRIMARY KEY);\n",
    "db/migrations/README.md": "# Migrations\nRun them with the framework.\n",
    "server/db/migrations/postgres/001_create_entities.sql": DUP_SQL,
    "server/src/db/migrations/postgres/001_create_entities.sql": DUP_SQL,
    "server/db/migrations/neo4j/V1_2_0__entity_constraints.cypher":
        "CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE;\n",
    "server/db/migrations/neo4j/relationships.cypher":
        "MATCH (a:Entity)-[r:RELATES_TO]->(b:Entity) SET r.weight = 1;\n",
    "server/db/migrations/timescale/20240110_create_traces.sql":
        "CREATE TABLE traces (time timestamptz NOT NULL, id bigint);\n"
        "SELECT create_hypertable('traces', 'time');\n",
    "server/src/db/migrations/neo4j/001_canonical_ids.js": NEO4J_JS,
    "server/src/migrations/20251120_150000_add_user_preferences.ts": PREFS_TS,
    "server/src/migrations/20251120_150000_add_user_preferences.js": "\"use strict\";\nexports.migration = {};\n",
    "server/src/migrations/add_tenant_settings.ts": TENANT_TS,
    "server/src/migrations/migrationFramework.ts": FRAMEWORK_TS,
    "server/src/migrations/index.ts": "export * from './migrationFramework';\n",
    "server/src/migrations/types.d.ts": "export type Id = string;\n",
    "server/src/migrations/__tests__/framework.test.ts": "test('x', () => {});\n",
    "server/src/migrations/fixtures/V99__fixture.sql": "CREATE TABLE fixture (id int);\n",
    "server/dist/migrations/20251120_150000_add_user_preferences.js": "exports.migration = {};\n",
    "server/migrations/20240110093000_create_jobs.js": KNEX_JS,
    "server/migrations/knexfile.js": "module.exports = { client: 'pg' };\n",
    "services/api/migrations/001_init.sql": "CREATE TABLE api_keys (id bigint PRIMARY KEY);\n",
    "services/api/migrations/002_grants.sql": "GRANT SELECT ON api_keys TO reader;\n",
    "packages/maestro-core/migrations/001_runs.sql": "CREATE TABLE runs (id bigint PRIMARY KEY);\n",
    "packages/data-catalog/migrations/V1__datasets.sql": "CREATE TABLE datasets (id bigint PRIMARY KEY);\n",
    "prov-ledger/migrations/001_ledger.sql": "CREATE TABLE ledger (id bigint PRIMARY KEY);\n",
    "migrations/20240105_100000_schema_cycle_a.sql": CYCLE_A,
    "migrations/20240105_110000_schema_cycle_b.sql": CYCLE_B,
    "src/app.ts": "export const app = 1;\n",
}

# (author, ISO date, files written (None deletes), renames {old: new})
COMMITS = [
    (ALICE, "2024-01-10T09:00:00Z", FIRST, {}),
    (BOB, "2024-02-01T10:30:00Z", {
        "db/migrations/V2__add_email_index.sql": "CREATE INDEX idx_users_email ON users (lower(email));\n",
        "prov-ledger/migrations/001_ledger.sql": None,
        "src/app.ts": "export const app = 2;\n",
    }, {"services/api/migrations/001_init.sql": "services/api/migrations/001_initial_schema.sql"}),
]

# What the scan must find: path -> (database, scheme)
EXPECTED = {
    "db/migrations/V1__create_users.sql": ("postgresql", "flyway"),
    "db/migrations/V2__add_email_index.sql": ("postgresql", "flyway"),
    "db/migrations/V14__add_audit_log.sql": ("postgresql", "flyway"),
    "db/migrations/V14__add_orders.sql": ("postgresql", "flyway"),
    "db/migrations/20240110_120000_add_sessions.sql": ("postgresql", "date"),
    "server/db/migrations/postgres/001_create_entities.sql": ("postgresql", "numbered"),
    "server/src/db/migrations/postgres/001_create_entities.sql": ("postgresql", "numbered"),
    "server/db/migrations/neo4j/V1_2_0__entity_constraints.cypher": ("neo4j", "neo4j-migrations"),
    "server/db/migrations/neo4j/relationships.cypher": ("neo4j", "script"),
    "server/db/migrations/timescale/20240110_create_traces.sql": ("timescale", "date"),
    "server/src/db/migrations/neo4j/001_canonical_ids.js": ("neo4j", "numbered"),
    "server/src/migrations/20251120_150000_add_user_preferences.ts": ("postgresql", "date"),
    "server/src/migrations/add_tenant_settings.ts": ("postgresql", "module"),
    "server/migrations/20240110093000_create_jobs.js": ("postgresql", "knex"),
    "services/api/migrations/001_initial_schema.sql": ("postgresql", "numbered"),
    "services/api/migrations/002_grants.sql": ("postgresql", "numbered"),
    "packages/maestro-core/migrations/001_runs.sql": ("postgresql", "numbered"),
    "packages/data-catalog/migrations/V1__datasets.sql": ("postgresql", "flyway"),
    "prov-ledger/migrations/001_ledger.sql": ("postgresql", "numbered"),
    "migrations/20240105_100000_schema_cycle_a.sql": ("postgresql", "canonical"),
    "migrations/20240105_110000_schema_cycle_b.sql": ("postgresql", "canonical"),
}
DUPLICATE = ("server/db/migrations/postgres/001_create_entities.sql",
             "server/src/db/migrations/postgres/001_create_entities.sql")
DELETED = "prov-ledger/migrations/001_ledger.sql"
EDITED = "db/migrations/V2__add_email_index.sql"
RENAMED = ("services/api/migrations/001_init.sql", "services/api/migrations/001_initial_schema.sql")


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return out.stdout.strip()


def commit_env(author: tuple[str, str], date: str) -> dict:
    return {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1], "GIT_COMMITTER_DATE": date}


def write_commit(repo: Path, author, date: str, files: dict, renames: dict, message: str) -> str:
    for old, new in renames.items():
        (repo / new).parent.mkdir(parents=True, exist_ok=True)
        git(repo, "mv", old, new)
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            git(repo, "rm", "-q", rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        git(repo, "add", "--", rel)
    git(repo, "commit", "-q", "--no-verify", "-m", message, env=commit_env(author, date))
    return git(repo, "rev-parse", "HEAD")


def build(repo: Path) -> list[str]:
    """Create the repository; return the commit ids in order."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "core.hooksPath", str(repo / ".git" / "hooks"))
    return [write_commit(repo, a, d, f, r, f"commit {i}") for i, (a, d, f, r) in enumerate(COMMITS)]
