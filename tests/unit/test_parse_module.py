"""TypeScript/JavaScript modules (tree-sitter) and .py migrations (ast), none of them executed."""

from __future__ import annotations

import pytest

from registry.parse import ParseError, parse_migration

SEED_TS = """\
// migrations/20251120_150000_add_user_preferences.ts
import { Migration } from '../migrationFramework';

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
            id UUID PRIMARY KEY DEFAULT uuid_generate_v4(),
            user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            preferences JSONB NOT NULL DEFAULT '{}',
            created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
            UNIQUE(user_id)
          );

          CREATE INDEX idx_user_preferences_user_id
            ON user_preferences(user_id);
        `,
        retryable: false,
        rollback: `
          DROP TABLE IF EXISTS user_preferences CASCADE;
        `,
      },
    ],
  },

  rollback: {
    expand: [
      {
        id: 'drop_preferences_table',
        name: 'Drop user_preferences table',
        type: 'sql',
        content: `
          DROP TABLE IF EXISTS user_preferences CASCADE;
        `,
        retryable: false,
      },
    ],
  },

  validation: [
    {
      name: 'verify_table_exists',
      type: 'post',
      check: `sql:SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'user_preferences'`,
      expectedResult: { count: 1 },
      critical: true,
    },
  ],

  metadata: {
    author: 'platform-team',
    createdAt: new Date('2025-11-20'),
    estimatedDuration: 30,
    breakingChange: false,
    tenantScoped: false,
  },

  settings: {
    timeout: 60000,
    maxRetries: 3,
    requiresMaintenanceWindow: false,
  },
};
"""

TS_PATH = "server/src/migrations/20251120_150000_add_user_preferences.ts"


def test_seed_typescript_example():
    m = parse_migration(TS_PATH, SEED_TS.encode())
    assert m.id == "20251120_150000_add_user_preferences"
    assert (m.name, m.version, m.database, m.type) == ("Add user preferences table", "2.1.0", "postgresql", "schema")
    assert (m.author, m.created, m.breaking, m.tenant_scoped) == ("platform-team", "2025-11-20", False, False)
    steps = m.phases["expand"]
    assert [s.name for s in steps] == ["create_preferences_table", "create_preferences_table#2"]
    assert steps[0].content.startswith("CREATE TABLE user_preferences (")
    assert [s.line for s in steps] == [19, 28]
    assert all(s.retryable is False for s in steps)
    assert [s.content for s in m.rollback["expand"]] == ["DROP TABLE IF EXISTS user_preferences CASCADE"]
    assert m.rollback["expand"][0].line == 46
    rule = m.validation[0]
    assert rule.name == "verify_table_exists" and rule.expected == {"count": 1} and rule.critical
    assert rule.check == "sql:SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'user_preferences'"
    assert (m.settings.timeout, m.settings.max_retries) == (60000, 3)
    assert m.metadata["object"] == {"estimatedDuration": 30}


def test_compiled_javascript_twin_gives_the_same_migration():
    js = SEED_TS.replace("import { Migration } from '../migrationFramework';", "\"use strict\";") \
        .replace("export const migration: Migration = {", "exports.migration = {")
    a = parse_migration(TS_PATH, SEED_TS.encode())
    b = parse_migration(TS_PATH[:-3] + ".js", js.encode())
    assert [s.content for s in a.phases["expand"]] == [s.content for s in b.phases["expand"]]
    assert (a.id, a.version, a.validation) == (b.id, b.version, b.validation)


@pytest.mark.parametrize("wrapper", [
    "export default {BODY};",
    "const migration = {BODY} satisfies Migration;\nexport default migration;",
    "module.exports = {BODY};",
    "export const migration = defineMigration({BODY});",
    "const m = ({BODY}) as Migration;\nexport default m;",
    "const migration = {BODY};\nmodule.exports = { migration };",
    "exports.default = Object.freeze({BODY});",
])
def test_export_forms(wrapper):
    body = "id: 'x1', version: '1.0.0', phases: { expand: [{ type: 'cypher', content: 'MATCH (n) RETURN n' }] }"
    m = parse_migration("a/x1.ts", wrapper.replace("BODY", body).encode())
    assert m.id == "x1" and m.database == "neo4j" and m.phases["expand"][0].kind == "cypher"


def test_constants_and_constant_substitutions_are_resolved():
    text = """
const TABLE = 'events';
const CREATE = sql`CREATE TABLE ${TABLE} (id int, n int DEFAULT ${42})`;
export default { id: 'x', version: '1.0.0', dependencies: ['a', "b"],
  phases: { expand: [{ content: CREATE }, 'ALTER TABLE events ADD COLUMN m int'] } };
"""
    m = parse_migration("a/x.ts", text.encode())
    assert [s.content for s in m.phases["expand"]] == [
        "CREATE TABLE events (id int, n int DEFAULT 42)", "ALTER TABLE events ADD COLUMN m int"]
    assert m.dependencies == ["a", "b"]


def test_substitution_that_is_not_constant_names_the_line():
    text = """import { tableName } from './config';
export const migration = {
  id: 'x', version: '1.0.0',
  phases: { expand: [{ type: 'sql', content: `
    CREATE TABLE ${tableName} (id int);
  ` }] },
};
"""
    with pytest.raises(ParseError) as info:
        parse_migration("a/x.ts", text.encode())
    assert info.value.line == 5 and info.value.field == "content"
    assert "${" in info.value.reason


def test_syntax_error_names_the_line():
    text = "export const migration = {\n  id: 'x',\n  version: '1.0.0'\n  phases: {}\n};\n"
    with pytest.raises(ParseError) as info:
        parse_migration("a/x.ts", text.encode())
    assert info.value.field == "module" and info.value.line in (3, 4)


def test_knex_module_is_opaque():
    text = "exports.up = function(knex) { return knex.schema.createTable('t', () => {}); };\n" \
           "exports.down = function(knex) { return knex.schema.dropTable('t'); };\n"
    m = parse_migration("packages/db/knex/20231120143000_create_t.js", text.encode())
    assert m.metadata["opaque"] is True and m.phases == {} and m.scheme == "knex"
    assert m.metadata["legacy"]["version"] == "20231120143000"


def test_module_without_migration_is_an_error():
    with pytest.raises(ParseError) as info:
        parse_migration("server/src/migrations/migrationFramework.ts",
                        b"export class MigrationFramework { run() { return 1; } }\n")
    assert info.value.field == "migration"


@pytest.mark.parametrize("text,line,field", [
    ("export default { id: 'x', version: 'two', phases: {} };", 1, "version"),
    ("export default { id: 'x', phases: { expandd: [] } };", 1, "phases"),
    ("export default { id: 'x', phases: { expand: [{ type: 'sql' }] } };", 1, "content"),
    ("export default { id: 'x', phases: { expand: [{ type: 'gremlin', content: 'g.V()' }] } };", 1, "type"),
    ("export default {\n id: 'x',\n phases: { expand: [{ content: 'SELEC 1' }] } };", 3, "sql"),
    ("export default { id: 'x', settings: { batchSize: 'lots' }, phases: {} };", 1, "settings.batchSize"),
    ("export default { id: 'x', phases: { expand: [{ type: 'sql', content: 'SELECT 1' },"
     " { type: 'cypher', content: 'RETURN 1' }] } };", 1, "type"),
])
def test_module_errors(text, line, field):
    with pytest.raises(ParseError) as info:
        parse_migration("a/x.ts", text.encode())
    assert (info.value.line, info.value.field) == (line, field)
    assert info.value.hint


SEED_PY = '''\
"""Add user preferences (a .py migration: read with ast, never run)."""
from datetime import date
from mreg import Migration, Step

CREATE = """
CREATE TABLE user_preferences (id UUID PRIMARY KEY, user_id UUID NOT NULL REFERENCES users(id));
CREATE INDEX CONCURRENTLY idx_user_preferences_user_id ON user_preferences(user_id);
"""

raise SystemExit("this module must never be executed by the parser")

migration = Migration(
    id="20251120_150000_schema_add_user_preferences",
    name="Add user preferences table",
    type="postgresql",
    version="2.1.0",
    dependencies=["20251101_090000_schema_create_users"],
    phases={"expand": [Step(id="create", type="sql", content=CREATE, retryable=False,
                            rollback="DROP TABLE IF EXISTS user_preferences CASCADE;")]},
    validation=[dict(name="exists", check="sql:SELECT 1", expectedResult={"count": 1})],
    metadata=dict(author="platform-team", createdAt=date(2025, 11, 20), breakingChange=False),
    settings=dict(batchSize=500, timeout=60000, requiresMaintenanceWindow=True),
    txmode="none",
)
'''


def test_python_migration_is_read_not_run():
    m = parse_migration("migrations/20251120_150000_schema_add_user_preferences.py", SEED_PY.encode())
    assert m.id == "20251120_150000_schema_add_user_preferences" and m.version == "2.1.0"
    assert m.dependencies == ["20251101_090000_schema_create_users"]
    assert [s.line for s in m.phases["expand"]] == [6, 7]
    assert all(not s.transactional for s in m.phases["expand"]) and m.txmode == "none"
    assert m.rollback["expand"][0].content == "DROP TABLE IF EXISTS user_preferences CASCADE"
    assert m.created == "2025-11-20" and m.author == "platform-team"
    assert m.settings.batch_size == 500 and m.settings.requires_maintenance_window is True
    assert m.validation[0].expected == {"count": 1}


@pytest.mark.parametrize("text,line,field", [
    ("migration = Migration(id='x', version=get_version(), phases={})\n", 1, "version"),
    ("import os\nmigration = Migration(\n  id='x',\n  phases={'expand': [Step(content=os.environ['SQL'])]})\n",
     4, "content"),
    ("migration = Migration(id='x', phases={'expand': [Step(content=f'SELECT {n}')]})\n", 1, "content"),
    ("migration = Migration(id='x',\n", 1, "python"),
    ("something = 1\n", None, "migration"),
    ("migration = build()\n", 1, "migration"),
])
def test_python_errors(text, line, field):
    with pytest.raises(ParseError) as info:
        parse_migration("m/x.py", text.encode())
    assert (info.value.line, info.value.field) == (line, field)


def test_runtime_metadata_is_skipped_with_a_warning():
    text = "export default { id: 'x', version: '1.0.0',\n  metadata: { createdAt: new Date(), author: 'a' },\n" \
           "  phases: { expand: [{ content: 'SELECT 1' }] } };"
    m = parse_migration("a/x.ts", text.encode())
    assert m.created == "" and m.author == "a"
    assert any(w.startswith("line 2: `createdAt`") for w in m.metadata["warnings"])


def test_neo4j_js_module_runs_literal_queries():
    text = """module.exports = {
  async up(session) {
    await session.run(`CREATE CONSTRAINT entity_id IF NOT EXISTS
      FOR (e:Entity) REQUIRE e.id IS UNIQUE`);
    await session.run('CREATE INDEX entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name)');
  },
  async down(session) {
    await session.run('DROP INDEX entity_name IF EXISTS');
    await session.run('DROP CONSTRAINT entity_id IF EXISTS');
  },
};
"""
    m = parse_migration("server/src/db/migrations/neo4j/001_entity_constraints.js", text.encode())
    assert m.database == "neo4j" and m.metadata["code_steps"] is True
    assert [(s.kind, s.line) for s in m.phases["expand"]] == [("cypher", 3), ("cypher", 5)]
    assert [s.content for s in m.rollback["expand"]] == ["DROP INDEX entity_name IF EXISTS",
                                                         "DROP CONSTRAINT entity_id IF EXISTS"]
    assert m.type == "schema"


def test_knex_raw_queries_are_extracted():
    text = "exports.up = async (knex) => { await knex.raw('CREATE TABLE t (id int)'); };\n" \
           "exports.down = async (knex) => { await knex.raw('DROP TABLE t'); };\n"
    m = parse_migration("packages/db/knex/20231120143000_t.js", text.encode())
    assert m.database == "postgresql" and [s.content for s in m.phases["expand"]] == ["CREATE TABLE t (id int)"]


# -- differential: one object written as TypeScript, JavaScript and Python parses the same ----------

import json  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=15)


@st.composite
def migration_objects(draw):
    n = draw(st.integers(1, 4))
    steps = []
    for i in range(n):
        lit = draw(_text).replace("'", "''")
        steps.append({"id": f"s{i}", "type": "sql", "content": f"SELECT '{lit}' AS v{i}",
                      "retryable": draw(st.booleans())})
    return {
        "id": draw(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)),
        "name": draw(_text),
        "version": f"{draw(st.integers(0, 99))}.{draw(st.integers(0, 99))}.{draw(st.integers(0, 99))}",
        "dependencies": draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), max_size=3)),
        "phases": {"expand": steps},
        "validation": [{"name": "v", "check": "sql:SELECT 1", "expectedResult": draw(
            st.one_of(st.none(), st.integers(-1000, 1000), _text, st.dictionaries(_text, st.integers(0, 9),
                                                                                   max_size=2)))}],
        "metadata": {"author": draw(_text), "breakingChange": draw(st.booleans())},
        "settings": {"batchSize": draw(st.integers(1, 10**6))},
    }


@given(migration_objects())
@settings(max_examples=60, deadline=None)
def test_same_object_in_ts_js_py_parses_the_same(obj):
    literal = json.dumps(obj, ensure_ascii=False)
    sources = {
        "a/x.ts": f"export const migration: Migration = {literal};\n",
        "a/x.js": f"module.exports = {literal};\n",
        "a/x.py": f"migration = {obj!r}\n",
    }
    parsed = {p: parse_migration(p, s.encode()) for p, s in sources.items()}
    for m in parsed.values():
        assert (m.id, m.version, m.dependencies, m.author) == (obj["id"], obj["version"], obj["dependencies"],
                                                              obj["metadata"]["author"])
        assert [s.content for s in m.phases["expand"]] == [s["content"] for s in obj["phases"]["expand"]]
        assert [s.retryable for s in m.phases["expand"]] == [s["retryable"] for s in obj["phases"]["expand"]]
        assert m.validation[0].expected == obj["validation"][0]["expectedResult"]
        assert m.settings.batch_size == obj["settings"]["batchSize"]
        assert m.breaking is obj["metadata"]["breakingChange"]


def test_commit_backoff_in_a_header_and_in_settings():
    sql = b"-- Commit-Backoff: 2\n-- Phase 2: MIGRATE\nUPDATE t SET v = 1;\n"
    assert parse_migration("migrations/20250101_000000_data_t.sql", sql).settings.commit_backoff == 2
    assert parse_migration("migrations/20250101_000000_data_t.sql", b"-- Phase 2: MIGRATE\nUPDATE t SET v = 1;\n"
                           ).settings.commit_backoff == 4
    ts = b"export default { id: 'x', settings: { commitBackoff: 0 }, phases: {} };"
    assert parse_migration("a/x.ts", ts).settings.commit_backoff == 0
    with pytest.raises(ParseError) as info:
        parse_migration("migrations/20250101_000000_data_t.sql", b"-- Commit-Backoff: -1\n-- Phase 2: MIGRATE\n"
                        b"UPDATE t SET v = 1;\n")
    assert (info.value.line, info.value.field) == (1, "Commit-Backoff") and "negative" in str(info.value)
