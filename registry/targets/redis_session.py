"""Redis sessions: steps run at once, keys saved first so a rollback can put them back.

Split from ``registry/targets/redis.py`` (the adapter); see :class:`RedisSession`.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import MirrorRow, StepFailed
from registry.targets.redis_mirror import check_row


class IrreversibleStep(DatabaseError):
    """A rolled-back session held steps whose keys could not be saved first (``RESHAPE``, ``FLUSHDB``…)."""


@dataclass
class Snapshot:
    """A key as it was before a session first touched it: ``DUMP`` bytes and ``PTTL`` (None: absent)."""

    key: bytes | str
    dump: bytes | None
    pttl: int


class RedisSession:
    """Steps and mirror rows on a Redis target.

    Non-transactional: each step runs as it comes and each mirror row is appended at once.
    Transactional: each step still runs at once (later steps and ``query`` see it), but
    first the keys it will touch (``COMMAND GETKEYS``; the declared ``KEYS`` of ``EVAL``)
    are saved with ``DUMP``/``PTTL``; ``rollback()`` (or leaving without ``commit()``)
    puts them back with ``RESTORE ... REPLACE`` (or ``DEL`` when they did not exist) in one
    ``MULTI``/``EXEC``. Mirror rows wait for ``commit()``, which appends them. Redis cannot
    make this atomic against a crash: a killed process leaves the steps applied and no
    mirror row, which is why the adapter declares ``transactional_ddl = False`` and the
    engine commits ``apply_started`` before running a Redis migration.
    A step whose keys cannot be known (``RESHAPE``, keyless commands such as
    ``FLUSHDB``) makes the session *irreversible*: ``rollback()`` then raises
    ``IrreversibleStep`` after restoring what it can.
    """

    def __init__(self, adapter, transactional: bool) -> None:
        self.adapter = adapter
        self.transactional = transactional
        self.path: str | None = None
        self._saved: dict = {}
        self._order: list[Snapshot] = []
        self._irreversible: list[Step] = []
        self._rows: list[MirrorRow] = []
        self.done = False

    def __enter__(self) -> RedisSession:
        self.adapter._c()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done and self.transactional:
            try:
                self.rollback()
            except DatabaseError as undo:  # IrreversibleStep, or the server is gone too
                if exc_type is None:
                    raise
                if isinstance(getattr(exc, "data", None), dict):  # the step's error says more; keep both
                    exc.data["rollback_error"] = str(undo)

    # -- steps

    def execute(self, step: Step, *, path: str | None = None) -> object:
        """Run one step now (see the class docstring for what a transactional session saves first)."""
        try:
            if self.transactional:
                self._save_keys(step)
            return self.adapter.run_step(step)
        except StepFailed as exc:  # name the file and line, whichever command of the step failed
            where = path or self.path
            if exc.data.get("line") is None and step.line:
                exc.data["line"], exc.data["step"] = step.line, step.name
                exc.message = f"line {step.line}: {exc.message}"
            if where and where not in exc.message:
                exc.message = f"{where}: {exc.message}"
                exc.data["path"] = where
            exc.args = (exc.message,)
            raise

    def reshape(self, step: Step, cursor: int = 0):
        """A ``RESHAPE`` batch by batch (see ``RedisAdapter.reshape``); irreversible in this session."""
        if self.transactional:
            self._irreversible.append(step)
        yield from self.adapter.reshape(step, cursor)

    def query(self, text: str) -> list[dict]:
        return self.adapter.query(text)

    def set_timeouts(self, lock_timeout_ms: int | None = None, statement_timeout_ms: int | None = None) -> None:
        """Redis has no per-statement timeouts; accepted for the engine's sake and ignored."""

    def _save_keys(self, step: Step) -> None:
        from registry.targets.redis import step_args

        args = step_args(step)
        name = args[0].upper()
        if name == "RESHAPE":
            self._irreversible.append(step)
            return
        if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO") and len(args) >= 3:
            try:
                keys = args[3:3 + int(args[2])]
            except ValueError:
                keys = []
        else:
            keys = self.adapter.command_keys(args)
            if keys is None:
                self._irreversible.append(step)
                return
        client = self.adapter._c()
        fresh = [k for k in keys if k not in self._saved]
        if not fresh:
            return
        with self.adapter._errors("saving keys before a step", step):
            pipe = client.pipeline(transaction=True)
            for key in fresh:
                pipe.dump(key).pttl(key)
            replies = pipe.execute()
        for i, key in enumerate(fresh):
            snap = Snapshot(key=key, dump=replies[2 * i], pttl=int(replies[2 * i + 1]))
            self._saved[key] = snap
            self._order.append(snap)

    # -- mirror, commit, rollback

    def append_mirror(self, row: MirrorRow) -> None:
        if not self.transactional:
            self.adapter.append_mirror(row)
        else:
            check_row(row)
            self._rows.append(row)

    def commit(self) -> None:
        """Append the queued mirror rows (all in one atomic script) and forget the saved keys."""
        if self.done:
            return
        self.done = True
        rows, self._rows = self._rows, []
        self._saved, self._order, self._irreversible = {}, [], []
        self.adapter.append_rows(rows)

    def rollback(self) -> None:
        """Put every saved key back as it was; raise ``IrreversibleStep`` if some step could not be undone."""
        if self.done:
            return
        self.done = True
        self._rows = []
        if self._order:
            with self.adapter._errors("rollback"):
                pipe = self.adapter._c().pipeline(transaction=True)
                for snap in reversed(self._order):
                    if snap.dump is None:
                        pipe.delete(snap.key)
                    else:
                        pipe.restore(snap.key, max(snap.pttl, 0), snap.dump, replace=True)
                pipe.execute()
        undone, self._irreversible = self._irreversible, []
        self._saved, self._order = {}, []
        if undone:
            first = undone[0]
            raise IrreversibleStep(
                f"target {self.adapter.target.name}: rolled back what could be undone, but "
                f"{len(undone)} step(s) touched keys mreg could not save (first at line {first.line}: "
                f"{first.content[:60]!r})", hint="write a rollback section for this migration and run "
                "`mreg rollback`", target=self.adapter.target.name, line=first.line, step=first.name)
