"""Read one file's bytes and say what migration it is (or why it is not one).

The reading itself is the migration parser's (``registry.parse``): its decoder, its
header reader and ``parse_migration``. What is left here is discovery's part: the
caps and symlinks, which modules and scripts are not migrations at all, and the
shape of the result, a plain JSON-able dict (cached by blob id in catalog.db, so no
object is ever parsed twice):

``{"migration": bool, "error": {"message", "line"} | None, "database", "declared_id",
"version", "dependencies", "description", "type", "name", "checksum", "content"}``

Bad inputs are reported, never raised: non-UTF-8 bytes, binary content, a file
over :data:`MAX_BYTES`, a symlink, a file the parser refuses.
"""

from __future__ import annotations

import re

from registry.discovery import rules
from registry.model import checksum_bytes
from registry.parse.errors import ParseError

MAX_BYTES = 8 * 1024 * 1024  # larger files are reported, not parsed
CONTENT_CAP = 200_000  # characters kept for full-text search

# A file with a name of no scheme (``script``) is a migration only when it holds a statement.
_STATEMENT_WORDS = {
    "sql": re.compile(r"\b(create|alter|drop|insert|update|delete|grant|revoke|comment|select)\b", re.I),
    "cypher": re.compile(r"\b(create|merge|match|drop|call)\b", re.I),
    "redis": re.compile(r"^\s*(set|hset|del|rename|sadd|zadd|xadd|eval|hdel|expire)\b", re.I | re.M),
}
_SCRIPT_EXT = {"sql": "sql", "cypher": "cypher", "redis": "redis"}


def error(message: str, line: int = 0, checksum: str | None = None) -> dict:
    return {"migration": True, "error": {"message": message, "line": line}, "checksum": checksum}


def not_migration(reason: str) -> dict:
    return {"migration": False, "error": None, "reason": reason}


def record_fields(parsed: dict, version_raw: str | None, description: str) -> dict:
    """The fields of a migration record (``mreg scan``, the post-commit hook) that come from its file."""
    return {
        "database": parsed.get("database") or "postgresql",
        "version": parsed.get("version") or version_raw,
        "version_raw": version_raw,
        "checksum": parsed.get("checksum"),
        "declared_id": parsed.get("declared_id"),
        "dependencies": parsed.get("dependencies") or [],
        "type": parsed.get("type") or "schema",
        "name": parsed.get("name") or description,
        "description": parsed.get("description") or "",
        "author": parsed.get("author") or "",
        "content": parsed.get("content") or "",
    }


def _refused(exc: ParseError, checksum: str) -> dict:
    """The parser's complaint as a result: its reason (and field) without the ``path:line:`` prefix."""
    what = f"[{exc.field}] " if exc.field else ""
    return error(what + exc.reason, int(exc.line or 0), checksum)


def inspect(path: str, data: bytes, naming: rules.Naming, *, symlink: bool = False, check: bool = True) -> dict:
    """What the file at ``path`` with ``data`` is (see module docstring).

    ``check=False`` reads only a script's header, not its statements (the post-commit hook:
    the pre-commit hook already ran the full check), which keeps pglast out of that path.
    """
    from registry.parse.sections import decode

    if symlink:
        target = data.decode("utf-8", "replace")
        return error(f"symlink to {target!r}: migrations must be regular files in the repository")
    if len(data) > MAX_BYTES:
        return error(f"file is {len(data)} bytes, over the {MAX_BYTES}-byte cap; not read")
    checksum = checksum_bytes(data)
    try:
        text = decode(path, data)
    except ParseError as exc:
        return _refused(exc, checksum)
    words = _STATEMENT_WORDS.get(naming.kind)
    if naming.scheme == "script" and words is not None and not words.search(text):
        return not_migration("no statements")
    try:
        quick = _header_only(path, text, naming, checksum) if naming.kind in _SCRIPT_EXT and not check else None
        if quick is not None:
            return quick
        from registry.parse import parse_migration

        migration = parse_migration(path, data, database=rules.database_from_path(path))
    except ParseError as exc:
        if naming.kind == "module" and exc.field == "migration":
            return not_migration("module exports no Migration object and no up()")
        return _refused(exc, checksum)
    return _result(migration, text, naming, checksum)


def _result(m, text: str, naming: rules.Naming, checksum: str) -> dict:
    """The discovery record of a parsed migration."""
    out = {
        "migration": True, "error": None, "checksum": checksum, "database": m.database,
        "declared_id": m.id, "version": m.version if m.version != "0.0.0" else None, "dependencies": list(m.dependencies),
        "description": m.description, "author": m.author, "breaking": m.breaking, "type": m.type,
        "name": m.name or naming.description, "content": text[:CONTENT_CAP],
    }
    if naming.kind in _SCRIPT_EXT:  # a header's own values, as written
        header = _header(m.path, text, naming.kind)
        out.update(declared_id=header.get("id"), version=header.get("version"),
                   description=header.get("name") or "", name=header.get("name") or naming.description)
    if naming.kind == "module":
        out["steps"] = {p: [{"type": s.kind, "content": s.content, "name": s.name} for s in v]
                        for p, v in m.phases.items()}
        out["rollback"] = {p: [{"type": s.kind, "content": s.content, "name": s.name} for s in v]
                           for p, v in m.rollback.items()}
    return out


def _header(path: str, text: str, kind: str) -> dict[str, str]:
    """A script's header values as written (the parser's header reader)."""
    from registry.parse.sections import read_script

    return {k: v for k, (v, _line) in read_script(path, text, kind).header.items()}


def _header_only(path: str, text: str, naming: rules.Naming, checksum: str) -> dict | None:
    """A canonical script read without its statements, as the parser would read it: header values,
    the type from the header or the name. None when only the statements can tell the database
    (an SQL file that may use TimescaleDB and does not say): then the full parse decides."""
    from registry import naming as names
    from registry.parse import fields, sql
    from registry.parse.script import DATABASE_BY_KIND

    canon = names.parse_canonical_name(path)
    header = _header(path, text, naming.kind)
    if "database" in header:
        database = fields.database(path, header["database"], None)
    elif given := rules.database_from_path(path):
        database = fields.database(path, given, None)
    elif naming.kind == "sql" and sql.may_use_timescale(text):
        return None
    else:
        database = DATABASE_BY_KIND[naming.kind]
    expected = {"sql": ("postgresql", "timescale"), "cypher": ("neo4j",), "redis": ("redis",)}[naming.kind]
    if canon is None or database not in expected:
        return None  # not canonical, or a kind/database mismatch: the parser says what is wrong
    mtype = fields.migration_type(path, header["type"], None) if "type" in header else canon.type
    return {
        "migration": True, "error": None, "checksum": checksum, "database": database,
        "declared_id": header.get("id"), "version": header.get("version"),
        "dependencies": fields.dependencies(path, header["dependencies"], None) if "dependencies" in header else [],
        "description": header.get("name") or "", "author": header.get("author") or "",
        "breaking": fields.boolean(path, header["breaking"], None, "Breaking") if "breaking" in header else False,
        "type": mtype, "name": header.get("name") or naming.description,
        "content": text[:CONTENT_CAP],
    }
