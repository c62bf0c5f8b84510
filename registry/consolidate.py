"""`mreg consolidate`: move legacy migrations to canonical names under ``migrations/``, history kept.

For every active registered migration not yet at its canonical place:

1. the file is moved with ``git mv`` to ``<into>/<canonical id>.<ext>`` (``.sql`` for
   PostgreSQL and TimescaleDB, ``.cypher`` for Neo4j, ``.redis`` for Redis) and the
   moves are committed alone, so each is a 100 % rename that ``git log --follow`` finds;
2. a second commit adds the seed's header (``Migration``, ``ID``, ``Version``, ``Database``,
   ``Author``, ``Created``, ``Breaking``, ``Dependencies`` and ``Legacy: <old path>``),
   and rewrites TypeScript/JavaScript modules as canonical ``.sql``/``.cypher`` files
   built from their extracted steps (phase markers, rollback sections);
   other copies of a duplicated migration are removed (``git rm``);
3. the mapping legacy path -> canonical id is written to ``<into>/MAPPING.json``
   (kept across runs) in that second commit;
4. each move is a ``consolidate`` statement in the registry log (old and new path and
   checksum, both commits), then a checkpoint. The header commit's new checksum is
   accepted by that statement: it is not an ``edited_after_commit`` finding.

``--dry-run`` computes the same moves and changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from registry.errors import MregError

EXTENSIONS = {"postgresql": "sql", "timescale": "sql", "neo4j": "cypher", "redis": "redis"}
COMMENT = {"sql": "--", "cypher": "//", "redis": "#"}
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
MAPPING = "MAPPING.json"


class ConsolidateError(MregError):
    """Consolidation cannot start: not a Git repository, or uncommitted changes in the way."""

    exit_code = 2


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise ConsolidateError(f"git {' '.join(args[:2])} failed: {out.stderr.strip()}",
                               hint="fix the repository state and re-run `mreg consolidate`")
    return out.stdout.strip()


def plan(cfg, into: Path) -> list[dict]:
    """The moves consolidation would make (from the catalog: run `mreg scan` first)."""
    from registry import catalog

    root = Path(cfg.root)
    target_dir = (root / into).resolve() if not into.is_absolute() else into
    rel_into = target_dir.relative_to(root.resolve()).as_posix()
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        rows = [r for r in catalog.records(conn) if r["status"] == "active"]
    finally:
        conn.close()
    by_alias = {}
    for r in rows:
        for name in (r["id"], r.get("declared_id")):
            if name:
                by_alias[name] = r["id"]
    moves = []
    for r in rows:
        ext = EXTENSIONS.get(r["database"], "sql")
        dest = f"{rel_into}/{r['id']}.{ext}"
        if r["path"] == dest or (r["scheme"] == "canonical" and r["path"].startswith(rel_into + "/")):
            continue  # already canonical (a per-database subfolder of <into> is fine too)
        if r["scheme"] == "flyway-undo":
            continue  # an undo file is a rollback, never a migration to apply: left where it is
        src_ext = r["path"].rpartition(".")[2].lower()
        moves.append({
            "id": r["id"], "from": r["path"], "to": dest, "duplicates": [p for p in r["paths"] if p != r["path"]],
            "convert": src_ext not in ("sql", "cypher", "redis"),
            "database": r["database"], "checksum": r["checksum"],
            "header": _header_fields(r, by_alias),
        })
    return moves


def _header_fields(r: dict, by_alias: dict) -> dict:
    version = r.get("version") or ""
    first = r.get("first_commit") or {}
    deps = [by_alias.get(d, d) for d in r.get("dependencies") or []]
    return {
        "Migration": r.get("name") or r["id"],
        "ID": r["id"],
        "Version": version if SEMVER.match(str(version)) else "1.0.0",
        "Database": r["database"],
        "Author": first.get("author") or "unknown",
        "Created": (first.get("date") or "")[:10],
        "Breaking": "false",
        "Dependencies": "[" + ", ".join(deps) + "]",
        "Legacy": r["path"],
    }


def render(move: dict, original: bytes) -> bytes:
    """The canonical file for ``move``: header plus the body (or the module's extracted steps)."""
    ext = move["to"].rpartition(".")[2]
    prefix = COMMENT[ext]
    text = original.decode("utf-8").lstrip("\ufeff").replace("\r\n", "\n")
    if move["convert"]:
        text = _converted(move["from"], original, prefix)
    elif re.search(rf"^\s*{re.escape(prefix)}\s*Migration:", text, re.M):
        return text.encode("utf-8")  # already has a header
    head = "".join(f"{prefix} {k}: {v}\n" for k, v in move["header"].items())
    return (head + "\n" + text.lstrip("\n")).encode("utf-8")


def _converted(path: str, data: bytes, prefix: str) -> str:
    from registry.parse import ParseError, parse_migration

    try:
        m = parse_migration(path, data)
    except ParseError as exc:
        raise ConsolidateError(f"{path}: no migration to convert ({exc.reason})",
                               hint="scan again; the file changed") from None
    out = []
    for n, phase in enumerate(("expand", "migrate", "contract"), 1):
        steps = m.phases.get(phase) or []
        if not steps:
            continue
        out.append(f"{prefix} Phase {n}: {phase.upper()}\n")
        out.extend(_statement(s.content) for s in steps)
    rollback = [s for phase in ("contract", "migrate", "expand") for s in m.rollback.get(phase) or []]
    if rollback:
        out.append(f"{prefix} Rollback:\n")
        out.extend(_statement(s.content) for s in rollback)
    return "\n".join(out)


def _statement(content) -> str:
    lines = [ln.strip() for ln in str(content or "").strip().splitlines()]
    body = "\n".join(ln for ln in lines if ln)
    return body if body.endswith(";") else body + ";"


def consolidate(cfg, *, into: Path = Path("migrations"), dry_run: bool = False) -> dict:
    """Run (or with ``dry_run`` only compute) the consolidation; return ``{"moves", "mapping", "commits"}``."""
    from registry.registration import scan_and_register

    root = Path(cfg.root)
    for _ in scan_and_register(cfg):
        pass
    moves = plan(cfg, into)
    mapping_path = (root / into / MAPPING).relative_to(root).as_posix()
    report = {"moves": [{k: m[k] for k in ("id", "from", "to", "duplicates", "convert")} for m in moves],
              "mapping": mapping_path, "commits": [], "dry_run": dry_run}
    if dry_run or not moves:
        return report
    touched = [p for m in moves for p in (m["from"], *m["duplicates"])]
    dirty = _git(root, "status", "--porcelain", "--", *touched)
    if dirty:
        raise ConsolidateError("uncommitted changes in files to consolidate:\n" + dirty,
                               hint="commit or stash them, then run `mreg consolidate` again")
    (root / into).mkdir(parents=True, exist_ok=True)
    originals = {m["from"]: (root / m["from"]).read_bytes() for m in moves}
    for m in moves:
        _git(root, "mv", m["from"], m["to"])
    _git(root, "commit", "-q", "--no-verify", "-m",
         f"mreg consolidate: move {len(moves)} legacy migrations to canonical names", "--",
         *[p for m in moves for p in (m["from"], m["to"])])
    move_commit = _git(root, "rev-parse", "HEAD")
    from registry.model import checksum_bytes

    for m in moves:
        data = render(m, originals[m["from"]])
        (root / m["to"]).write_bytes(data)
        m["new_checksum"] = checksum_bytes(data)
        for dup in m["duplicates"]:
            _git(root, "rm", "-q", "--", dup)
        if m["convert"]:  # the compiled twin (x.js beside x.ts) goes with its module
            stem = m["from"].rpartition(".")[0]
            for twin in (stem + ".js", stem + ".mjs", stem + ".cjs"):
                if twin != m["from"] and (root / twin).is_file():
                    _git(root, "rm", "-q", "--", twin)
                    m["duplicates"].append(twin)
    mapping = _load_mapping(root / mapping_path)
    for m in moves:
        for legacy in (m["from"], *m["duplicates"]):
            mapping[legacy] = {"id": m["id"], "path": m["to"], "converted": m["convert"], "move_commit": move_commit}
    (root / mapping_path).write_text(json.dumps({"version": 1, "mapping": dict(sorted(mapping.items()))},
                                                indent=2) + "\n", encoding="utf-8")
    paths = [m["to"] for m in moves] + [d for m in moves for d in m["duplicates"]] + [mapping_path]
    _git(root, "add", "--", mapping_path, *[m["to"] for m in moves])
    _git(root, "commit", "-q", "--no-verify", "-m",
         f"mreg consolidate: canonical headers for {len(moves)} migrations, mapping in {mapping_path}", "--", *paths)
    header_commit = _git(root, "rev-parse", "HEAD")
    report["commits"] = [move_commit, header_commit]
    _ledger(cfg, moves, move_commit, header_commit)
    for _ in scan_and_register(cfg):
        pass
    return report


def _load_mapping(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("mapping") or {})
    except (ValueError, AttributeError):
        return {}


def _ledger(cfg, moves: list[dict], move_commit: str, header_commit: str) -> None:
    from ledger.keys import load_signer
    from ledger.log import parse_leaf
    from ledger.statement import new_statement
    from ledger.store import LedgerStore

    from registry import catalog
    from registry.registration import actor_name

    origin = catalog.registry_origin(cfg)
    stmts = [new_statement(
        ledger=origin, type="consolidate", actor=actor_name(),
        migration={"id": m["id"], "version": m["header"]["Version"], "checksum": m["new_checksum"], "path": m["to"]},
        details={"from": m["from"], "to": m["to"], "duplicates_removed": m["duplicates"], "converted": m["convert"],
                 "old_checksum": m["checksum"], "checksum": m["new_checksum"], "move_commit": move_commit,
                 "commit": header_commit},
    ) for m in moves]
    signer = load_signer(cfg.key.value)
    store = LedgerStore(cfg.catalog.value)
    try:
        leaves = store.append_many(origin, stmts, signer)
        store.checkpoint(origin, signer)
    finally:
        store.close()
    conn = catalog.connect(Path(cfg.catalog.value))
    try:
        with conn:
            for leaf in leaves:
                parsed = parse_leaf(leaf)
                catalog.project(conn, parsed.statement, parsed.seq)
    finally:
        conn.close()
