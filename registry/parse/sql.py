"""SQL statements with PostgreSQL's own parser (pglast): splitting, transaction wrappers, autocommit.

Each statement keeps its original text (comments before it trimmed) and the
line where it starts. ``BEGIN``/``COMMIT`` wrappers from the seed's template are
dropped (the executor owns transactions); ``ROLLBACK``, ``SAVEPOINT`` and the
like are refused. Statements PostgreSQL will not run inside a transaction are
recognised from the parse tree (``autocommit_reason``).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from registry.parse.errors import ParseError

# `:lo` / `:hi` placeholders of a backfill UPDATE; replaced (same length) for parsing only
_PLACEHOLDER = re.compile(r"(?<![:\w]):(lo|hi)\b")
_LEADING_NOISE = re.compile(r"\A(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)

TIMESCALE_FUNCTIONS = frozenset({
    "create_hypertable", "add_compression_policy", "remove_compression_policy", "add_retention_policy",
    "remove_retention_policy", "add_continuous_aggregate_policy", "remove_continuous_aggregate_policy",
    "refresh_continuous_aggregate", "time_bucket", "time_bucket_gapfill", "add_dimension",
    "set_chunk_time_interval", "compress_chunk", "decompress_chunk", "add_reorder_policy",
    "by_range", "by_hash", "add_columnstore_policy", "convert_to_columnstore",
})

_WRAPPERS = {"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT"}


class Statement:
    """One SQL statement: original text (no trailing ``;``), 1-based line, node type, parse tree.

    ``kind`` is the node's type name (``CreateStmt``…); ``fields`` its fields as PostgreSQL's
    parser gives them in JSON (``parse_sql_json``: dicts and lists, read by
    :func:`autocommit_reason_json` and ``classify.classify_sql_json``). The pglast tree
    (``node``) is built on first use, by parsing the statement's own text again: most
    statements never need it.
    """

    __slots__ = ("text", "line", "kind", "fields", "_node", "locks")

    def __init__(self, text: str, line: int, kind: str = "", node: Any = None, locks: Any = None,
                 fields: dict | None = None) -> None:
        self.text, self.line, self.kind, self.fields, self._node, self.locks = text, line, kind, fields, node, locks

    @property
    def node(self) -> Any:
        if self._node is None:
            self._node = parse(self.text)[0].stmt
        return self._node

    def __repr__(self) -> str:
        return f"Statement({self.text!r}, line={self.line}, kind={self.kind!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Statement) and (self.text, self.line) == (other.text, other.line)


def for_parser(text: str) -> str:
    """``text`` with backfill placeholders replaced by same-length literals, so offsets still match."""
    return _PLACEHOLDER.sub(lambda m: "0" * len(m.group(0)), text)


def parse(text: str) -> tuple:
    """pglast's RawStmt list for ``text`` (placeholders tolerated); raises pglast's ParseError."""
    from pglast import parse_sql

    return parse_sql(for_parser(text))


def parse_json(text: str) -> list[dict]:
    """The statements of ``text`` as PostgreSQL's parser gives them in JSON (``parse_sql_json``, read
    with orjson): ``[{"stmt": {node type: fields}, "stmt_location": ..., "stmt_len": ...}, ...]``
    (placeholders tolerated); raises pglast's ParseError."""
    import orjson
    from pglast.parser import parse_sql_json

    return orjson.loads(parse_sql_json(for_parser(text))).get("stmts", [])


def _syntax_error(path: str, text: str, first_line: int) -> ParseError | None:
    """The ParseError for ``text`` (from pglast's tree parser, whose offsets are characters)."""
    from pglast.parser import ParseError as PgParseError

    try:
        parse(text)
    except PgParseError as exc:
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = first_line + text[:max(index, 0)].count("\n")
        return ParseError(path, f"SQL syntax error: {exc.args[0]}", line=line, field="sql",
                          hint="fix the statement (mreg reads SQL with PostgreSQL's own parser, pglast)")
    return None


def split(path: str, text: str, first_line: int = 1) -> tuple[list[Statement], int]:
    """Statements of ``text`` (transaction wrappers removed) and how many wrappers were removed.

    One call to PostgreSQL's parser (pglast's ``parse_sql_json``: the statements' boundaries and
    node types, without building Python trees); see ``Statement.node``.
    """
    from pglast.parser import ParseError as PgParseError

    try:
        raw = parse_json(text)
    except PgParseError:
        raise _syntax_error(path, text, first_line) or ParseError(
            path, "SQL syntax error", line=first_line, field="sql", hint="fix the statement") from None
    data = None if text.isascii() else text.encode("utf-8")  # offsets are in UTF-8 bytes
    out: list[Statement] = []
    wrappers = 0
    pos, line = 0, first_line   # newlines are counted once, left to right
    for rs in raw:
        start = rs.get("stmt_location", 0)
        length = rs.get("stmt_len", 0)
        if data is None:
            end = start + length if length else len(text)
        else:
            end = len(data[:start + length].decode("utf-8")) if length else len(text)
            start = len(data[:start].decode("utf-8"))
        chunk = text[start:end]
        lead = _LEADING_NOISE.match(chunk).end()
        body = chunk[lead:].rstrip().rstrip(";").rstrip()
        line += text.count("\n", pos, start + lead)
        pos = start + lead
        (kind, fields), = rs["stmt"].items()
        if kind == "TransactionStmt":
            if fields.get("kind") in _WRAPPERS:
                wrappers += 1
                continue
            raise ParseError(path, f"transaction control statement `{body}` inside a migration", line=line,
                             field="sql", hint="remove it: mreg runs each phase in its own transaction "
                             "(or outside one with `txmode: none`)")
        out.append(Statement(body, line, kind, locks=lock_summary(kind, fields), fields=fields))
    return out, wrappers


# Statements that may take no lock a concurrent session could wait for (lock_summary).
_CREATING = frozenset({"CompositeTypeStmt", "CreateEnumStmt", "CreateDomainStmt", "CreateFunctionStmt"})
_LOCK_FREE_KINDS = _CREATING | {"CreateStmt", "CreateSeqStmt", "CreateSchemaStmt", "IndexStmt", "InsertStmt",
                                "CommentStmt"}
_SEQUENCE_FUNCS = frozenset({"nextval", "setval", "currval", "lastval"})
_COMMENT_RELATIONS = frozenset({"OBJECT_TABLE", "OBJECT_COLUMN", "OBJECT_SEQUENCE"})
# settings the migration template sets (SET [LOCAL] lock_timeout = '5s'): they change no name's meaning
_HARMLESS_SETTINGS = frozenset({"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout",
                                "client_min_messages", "work_mem", "maintenance_work_mem", "application_name"})


def _relation(rv: dict) -> tuple:
    return (rv.get("schemaname") or None, rv.get("relname"))


def _strings_of(items: list) -> list:
    """The ``String`` values of a JSON name list (None for an item that is not a string)."""
    return [_json_sval(n) or None for n in items]


def _named_relations(fields: dict) -> list | None:
    """Every relation named under ``fields`` (pglast JSON: a ``RangeVar``, written as a node or
    inline, holds ``relname``; a sequence's ``OWNED BY`` names its table), or None when a
    ``regclass`` cast or a sequence function names one in a string (they lock what they name)."""
    out = []
    stack: list = [fields]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if "relname" in item:
                out.append(_relation(item))
            elif item.get("defname") == "owned_by":
                parts = _strings_of(item.get("arg", {}).get("List", {}).get("items", []))
                if parts != ["none"]:
                    parts = parts[:-1]  # the column's table
                    out.append((parts[0], parts[1]) if len(parts) == 2 else (None, parts[-1] if parts else None))
            for k, v in item.items():
                if k == "TypeCast" and "regclass" in _strings_of(v.get("typeName", {}).get("names", [])):
                    return None
                if k == "FuncCall" and (_strings_of(v.get("funcname", [])) or [None])[-1] in _SEQUENCE_FUNCS:
                    return None
                if type(v) is dict or type(v) is list:
                    stack.append(v)
        elif type(item) is list:
            stack.extend(item)
    return out


def _new(own: tuple, fields: dict) -> tuple:
    """What a CREATE makes new: nothing when it says ``IF NOT EXISTS`` (the relation may exist, and be
    in use), else the relation."""
    return () if fields.get("if_not_exists") else (own,)


def lock_summary(kind: str, fields: dict):
    """``(creates, names)`` of a statement (pglast JSON node type and fields) that takes no lock a
    concurrent session could wait for, provided the relations in ``names`` are new ones (created
    in the same transaction); False for any other statement.

    Such statements create a table, sequence, type, domain, schema or function, or create an
    index on, comment on, or insert ``VALUES`` into a table; a ``SET`` of a timeout (the migration
    template's ``SET lock_timeout``) is one too. Anything that names another relation
    (a foreign key, ``LIKE``, ``INHERITS``, ``PARTITION OF``, a ``regclass``) lists it in
    ``names``, so the statement counts as lock-free only when that relation is new too.
    Relations are ``(schema or None, name)`` as written; a ``CREATE … IF NOT EXISTS`` creates
    nothing here (the relation may exist already, and be in use). ``registry.apply.group`` uses this.
    """
    if kind == "VariableSetStmt":
        return ((), ()) if fields.get("name") in _HARMLESS_SETTINGS else False
    if kind not in _LOCK_FREE_KINDS:
        return False
    if kind == "CreateStmt":
        if fields.get("inhRelations") or fields.get("partbound") or fields.get("ofTypename"):
            return False
        own = _relation(fields["relation"])
        names = _named_relations(fields)
        return False if names is None else (_new(own, fields), tuple(n for n in names if n != own))
    if kind == "CreateSeqStmt":
        own = _relation(fields["sequence"])
        names = _named_relations(fields)
        return False if names is None else (_new(own, fields), tuple(n for n in names if n != own))
    if kind == "CreateSchemaStmt":
        return False if fields.get("schemaElts") else ((), ())
    if kind == "IndexStmt" and fields.get("concurrent"):
        return False
    if kind == "InsertStmt" and fields.get("withClause"):
        return False
    if kind == "CommentStmt":
        objtype = fields.get("objtype")
        parts = _strings_of(fields.get("object", {}).get("List", {}).get("items", []))
        if objtype not in _COMMENT_RELATIONS:
            return False
        if objtype == "OBJECT_COLUMN":
            parts = parts[:-1]
        if not 1 <= len(parts) <= 2 or None in parts:
            return False
        return ((), ((parts[0], parts[1]) if len(parts) == 2 else (None, parts[0]),))
    if kind == "CreateFunctionStmt" and not fields.get("sql_body"):
        # a LANGUAGE sql body in a string is analysed at creation (check_function_bodies), which
        # locks the tables it reads; other languages' bodies are not looked into
        for opt in fields.get("options", []):
            d = opt.get("DefElem", {})
            if d.get("defname") == "language" and d.get("arg", {}).get("String", {}).get("sval") == "sql":
                return False
    names = _named_relations(fields)  # types, domains, functions, IndexStmt, InsertStmt
    return False if names is None else ((), tuple(names))


# Node types autocommit_reason may name: any other statement runs in a transaction.
AUTOCOMMIT_KINDS = frozenset({
    "IndexStmt", "DropStmt", "ReindexStmt", "VacuumStmt", "AlterEnumStmt", "CreatedbStmt", "DropdbStmt",
    "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt", "CallStmt", "CreateTableAsStmt",
    "AlterTableStmt",
})


def statement_autocommit_reason(st: Statement) -> str | None:
    """``autocommit_reason`` of a split statement, from its JSON fields (no pglast tree is built)."""
    if st.kind not in AUTOCOMMIT_KINDS:
        return None
    if st.fields is None:
        return autocommit_reason(st.node)
    return autocommit_reason_json(st.kind, st.fields)


def json_nodes(value: Any) -> Iterator[tuple[str, dict]]:
    """``(node type, fields)`` of every node ``parse_sql_json`` wrapped in ``{"Type": {...}}`` under
    ``value`` (dicts and lists from its JSON), depth first. Fields typed as one node type (e.g.
    ``CallStmt.funccall``) are not wrapped by the parser, so they are not named here."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if len(item) == 1:
                (key, inner), = item.items()
                if type(inner) is dict and key[:1].isupper():
                    yield key, inner
            stack.extend(v for v in item.values() if type(v) in (dict, list))
        elif type(item) is list:
            stack.extend(reversed(item))


# REINDEX of many tables commits table by table: PostgreSQL refuses it in a transaction block
_REINDEX_MANY = {"REINDEX_OBJECT_SCHEMA": "REINDEX SCHEMA", "REINDEX_OBJECT_SYSTEM": "REINDEX SYSTEM",
                 "REINDEX_OBJECT_DATABASE": "REINDEX DATABASE"}


def option_is_on(value: Any) -> bool:
    """A boolean option's value as PostgreSQL's ``defGetBoolean`` reads it: no value (``REINDEX
    (CONCURRENTLY)``) is true; ``0``/``false``/``off`` are false (any case); anything else true (a
    word PostgreSQL refuses fails on the server either way)."""
    return value is None or str(value).strip().lower() not in ("0", "false", "off")


def concurrently_option(params: Any) -> bool:
    """Whether the ``concurrently`` option of a ``REINDEX (…)`` parse tree's ``params`` is on."""
    for p in params or ():
        if getattr(p, "defname", "") == "concurrently":
            arg = getattr(p, "arg", None)
            if arg is None:
                return True
            return option_is_on(getattr(arg, "sval", None) if hasattr(arg, "sval") else getattr(arg, "ival", 0))
    return False


def concurrently_option_json(params: Any) -> bool:
    """:func:`concurrently_option` read from the JSON form (an ``Integer`` 0 has no ``ival`` there)."""
    for p in params or ():
        d = (p.get("DefElem") or {}) if type(p) is dict else {}
        if d.get("defname") == "concurrently":
            arg = d.get("arg")
            if arg is None:
                return True
            if "Integer" in arg:
                return option_is_on(arg["Integer"].get("ival", 0))
            return option_is_on(_json_sval(arg))
    return False


def _json_sval(n: Any) -> str:
    return (n.get("String") or {}).get("sval", "") if type(n) is dict else ""


def autocommit_reason_json(kind: str, f: dict) -> str | None:
    """:func:`autocommit_reason` read from a statement's JSON fields (``parse_sql_json``): the same
    answers (tests/unit/test_parse_sql_json.py compares both on many statements)."""
    if kind == "IndexStmt" and f.get("concurrent"):
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and f.get("concurrent"):
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt" and concurrently_option_json(f.get("params")):
        return "REINDEX CONCURRENTLY"
    if kind == "ReindexStmt" and f.get("kind") in _REINDEX_MANY:
        return _REINDEX_MANY[f["kind"]]
    if kind == "VacuumStmt" and f.get("is_vacuumcmd"):
        return "VACUUM"
    if kind == "AlterEnumStmt" and f.get("newVal") is not None and not f.get("oldVal"):
        return "ALTER TYPE ... ADD VALUE (refused in a transaction before PostgreSQL 12)"
    if kind in ("CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt"):
        return kind.removesuffix("Stmt")
    if kind == "CallStmt":
        names = [_json_sval(n) for n in (f.get("funccall") or {}).get("funcname") or ()]
        if names and names[-1] == "refresh_continuous_aggregate":
            return "CALL refresh_continuous_aggregate"
    if kind == "CreateTableAsStmt" and f.get("into") is not None and not f["into"].get("skipData"):
        for opt in f["into"].get("options") or ():
            opt = opt.get("DefElem") or {}
            if opt.get("defnamespace") == "timescaledb" and opt.get("defname") in ("continuous",):
                return "CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) ... WITH DATA"
    if kind == "AlterTableStmt":
        for cmd in f.get("cmds") or ():
            part = (cmd.get("AlterTableCmd") or {}).get("def")
            if type(part) is dict and (part.get("PartitionCmd") or {}).get("concurrent"):
                return "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"
    return None


def _name(n: Any) -> str:
    return getattr(n, "sval", "") or ""


def autocommit_reason(node: Any) -> str | None:
    """Why PostgreSQL (or TimescaleDB) refuses to run this statement in a transaction, or None."""
    kind = type(node).__name__
    if kind == "IndexStmt" and node.concurrent:
        return "CREATE INDEX CONCURRENTLY"
    if kind == "DropStmt" and node.concurrent:
        return "DROP INDEX CONCURRENTLY"
    if kind == "ReindexStmt" and concurrently_option(node.params):
        return "REINDEX CONCURRENTLY"
    if kind == "ReindexStmt" and getattr(node.kind, "name", None) in _REINDEX_MANY:
        return _REINDEX_MANY[node.kind.name]
    if kind == "VacuumStmt" and node.is_vacuumcmd:
        return "VACUUM"
    if kind == "AlterEnumStmt" and node.newVal is not None and not node.oldVal:
        return "ALTER TYPE ... ADD VALUE (refused in a transaction before PostgreSQL 12)"
    if kind in ("CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt"):
        return kind.removesuffix("Stmt")
    if kind == "CallStmt":
        names = [_name(n) for n in node.funccall.funcname]
        if names and names[-1] == "refresh_continuous_aggregate":
            return "CALL refresh_continuous_aggregate"
    if kind == "CreateTableAsStmt" and node.into is not None and not node.into.skipData:
        # a continuous aggregate materialised at creation (WITH DATA, the default); WITH NO DATA may run in one
        for opt in node.into.options or ():
            if getattr(opt, "defnamespace", None) == "timescaledb" and opt.defname in ("continuous",):
                return "CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) ... WITH DATA"
    if kind == "AlterTableStmt":
        for cmd in node.cmds or ():
            part = getattr(cmd, "def_", None)
            if type(part).__name__ == "PartitionCmd" and getattr(part, "concurrent", False):
                return "ALTER TABLE ... DETACH PARTITION CONCURRENTLY"
    return None


def walk(node: Any) -> Iterator[Any]:
    """Every pglast AST node under ``node`` (itself included), depth first."""
    from pglast.ast import Node

    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Node):
            yield item
            for attr in item:
                value = getattr(item, attr, None)
                if isinstance(value, (Node, tuple, list)):
                    stack.append(value)
        elif isinstance(item, (tuple, list)):
            stack.extend(reversed(item))


_TIMESCALE_HINTS = ("timescale", "hypertable", "time_bucket", "_policy", "continuous", "compress", "chunk",
                    "add_dimension", "by_range", "by_hash", "columnstore")


def may_use_timescale(text: str) -> bool:
    """False when ``text`` has no TimescaleDB word at all (then no statement of it can use TimescaleDB)."""
    lowered = text.lower()
    return any(h in lowered for h in _TIMESCALE_HINTS)


def uses_timescale(nodes: list[Any], text: str | None = None) -> bool:
    """True when the statements (pglast nodes or ``Statement``) call TimescaleDB functions, options
    or its extension.

    ``text``, when given, is checked first for any TimescaleDB word, so most files skip the tree walk.
    """
    if text is not None and not may_use_timescale(text):
        return False
    for root in nodes:
        if isinstance(root, Statement):
            root = root.node
        for n in walk(root):
            kind = type(n).__name__
            if kind == "FuncCall" and n.funcname and _name(n.funcname[-1]) in TIMESCALE_FUNCTIONS:
                return True
            if kind == "DefElem" and getattr(n, "defnamespace", None) == "timescaledb":
                return True
            if kind == "CreateExtensionStmt" and n.extname == "timescaledb":
                return True
            if kind == "DefElem" and (n.defname or "").startswith("timescaledb."):
                return True
    return False
