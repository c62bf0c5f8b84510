"""Read one file's bytes and say what migration it is (or why it is not one).

The result is a plain JSON-able dict (cached by blob id in catalog.db, so no
object is ever parsed twice):

``{"migration": bool, "error": {"message", "line"} | None, "database", "declared_id",
"version", "dependencies", "description", "type", "name", "checksum", "content"}``

Bad inputs are reported, never raised: non-UTF-8 bytes, binary content, a file
over :data:`MAX_BYTES`, a symlink, a module that does not parse.
"""

from __future__ import annotations

import re

from registry.discovery import rules
from registry.model import checksum_bytes

MAX_BYTES = 8 * 1024 * 1024  # larger files are reported, not parsed
CONTENT_CAP = 200_000  # characters kept for full-text search

_HEADER = re.compile(r"^\s*(?:--|//|#)\s*([A-Za-z][A-Za-z ]*?)\s*:\s*(.*?)\s*$")
_SQL_WORDS = re.compile(r"\b(create|alter|drop|insert|update|delete|grant|revoke|comment|select)\b", re.I)
_CYPHER_WORDS = re.compile(r"\b(create|merge|match|drop|call)\b", re.I)
_REDIS_WORDS = re.compile(r"^\s*(set|hset|del|rename|sadd|zadd|xadd|eval|hdel|expire)\b", re.I | re.M)


def error(message: str, line: int = 0, checksum: str | None = None) -> dict:
    return {"migration": True, "error": {"message": message, "line": line}, "checksum": checksum}


def not_migration(reason: str) -> dict:
    return {"migration": False, "error": None, "reason": reason}


def inspect(path: str, data: bytes, naming: rules.Naming, *, symlink: bool = False, check: bool = True) -> dict:
    """What the file at ``path`` with ``data`` is (see module docstring).

    ``check=False`` skips the migration parser's full check (the post-commit hook: the
    pre-commit hook already ran it), which keeps pglast out of that path for canonical files.
    """
    if symlink:
        target = data.decode("utf-8", "replace")
        return error(f"symlink to {target!r}: migrations must be regular files in the repository")
    if len(data) > MAX_BYTES:
        return error(f"file is {len(data)} bytes, over the {MAX_BYTES}-byte cap; not read")
    checksum = checksum_bytes(data)
    if b"\x00" in data[:8192]:
        return error("binary content (NUL bytes) in a migration file", checksum=checksum)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return error(f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}", line, checksum)
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    if naming.kind == "module":
        return _module(path, data, text, checksum)
    return _script(path, data, text, naming, checksum, check)


def _header(text: str) -> dict:
    found = {}
    for line in text.split("\n")[:40]:
        m = _HEADER.match(line)
        if m:
            found.setdefault(m[1].strip().lower(), m[2])
    return found


def _deps(value: str | None) -> list[str]:
    if not value:
        return []
    value = value.strip().strip("[]")
    return [d.strip().strip("'\"") for d in value.split(",") if d.strip().strip("'\"") and d.strip() != "none"]


def _script(path: str, data: bytes, text: str, naming: rules.Naming, checksum: str, check: bool) -> dict:
    header = _header(text)
    words = {"sql": _SQL_WORDS, "cypher": _CYPHER_WORDS, "redis": _REDIS_WORDS}.get(naming.kind)
    if naming.scheme == "script" and words is not None and not words.search(text):
        return not_migration("no statements")
    database = _database(header.get("database"), path, text, naming.kind)
    out = {
        "migration": True, "error": None, "checksum": checksum, "database": database,
        "declared_id": header.get("id"), "version": header.get("version"),
        "dependencies": _deps(header.get("dependencies")), "description": header.get("migration") or "",
        "author": header.get("author") or "", "breaking": (header.get("breaking") or "").lower() == "true",
        "type": _named_type(path),
        "name": header.get("migration") or naming.description,
        "content": text[:CONTENT_CAP],
    }
    parsed, problem = _parse_check(path, data, database) if check else (None, None)
    if problem is not None:
        out["error"] = problem
    if out["type"] is None:
        out["type"] = infer_type(text, naming.kind, migration=parsed)
    if parsed is not None and naming.kind == "python":  # a Migration(...) object: its own fields
        out.update(database=parsed.database, declared_id=parsed.id, version=parsed.version,
                   dependencies=list(parsed.dependencies), name=parsed.name or naming.description,
                   description=parsed.description, author=parsed.author)
    return out


def _named_type(path: str) -> str | None:
    """The type a canonical file name declares (``…_<type>_…``), else None."""
    _, stem, _ = rules.split(path)
    parts = stem.split("_")
    if len(parts) > 3 and parts[0].isdigit() and len(parts[0]) == 8 and parts[2] in (
            "schema", "data", "security", "perf"):
        return parts[2]
    return None


def _parse_check(path: str, data: bytes, database: str):
    """Run the migration parser (registry.parse): ``(Migration, None)`` or ``(None, complaint)``."""
    from registry.parse import ParseError, parse_migration

    try:
        return parse_migration(path, data, database=database), None
    except ParseError as exc:
        line = int(exc.data.get("line") or 0) if isinstance(exc.data, dict) else 0
        message = exc.message
        for prefix in (f"{path}:{line}: ", f"{path}: "):
            if message.startswith(prefix):
                message = message[len(prefix):]
        return None, {"message": message, "line": line}


def _module(path: str, data: bytes, text: str, checksum: str) -> dict:
    from registry.discovery.extract import ModuleSyntaxError, extract

    try:
        found = extract(path, data)
    except ModuleSyntaxError as exc:
        return error(exc.message, int(exc.data.get("line") or 0), checksum)
    if found is None:
        return not_migration("module exports no Migration object and no up()")
    steps = [s for phase in found.phases.values() for s in phase]
    body = "\n\n".join(str(s.get("content") or "") for s in steps)
    f = found.fields
    kind = "cypher" if any(s.get("type") == "cypher" for s in steps) else "sql"
    db = {"neo4j": "neo4j", "postgresql": "postgresql", "timescale": "timescale", "redis": "redis"}.get(
        str(f.get("type") or ""))
    database = db or _database(None, path, body, kind)
    meta = f.get("metadata") if isinstance(f.get("metadata"), dict) else {}
    out = {
        "migration": True, "error": None, "checksum": checksum, "database": database,
        "declared_id": f.get("id") if isinstance(f.get("id"), str) else None,
        "version": f.get("version") if isinstance(f.get("version"), str) else None,
        "dependencies": [d for d in f.get("dependencies") or [] if isinstance(d, str)],
        "description": str(f.get("description") or ""), "author": str(meta.get("author") or ""),
        "breaking": bool(meta.get("breakingChange")), "type": _module_type(found),
        "name": str(f.get("name") or ""), "content": text[:CONTENT_CAP], "shape": found.shape,
        "steps": {p: [{"type": s["type"], "content": s["content"], "name": s["name"]} for s in v]
                  for p, v in found.phases.items()},
        "rollback": {p: [{"type": s["type"], "content": s["content"], "name": s["name"]} for s in v]
                     for p, v in found.rollback.items()},
    }
    if found.unresolved:
        out["unresolved"] = found.unresolved
    if found.shape == "migration-object" and not steps:
        out["error"] = {"message": "Migration object has no steps in phases", "line": 0}
    return out


def _module_type(found) -> str:
    from registry.model import Migration, Step

    phases = {p: [Step(content=str(s.get("content") or ""), kind="cypher" if s.get("type") == "cypher" else "sql")
                  for s in steps] for p, steps in found.phases.items()}
    m = Migration(id="", name="", database="", path="", checksum="", phases=phases)
    return infer_type("", migration=m)


def _database(declared: str | None, path: str, body: str, kind: str) -> str:
    if declared:
        d = declared.strip().lower()
        if d in ("postgres", "postgresql", "pg"):
            return "postgresql"
        if d in ("timescale", "timescaledb"):
            return "timescale"
        if d in ("neo4j", "redis"):
            return d
    by_path = rules.database_from_path(path)
    if by_path:
        return by_path
    if kind == "cypher":
        return "neo4j"
    if kind == "redis":
        return "redis"
    if "create_hypertable" in body or "timescaledb" in body.lower():
        return "timescale"
    return "postgresql"


def infer_type(text: str, kind: str = "sql", migration=None) -> str:
    """The migration type (SPEC §3): perf, security, data or schema (``registry.naming.infer_type``)."""
    from registry.model import Migration, Step
    from registry.naming import infer_type as naming_infer

    if migration is None:
        migration = Migration(id="", name="", database="", path="", checksum="",
                              phases={"expand": [Step(content=text, kind=kind)]})
    return naming_infer(migration)
