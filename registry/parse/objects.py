"""What a SQL statement creates and references, read from pglast's parse tree (for the graph).

Objects are ``(namespace, name)``: ``rel`` (tables, views, materialized views,
sequences, indexes: they share PostgreSQL's relation namespace), ``type``,
``func``, ``schema``. Names are schema-qualified unless in ``public``.
"""

from __future__ import annotations

from typing import Any

from registry.parse.sql import TIMESCALE_FUNCTIONS, parse, walk

Obj = tuple[str, str]

# TimescaleDB functions whose first argument names a relation
_REGCLASS_FIRST = TIMESCALE_FUNCTIONS - {"time_bucket", "time_bucket_gapfill", "by_range", "by_hash"}
_DROP_NAMESPACE = {"OBJECT_TABLE": "rel", "OBJECT_VIEW": "rel", "OBJECT_MATVIEW": "rel", "OBJECT_INDEX": "rel",
                   "OBJECT_SEQUENCE": "rel", "OBJECT_FOREIGN_TABLE": "rel", "OBJECT_TYPE": "type",
                   "OBJECT_DOMAIN": "type", "OBJECT_FUNCTION": "func", "OBJECT_PROCEDURE": "func",
                   "OBJECT_SCHEMA": "schema"}


def _qualified(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema and schema != "public" else name


def _rangevar(rv: Any) -> Obj:
    return ("rel", _qualified(rv.schemaname, rv.relname))


def _names(items: Any) -> str:
    parts = [getattr(i, "sval", "") for i in items or ()]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    if len(parts) >= 2 and parts[-2] == "pg_catalog":
        return ""
    return _qualified(parts[-2] if len(parts) >= 2 else None, parts[-1])


def _creates(node: Any) -> set[Obj]:
    kind = type(node).__name__
    if kind == "CreateStmt":
        return {_rangevar(node.relation)}
    if kind == "CreateTableAsStmt" and node.into is not None:
        return {_rangevar(node.into.rel)}
    if kind == "ViewStmt":
        return {_rangevar(node.view)}
    if kind == "IndexStmt" and node.idxname:
        return {("rel", _qualified(node.relation.schemaname, node.idxname))}
    if kind == "CreateSeqStmt":
        return {_rangevar(node.sequence)}
    if kind == "CompositeTypeStmt":
        return {("type", _qualified(node.typevar.schemaname, node.typevar.relname))}
    if kind == "CreateEnumStmt":
        return {("type", _names(node.typeName))}
    if kind == "CreateDomainStmt":
        return {("type", _names(node.domainname))}
    if kind == "DefineStmt" and getattr(node.kind, "name", "") == "OBJECT_TYPE":
        return {("type", _names(node.defnames))}
    if kind == "CreateFunctionStmt":
        return {("func", _names(node.funcname))}
    if kind == "CreateSchemaStmt" and node.schemaname:
        return {("schema", node.schemaname)}
    return set()


def _references(node: Any) -> set[Obj]:
    used: set[Obj] = set()
    kind = type(node).__name__
    if kind == "DropStmt":
        namespace = _DROP_NAMESPACE.get(getattr(node.removeType, "name", ""))
        for obj in node.objects or ():
            if namespace is None:
                break
            if type(obj).__name__ == "TypeName":
                used.add((namespace, _names(obj.names)))
            elif type(obj).__name__ == "ObjectWithArgs":
                used.add((namespace, _names(obj.objname)))
            elif isinstance(obj, (tuple, list)):
                used.add((namespace, _names(obj)))
            elif hasattr(obj, "sval"):
                used.add((namespace, obj.sval))
    for n in walk(node):
        k = type(n).__name__
        if k == "RangeVar":
            used.add(_rangevar(n))
        elif k == "TypeName":
            name = _names(n.names)
            if name:
                used.add(("type", name))
        elif k == "FuncCall":
            name = _names(n.funcname)
            if name:
                used.add(("func", name))
            if name in _REGCLASS_FIRST and n.args:
                first = n.args[0]
                value = getattr(getattr(first, "val", None), "sval", None)
                if value is None and type(first).__name__ == "TypeCast":
                    value = getattr(getattr(first.arg, "val", None), "sval", None)
                if value:
                    schema, _, rel = value.rpartition(".")
                    used.add(("rel", _qualified(schema or None, rel)))
        elif k == "CreateTrigStmt":
            used.add(("func", _names(n.funcname)))
    return {u for u in used if u[1]}


def statement_objects(text: str) -> tuple[set[Obj], set[Obj]]:
    """(created, referenced) objects of the SQL in ``text``; unparsable SQL gives two empty sets."""
    from pglast.parser import ParseError as PgParseError

    try:
        raw = parse(text)
    except PgParseError:
        return set(), set()
    created: set[Obj] = set()
    used: set[Obj] = set()
    for rs in raw:
        mine = _creates(rs.stmt)
        created |= mine
        used |= _references(rs.stmt) - mine
    return created, used
