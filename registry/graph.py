"""The dependency graph of migrations: pure, in memory (like alembic's RevisionMap).

Edges come from three places: dependencies a migration declares; the order of
versions within one folder (``version_edges``, the caller passes the groups); and,
for SQL, what each migration creates and what it references
(``infer_sql_dependencies``, from pglast's parse tree). ``order`` sorts them
topologically, breaking ties by migration id (canonical ids sort by date).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from registry.errors import ConfigError
from registry.model import Migration

Edges = Mapping[str, Iterable[str]]


class GraphError(ConfigError):
    """The migrations do not form a valid dependency graph."""


class DuplicateMigration(GraphError):
    """Two migrations carry the same id."""


class MissingDependency(GraphError):
    """A migration depends on an id no migration carries."""


class CycleError(GraphError):
    """Migrations depend on each other in a circle; ``cycle`` lists them, first repeated last."""


def _index(migrations: Sequence[Migration]) -> dict[str, Migration]:
    by_id: dict[str, Migration] = {}
    for m in migrations:
        if m.id in by_id:
            raise DuplicateMigration(
                f"two migrations have the id {m.id}: {by_id[m.id].path} and {m.path}",
                hint="give one of them a new id (rename the file or change its ID: header)",
                migration=m.id, paths=[by_id[m.id].path, m.path])
        by_id[m.id] = m
    return by_id


def edges(migrations: Sequence[Migration], extra_edges: Edges | None = None) -> dict[str, set[str]]:
    """Each migration id -> the ids it depends on (declared plus ``extra_edges``), checked to exist."""
    by_id = _index(migrations)
    graph: dict[str, set[str]] = {m.id: set() for m in migrations}
    for m in migrations:
        for dep in m.dependencies:
            if dep not in by_id:
                raise MissingDependency(
                    f"{m.id} ({m.path}) depends on {dep}, which no migration provides",
                    hint=f"add the migration {dep}, or remove it from the Dependencies of {m.id}",
                    migration=m.id, path=m.path, missing=dep)
            if dep != m.id:
                graph[m.id].add(dep)
    for child, parents in (extra_edges or {}).items():
        if child not in graph:
            continue
        for parent in parents:
            if parent in graph and parent != child:
                graph[child].add(parent)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]`` (a depends on b ...), or None; deterministic (sorted walk)."""
    white, grey, black = 0, 1, 2
    color = {n: white for n in graph}
    for root in sorted(graph):
        if color[root] != white:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        path = [root]
        color[root] = grey
        while stack:
            node, todo = stack[-1]
            if not todo:
                color[node] = black
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop(0)
            if nxt not in color:
                continue
            if color[nxt] == grey:
                return path[path.index(nxt):] + [nxt]
            if color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
    return None


def order(migrations: Sequence[Migration], extra_edges: Edges | None = None) -> list[Migration]:
    """Migrations in dependency order; among those ready at once, the smallest id first.

    Raises ``MissingDependency`` for a declared dependency nobody provides,
    ``CycleError`` naming every migration of one cycle, ``DuplicateMigration``.
    """
    by_id = _index(migrations)
    graph = edges(migrations, extra_edges)
    waiting = {n: len(deps) for n, deps in graph.items()}
    children: dict[str, list[str]] = {n: [] for n in graph}
    for child, deps in graph.items():
        for dep in deps:
            children[dep].append(child)
    ready = [n for n, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    out: list[Migration] = []
    while ready:
        node = heapq.heappop(ready)
        out.append(by_id[node])
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    if len(out) != len(graph):
        rest = {n: {d for d in graph[n] if waiting.get(d, 0) > 0} for n in graph if waiting[n] > 0}
        cycle = find_cycle(rest) or sorted(rest)
        paths = [by_id[n].path for n in cycle]
        raise CycleError("dependency cycle: " + " -> ".join(cycle),
                         hint="remove one of these dependencies (declared in a Dependencies: header, or "
                              "inferred from a table one creates and the other uses)",
                         cycle=cycle, paths=paths)
    return out


def semver_key(m: Migration) -> tuple:
    """Order key for ``version_edges``: a legacy name's version, else the semantic version, then the id."""
    legacy = (m.metadata or {}).get("legacy") or {}
    if legacy.get("version"):
        parts = tuple(int(p) for p in legacy["version"].replace("_", ".").split(".") if p.isdigit())
        return (parts, m.id)
    core = m.version.split("-", 1)[0].split("+", 1)[0]
    try:
        return (tuple(int(p) for p in core.split(".")), m.id)
    except ValueError:
        return ((), m.id)


def version_edges(groups: Iterable[Sequence[Migration]],
                  key: Callable[[Migration], object] = semver_key) -> dict[str, set[str]]:
    """Within each group (one folder), each migration depends on the one before it by ``key``."""
    out: dict[str, set[str]] = {}
    for group in groups:
        ranked = sorted(group, key=key)
        for before, after in zip(ranked, ranked[1:]):
            if before.id != after.id:
                out.setdefault(after.id, set()).add(before.id)
    return out


@dataclass
class SqlObjects:
    """What one SQL migration's phases create and reference, as ``(namespace, name)`` pairs."""

    creates: set[tuple[str, str]] = field(default_factory=set)
    references: set[tuple[str, str]] = field(default_factory=set)


def sql_objects(migration: Migration) -> SqlObjects:
    """Objects created and referenced by a SQL migration's phases (rollbacks ignored)."""
    from registry.parse.objects import statement_objects

    result = SqlObjects()
    for phase in ("expand", "migrate", "contract"):
        for step in migration.phases.get(phase, []):
            if step.kind == "sql":
                created, used = statement_objects(step.content)
                result.creates |= created
                result.references |= used
    if migration.backfill is not None:
        _, used = statement_objects(migration.backfill.update)
        result.references |= used
    result.references -= result.creates
    return result


def infer_sql_dependencies(migrations: Sequence[Migration]) -> dict[str, set[str]]:
    """Each SQL migration id -> ids of the migrations that created what it references.

    Only migrations of the same database are linked (a Timescale migration never
    depends on a PostgreSQL one through a table of the same name).

    When several migrations create the same object, the reference goes to the last
    creator whose id sorts before the referencing migration (else the first creator).
    Objects nobody here creates (extensions, pre-existing tables) add no edge.
    """
    sql_migrations = [m for m in migrations if m.database in ("postgresql", "timescale")]
    objects = {m.id: sql_objects(m) for m in sql_migrations}
    database = {m.id: m.database for m in sql_migrations}
    creators: dict[tuple[str, tuple[str, str]], list[str]] = {}
    for mid in sorted(objects):
        for obj in objects[mid].creates:
            creators.setdefault((database[mid], obj), []).append(mid)
    out: dict[str, set[str]] = {}
    for mid, objs in objects.items():
        for obj in objs.references:
            who = creators.get((database[mid], obj))
            if not who:
                continue
            earlier = [c for c in who if c < mid]
            chosen = earlier[-1] if earlier else who[0]
            if chosen != mid:
                out.setdefault(mid, set()).add(chosen)
    return out


def all_edges(migrations: Sequence[Migration], groups: Iterable[Sequence[Migration]] = (),
              infer_sql: bool = True) -> dict[str, set[str]]:
    """The extra edges of the three sources in one map: per-folder version order and SQL inference.

    Pass the result to ``order`` as ``extra_edges`` (declared dependencies are always used).
    """
    out: dict[str, set[str]] = {}
    sources = [version_edges(groups)]
    if infer_sql:
        sources.append(infer_sql_dependencies(migrations))
    for source in sources:
        for child, parents in source.items():
            out.setdefault(child, set()).update(parents)
    return out
