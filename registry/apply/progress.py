"""Typed progress records the engine yields; the CLI renders them (rich progress bars, lines, JSON).

Each record is a past-tense fact (or a notice) with stable field meanings:

- ``event``: ``target_unavailable``, ``lock_acquired``, ``synced``, ``planned``, ``phase_started``,
  ``step_done``, ``batch_done``, ``phase_succeeded``, ``phase_failed``, ``validation_failed``,
  ``skipped``, ``dry_run_step``, ``rollback_started``, ``rollback_succeeded``, ``checkpoint_written``,
  ``warning``, ``finished``.
- ``target``, ``migration``, ``phase``, ``tenant``: what it concerns (None when not applicable).
- ``done`` / ``total``: steps, batches or rows done so far out of the total (0 when unknown).
- ``message``: one human line; ``data``: extra fields (JSON-able).
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field, fields


@dataclass
class Progress:
    event: str
    target: str | None = None
    migration: str | None = None
    phase: str | None = None
    tenant: str | None = None
    done: int = 0
    total: int = 0
    message: str = ""
    data: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The fields that are set (``data`` copied deep, as ``dataclasses.asdict`` would)."""
        out = {k: v for k, v in ((f, getattr(self, f)) for f in _FIELDS) if v not in (None, "")}
        if self.data:  # a backfill's batch_done (one a millisecond) is flat: copied without deepcopy's walk
            out["data"] = {k: deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in self.data.items()}
        return out


_FIELDS = tuple(f.name for f in fields(Progress) if f.name != "data")
