"""Which folders hold migrations, which files in them are migrations, and their scheme.

Pure functions of paths (and, for a few decisions, of content): no Git, no I/O.

A *scope* says where to look. The default finds the seed's twelve locations:
any folder with a path component ``migrations``, ``migration`` or ``db``.
``mreg.toml`` may instead list globs (``[discovery] paths = ["db/migrations",
"server/**/migrations"]``); ``**`` matches any number of folders.

A *scheme* names the convention a file's name follows (SPEC §4): ``canonical``,
``flyway`` (``V<n>__``), ``flyway-undo`` (``U<n>__``), ``flyway-repeatable``
(``R__``), ``neo4j-migrations`` (``V1_2_3__x.cypher``), ``date``
(``YYYYMMDD[_HHMMSS]_x``), ``numbered`` (``NNN_x``), ``knex``
(``YYYYMMDDHHMMSS_x.js``), ``module`` (a TypeScript/JavaScript module exporting a
``Migration`` object) and ``script`` (a ``.sql``/``.cypher`` file with some other name).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_FOLDER_NAMES = frozenset({"migrations", "migration", "db"})
# Folders that never hold migrations: tests, fixtures, build output, vendored code.
EXCLUDED_DIRS = frozenset({
    "__tests__", "test", "tests", "__test__", "spec", "fixtures", "__fixtures__", "__mocks__",
    "dist", "build", "out", "lib-cjs", "node_modules", ".git", "vendor", ".mreg", "coverage",
})
# Module names that are framework code, never migrations.
FRAMEWORK_STEMS = frozenset({
    "index", "knexfile", "migrationframework", "migrate", "migrator", "runner", "run", "config",
    "types", "utils", "helpers", "setup", "__init__", "conftest", "env", "main", "cli",
})


@dataclass(frozen=True)
class Naming:
    """What a file's name says: its scheme, version (as written) and description."""

    scheme: str
    version: str | None
    description: str
    kind: str  # sql | cypher | redis | module | python


def kind_of(path: str) -> str | None:
    """The language of a file by its extension (the parser's extensions), or None if it cannot be a migration."""
    from registry.parse import MODULE_EXTENSIONS
    from registry.parse.script import KIND_BY_EXT

    low = path.lower()
    if low.endswith(".d.ts"):
        return None
    ext = split(low)[2][1:]
    if ext in KIND_BY_EXT:
        return KIND_BY_EXT[ext]
    if ext in MODULE_EXTENSIONS:
        return "module"
    return "python" if ext == "py" else None


def split(path: str) -> tuple[str, str, str]:
    """``(folder, stem, ext)`` of a ``/``-separated path."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        return folder, name, ""
    return folder, stem, "." + ext.lower()


@lru_cache(maxsize=65536)
def naming(path: str) -> Naming | None:
    """The scheme of ``path`` by its name alone (``registry.naming`` reads the name); None when it is
    not a migration's name. Cached by path (a history names the same paths again and again)."""
    from registry import naming as names

    kind = kind_of(path)
    if kind is None:
        return None
    _, stem, _ = split(path)
    low = stem.lower()
    if kind in ("module", "python"):
        if low in FRAMEWORK_STEMS or low.endswith((".test", ".spec", ".config")) or low.startswith("."):
            return None
    if canon := names.parse_canonical_name(path):
        return Naming("canonical", canon.timestamp.strftime("%Y%m%d%H%M%S"), canon.description, kind)
    if legacy := names.parse_legacy_name(path):
        return Naming(_scheme(legacy), _version(legacy), legacy.description, kind)
    if kind == "module":
        return Naming("module", None, stem, kind)
    if kind == "python":
        return None  # a .py file is a migration only under a migration's name
    return Naming("script", None, stem, kind)


def _scheme(legacy) -> str:
    """Discovery's scheme names: Flyway's undo and repeatable files are schemes of their own."""
    if legacy.kind == "repeatable":
        return "flyway-repeatable"
    if legacy.kind == "undo" and legacy.scheme in ("flyway", "neo4j-migrations"):
        return "flyway-undo"
    return legacy.scheme


def _version(legacy) -> str | None:
    """The version as the scheme table in docs/registry.md shows it (numbers without padding)."""
    if legacy.kind == "repeatable":
        return None
    if legacy.scheme == "numbered":
        return str(legacy.version[0])
    return legacy.version_str.replace("_", "") if legacy.scheme == "date" else legacy.version_str


class Scope:
    """Where migrations are looked for: the default rule or configured globs."""

    def __init__(self, patterns: list[str] | None = None) -> None:
        self.patterns = [p.strip("/") for p in (patterns or []) if p.strip("/")]
        self._parts = [p.split("/") for p in self.patterns]
        self._descend: dict[str, bool] = {}  # answers by folder: a history asks about the same ones
        self._holds: dict[str, bool] = {}

    @classmethod
    def from_config(cls, cfg) -> "Scope":
        table = cfg.raw.get("discovery", {}) if cfg is not None else {}
        paths = table.get("paths") if isinstance(table, dict) else None
        return cls(list(paths) if paths else None)

    @property
    def is_default(self) -> bool:
        return not self.patterns

    def descend(self, folder: str) -> bool:
        """Whether the folder at ``folder`` (no trailing slash) may hold migrations below it."""
        hit = self._descend.get(folder)
        if hit is None:
            hit = self._descend[folder] = self._descends(folder)
        return hit

    def _descends(self, folder: str) -> bool:
        parts = folder.split("/")
        if parts[-1] in EXCLUDED_DIRS or parts[-1].startswith("."):
            return False
        if self.is_default:
            return True
        return any(_prefix_match(pat, parts) for pat in self._parts)

    def holds(self, folder: str) -> bool:
        """Whether files directly in ``folder`` are in scope."""
        hit = self._holds.get(folder)
        if hit is None:
            hit = self._holds[folder] = self._in_scope(folder)
        return hit

    def _in_scope(self, folder: str) -> bool:
        parts = folder.split("/") if folder else []
        if any(p in EXCLUDED_DIRS for p in parts):
            return False
        if self.is_default:
            return any(p.lower() in DEFAULT_FOLDER_NAMES for p in parts)
        return any(_full_match(pat, parts, under=True) for pat in self._parts)

    def candidate(self, path: str) -> Naming | None:
        """The naming of ``path`` when it is a migration candidate in scope, else None."""
        folder, _, _ = split(path)
        if not self.holds(folder):
            return None
        return naming(path)


def _prefix_match(pat: list[str], parts: list[str]) -> bool:
    """Whether ``parts`` can be the beginning of a path matched by ``pat`` (or lies under one)."""
    return _match(pat, parts, prefix=True)


def _full_match(pat: list[str], parts: list[str], under: bool) -> bool:
    return _match(pat, parts, prefix=False, under=under)


def _match(pat: list[str], parts: list[str], prefix: bool, under: bool = True) -> bool:
    if not pat:
        return under or not parts
    if not parts:
        return prefix or all(p == "**" for p in pat)
    head = pat[0]
    if head == "**":
        return _match(pat[1:], parts, prefix, under) or _match(pat, parts[1:], prefix, under)
    if fnmatch.fnmatchcase(parts[0], head):
        return _match(pat[1:], parts[1:], prefix, under)
    return False


def unsafe_path(path: str) -> str | None:
    """Why a path must not be read (``..`` or absolute), or None."""
    if path.startswith("/"):
        return "absolute path"
    if any(p in ("..", ".") for p in path.split("/")):
        return "path with a '..' or '.' component"
    return None


def is_compiled_twin(path: str, present) -> bool:
    """``x.js`` beside ``x.ts`` is the compiled output of a module, not a migration."""
    low = path.lower()
    for js in (".js", ".mjs", ".cjs"):
        if low.endswith(js):
            base = path[: -len(js)]
            return any(base + ts in present for ts in (".ts", ".mts", ".cts"))
    return False


@lru_cache(maxsize=65536)
def database_from_path(path: str) -> str | None:
    """A database named by a folder (``.../neo4j/...``) or by the extension, or None."""
    folder, _, _ = split(path)
    for part in reversed(folder.lower().split("/")):
        if part in ("neo4j", "graph", "cypher"):
            return "neo4j"
        if part in ("timescale", "timescaledb", "tsdb"):
            return "timescale"
        if part == "redis":
            return "redis"
        if part in ("postgres", "postgresql", "pg", "sql"):
            return "postgresql"
    return {"cypher": "neo4j", "redis": "redis"}.get(kind_of(path) or "")
