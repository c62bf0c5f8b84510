"""Configuration: ``mreg.toml``, environment overrides, embedded defaults (SPEC §2).

Every resolved value remembers where it came from (a file and key, an
environment variable, or the embedded default) so ``mreg config show`` can say
so. A value written ``env:NAME`` reads the variable ``NAME``.

Environment overrides:

- ``MREG_ROOT`` the project root (default: nearest folder above the working
  directory holding ``mreg.toml`` or ``.git``)
- ``MREG_CONFIG`` the configuration file (default ``<root>/mreg.toml``)
- ``MREG_PROJECT`` the project name, prefix of every log's origin
- ``MREG_CATALOG`` the catalog database (default ``<root>/catalog.db``)
- ``MREG_KEY`` the private signing key (default ``~/.config/mreg/id_ed25519``)
- ``MREG_TARGET_<NAME>_URL`` / ``MREG_TARGET_<NAME>_TYPE`` a target's URL or type
  (``<NAME>`` upper-cased, ``-`` as ``_``)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from registry.errors import ConfigError

TARGET_TYPES = ("postgresql", "timescale", "neo4j", "redis")
DEV_URL = "dev"  # a target URL that means "the server `mreg dev up` started"

# The embedded defaults: one target of each type, each served by `mreg dev up`.
DEFAULT_TARGETS = {
    "postgres": "postgresql",
    "timescale": "timescale",
    "neo4j": "neo4j",
    "redis": "redis",
}

KNOWN_TOP_KEYS = {"project", "targets", "discovery", "apply", "lint"}
KNOWN_PROJECT_KEYS = {"name", "catalog", "key", "migrations"}
KNOWN_TARGET_KEYS = {"type", "url", "options", "tenants"}
# [targets.<name>.options] each adapter reads (registry/targets/*; the tutorials document them)
_PG_OPTIONS = {"mirror_schema", "connect_timeout", "group_commit", "backfill_sparse_wal",
               "backfill_wal_compression", "backfill_flush_writes", "backfill_one_trip", "backfill_server_runs",
               "cancel_blocking_autovacuum"}
KNOWN_OPTIONS = {
    "postgresql": _PG_OPTIONS,
    "timescale": _PG_OPTIONS | {"single_connection", "lock_lease_s"},
    "neo4j": {"database", "connect_timeout", "lock_lease_ms", "lock_name"},
    "redis": {"socket_timeout", "lock_lease_ms", "lock_name"},
}


@dataclass(frozen=True)
class Value:
    """A resolved setting and where it came from."""

    value: object
    source: str


@dataclass
class Target:
    """A configured database: its name, type and connection URL."""

    name: str
    type: str
    url: str
    source: str
    options: dict = field(default_factory=dict)
    tenants: list = field(default_factory=list)

    @property
    def is_dev(self) -> bool:
        return self.url == DEV_URL

    def flag(self, name: str, default: bool) -> bool:
        """The boolean option ``name`` of ``[targets.<name>.options]`` (a TOML boolean, or a word
        such as ``"false"``/``"on"``); ``default`` when it is absent or not a yes/no word."""
        from registry.parse.fields import _FALSE, _TRUE

        value = self.options.get(name, default)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        return True if text in _TRUE else False if text in _FALSE else default

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


@dataclass
class Config:
    """The resolved configuration of one project."""

    root: Path
    file: Path | None
    project: Value
    catalog: Value
    key: Value
    migrations: Value
    targets: dict[str, Target]
    raw: dict = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.root / ".mreg"

    def target(self, name: str) -> Target:
        try:
            return self.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise ConfigError(
                f"no target named {name!r} (configured: {known})",
                hint=f"add [targets.{name}] to mreg.toml or pick one of: {known}",
            ) from None

    def as_dict(self) -> dict:
        """The configuration as JSON-able data, passwords removed."""
        return {
            "root": str(self.root),
            "file": str(self.file) if self.file else None,
            "project": {"value": self.project.value, "source": self.project.source},
            "catalog": {"value": str(self.catalog.value), "source": self.catalog.source},
            "key": {"value": str(self.key.value), "source": self.key.source},
            "migrations": {"value": str(self.migrations.value), "source": self.migrations.source},
            "targets": [
                {
                    "name": t.name,
                    "type": t.type,
                    "url": t.safe_url,
                    "source": t.source,
                    "options": t.options,
                    "tenants": t.tenants,
                }
                for t in self.targets.values()
            ],
        }


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (DSNs are never printed whole)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def find_root(start: Path | None = None) -> Path:
    """The project root: ``$MREG_ROOT``, else the nearest folder with mreg.toml or .git."""
    if os.environ.get("MREG_ROOT"):
        return Path(os.environ["MREG_ROOT"]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "mreg.toml").is_file() or (folder / ".git").exists():
            return folder
    return here


def _env_name(target: str, what: str) -> str:
    return f"MREG_TARGET_{target.upper().replace('-', '_')}_{what}"


def _deref(value: object, where: str, file: Path | None) -> object:
    """Resolve ``env:NAME`` values; an unset variable is a configuration error."""
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            place = f"{file}: " if file else ""
            raise ConfigError(
                f"{place}{where} = {value!r} names the environment variable {name}, which is not set",
                hint=f"export {name}=... or write the value into {where}",
                key=where,
            )
        return os.environ[name]
    return value


def _load_toml(path: Path) -> dict:
    import tomllib  # only when there is a file to read: the post-commit hook often has none

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}",
            hint="fix the syntax at that line (https://toml.io); `mreg config show` re-checks it",
        ) from None


def _check_keys(table: dict, known: set[str], where: str, path: Path, what: str = "key") -> None:
    from difflib import get_close_matches

    for key in table:
        if key not in known:
            close = get_close_matches(str(key), sorted(known), n=1)
            raise ConfigError(
                f"{path}: unknown {what} {where}{key}" + (f" (did you mean {close[0]}?)" if close else ""),
                hint=f"remove it or use one of: {', '.join(sorted(known))}",
                key=f"{where}{key}",
            )


def load(root: Path | None = None) -> Config:
    """Resolve the configuration for the project at ``root`` (or the working directory's)."""
    root = root or find_root()
    env_file = os.environ.get("MREG_CONFIG")
    path = Path(env_file) if env_file else root / "mreg.toml"
    raw: dict = {}
    file: Path | None = None
    if path.is_file():
        raw = _load_toml(path)
        file = path
    elif env_file:
        raise ConfigError(f"MREG_CONFIG names {path}, which does not exist",
                          hint="point MREG_CONFIG at an mreg.toml or unset it")

    src = f"{path.name}" if file else "default"
    if file:
        _check_keys(raw, KNOWN_TOP_KEYS, "", path)
    project_tbl = raw.get("project", {})
    if file:
        _check_keys(project_tbl, KNOWN_PROJECT_KEYS, "project.", path)

    def setting(key: str, env: str, default: object) -> Value:
        if env in os.environ:
            return Value(os.environ[env], f"env {env}")
        if key in project_tbl:
            return Value(_deref(project_tbl[key], f"project.{key}", file), f"{src}:project.{key}")
        return Value(default, "default")

    project = setting("name", "MREG_PROJECT", root.name or "mreg")
    catalog = setting("catalog", "MREG_CATALOG", "catalog.db")
    catalog = Value((root / str(catalog.value)).resolve(), catalog.source)
    key = setting("key", "MREG_KEY", "~/.config/mreg/id_ed25519")
    key = Value(Path(str(key.value)).expanduser(), key.source)
    migrations = setting("migrations", "MREG_MIGRATIONS", "migrations")
    migrations = Value((root / str(migrations.value)).resolve(), migrations.source)

    targets: dict[str, Target] = {}
    tables = raw.get("targets")
    if tables is None:
        for name, kind in DEFAULT_TARGETS.items():
            targets[name] = Target(name, kind, DEV_URL, "default")
    else:
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: targets must be a table of [targets.<name>] tables",
                              hint='write [targets.main] type = "postgresql" url = "postgresql://..."',
                              key="targets")
        for name, tbl in tables.items():
            where = f"targets.{name}."
            if not isinstance(tbl, dict):
                raise ConfigError(f"{path}: {where[:-1]} must be a table", key=where[:-1],
                                  hint=f'write [targets.{name}] with type = "..." and url = "..."')
            _check_keys(tbl, KNOWN_TARGET_KEYS, where, path)
            kind = os.environ.get(_env_name(name, "TYPE")) or _deref(tbl.get("type"), where + "type", file)
            if kind not in TARGET_TYPES:
                raise ConfigError(
                    f"{path}: {where}type = {kind!r} is not a target type",
                    hint=f"use one of: {', '.join(TARGET_TYPES)}",
                    key=where + "type",
                )
            url_env = _env_name(name, "URL")
            if url_env in os.environ:
                url, source = os.environ[url_env], f"env {url_env}"
            elif "url" in tbl:
                url, source = _deref(tbl["url"], where + "url", file), f"{src}:{where}url"
            else:
                url, source = DEV_URL, "default"
            if not isinstance(url, str):
                raise ConfigError(f"{path}: {where}url must be a string", key=where + "url",
                                  hint='write url = "postgresql://user@host/db" or url = "dev"')
            raw_options = tbl.get("options", {})
            if not isinstance(raw_options, dict):
                raise ConfigError(f"{path}: {where}options must be a table", key=where + "options",
                                  hint=f"write [{where}options] with one key = value per line")
            _check_keys(raw_options, KNOWN_OPTIONS[str(kind)], where + "options.", path, what=f"{kind} option")
            options = {k: _deref(v, f"{where}options.{k}", file) for k, v in raw_options.items()}
            targets[name] = Target(name, str(kind), url, source, options, list(tbl.get("tenants", [])))
    # Environment may also add targets that mreg.toml does not name.
    for var, val in os.environ.items():
        if var.startswith("MREG_TARGET_") and var.endswith("_URL"):
            name = var[len("MREG_TARGET_"):-len("_URL")].lower().replace("_", "-")
            if name in targets or name.replace("-", "_") in targets:
                continue
            kind = os.environ.get(_env_name(name, "TYPE"))
            if kind not in TARGET_TYPES:
                raise ConfigError(
                    f"{var} adds target {name!r} but {_env_name(name, 'TYPE')} is {kind!r}",
                    hint=f"set {_env_name(name, 'TYPE')} to one of: {', '.join(TARGET_TYPES)}",
                )
            targets[name] = Target(name, kind, val, f"env {var}")
    return Config(root, file, project, catalog, key, migrations, targets, raw)
