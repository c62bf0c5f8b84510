"""Cypher and Redis scripts, checksums, and property tests of the splitters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from registry.model import checksum_bytes
from registry.parse import ParseError, parse_migration
from registry.parse.cypher import split as split_cypher
from registry.parse.redis import RedisQuoteError, split_args
from registry.parse.sql import split as split_sql

CANONICAL_ID = """\
// Migration: Canonical entity ids
// ID: 20251120_153000_data_backfill_canonical_ids
// Version: 2.1.0
// Database: neo4j
// Author: graph@example.com
// Created: 2025-11-20
// Breaking: false
// Dependencies: []

// Phase 1: EXPAND - Add new property
MATCH (e:Entity)
WHERE NOT EXISTS(e.canonical_id)
SET e.canonical_id = e.id
RETURN count(e);

// Create index for new property
CREATE INDEX entity_canonical_id IF NOT EXISTS
  FOR (e:Entity) ON (e.canonical_id);

// Phase 2: MIGRATE - Update relationships
MATCH (e1:Entity)-[r:RELATES_TO]->(e2:Entity)
WHERE NOT EXISTS(r.canonical_source_id)
SET r.canonical_source_id = e1.canonical_id,
    r.canonical_target_id = e2.canonical_id
RETURN count(r);

// Phase 3: CONTRACT - Remove old properties (if needed)
MATCH (e:Entity)
REMOVE e.legacy_id
RETURN count(e);

// Rollback: EXPAND
DROP INDEX entity_canonical_id IF EXISTS;
MATCH (e:Entity) REMOVE e.canonical_id;

// Validation:
// check (post): cypher:MATCH (e:Entity) WHERE e.canonical_id IS NULL RETURN count(e) AS missing; expect: {"missing": 0}
"""

REDIS_RESHAPE = """\
# Migration: Reshape session keys
# ID: 20251122_090000_data_reshape_session_keys
# Version: 1.0.0
# Database: redis
# Author: cache@example.com
# Created: 2025-11-22
# Breaking: false
# Dependencies: []

# Phase 1: EXPAND
HSET "session:v2:template" ttl 3600 "created by" 'mreg\\'s migration'
COPY session:legacy:1 session:v2:1

# Phase 3: CONTRACT
DEL session:legacy:1

# Rollback: EXPAND
DEL session:v2:1 "session:v2:template"

# Validation:
# check: redis:EXISTS session:v2:1; expect: 1
"""


def test_neo4j_canonical_id():
    m = parse_migration("migrations/neo4j/20251120_153000_data_backfill_canonical_ids.cypher",
                        CANONICAL_ID.encode())
    assert (m.database, m.type, m.version) == ("neo4j", "data", "2.1.0")
    assert [len(m.phases[p]) for p in ("expand", "migrate", "contract")] == [2, 1, 1]
    assert [s.line for s in m.phases["expand"]] == [11, 17]
    assert m.phases["expand"][1].content == \
        "CREATE INDEX entity_canonical_id IF NOT EXISTS\n  FOR (e:Entity) ON (e.canonical_id)"
    assert all(s.kind == "cypher" for s in m.phases["migrate"])
    assert [s.content for s in m.rollback["expand"]] == [
        "DROP INDEX entity_canonical_id IF EXISTS", "MATCH (e:Entity) REMOVE e.canonical_id"]
    assert m.validation[0].check.startswith("cypher:MATCH (e:Entity)")
    assert m.validation[0].expected == {"missing": 0}


def test_redis_key_reshape():
    m = parse_migration("migrations/redis/20251122_090000_data_reshape_session_keys.redis", REDIS_RESHAPE.encode())
    assert (m.database, m.type) == ("redis", "data")
    expand = m.phases["expand"]
    assert [s.line for s in expand] == [11, 12]
    assert split_args(expand[0].content) == ["HSET", "session:v2:template", "ttl", "3600", "created by",
                                             "mreg's migration"]
    assert m.phases["contract"][0].content == "DEL session:legacy:1"
    assert m.validation[0].check == "redis:EXISTS session:v2:1" and m.validation[0].expected == 1


def test_redis_unbalanced_quote_names_the_line():
    with pytest.raises(ParseError) as info:
        parse_migration("r/001_x.redis", b"# Phase 1: EXPAND\nSET a 1\nSET \"b 2\n")
    assert (info.value.line, info.value.field) == (3, "redis")


def test_cypher_unterminated_string_names_its_opening_line():
    with pytest.raises(ParseError) as info:
        parse_migration("n/001_x.cypher", b"MATCH (n) RETURN n;\nMATCH (n)\nSET n.a = 'open\n\nRETURN n;")
    assert (info.value.line, info.value.field) == (3, "cypher")


def test_redis_file_cannot_claim_postgres():
    with pytest.raises(ParseError) as info:
        parse_migration("r/001_x.redis", b"# Database: postgresql\nSET a 1\n")
    assert info.value.field == "Database" and info.value.line == 1


# -- property tests ----------------------------------------------------------------------

@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")))
def test_checksum_ignores_bom_and_crlf(data):
    # a file saved with CRLF line endings, with or without a BOM, has the checksum of its LF form
    crlf = data.replace(b"\n", b"\r\n")
    body = data.removeprefix(b"\xef\xbb\xbf")
    assert checksum_bytes(crlf) == checksum_bytes(data)
    assert checksum_bytes(b"\xef\xbb\xbf" + body) == checksum_bytes(body)
    assert checksum_bytes(data).startswith("sha256:") and len(checksum_bytes(data)) == 71


def test_checksum_known_value():
    import hashlib

    assert checksum_bytes(b"\xef\xbb\xbfSELECT 1;\r\n") == "sha256:" + hashlib.sha256(b"SELECT 1;\n").hexdigest()
    assert checksum_bytes(b"a\rb") != checksum_bytes(b"a\nb")  # a lone CR is content


@given(st.binary(max_size=200), st.binary(min_size=1, max_size=200))
def test_checksum_changes_with_content(a, b):
    if a.replace(b"\r\n", b"\n").removeprefix(b"\xef\xbb\xbf") != (a + b).replace(b"\r\n", b"\n").removeprefix(
            b"\xef\xbb\xbf"):
        assert checksum_bytes(a) != checksum_bytes(a + b)


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash(data):
    for name in ("m/001_x.sql", "m/001_x.cypher", "m/001_x.redis", "m/x.py", "m/x.ts", "m/x.js"):
        try:
            parse_migration(name, data)
        except ParseError as exc:
            assert exc.path == name


_ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"select", "table", "from", "where", "and", "or", "not", "as", "on", "in", "is", "end",
                        "do", "to", "by", "all", "any", "case", "else", "then", "when", "with", "user", "null",
                        "true", "false", "order", "group", "limit", "union", "create", "alter", "drop", "grant",
                        "check", "default", "primary", "references", "unique", "into", "values", "set", "begin",
                        "commit", "analyse", "analyze", "array", "asc", "desc", "both", "cast", "collate",
                        "column", "constraint", "current_date", "current_role", "current_time", "current_user",
                        "current_catalog", "current_schema", "current_timestamp", "deferrable", "distinct",
                        "except", "fetch", "for", "foreign", "having", "initially", "intersect", "lateral",
                        "leading", "localtime", "localtimestamp", "offset", "only", "placing", "returning",
                        "session_user", "some", "symmetric", "trailing", "using", "variadic", "window", "authorization",
                        "binary", "concurrently", "cross", "freeze", "full", "ilike", "inner", "isnull", "join",
                        "left", "like", "natural", "notnull", "outer", "overlaps", "right", "similar", "tablesample",
                        "verbose", "system_user", "current_timestamp"})
_literal = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def sql_statements(draw):
    kind = draw(st.sampled_from(["insert", "func", "do", "create"]))
    name = draw(_ident)
    lit = draw(_literal).replace("'", "''")
    if kind == "insert":
        return f"INSERT INTO {name} VALUES ('{lit}')"
    if kind == "func":
        return f"CREATE FUNCTION {name}() RETURNS int AS $f$ SELECT 1; SELECT ';{lit.replace('$', '')}' $f$ LANGUAGE sql"
    if kind == "do":
        return f"DO $$ BEGIN RAISE NOTICE '{lit.replace('$', '')};'; END $$"
    return f"CREATE TABLE {name} (a int, b text DEFAULT '{lit}')"


@given(st.lists(sql_statements(), min_size=1, max_size=6), st.lists(st.sampled_from(["\n", "\n\n", " ", "\n-- c;\n"]),
                                                                    min_size=6, max_size=6))
@settings(max_examples=150, deadline=None)
def test_sql_split_round_trips(statements, seps):
    text = "".join(s + ";" + seps[i] for i, s in enumerate(statements))
    out, wrappers = split_sql("x.sql", text)
    assert wrappers == 0
    assert [s.text for s in out] == statements
    for s in out:
        assert text.split("\n")[s.line - 1].startswith(s.text.split("\n")[0][:20]) or \
            s.text.split("\n")[0] in text.split("\n")[s.line - 1]


_cypher_piece = st.one_of(
    st.from_regex(r"[A-Za-z0-9 (){}:.,=<>-]{1,15}", fullmatch=True),
    _literal.map(lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"),
    _literal.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.from_regex(r"[a-z;]{1,8}", fullmatch=True).map(lambda s: "`" + s + "`"),
)


@given(st.lists(st.lists(_cypher_piece, min_size=1, max_size=5).map(" ".join).filter(lambda s: s.strip()),
                min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_cypher_split_round_trips(statements):
    statements = [s.strip() for s in statements]
    text = ";\n// a comment; with a semicolon\n".join(statements) + ";"
    out = split_cypher("x.cypher", text)
    assert [s.text for s in out] == statements


_arg = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\r"), max_size=10)


def _quote(arg: str) -> str:
    out = []
    for ch in arg:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 32 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@given(st.lists(_arg, min_size=1, max_size=6))
def test_redis_split_args_round_trips(args):
    assert split_args(" ".join(_quote(a) for a in args)) == args


def test_redis_quote_errors():
    for bad in ('SET "a', "SET 'a", 'SET "a"b', "SET 'a'b"):
        with pytest.raises(RedisQuoteError):
            split_args(bad)


_PIECES = st.sampled_from([
    "-- Phase 1: EXPAND\n", "-- Phase 2: MIGRATE\n", "-- Rollback:\n", "-- Validation:\n",
    "-- check x: sql:SELECT 1; expect: 1\n", "-- Backfill: table=t key=id\n", "BEGIN;", "COMMIT;", "SELECT 1;",
    "'", '"', "`", "${", "}", "{", "[", "]", "(", ")", ":", ",", "\n", " ", "$$", "export default ",
    "migration = Migration(", "id: 'x'", "phases: { expand: [", "content: `", "// ", "# ", "/*", "*/", "\\",
    "UPDATE t SET a = 1 WHERE id >= :lo AND id < :hi;", "-- Version: 1.0.0\n", "-- Database: timescale\n",
    "SET a b\n", "MATCH (n) RETURN n;", "x", "1", "-", "new Date('2025-01-01')", "exports.up = 1;", "dict(",
    "Step(content=", '"""', "f'{x}'",
])


@given(st.lists(_PIECES, max_size=25).map("".join))
@settings(max_examples=300, deadline=None)
def test_syntax_soup_never_crashes(text):
    # any failure must be a ParseError naming the file, never another exception
    for name in ("m/001_x.sql", "m/001_x.cypher", "m/001_x.redis", "m/x.py", "m/x.ts", "m/x.js"):
        try:
            m = parse_migration(name, text.encode())
        except ParseError as exc:
            assert exc.path == name and exc.hint
        else:
            assert m.checksum == checksum_bytes(text.encode())


_PHASE_WORD = {"expand": "EXPAND", "migrate": "MIGRATE", "contract": "CONTRACT"}


@st.composite
def sectioned_files(draw):
    """A file built from random sections, and where each statement must land (section, line)."""
    lang = draw(st.sampled_from(["sql", "cypher", "redis"]))
    prefix = {"sql": "--", "cypher": "//", "redis": "#"}[lang]
    lines = [f"{prefix} Migration: generated", f"{prefix} Version: 1.0.0", ""]
    expected: list[tuple[str, str, str, int]] = []
    phases = [p for p in ("expand", "migrate", "contract") if draw(st.booleans())]
    rollbacks = [p for p in ("expand", "migrate", "contract") if draw(st.booleans())]
    counter = 0

    def statements(role, phase):
        nonlocal counter
        for _ in range(draw(st.integers(0, 3))):
            counter += 1
            if draw(st.booleans()):
                lines.append(f"{prefix} a comment")
            text = {"sql": f"CREATE TABLE t{counter} (a int)", "cypher": f"CREATE (:N{counter} {{a: 'x;y'}})",
                    "redis": f"SET k{counter} \"v {counter}\""}[lang]
            lines.append(text + ("" if lang == "redis" else ";"))
            expected.append((role, phase, text, len(lines)))
            if draw(st.booleans()):
                lines.append("")

    if not phases:   # statements before any marker are the expand phase
        statements("phase", "expand")
    for p in phases:
        lines.append(f"{prefix} Phase {('expand', 'migrate', 'contract').index(p) + 1}: {_PHASE_WORD[p]} text")
        statements("phase", p)
    for p in rollbacks:
        lines.append(draw(st.sampled_from([f"{prefix} Rollback: {_PHASE_WORD[p]}", f"{prefix} Rollback ({p}): undo"])))
        statements("rollback", p)
    return lang, "\n".join(lines) + "\n", expected


@given(sectioned_files())
@settings(max_examples=200, deadline=None)
def test_statements_land_in_their_section_at_their_line(case):
    lang, text, expected = case
    m = parse_migration(f"m/20250101_000000_schema_x.{lang}", text.encode())
    got = [("phase", p, s.content, s.line) for p in ("expand", "migrate", "contract") for s in m.phases.get(p, [])]
    got += [("rollback", p, s.content, s.line) for p in ("expand", "migrate", "contract")
            for s in m.rollback.get(p, [])]
    key = lambda e: (e[0], ("expand", "migrate", "contract").index(e[1]), e[3])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
