"""``mreg sync``: pull what other operators appended to every target's mirror into catalog.db.

The mirror (the target's version table) is the authoritative copy of a target's log;
catalog.db replicates it. ``LedgerStore.add_leaves`` checks every pulled leaf (sequence,
chain to the previous leaf hash, canonical bytes) and refuses a fork, so a mirror that
disagrees with what catalog.db already holds is an error, never a silent overwrite.
The target's stored checkpoint, when there is one, is added to catalog.db too.
"""

from __future__ import annotations

from registry.apply.context import engine_targets, open_engine
from registry.errors import DatabaseError


def sync(cfg, *, target: str | None = None) -> dict:
    """``{"targets": [{"name", "available", "pulled", "size", "error"?}]}``."""
    names = engine_targets(cfg, target)
    eng = open_engine(cfg, names, required=target, sign=False)
    out = []
    try:
        for name in names:
            if name not in eng.logs:
                out.append({"name": name, "available": False, "pulled": 0, "size": None,
                            "error": eng.unavailable.get(name)})
                continue
            log = eng.logs[name]
            try:
                pulled = log.sync()
            except DatabaseError as exc:
                if target:
                    raise
                out.append({"name": name, "available": False, "pulled": 0, "size": None, "error": exc.message})
                continue
            note = log.adapter.mirror_checkpoint(log.origin)
            if note:
                add = getattr(eng.store, "add_checkpoint", None)
                if add is not None and note not in (eng.store.checkpoints(log.origin) or []):
                    add(note)
            out.append({"name": name, "available": True, "pulled": pulled, "size": log.size})
    finally:
        eng.close()
    return {"targets": out}
