"""Findings: what the scan reports and never hides (SPEC §4).

Kinds: ``duplicate_content`` (one checksum in two places), ``version_conflict``
(two migrations claiming one version in one folder and scheme), ``edited_after_commit``
(a file whose content changed after its first commit, with both checksums),
``missing_dependency``, ``dependency_cycle``, ``unpaired_undo`` (a Flyway ``U<n>__`` file
with no single ``V<n>__`` to undo, see :func:`undo_pairs`) and ``parse_error``.

Each finding is ``{"kind", "paths", "message", "ids", "data"}``; the first three
are the public JSON shape of ``mreg scan --json``.
"""

from __future__ import annotations

from collections import defaultdict

VERSIONED = {"flyway": "V", "neo4j-migrations": "V", "flyway-undo": "U", "numbered": "N", "date": "D",
             "knex": "K"}


def finding(kind: str, paths: list[str], message: str, ids: list[str] | None = None, **data) -> dict:
    return {"kind": kind, "paths": sorted(paths), "message": message, "ids": sorted(ids or []), "data": data}


def compute(migrations: list[dict], errors: list[dict], accepted: set[str] | frozenset = frozenset()) -> list[dict]:
    """All findings for the discovered ``migrations`` plus the ``errors`` (parse_error findings).

    ``accepted`` holds commits whose content changes were ledgered (``mreg consolidate``):
    a revision made by one of them is not an edit.
    """
    out = list(errors)
    active = [m for m in migrations if m["status"] == "active"]

    for m in migrations:
        if len(m["paths"]) > 1 and m["status"] == "active":
            out.append(finding("duplicate_content", m["paths"],
                               f"the same content ({m['checksum']}) stands in {len(m['paths'])} places: "
                               + ", ".join(m["paths"]), [m["id"]], checksum=m["checksum"]))

    claims: dict[tuple, list[dict]] = defaultdict(list)
    for m in active:
        family = VERSIONED.get(m["scheme"])
        if family is None or not m.get("version_raw"):
            continue
        for p in m["paths"]:
            folder = p.rpartition("/")[0]
            claims[(folder, family, _norm_version(m["version_raw"]))].append({"id": m["id"], "path": p})
    for (folder, _family, version), claimants in sorted(claims.items()):
        ids = {c["id"] for c in claimants}
        if len(ids) > 1:
            paths = [c["path"] for c in claimants]
            out.append(finding("version_conflict", paths,
                               f"{len(ids)} migrations in {folder or '.'}/ claim version {version}: "
                               + ", ".join(sorted(paths)), sorted(ids), version=version, folder=folder))

    for m in migrations:
        revs = [r for r in m["revisions"] if r.get("checksum")]
        edits = [cur for prev, cur in zip(revs, revs[1:])
                 if cur["checksum"] != prev["checksum"] and cur.get("sha") not in accepted]
        if edits:
            first, last = revs[0], edits[-1]
            out.append(finding(
                "edited_after_commit", [m["path"]],
                f"{m['path']} was edited after its first commit {first['sha'][:12]}: "
                f"first {first['checksum']}, now {last['checksum']} ({last['sha'][:12]})",
                [m["id"]], first_checksum=first["checksum"], checksum=last["checksum"],
                first_sha=first["sha"], sha=last["sha"]))

    out.extend(dependency_findings(active))
    _pairs, unpaired = undo_pairs(migrations)
    for m, claimants in unpaired:
        folder = m["path"].rpartition("/")[0] or "."
        why = (f"no versioned migration in {folder}/ has version {m['version_raw']}" if not claimants else
               f"{len(claimants)} migrations in {folder}/ claim version {m['version_raw']}: " + ", ".join(claimants))
        out.append(finding("unpaired_undo", [m["path"]], f"{m['path']} is an undo file, but {why}; "
                           "it is never applied and rolls nothing back", [m["id"], *claimants],
                           version=m["version_raw"]))
    return out


UNDOES = ("flyway", "neo4j-migrations")  # schemes whose `V<n>__` files a `U<n>__` file undoes


def undo_pairs(migrations: list[dict]) -> tuple[dict[str, str], list[tuple[dict, list[str]]]]:
    """Flyway undo files and the migration each undoes: ``({undo id: versioned id}, unpaired)``.

    A ``U<n>__`` file (scheme ``flyway-undo``) undoes the one active ``V<n>__`` migration
    (``flyway`` or ``neo4j-migrations``) of the same version in the same folder, whatever
    the descriptions; ``unpaired`` lists ``(undo record, ids claiming its version)`` for the
    others (no such migration, or several). Records need ``id``, ``scheme``, ``status``,
    ``paths`` and ``version_raw``.
    """
    versioned: dict[tuple[str, str], set[str]] = defaultdict(set)
    undos = []
    for m in migrations:
        if m.get("status", "active") != "active" or not m.get("version_raw"):
            continue
        if m["scheme"] in UNDOES:
            for p in m["paths"]:
                versioned[(p.rpartition("/")[0], _norm_version(m["version_raw"]))].add(m["id"])
        elif m["scheme"] == "flyway-undo":
            undos.append(m)
    pairs: dict[str, str] = {}
    unpaired = []
    for m in undos:
        version = _norm_version(m["version_raw"])
        claimants = sorted({i for p in m["paths"] for i in versioned.get((p.rpartition("/")[0], version), ())})
        if len(claimants) == 1:
            pairs[m["id"]] = claimants[0]
        else:
            unpaired.append((m, claimants))
    return pairs, unpaired


def _norm_version(v: str) -> str:
    parts = [p.lstrip("0") or "0" for p in v.replace("_", ".").split(".")]
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def dependency_findings(migrations: list[dict]) -> list[dict]:
    """Missing and cyclic declared dependencies (names resolved by id, declared id or file stem)."""
    alias: dict[str, str] = {}
    for m in migrations:
        for name in (m["id"], m.get("declared_id"), *(p.rpartition("/")[2].rpartition(".")[0] for p in m["paths"])):
            if name:
                alias.setdefault(name, m["id"])
    by_id = {m["id"]: m for m in migrations}
    edges: dict[str, list[str]] = {}
    out = []
    for m in migrations:
        edges[m["id"]] = []
        for dep in m.get("dependencies") or []:
            target = alias.get(dep)
            if target is None:
                out.append(finding("missing_dependency", [m["path"]],
                                   f"{m['id']} ({m['path']}) depends on {dep!r}, which no migration provides",
                                   [m["id"]], dependency=dep))
            elif target != m["id"]:
                edges[m["id"]].append(target)
    # Cycles: Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    counter = [0]
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter[0]
                counter[0] += 1
                stack.append(node)
                on.add(node)
            succ = edges[node]
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    comp.sort()
                    out.append(finding("dependency_cycle", [by_id[c]["path"] for c in comp],
                                       "dependency cycle: " + " -> ".join(comp + [comp[0]]), comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out
