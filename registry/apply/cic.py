"""An interrupted ``CREATE INDEX CONCURRENTLY`` or ``REINDEX CONCURRENTLY``: find and drop the INVALID
index it left.

A ``CREATE INDEX CONCURRENTLY`` commits the new index's catalog entry first and builds it afterwards;
if the build stops — the applying process killed, its backend terminated, a lock timeout, a unique
violation — the index stays behind marked INVALID (``pg_index.indisvalid = false``): never used by
queries, yet still maintained by every write. Running the statement again then fails ("relation
already exists"), or, written with ``IF NOT EXISTS``, silently keeps the invalid index; an unnamed one
builds a second index (``t_a_idx1``) next to the invalid ``t_a_idx``. A ``REINDEX CONCURRENTLY``
builds a copy of each index named ``<index>_ccnew``, swaps names, and drops the old one, which by then
is called ``<index>_ccold``: interrupted, it leaves an INVALID ``_ccnew`` (before the swap) or
``_ccold`` (after it); PostgreSQL's documentation says to drop those and run ``REINDEX`` again.

So before running such a statement (every attempt: the first, a retry after a lock timeout, a resume
after a crash) the engine looks on the statement's table for the INVALID indexes the statement could
have left and drops each with ``DROP INDEX CONCURRENTLY IF EXISTS``; the step's ``batch_checkpoint``
records ``dropped_invalid_index`` (the qualified name, or a list when several were dropped). A valid
index is never touched. Which names the statement could have left:

- ``CREATE [UNIQUE] INDEX CONCURRENTLY name ON t``: ``name``.
- ``CREATE [UNIQUE] INDEX CONCURRENTLY ON t (…)`` (no name): the name PostgreSQL chooses
  (``ChooseIndexName`` in ``src/backend/commands/indexcmds.c``): ``<table>_<col>_<col>…_idx``, or
  ``…_idx1``, ``…_idx2`` when that name is taken, cut to 63 bytes by ``makeObjectName``
  (``src/backend/commands/indexcmds.c``), the longer of table and columns part losing characters
  first; a column is named by ``ChooseIndexColumnNames`` (``INCLUDE`` columns too; a repeated name
  gets ``1``, ``2``… appended) and an expression by ``FigureColname`` (``lower(s)`` → ``lower``,
  ``(s::int)`` → ``s``, ``(a + b)`` → ``expr``). Reproduced by ``index_name`` below and checked
  against the names a real PostgreSQL chooses (``tests/targets/test_interrupted_cic.py``). Not
  reproduced, so no cleanup: identifiers that are not ASCII (the cut depends on the server encoding)
  and expression forms outside ``_FIGURED``/``_EXPR``.
- ``REINDEX [(…)] INDEX CONCURRENTLY x``: ``x_ccnew``/``x_ccold`` (``ChooseRelationName(x, NULL,
  "ccnew")``: numbered ``x_ccnew1``… when taken, cut to 63 bytes) on x's table.
- ``REINDEX [(…)] TABLE CONCURRENTLY t``: the same for every index of ``t`` and of its TOAST table
  (``pg_toast.pg_toast_<oid>_index_ccold``). Not the partitions of a partitioned table or index, nor
  the ``SCHEMA``, ``DATABASE`` and ``SYSTEM`` forms: those are run as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.model import Step
from registry.parse.sql import concurrently_option

NAMEDATALEN = 64  # PostgreSQL's default (pg_config_manual.h); identifiers hold at most 63 bytes


@dataclass(frozen=True)
class ConcurrentIndex:
    """The INVALID indexes a concurrent index statement may leave on ``schema.table``.

    ``name``: the exact name (a named ``CREATE INDEX CONCURRENTLY``); ``chosen``: the two name parts
    PostgreSQL's ``makeObjectName`` joins with label ``idx`` (an unnamed one); ``index``: the index of a
    ``REINDEX INDEX`` (its table is found in the catalog, ``table`` is None); ``reindex``: whether the
    leftovers are ``_ccnew``/``_ccold`` copies of the table's (or ``index``'s) indexes.
    """

    schema: str | None
    table: str | None
    name: str | None = None
    chosen: tuple[str, str] | None = None
    index: str | None = None
    reindex: bool = False

    @property
    def statement(self) -> str:
        return "REINDEX CONCURRENTLY" if self.reindex else "CREATE INDEX CONCURRENTLY"

    def left(self, name: str, indexes: list[str]) -> bool:
        """Whether the INVALID index ``name`` may be a leftover (``indexes``: every index name of the table)."""
        if self.reindex:
            bases = [self.index] if self.index else indexes
            return any(b != name and (_numbered(name, b, None, "ccnew") or _numbered(name, b, None, "ccold"))
                       for b in bases)
        if self.name is not None:
            return name == self.name
        return self.chosen is not None and _numbered(name, self.chosen[0], self.chosen[1], "idx")


def _numbered(name: str, name1: str, name2: str | None, label: str) -> bool:
    """Whether ``ChooseRelationName(name1, name2, label)`` could have returned ``name`` (label, label1, …)."""
    digits = re.search(r"\d*$", name).group(0)
    if digits and (digits.startswith("0") or len(digits) > 9):
        digits = ""
    return name == make_object_name(name1, name2, label + digits)


def make_object_name(name1: str, name2: str | None, label: str | None) -> str:
    """PostgreSQL's ``makeObjectName`` for ASCII names: ``name1_name2_label`` within 63 bytes, the
    longer of ``name1`` and ``name2`` shortened first."""
    overhead = (1 if name2 is not None else 0) + (len(label) + 1 if label else 0)
    avail = NAMEDATALEN - 1 - overhead
    n1, n2 = len(name1), len(name2 or "")
    while n1 + n2 > avail:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    out = name1[:n1]
    if name2 is not None:
        out += "_" + name2[:n2]
    if label:
        out += "_" + label
    return out


# FigureColnameInternal (src/backend/parser/parse_target.c), the forms reproduced: node kind → name
_FIGURED = {"A_ArrayExpr": "array", "CoalesceExpr": "coalesce"}
# node kinds for which FigureColnameInternal finds no name ("expr" at the top)
_EXPR = {"A_Const", "BoolExpr", "NullTest", "BooleanTest"}


def _figure(node) -> tuple[int, str | None] | None:
    """(strength, name) as PostgreSQL's ``FigureColnameInternal``; None for a form not reproduced."""
    kind = type(node).__name__
    if kind == "ColumnRef":
        names = [f.sval for f in node.fields if type(f).__name__ == "String"]
        return (2, names[-1]) if names else (0, None)
    if kind == "FuncCall":
        return 2, node.funcname[-1].sval
    if kind in _FIGURED:
        return 2, _FIGURED[kind]
    if kind == "MinMaxExpr":
        return 2, "greatest" if int(node.op) == 0 else "least"
    if kind == "A_Expr":
        return (2, "nullif") if node.kind.name == "AEXPR_NULLIF" else (0, None)
    if kind == "TypeCast":
        inner = _figure(node.arg)
        if inner is None:
            return None
        if inner[0] <= 1 and node.typeName is not None:
            return 1, node.typeName.names[-1].sval
        return inner
    if kind == "CollateClause":
        return _figure(node.arg)
    if kind == "CaseExpr":
        inner = _figure(node.defresult) if node.defresult is not None else (0, None)
        if inner is None:
            return None
        return (1, "case") if inner[0] <= 1 else inner
    if kind in _EXPR:
        return 0, None
    return None


def index_column_names(elems) -> list[str] | None:
    """PostgreSQL's ``ChooseIndexColumnNames`` over the index's key and INCLUDE elements (None: not reproduced)."""
    result: list[str] = []
    for elem in elems:
        if elem.name:
            orig = elem.name
        else:
            figured = _figure(elem.expr)
            if figured is None:
                return None
            orig = figured[1] or "expr"
        cur, i = orig, 1
        while cur in result:
            suffix = str(i)
            cur = orig[:NAMEDATALEN - 1 - len(suffix)] + suffix
            i += 1
        result.append(cur)
    return result


def index_name_addition(colnames: list[str]) -> str:
    """PostgreSQL's ``ChooseIndexNameAddition``: the column names joined by ``_``, stopped past 63 bytes."""
    buf = ""
    for name in colnames:
        if buf:
            buf += "_"
        buf += name[:NAMEDATALEN - 1]
        if len(buf) >= NAMEDATALEN:
            break
    return buf


def index_name(table: str, colnames: list[str], number: int = 0) -> str:
    """The name PostgreSQL gives an unnamed index on ``table``: ``number`` 0 the first choice, n its nth retry."""
    return make_object_name(table, index_name_addition(colnames), "idx" + (str(number) if number else ""))


def _ascii(*names: str | None) -> bool:
    return all(n is None or n.isascii() for n in names)


def concurrent_index(step: Step) -> ConcurrentIndex | None:
    """What a one-statement ``CREATE INDEX CONCURRENTLY`` or ``REINDEX … CONCURRENTLY`` step may leave, else None."""
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
    kind = type(stmt).__name__
    if kind == "IndexStmt" and stmt.concurrent:
        rel = stmt.relation
        if stmt.idxname:
            return ConcurrentIndex(rel.schemaname, rel.relname, name=stmt.idxname)
        cols = index_column_names(list(stmt.indexParams or ()) + list(stmt.indexIncludingParams or ()))
        if cols is None or not _ascii(rel.relname, *cols):
            return None
        return ConcurrentIndex(rel.schemaname, rel.relname, chosen=(rel.relname, index_name_addition(cols)))
    if kind == "ReindexStmt" and concurrently_option(stmt.params) and stmt.relation is not None:
        rel = stmt.relation
        if not _ascii(rel.relname):
            return None
        if stmt.kind.name == "REINDEX_OBJECT_INDEX":
            return ConcurrentIndex(rel.schemaname, None, index=rel.relname, reindex=True)
        if stmt.kind.name == "REINDEX_OBJECT_TABLE":
            return ConcurrentIndex(rel.schemaname, rel.relname, reindex=True)
    return None


_FIND = ("SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS qualified, c.relname AS name, "
         "i.indisvalid AS valid FROM pg_index i "
         "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
         "WHERE i.indrelid = {table} ORDER BY c.relname")


def invalid_indexes(session, index: ConcurrentIndex) -> list[str]:
    """The qualified names of the INVALID indexes ``index``'s statement may have left (the session's search_path)."""
    name = "quote_ident(%(schema)s) || '.' || quote_ident(%(rel)s)" if index.schema else "quote_ident(%(rel)s)"
    if index.table is None:
        table = f"(SELECT x.indrelid FROM pg_index x WHERE x.indexrelid = to_regclass({name}))"
    elif index.reindex:  # REINDEX TABLE rebuilds the TOAST table's index too
        table = (f"ANY(ARRAY[to_regclass({name}), "
                 f"(SELECT t.reltoastrelid FROM pg_class t WHERE t.oid = to_regclass({name}))])")
    else:
        table = f"to_regclass({name})"
    rows = session.query(_FIND.format(table=table),
                         {"schema": index.schema, "rel": index.table if index.table is not None else index.index})
    names = [r["name"] for r in rows]
    return [r["qualified"] for r in rows if not r["valid"] and index.left(r["name"], names)]


def drop_invalid(session, index: ConcurrentIndex, *, line: int = 0) -> list[str]:
    """Drop the INVALID indexes ``index``'s statement may have left (``session`` runs outside a
    transaction); return the qualified names dropped."""
    found = invalid_indexes(session, index)
    for name in found:
        session.execute(Step(content=f"DROP INDEX CONCURRENTLY IF EXISTS {name}", name=f"drop invalid index {name}",
                             line=line))
    return found
