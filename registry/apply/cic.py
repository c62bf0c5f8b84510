"""``CREATE INDEX CONCURRENTLY`` that was interrupted: find and drop the INVALID index it left.

A ``CREATE INDEX CONCURRENTLY`` commits the new index's catalog entry first and builds it afterwards;
if the build stops — the applying process killed, its backend terminated, a lock timeout, a unique
violation — the index stays behind marked INVALID (``pg_index.indisvalid = false``): never used by
queries, yet still maintained by every write. Running the statement again then fails ("relation
already exists"), or, written with ``IF NOT EXISTS``, silently keeps the invalid index.

So before running such a statement (every attempt: the first, a retry after a lock timeout, a resume
after a crash) the engine looks for an index of the statement's name on the statement's table that is
INVALID and drops it with ``DROP INDEX CONCURRENTLY IF EXISTS``; the step's ``batch_checkpoint``
records ``dropped_invalid_index``. A valid index of that name is never touched. A statement that names
no index (PostgreSQL then picks the name) cannot be matched and is run as written.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.model import Step


@dataclass(frozen=True)
class ConcurrentIndex:
    """What a ``CREATE INDEX CONCURRENTLY`` statement builds: ``name`` on ``schema.table``."""

    schema: str | None
    table: str
    name: str


def concurrent_index(step: Step) -> ConcurrentIndex | None:
    """The index a one-statement ``CREATE [UNIQUE] INDEX CONCURRENTLY name ON table`` step builds, else None."""
    if step.kind != "sql" or "concurrently" not in step.content.lower():
        return None
    from pglast.parser import ParseError as PgParseError

    from registry.parse.sql import parse

    try:
        nodes = parse(step.content)
    except PgParseError:
        return None
    if len(nodes) != 1:
        return None
    stmt = getattr(nodes[0], "stmt", nodes[0])
    if type(stmt).__name__ != "IndexStmt" or not stmt.concurrent or not stmt.idxname:
        return None
    return ConcurrentIndex(stmt.relation.schemaname, stmt.relation.relname, stmt.idxname)


_FIND = ("SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name FROM pg_index i "
         "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
         "WHERE i.indrelid = to_regclass({table}) AND c.relname = %(name)s AND NOT i.indisvalid")


def invalid_index(session, index: ConcurrentIndex) -> str | None:
    """The qualified name of ``index`` if it exists on its table and is INVALID (the session's search_path)."""
    table = ("quote_ident(%(schema)s) || '.' || quote_ident(%(table)s)" if index.schema
             else "quote_ident(%(table)s)")
    rows = session.query(_FIND.format(table=table),
                         {"schema": index.schema, "table": index.table, "name": index.name})
    return rows[0]["name"] if rows else None


def drop_invalid(session, index: ConcurrentIndex, *, line: int = 0) -> str | None:
    """Drop ``index`` if it is INVALID (``session`` runs outside a transaction); return what was dropped."""
    found = invalid_index(session, index)
    if found is None:
        return None
    session.execute(Step(content=f"DROP INDEX CONCURRENTLY IF EXISTS {found}", name=f"drop invalid index {found}",
                         line=line))
    return found
