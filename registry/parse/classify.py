"""What kind of change a step makes: schema, data, security or perf (used by ``naming.infer_type``).

SQL is classed from pglast's parse tree. Cypher and Redis have no parser in the
toolchain, so their leading command words decide (outside strings for Cypher).
"""

from __future__ import annotations

import re
from typing import Any

from registry.model import Step

PRECEDENCE = ("schema", "security", "data", "perf")

_SQL_PERF = {"IndexStmt", "ReindexStmt", "ClusterStmt", "VacuumStmt"}
_SQL_SECURITY = {"GrantStmt", "GrantRoleStmt", "CreatePolicyStmt", "AlterPolicyStmt", "CreateRoleStmt",
                 "AlterRoleStmt", "AlterRoleSetStmt", "DropRoleStmt", "AlterDefaultPrivilegesStmt",
                 "ReassignOwnedStmt", "SecLabelStmt"}
_SQL_DATA = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "CopyStmt", "TruncateStmt"}
_SQL_NEUTRAL = {"VariableSetStmt", "VariableShowStmt", "LockStmt", "CheckPointStmt", "NotifyStmt"}
_RLS = {"AT_EnableRowSecurity", "AT_DisableRowSecurity", "AT_ForceRowSecurity", "AT_NoForceRowSecurity"}


def combine(kinds: set[str]) -> str | None:
    """The class of a set of classes: the first present in schema, security, data, perf."""
    for kind in PRECEDENCE:
        if kind in kinds:
            return kind
    return None


def _calls_timescale_ddl(node: Any) -> bool:
    """SELECT create_hypertable(...) / add_*_policy(...): TimescaleDB's DDL spelled as a function call."""
    from registry.parse.sql import TIMESCALE_FUNCTIONS, walk

    ddl = TIMESCALE_FUNCTIONS - {"time_bucket", "time_bucket_gapfill", "by_range", "by_hash"}
    for n in walk(node):
        if type(n).__name__ == "FuncCall" and n.funcname and getattr(n.funcname[-1], "sval", "") in ddl:
            return True
    return False


# node types classed by their type alone (session settings: None)
_BY_KIND = {**{k: "data" for k in _SQL_DATA}, **{k: "security" for k in _SQL_SECURITY},
            **{k: "perf" for k in _SQL_PERF}, **{k: None for k in _SQL_NEUTRAL}}


def classify_sql_node(node: Any) -> str | None:
    """The class of one SQL statement (None for session settings such as SET lock_timeout).

    ``node`` is a pglast node or a ``registry.parse.sql.Statement`` (whose tree is built only
    for the node types classed by their fields).
    """
    from registry.parse.sql import Statement

    if isinstance(node, Statement):
        if node.fields is not None:
            return classify_sql_json(node.kind, node.fields)
        node = node.node if node.kind in ("DropStmt", "AlterTableStmt", "SelectStmt") else node.kind
    kind = node if isinstance(node, str) else type(node).__name__
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    if kind == "DropStmt":
        removed = getattr(node.removeType, "name", "")
        if removed == "OBJECT_INDEX":
            return "perf"
        if removed in ("OBJECT_POLICY", "OBJECT_ROLE"):
            return "security"
    if kind == "AlterTableStmt":
        subtypes = {getattr(c.subtype, "name", "") for c in node.cmds or ()}
        if subtypes and subtypes <= _RLS:
            return "security"
    if kind == "SelectStmt":
        if node.intoClause is not None or _calls_timescale_ddl(node):
            return "schema"
        return "data"
    if kind == "CallStmt":
        return "data"
    return "schema"


def classify_sql_json(kind: str, f: dict) -> str | None:
    """:func:`classify_sql_node` read from a statement's JSON fields (``parse_sql_json``), as
    ``registry.parse.sql.split`` keeps them: the same answers, without building pglast's tree."""
    if kind in _BY_KIND:
        return _BY_KIND[kind]
    if kind == "DropStmt":
        removed = f.get("removeType", "")
        if removed == "OBJECT_INDEX":
            return "perf"
        if removed in ("OBJECT_POLICY", "OBJECT_ROLE"):
            return "security"
    if kind == "AlterTableStmt":
        subtypes = {(c.get("AlterTableCmd") or {}).get("subtype", "") for c in f.get("cmds") or ()}
        if subtypes and subtypes <= _RLS:
            return "security"
    if kind == "SelectStmt":
        if f.get("intoClause") is not None or _calls_timescale_ddl_json(f):
            return "schema"
        return "data"
    if kind == "CallStmt":
        return "data"
    return "schema"


def _calls_timescale_ddl_json(fields: dict) -> bool:
    from registry.parse.sql import TIMESCALE_FUNCTIONS, _json_sval, json_nodes

    ddl = TIMESCALE_FUNCTIONS - {"time_bucket", "time_bucket_gapfill", "by_range", "by_hash"}
    for kind, n in json_nodes(fields):
        if kind == "FuncCall" and n.get("funcname") and _json_sval(n["funcname"][-1]) in ddl:
            return True
    return False


_CYPHER_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/", re.S)
_CYPHER_PERF = re.compile(r"^\s*(?:CREATE|DROP)\s+(?:(?:RANGE|TEXT|POINT|LOOKUP|FULLTEXT|VECTOR|BTREE)\s+)?INDEX\b", re.I)
_CYPHER_SCHEMA = re.compile(r"^\s*(?:CREATE|DROP)\s+CONSTRAINT\b", re.I)
_CYPHER_SECURITY = re.compile(r"^\s*(?:GRANT|REVOKE|DENY|(?:CREATE|ALTER|DROP)\s+(?:ROLE|USER))\b", re.I)

_REDIS_SECURITY = {"ACL"}
_REDIS_PERF = {"CONFIG", "FT.CREATE", "FT.DROPINDEX", "FT.ALTER"}


def classify_cypher(text: str) -> str:
    bare = _CYPHER_STRINGS.sub(" ", text)
    if _CYPHER_PERF.match(bare):
        return "perf"
    if _CYPHER_SCHEMA.match(bare):
        return "schema"
    if _CYPHER_SECURITY.match(bare):
        return "security"
    return "data"


def classify_redis(text: str) -> str:
    word = text.split(None, 1)[0].upper() if text.strip() else ""
    if word in _REDIS_SECURITY:
        return "security"
    if word in _REDIS_PERF:
        return "perf"
    return "data"


def classify_step(step: Step) -> str | None:
    """The class of one step; SQL steps holding several statements take the combined class."""
    if step.kind == "cypher":
        return classify_cypher(step.content)
    if step.kind == "redis":
        return classify_redis(step.content)
    from pglast.parser import ParseError as PgParseError

    from registry.parse import sql

    try:
        raw = sql.parse_json(step.content)
    except PgParseError:
        return "schema"
    return combine({k for k in (classify_sql_json(*next(iter(r["stmt"].items()))) for r in raw) if k})
