"""The engine's checks for ``mreg verify``: mirrors equal catalog.db, applied files unchanged.

``check_mirrors``: for every target with a server, every row of its mirror (``mreg verify``
reads them all) is compared with catalog.db's leaf at the same seq — the leaf bytes, and then
every column against the value derived from the leaf (``mirror_row_from_leaf``), so an edited
``migration_id`` or ``applied_at`` is caught even when the leaf bytes are intact. A mirror
shorter than catalog.db fails; a longer one (another operator appended) warns: run ``mreg sync``.
The checkpoint stored in the target must be one catalog.db knows.

``check_files``: for every migration a target's log holds as applied, the file in the tree
must have the checksum the log recorded (or the last ``repair`` accepted); an edited file is
reported with both checksums and the ``mreg repair`` hint. A missing file only warns.
"""

from __future__ import annotations

from dataclasses import fields

from registry.errors import DatabaseError, MregError

COLUMNS = [f.name for f in fields(__import__("registry.targets.base", fromlist=["MirrorRow"]).MirrorRow)]


def _norm(name: str, value):
    if name in ("leaf", "leaf_hash"):
        return bytes(value) if value is not None else None
    if name == "metadata":
        return value or {}
    return value


def compare_rows(origin: str, rows: list, leaves: list[bytes]) -> tuple[list[str], list[str]]:
    """(failures, warnings) comparing mirror rows with catalog.db's leaves of one log."""
    from registry.targets.base import mirror_row_from_leaf

    failures, warnings = [], []
    for row in rows:
        seq = row.seq
        if seq >= len(leaves):
            continue
        leaf = leaves[seq]
        if bytes(row.leaf) != leaf:
            failures.append(f"mirror: log={origin} seq={seq} field=leaf expected=catalog.db's leaf "
                            f"found=different bytes")
            continue
        want = mirror_row_from_leaf(leaf)
        for name in COLUMNS:
            a, b = _norm(name, getattr(want, name)), _norm(name, getattr(row, name))
            if a != b:
                failures.append(f"mirror: log={origin} seq={seq} field={name} expected={a!r} found={b!r}")
    seqs = [r.seq for r in rows]
    if seqs != list(range(len(seqs))):
        failures.append(f"mirror: log={origin} field=seq expected=0..{len(seqs) - 1} found={seqs[:5]}...")
    if len(rows) < len(leaves):
        failures.append(f"mirror: log={origin} field=size expected={len(leaves)} found={len(rows)}: "
                        "the target's mirror lost entries catalog.db holds")
    elif len(rows) > len(leaves):
        warnings.append(f"mirror: log={origin} holds {len(rows) - len(leaves)} entries catalog.db does not "
                        "yet have: run `mreg sync`")
    return failures, warnings


def check_mirrors(cfg) -> list:
    from registry.apply.context import open_engine
    from registry.verify import Check

    if not cfg.catalog.value.exists():
        return []
    eng = open_engine(cfg, sorted(cfg.targets), sign=False)
    out = []
    try:
        for name in sorted(eng.unavailable):
            out.append(Check("mirror", name, True, warnings=[f"target {name} not checked: {eng.unavailable[name]}"]))
        for name, log in sorted(eng.logs.items()):
            try:
                rows = log.adapter.mirror_rows(log.origin, start=0)
                note = log.adapter.mirror_checkpoint(log.origin)
            except DatabaseError as exc:
                out.append(Check("mirror", name, True, warnings=[f"target {name} not checked: {exc.message}"]))
                continue
            leaves = eng.store.leaves(log.origin)
            failures, warnings = compare_rows(log.origin, rows, leaves)
            if note and note not in eng.store.checkpoints(log.origin):
                failures.append(f"mirror: log={log.origin} field=checkpoint expected=a checkpoint in catalog.db "
                                f"found={note.splitlines()[1:2]}")
            out.append(Check("mirror", name, not failures, failures=failures, warnings=warnings,
                             data={"origin": log.origin, "rows": len(rows), "catalog": len(leaves)}))
    finally:
        eng.close()
    return out


def check_files(cfg) -> list:
    from ledger.log import parse_leaf
    from registry.apply.context import load_migrations
    from registry.plan import log_state
    from registry.verify import Check

    if not cfg.catalog.value.exists():
        return []
    from ledger.store import LedgerStore

    try:
        by_id = {m.id: m for m in load_migrations(cfg)}
    except MregError as exc:
        return [Check("files", "migrations", False, failures=[f"files: {exc.message}"])]
    out = []
    with LedgerStore(cfg.catalog.value) as store:
        for name in sorted(cfg.targets):
            origin = f"{cfg.project.value}/{name}"
            if origin not in store.origins():
                continue
            state = log_state([parse_leaf(leaf).statement for leaf in store.leaves(origin)])
            failures, warnings = [], []
            for mid in state.migration_ids():
                accepted = state.accepted_checksum(mid)
                if not accepted:
                    continue
                m = by_id.get(mid)
                if m is None:
                    warnings.append(f"files: log={origin} migration={mid}: applied, but its file is no longer "
                                    "in the tree")
                elif m.checksum != accepted:
                    failures.append(f"files: log={origin} migration={mid} path={m.path} field=checksum "
                                    f"expected={accepted} found={m.checksum}: the file was edited after it was "
                                    f"applied; restore it or accept the edit with `mreg repair {mid}`")
            out.append(Check("files", origin, not failures, failures=failures, warnings=warnings))
    return out
