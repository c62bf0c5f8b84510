"""New canonical migration files from the seed's appendix A template (``mreg new``)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from registry.errors import ConfigError
from registry.model import DATABASES, MIGRATION_TYPES, PHASES

EXTENSION = {"postgresql": "sql", "timescale": "sql", "neo4j": "cypher", "redis": "redis"}
PREFIX = {"sql": "--", "cypher": "//", "redis": "#"}

_GUIDE = {
    ("expand", "sql"): ["Add new schema elements here", "Use CONCURRENTLY for indexes (and `txmode: none` in the header)",
                        "Use NOT VALID for constraints"],
    ("migrate", "sql"): ["Data migration logic", "For a batched backfill see docs/migration-files.md (Backfill directive)"],
    ("contract", "sql"): ["Remove deprecated schema elements"],
    ("expand", "cypher"): ["Add new labels, properties, constraints and indexes here"],
    ("migrate", "cypher"): ["Data migration logic (MATCH ... SET ...)"],
    ("contract", "cypher"): ["Remove deprecated properties and indexes"],
    ("expand", "redis"): ["One redis-cli command per line, e.g. COPY old:key new:key"],
    ("migrate", "redis"): ["Data migration commands"],
    ("contract", "redis"): ["Remove deprecated keys, e.g. DEL old:key"],
}


class NewMigrationError(ConfigError):
    """``mreg new`` cannot write the file: a bad option or the file exists."""


@dataclass
class NewMigration:
    """What ``new_migration`` wrote."""

    path: Path
    id: str
    version: str


def author() -> str:
    """``git config user.email``, else $USER, else ``unknown``."""
    try:
        out = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def next_version(directory: Path, database: str) -> str:
    """The next minor version over the highest ``Version:`` of ``database``'s migrations in ``directory``."""
    from registry.parse import EXTENSIONS, ParseError, parse_migration
    from registry.parse.fields import SEMVER

    best: tuple[int, int, int] | None = None
    if directory.is_dir():
        for path in sorted(directory.rglob("*")):
            if not path.is_file() or path.suffix.lstrip(".") not in EXTENSIONS:
                continue
            try:
                m = parse_migration(str(path), path.read_bytes())
            except (ParseError, OSError):
                continue
            match = SEMVER.match(m.version)
            if m.database == database and match and m.version != "0.0.0":
                version = tuple(int(g) for g in match.groups())
                best = version if best is None or version > best else best
    return "1.0.0" if best is None else f"{best[0]}.{best[1] + 1}.0"


def render(*, id: str, title: str, version: str, database: str, author: str, created: str,
           phases: list[str]) -> str:
    """The file text: the appendix A template with its header filled in."""
    ext = EXTENSION[database]
    p = PREFIX[ext]
    sql = ext == "sql"
    lines = [f"{p} Migration: {title}", f"{p} ID: {id}", f"{p} Version: {version}", f"{p} Database: {database}",
             f"{p} Author: {author}", f"{p} Created: {created}", f"{p} Breaking: false", f"{p} Dependencies: []", ""]
    for phase in phases:
        number = PHASES.index(phase) + 1
        lines.append(f"{p} Phase {number}: {phase.upper()}")
        if sql:
            lines.append("BEGIN;")
            lines.append("")
        lines.extend(f"{p} {g}" for g in _GUIDE[(phase, ext)])
        if sql:
            lines.append("")
            lines.append("COMMIT;")
        lines.append("")
    lines.append(f"{p} Rollback: reverse all changes")
    if sql:
        lines += ["BEGIN;", "", f"{p} Drop tables, columns, indexes created above", "", "COMMIT;"]
    else:
        lines.append(f"{p} Undo what the phases above did")
    lines += ["", f"{p} Validation:", f"{p} Post-migration checks, one per line, for example:",
              f"{p}   check <name> (post): {'sql' if sql else ext}:<query>; expect: <JSON result>", ""]
    return "\n".join(lines)


def new_migration(directory: Path, *, type: str, database: str, description: str,
                  phases: list[str] | None = None, now: datetime | None = None,
                  author_name: str | None = None) -> NewMigration:
    """Write a canonical migration file under ``directory`` (or its ``<database>/`` folder if present)."""
    from registry.naming import canonical_id

    if type not in MIGRATION_TYPES:
        raise NewMigrationError(f"unknown migration type {type!r}", hint=f"use one of {', '.join(MIGRATION_TYPES)}",
                                field="type")
    if database not in DATABASES:
        raise NewMigrationError(f"unknown database {database!r}", hint=f"use one of {', '.join(DATABASES)}",
                                field="database")
    phases = phases or ["expand"]
    unknown = [ph for ph in phases if ph not in PHASES]
    if unknown:
        raise NewMigrationError(f"unknown phase {unknown[0]!r}", hint="phases are expand, migrate, contract",
                                field="phases")
    phases = [ph for ph in PHASES if ph in phases]
    if not description.strip():
        raise NewMigrationError("the description is empty", hint='e.g. --description "add user preferences"',
                                field="description")
    now = now or datetime.now(timezone.utc)
    ident = canonical_id(now, type, description)
    folder = directory / database if (directory / database).is_dir() else directory
    path = folder / f"{ident}.{EXTENSION[database]}"
    if path.exists():
        raise NewMigrationError(f"{path} already exists", hint="wait a second or change the description",
                                path=str(path))
    version = next_version(directory, database)
    text = render(id=ident, title=description.strip(), version=version, database=database,
                  author=author_name or author(), created=now.date().isoformat(), phases=phases)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return NewMigration(path, ident, version)
