"""Group commit: consecutive phases that only create new objects share one transaction.

A phase normally runs in a transaction of its own (``registry.apply.runner``): its steps and the
mirror rows of ``apply_started``/``apply_succeeded`` commit together. Each such commit waits for
PostgreSQL to flush its WAL to disk. When a run of consecutive phases on one PostgreSQL or
TimescaleDB target *only creates new objects* — the case of bringing a fresh database (a CI
database, a new environment or tenant) up from its whole history — they are applied in one
transaction instead, up to ``GROUP_MAX`` phases or ``GROUP_MS`` of work, and commit once with all
their mirror rows. Nothing else changes: every phase still has its own signed ``apply_started`` and
``apply_succeeded`` events, each committed in the same transaction as the phase's change, and a
crash at any point leaves the whole group applied with its events, or none of it.

Why this is safe for running applications (docs/performance.md, "group commit"): a statement
is *lock-free* here when it takes no lock that a session of the application could wait for,
judged from PostgreSQL's own parse tree (pglast): it creates a table, sequence, type, domain,
schema or function, or creates an index on / comments on / inserts ``VALUES`` into a table created
earlier in the same group, and names no other existing relation (no foreign key to, ``LIKE``,
``INHERITS``, ``PARTITION OF``, view over or ``regclass`` of a table the group did not create).
Holding such a transaction open a few milliseconds longer blocks nobody. Every other statement
(an ``ALTER TABLE`` on an existing table, an index on one, ``UPDATE``, a TimescaleDB function
call) ends the group and runs in its own transaction, as always.

A phase is grouped only when it also has no validation rules, no tenant, no backfill, no
``txmode: none``, is not resuming an interrupted attempt, and has the same timeouts as the
group's first phase. If any statement of a group fails, the group is rolled back (nothing of it
was committed, no event of it was recorded) and its phases run again one transaction each, so
the failing phase fails on its own and is ledgered exactly as without grouping.

``[targets.<name>.options] group_commit = false`` turns grouping off for a target.
"""

from __future__ import annotations

import time

from registry.apply.progress import Progress

GROUP_MAX = 250   # phases per group transaction
GROUP_MS = 250    # a group commits once its work has taken this long (ms)


def step_locks(step):
    """``Step.locks`` (``registry.parse.sql.lock_summary`` of each statement), worked out from the
    text when the parser did not record it (a step from an older parse cache)."""
    if step.locks is not None:
        return step.locks
    from pglast.parser import ParseError

    from registry.parse.sql import lock_summary, parse_json

    try:
        stmts = parse_json(step.content)
    except (ParseError, ValueError):
        return False
    out = []
    for rs in stmts:
        (kind, fields), = rs["stmt"].items()
        summary = lock_summary(kind, fields)
        if not summary:
            return False
        out.append(summary)
    return tuple(out) or False


def fits(summaries, created: set) -> bool:
    """Whether statements with these lock summaries take no lock another session could wait for,
    the relations in ``created`` being new; what they create is added to ``created``."""
    if not summaries:
        return False
    trial: set = set()
    for creates, names in summaries:
        for name in names:
            if name not in created and name not in trial:
                return False
        trial.update(creates)
    created |= trial
    return True


def enabled(adapter) -> bool:
    """Whether ``adapter``'s target groups phases (PostgreSQL and TimescaleDB, unless turned off)."""
    if getattr(adapter, "kind", "") not in ("postgresql", "timescale"):
        return False
    return adapter.target.flag("group_commit", True)


def _timeouts(entry) -> tuple:
    s = entry.migration.settings
    return (s.lock_timeout, s.timeout)


def groupable(entry, adapter, created: set, first=None) -> bool:
    """Whether ``entry`` may join a group whose tables created so far are ``created`` (which grows)."""
    from registry.apply.runner import needs_stepwise

    m = entry.migration
    if (entry.recover or entry.resume_from or entry.tenant or m.validation or not entry.steps
            or needs_stepwise(entry, adapter)):
        return False
    if first is not None and _timeouts(entry) != _timeouts(first):
        return False
    trial = set(created)
    for step in entry.steps:
        if step.kind != "sql" or not step.transactional or not adapter.simple_ok(step.content):
            return False
        if not fits(step_locks(step), trial):
            return False
    created |= trial
    return True


def run_group(log, adapter, entries: list, start: int, skip=None):
    """Apply ``entries[start:]`` in one transaction for as long as they may share it; yields
    Progress, returns how many were applied (0: fewer than two may share one: nothing was done).

    An entry joins when ``groupable`` (decided while the server runs the previous entry's last
    step), ``skip(entry)`` is false (an entry the engine will not run) and the group holds fewer
    than ``GROUP_MAX`` entries and has worked less than ``GROUP_MS``. Raises ``GroupFailed``
    (after rolling back: nothing of the group is applied or recorded) if any statement failed.
    """
    from registry.apply.runner import _execute, _phase_details, _session

    first = entries[start]
    created: set = set()

    def joins(i: int) -> bool:
        if i >= len(entries) or i - start >= GROUP_MAX:
            return False
        entry = entries[i]
        return (entry.target == first.target and not (skip is not None and skip(entry))
                and groupable(entry, adapter, created, first))

    if not (joins(start) and joins(start + 1)):
        return 0
    decided = start + 1  # entries[start..decided] join
    done: list = []  # (entry, ms)
    t_group = time.monotonic()

    def meanwhile() -> None:  # while the server runs a step: sign what is staged, look at the next entry
        nonlocal decided
        log.sign_pending()
        if decided == start + len(done) and joins(decided + 1):
            decided += 1

    try:
        with _session(adapter, True, first) as s:
            i = start
            while i <= decided and (i == start or (time.monotonic() - t_group) * 1000 < GROUP_MS):
                entry = entries[i]
                m = entry.migration
                t0 = time.monotonic()
                sid = log.stage(s, "apply_started", m, _phase_details(entry, steps=len(entry.steps), txmode=m.txmode,
                                                                      attempt=1),
                                refs=log.registration(m.id), defer=True)
                for step in entry.steps:
                    _execute(s, step, entry, meanwhile)
                ms = int((time.monotonic() - t0) * 1000)
                log.stage(s, "apply_succeeded", m, _phase_details(
                    entry, execution_time_ms=ms, steps=len(entry.steps),
                    rollback_available=bool(m.rollback.get(entry.phase))), refs=[sid], defer=True)
                done.append((entry, ms))
                i += 1
            log.write_deferred(s)  # every row of the group, then COMMIT: one round trip
            s.commit()
    except Exception as exc:
        log.discard()  # nothing of the group committed: rewind to the log's committed head
        raise GroupFailed(len(done) + 1) from exc
    except BaseException:
        log.discard()
        raise
    log.committed()
    others = len(done) - 1
    for entry, ms in done:
        m, total = entry.migration, len(entry.steps)
        yield Progress("phase_started", entry.target, m.id, entry.phase, entry.tenant, 0, total,
                       message=f"{m.id} {entry.phase}")
        yield Progress("phase_succeeded", entry.target, m.id, entry.phase, entry.tenant, total, total,
                       message=f"{m.id} {entry.phase} applied in {ms} ms (one commit with {others} other phase(s))")
    return len(done)


class GroupFailed(Exception):
    """A grouped transaction failed and was rolled back; ``tried`` entries of it ran (the last one
    failed, or the commit did): the engine runs them again one transaction each."""

    def __init__(self, tried: int) -> None:
        super().__init__(f"group rolled back after {tried} phase(s)")
        self.tried = tried
