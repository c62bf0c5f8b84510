"""Adapters, one per kind of target, registered explicitly (no import-time magic).

``ADAPTERS`` maps a target type to ``"module:Class"``; :func:`adapter_for`
imports the module only when a target of that type is used, so a missing
driver gives a friendly "install X" error instead of breaking the CLI.
"""

from __future__ import annotations

import importlib

from registry.errors import ConfigError

ADAPTERS: dict[str, str] = {
    "postgresql": "registry.targets.postgres:PostgresAdapter",
    "timescale": "registry.targets.timescale:TimescaleAdapter",
    "neo4j": "registry.targets.neo4j:Neo4jAdapter",
    "redis": "registry.targets.redis:RedisAdapter",
}


def adapter_class(kind: str):
    """The adapter class for a target type, imported on first use."""
    try:
        spec = ADAPTERS[kind]
    except KeyError:
        raise ConfigError(f"no adapter for target type {kind!r}",
                          hint=f"use one of: {', '.join(ADAPTERS)}") from None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(f"the {kind} adapter needs a driver that is not installed: {exc.name}",
                          hint=f"pip install {exc.name}") from None
