"""The migrate phase's batched backfill: batches bounded in keys and in time, a duty cycle, and
progress that is exact after a crash while the ledger records it about once a second.

How one backfill runs (``run``):

- The key range ``[min(key), max(key)]`` is read once; batches walk it in ranges ``[a, b)``.
- **Size.** Every batch covers at most ``batch_size`` keys. With ``max_batch_ms`` set, the size adapts
  so that one batch's ``UPDATE`` lasts about that long on the server (``server_s``: PostgreSQL times it
  itself, in the batch's own round trip, so neither the trip nor this process's delays shrink the
  batches): it starts at ``min(batch_size, 100)`` keys, at most doubles after a batch that was quick,
  and shrinks to the size the last batch's speed says fits. A concurrent writer that hits a row of
  the running batch waits at most about one batch.
- **Pauses.** After each batch the engine sleeps ``pause_between_batches`` ms plus, with
  ``duty_cycle`` d < 100 (percent), the batch's own duration times ``(100 - d) / d``: batches then
  take d % of the wall time whatever the server's speed, leaving the rest to the application.
- **Backoff.** A batch's commit that took over ``BACKOFF_RATIO`` times the median of the recent
  ordinary ones (and over ``BACKOFF_FLOOR_S``) waited on a congested server — a checkpoint's writes,
  a burst of the kernel's writeback, a new WAL file — on which the application's commits wait too:
  the engine pauses ``commit_backoff`` (default 4) times that commit's duration, at most
  ``BACKOFF_CAP_S`` (``Pace.after``); ``batch_done`` then carries ``backoff_ms``.
- **Progress row.** Every batch's transaction upserts one row of ``mreg_backfill_progress`` (in the
  target's mirror schema) with the next key and the rows done: the batch and its progress commit
  together, so after a crash the next key is known exactly and no batch runs twice.
- **Ledger checkpoints.** A ``batch_checkpoint`` event (``backfill: {table, key, lo, hi, next,
  rows}``) is staged in the batch's transaction when ``checkpoint_interval`` ms have passed since the
  last one (every batch when it is 0), and always for the last batch. The progress row names the
  event it extends (``anchor``: the last ledgered ``batch_checkpoint``, or the attempt's
  ``apply_started`` before any), so a resumed attempt trusts the row only when it extends the log's
  own last word on this backfill; it then ledgers the recovered position at once (``recovered:
  true``) before running more batches. The last batch deletes the row.
- **WAL.** A batch rewrites whole pages, and the first change of a page after a checkpoint writes
  the whole page to the WAL; every commit of the application must flush the WAL written before it,
  the backfill's included. So batches are small and frequent (``Max-Batch-Ms: 1`` on the
  benchmark), and each batch sets ``wal_init_zero = off`` for itself where the role may (target
  option ``backfill_sparse_wal``, default true): the backfill outruns a quiet server's stock of
  ready 16 MB WAL files, and a new file zero-filled under the WAL write lock held every commit of
  the application for 15–20 ms, every ~0.3 s. With the target option ``backfill_wal_compression = true`` each batch's
  transaction sets ``wal_compression`` (lz4 where available) for itself alone, where the role may
  (``PostgresAdapter.backfill_settings``). Off by default: on the zero-downtime benchmark it cut
  the backfill's speed from 0.56–0.59x to 0.38–0.40x of a plain UPDATE (the compression's CPU on a
  2-core machine) and the application's p99 was no better (3.5–4.7x against 2.7–5.6x). With the
  target option ``backfill_flush_writes`` (default true) each batch sets ``backend_flush_after`` (256
  kB) where the server leaves it at 0: the pages the batch's backend evicts go to the kernel's
  writeback at once, instead of piling up dirty until Linux writes the file's dirty pages in one
  burst (``vm.dirty_expire_centisecs`` after the first), a stall of every commit of the application.
- **One round trip.** A batch without a ledger event (integer keys) sends ``BEGIN``, its ``SET
  LOCAL``s, ``SELECT mreg_backfill_batch(<its UPDATE, dollar-quoted>, <the row's key>, <next key>)``
  and ``COMMIT`` in one simple query (``PgSession.run_batch_committing``): the PL/pgSQL function
  (``_FUNCTION``, made by ``_Rows.ensure`` in the mirror schema) runs the statement, moves the
  progress row on by its row count and returns the count; the server times the batch and the
  ``COMMIT`` in the same query. A batch with a ledger event needs its count before the event is
  signed, so it takes two trips (the ``UPDATE``; the progress row, the event's mirror row and
  ``COMMIT``), as does every batch where the function cannot be made or with the target option
  ``backfill_one_trip = false``.
- **Runs on the server** (target option ``backfill_server_runs``, default false). The batches without
  a ledger event run in runs: one ``CALL`` of ``RUN_PROCEDURE`` (``_PROCEDURE``, made by
  ``_Rows.ensure``) commits batch after batch on the server, each with its progress row (compared and
  set: the row must stand at the batch's first key) and the backfill's settings, sized by the same
  rule as ``Pace.after``, with the pauses as ``pg_sleep``, for at most ``RUN_BUDGET_S`` (less when a
  ledgered checkpoint is due sooner, or a quarter of the migration's ``Timeout``); it ends after a
  congested commit (``Pace.limit``) and stops before each batch once the connection holding the
  target's lock is gone (``PostgresAdapter.lock_pid``: after a kill -9 of this process the server
  runs at most the batch in flight). The engine then replays the batches' times through ``Pace``.
  An error ends a run: its committed batches stand, the progress row says where it stopped, and the
  next batch runs on its own (one that fails before its first batch, other than on a timeout, turns
  runs off for the backfill). Faster (no engine time between batches) but harder on a busy server's
  latency, so off by default (docs/applying.md, "Runs of batches on the server").
- **Commits.** Every batch commits synchronously (the server's ``synchronous_commit``). Committing the
  batches that carry no ledger event with ``synchronous_commit = off`` would keep the ledger honest (a
  server crash loses such a batch together with its progress row, and the resume runs it again; a
  batch with a ledger event flushes every earlier one) and made the backfill about 50% faster, but it
  was measured to hurt the application: unflushed backfill WAL piles up and the application's own
  commits must flush it (p99 of operations overlapping a batch 28 ms against 8 ms), so it is not done.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from dataclasses import dataclass

from registry.apply.progress import Progress
from registry.model import Step
from registry.targets.base import StepFailed

PROGRESS_TABLE = "mreg_backfill_progress"
FIRST_BATCH = 100  # keys in the first batch of an adaptive backfill
# a commit is congested over 4x the median of the last 64 uncongested ones and over 3 ms (once 8 are known);
# the backoff after one is at most 0.5 s
BACKOFF_RATIO, BACKOFF_FLOOR_S, BACKOFF_WINDOW, BACKOFF_MIN_SAMPLES, BACKOFF_CAP_S = 4, 0.003, 64, 8, 0.5

_DDL = ("CREATE TABLE IF NOT EXISTS {s}." + PROGRESS_TABLE + " (origin TEXT NOT NULL, migration_id TEXT NOT NULL, "
        "phase TEXT NOT NULL, tenant TEXT NOT NULL DEFAULT '', anchor TEXT NOT NULL, next_key BIGINT NOT NULL, "
        "rows_done BIGINT NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(), "
        "PRIMARY KEY (origin, migration_id, phase, tenant))")
_UPSERT = ("INSERT INTO {s}." + PROGRESS_TABLE + " (origin, migration_id, phase, tenant, anchor, next_key, "
           "rows_done) VALUES (%(origin)s, %(mid)s, %(phase)s, %(tenant)s, %(anchor)s, %(next)s, %(rows)s) "
           "ON CONFLICT (origin, migration_id, phase, tenant) DO UPDATE SET anchor = EXCLUDED.anchor, "
           "next_key = EXCLUDED.next_key, rows_done = EXCLUDED.rows_done, updated_at = NOW()")
_ADVANCE = ("UPDATE {s}." + PROGRESS_TABLE + " SET anchor = %(anchor)s, next_key = %(next)s, rows_done = %(rows)s, "
            "updated_at = NOW() WHERE origin = %(origin)s AND migration_id = %(mid)s AND phase = %(phase)s "
            "AND tenant = %(tenant)s")
_DELETE = ("DELETE FROM {s}." + PROGRESS_TABLE + " WHERE origin = %(origin)s AND migration_id = %(mid)s "
           "AND phase = %(phase)s AND tenant = %(tenant)s")
# runs one batch and moves the progress row on, in the batch's transaction: the batch, its progress
# and its COMMIT then travel in one round trip (``_Rows.call``); the count is the batch's own
BATCH_FUNCTION = "mreg_backfill_batch"
_FUNCTION = ("CREATE OR REPLACE FUNCTION {s}." + BATCH_FUNCTION + "(batch text, p_origin text, p_mid text, "
             "p_phase text, p_tenant text, p_next bigint) RETURNS bigint LANGUAGE plpgsql AS $mreg_fn$\n"
             "DECLARE n bigint;\nBEGIN\n  EXECUTE batch;\n  GET DIAGNOSTICS n = ROW_COUNT;\n"
             "  UPDATE {s}." + PROGRESS_TABLE + " SET next_key = p_next, rows_done = rows_done + n, updated_at = NOW() "
             "WHERE origin = p_origin AND migration_id = p_mid AND phase = p_phase AND tenant = p_tenant;\n"
             "  IF NOT FOUND THEN\n    RAISE EXCEPTION 'mreg: no backfill progress row for % % %', p_origin, p_mid, "
             "p_phase;\n  END IF;\n  RETURN n;\nEND\n$mreg_fn$")
# runs batches one after the other on the server, each in its own transaction with its progress row
# (compared and set: the row must stand at the batch's first key), until the next batch would be the
# range's last (that one is ledgered), a commit was congested or the run's time is up; returns the
# next key, the next size, the rows and each batch's (keys, rows, statement ms, commit ms)
RUN_PROCEDURE = "mreg_backfill_run"
_PROCEDURE = (
    "CREATE OR REPLACE PROCEDURE {s}." + RUN_PROCEDURE + "(p_update text, p_origin text, p_mid text, "
    "p_phase text, p_tenant text, p_settings text[], p_holder int, p_lo bigint, p_last bigint, p_size bigint, "
    "p_cap bigint, p_max_ms float8, p_pause_ms float8, p_duty int, p_budget_ms float8, p_congested_ms float8, "
    "INOUT o_next bigint DEFAULT NULL, INOUT o_size bigint DEFAULT NULL, INOUT o_rows bigint DEFAULT NULL, "
    "INOUT o_stats float8[] DEFAULT NULL) LANGUAGE plpgsql AS $mreg_fn$\n"
    "DECLARE k bigint := p_lo; sz bigint := p_size; n bigint; i int; t0 timestamptz := clock_timestamp();\n"
    "  tb timestamptz; tc timestamptz; work float8; took float8; pause float8;\n"
    "BEGIN\n  o_rows := 0; o_stats := '{{}}';\n"
    "  WHILE k + sz <= p_last LOOP\n"
    "    IF p_holder IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_stat_get_activity(p_holder)) THEN\n"
    "      RAISE EXCEPTION 'mreg: the session holding the target''s lock (pid %) has ended; the backfill stops', "
    "p_holder;\n    END IF;\n"
    "    FOR i IN 1 .. coalesce(array_length(p_settings, 1), 0) / 2 LOOP\n"
    "      PERFORM set_config(p_settings[2 * i - 1], p_settings[2 * i], true);\n    END LOOP;\n"
    "    tb := clock_timestamp();\n    EXECUTE p_update USING k, k + sz;\n    GET DIAGNOSTICS n = ROW_COUNT;\n"
    "    UPDATE {s}." + PROGRESS_TABLE + " SET next_key = k + sz, rows_done = rows_done + n, updated_at = NOW() "
    "WHERE origin = p_origin AND migration_id = p_mid AND phase = p_phase AND tenant = p_tenant "
    "AND next_key = k;\n"
    "    IF NOT FOUND THEN\n      RAISE EXCEPTION 'mreg: the backfill progress row for % % % is gone or not at key %', "
    "p_origin, p_mid, p_phase, k;\n    END IF;\n"
    "    tc := clock_timestamp();\n    COMMIT;\n"
    "    work := extract(epoch FROM tc - tb) * 1000;\n    took := extract(epoch FROM clock_timestamp() - tc) * 1000;\n"
    "    o_stats := o_stats || ARRAY[sz::float8, n::float8, work, took];\n    o_rows := o_rows + n;\n    k := k + sz;\n"
    "    IF p_max_ms > 0 THEN\n"
    "      sz := greatest(1, least(p_cap, 2 * sz, floor(sz * p_max_ms / greatest(work, 0.1))::bigint));\n"
    "    END IF;\n    EXIT WHEN took > p_congested_ms;\n"
    "    pause := p_pause_ms + CASE WHEN p_duty < 100 THEN (work + took) * (100 - p_duty) / p_duty ELSE 0 END;\n"
    "    EXIT WHEN extract(epoch FROM clock_timestamp() - t0) * 1000 + pause >= p_budget_ms;\n"
    "    IF pause > 0 THEN\n      PERFORM pg_sleep(pause / 1000);\n    END IF;\n"
    "  END LOOP;\n  o_next := k;\n  o_size := sz;\nEND\n$mreg_fn$")
RUN_BUDGET_S = 0.1  # the longest run of batches: progress, the lock check and Ctrl-C get a turn this often
_SELECT = ("SELECT anchor, next_key, rows_done FROM {s}." + PROGRESS_TABLE + " WHERE origin = %(origin)s "
           "AND migration_id = %(mid)s AND phase = %(phase)s AND tenant = %(tenant)s")



@dataclass
class Pace:
    """How big the next batch is and how long to pause after one (pure: tested without a server)."""

    cap: int
    max_batch_ms: int = 0
    duty_cycle: int = 100
    pause_ms: int = 0
    backoff: int = 4  # Commit-Backoff: after a congested commit, pause this many times its duration

    def __post_init__(self) -> None:
        self.cap = max(1, int(self.cap))
        self.size = min(self.cap, FIRST_BATCH) if self.max_batch_ms > 0 else self.cap
        self.commits: deque[float] = deque()  # the recent uncongested commits (s), oldest first
        self._sorted: list[float] = []  # the same, in order (congested() reads their median every batch)
        self.backed_off = 0.0  # the backoff in the last pause (s)

    def after(self, keys: int, seconds: float, work: float | None = None, commit: float | None = None) -> float:
        """Account one batch of ``keys`` keys that took ``seconds`` (its transaction, start to commit),
        ``work`` of them in the batch's statement and ``commit`` in its commit; return the pause (s)
        before the next.

        The size follows the statement's time (``work``: the server's own time on it where measured;
        what a concurrent writer of the same rows waits for and what fills the WAL); the fixed cost
        of a transaction (its round trips, the commit's flush) does not shrink the batches, however
        small ``max_batch_ms`` is. A congested commit
        (``congested``) adds ``backoff`` times its own duration to the pause, at most
        ``BACKOFF_CAP_S``."""
        if self.max_batch_ms > 0 and keys > 0:
            fits = keys * (self.max_batch_ms / 1000) / max(seconds if work is None else work, 1e-4)
            self.size = int(max(1, min(self.cap, 2 * self.size, fits)))
        pause = self.pause_ms / 1000
        if self.duty_cycle < 100:
            pause += seconds * (100 - self.duty_cycle) / self.duty_cycle
        self.backed_off = 0.0
        if commit is not None and self.backoff > 0:
            if self.congested(commit):
                self.backed_off = min(BACKOFF_CAP_S, self.backoff * commit)
                pause += self.backed_off
            else:
                if len(self.commits) == BACKOFF_WINDOW:
                    del self._sorted[bisect.bisect_left(self._sorted, self.commits.popleft())]
                self.commits.append(commit)
                bisect.insort(self._sorted, commit)
        return pause

    def congested(self, commit: float) -> bool:
        """Whether a commit that took ``commit`` s waited on a congested server: over
        ``BACKOFF_RATIO`` times the median of the last ``BACKOFF_WINDOW`` uncongested commits and
        over ``BACKOFF_FLOOR_S`` (never before ``BACKOFF_MIN_SAMPLES`` of them)."""
        return commit > self.limit()

    def limit(self) -> float:
        """The longest commit (s) that is not congested: infinite before ``BACKOFF_MIN_SAMPLES``
        uncongested ones are known (a run of batches on the server stops after a longer one)."""
        if len(self.commits) < BACKOFF_MIN_SAMPLES:
            return math.inf
        return max(BACKOFF_RATIO * self._sorted[len(self._sorted) // 2], BACKOFF_FLOOR_S)


def chain_anchor(statements: list[dict], mid: str, phase: str, tenant: str | None, before: str) -> str | None:
    """The event that last fixed this backfill's position in the log, read up to event ``before``.

    That is the last ``batch_checkpoint`` with a ``backfill`` position, or the ``apply_started`` that
    began the backfill afresh (no ``resume_backfill``); None after an outcome that ends it. The same
    fold ``registry.plan.log_state`` makes for ``backfill_next``.
    """
    anchor = None
    for st in statements:
        if st.get("event_id") == before:
            break
        if (st.get("migration") or {}).get("id") != mid:
            continue
        d = st.get("details") or {}
        if d.get("phase") != phase or d.get("tenant") != tenant:
            continue
        kind = st.get("type")
        if kind == "apply_started" and not d.get("resume_backfill"):
            anchor = st.get("event_id")
        elif kind == "batch_checkpoint" and "next" in (d.get("backfill") or {}):
            anchor = st.get("event_id")
        elif kind in ("apply_succeeded", "rollback_succeeded"):
            anchor = None
    return anchor


class _Rows:
    """The progress row of one backfill (one per origin, migration, phase and tenant)."""

    def __init__(self, adapter, origin: str, entry) -> None:
        self.schema = adapter.mirror_schema
        self.key = {"origin": origin, "mid": entry.migration.id, "phase": entry.phase, "tenant": entry.tenant or ""}
        self._quoted: dict[str, str] | None = None  # the key's values as SQL literals (_literals)
        self._advance: str | None = None  # advance_sql's statement, the key quoted, the values to fill in
        self._anchor: tuple[str | None, str] = (None, "")  # the last anchor and its literal
        self.function: str | None = None  # the batch function, once ensure() made it
        self.procedure: str | None = None  # the run procedure, once ensure() made it (None: no runs)

    def _step(self, sql: str) -> Step:
        return Step(content=sql.format(s=self.schema), name="backfill progress")

    def ensure(self, session, function: bool = True, runs: bool = True) -> None:
        """Create the progress table, and (``function``) the batch function where the target allows
        it (PL/pgSQL, the right to create functions in the mirror schema): else ``call`` is None and
        every batch takes two round trips; with ``runs`` also the run procedure (PostgreSQL 11 and
        later), else ``procedure`` is None and every batch has a round trip of its own."""
        session.execute(self._step(_DDL))
        self.function = self.procedure = None
        for wanted, sql, name, attr in ((function, _FUNCTION, BATCH_FUNCTION, "function"),
                                        (function and runs, _PROCEDURE, RUN_PROCEDURE, "procedure")):
            if wanted:
                try:
                    session.execute(self._step(sql))
                    setattr(self, attr, f"{self.schema}.{name}")
                except StepFailed:
                    pass

    def run(self, session, update: str, a: int, last: int, pace: Pace, budget_s: float, holder: int | None,
            values: list[tuple[str, str]]) -> tuple[int, int, list[tuple[int, int, float, float]]]:
        """Run batches from key ``a`` on the server (``RUN_PROCEDURE``), each committed with its
        progress, until the next would end past ``last`` or the run has lasted ``budget_s``, or
        after a congested commit (over ``pace.limit()``); sizes follow ``pace``'s rules. Return the
        next key, the next size and each batch's (keys, rows, statement s, commit s). ``session``
        must be auto-commit (a procedure that commits cannot run inside a transaction block)."""
        limit = pace.limit()
        params = (update, *self.key.values(), [x for pair in values for x in pair], holder, a, last, pace.size,
                  pace.cap, pace.max_batch_ms, pace.pause_ms, pace.duty_cycle, budget_s * 1000,
                  limit * 1000 if limit != math.inf else 1e12)
        row = session.query(f"CALL {self.procedure}({', '.join(['%s'] * len(params))})", params)[0]
        stats = row["o_stats"] or []
        batches = [(int(stats[i]), int(stats[i + 1]), stats[i + 2] / 1000, stats[i + 3] / 1000)
                   for i in range(0, len(stats), 4)]
        return int(row["o_next"]), int(row["o_size"]), batches

    def call(self, session, next_key: int):
        """For ``run_batch_committing``: the batch's statement (dollar-quoted, with a tag it does not
        contain) in a call of the batch function that moves the row to ``next_key``; None without
        the function. The row's key is quoted once per backfill (``_literals``)."""
        if self.function is None:
            return None
        head, tail = f"{self.function}(", f", {', '.join(self._literals(session).values())}, "

        def wrap(text: str) -> str:
            tag = "$mreg_batch$"
            while (text + tag).find(tag) != len(text):  # the first one after the text must be the closing tag
                tag = tag[:-1] + "_$"
            return f"{head}{tag}{text}{tag}{tail}{int(next_key)})"

        return wrap

    def read(self, session) -> tuple[str, int, int] | None:
        rows = session.query(_SELECT.format(s=self.schema), self.key)
        return (rows[0]["anchor"], int(rows[0]["next_key"]), int(rows[0]["rows_done"])) if rows else None

    def write(self, session, anchor: str, next_key: int, rows: int) -> None:
        """Insert or replace the row."""
        session.execute(self._step(_UPSERT), params={**self.key, "anchor": anchor, "next": next_key, "rows": rows})

    def delete(self, session) -> None:
        session.execute(self._step(_DELETE), params=self.key)

    def advance_sql(self, session, anchor: str, next_key: int, rows: int) -> str:
        """The statement that moves the row on (it exists: ``write`` made it before the first batch;
        cheaper than an upsert), without parameters (values as literals) for ``commit(last=)``: the
        row moves on in the commit's round trip.

        Built once per backfill with the row's key quoted (``_literals``); each batch fills in two
        integers and the anchor, quoted again only when it changes."""
        if self._advance is None:
            quoted = {k: v.replace("%", "%%") for k, v in self._literals(session).items()}
            self._advance = _ADVANCE.format(s=self.schema) % {**quoted, "anchor": "%(anchor)s", "next": "%(next)d",
                                                              "rows": "%(rows)d"}
        if self._anchor[0] != anchor:
            self._anchor = (anchor, session.literal(anchor))
        return self._advance % {"anchor": self._anchor[1], "next": int(next_key), "rows": int(rows)}

    def delete_sql(self, session) -> str:
        return _DELETE.format(s=self.schema) % self._literals(session)

    def _literals(self, session) -> dict[str, str]:
        """The row's key as SQL literals, quoted once per backfill (quoting through psycopg costs more
        client time than the rest of a batch's own work)."""
        if self._quoted is None:
            self._quoted = {k: session.literal(v) for k, v in self.key.items()}
        return self._quoted


def run(log, adapter, entry, sid: str, *, session_of, retries: int, details_of):
    """Run the backfill of ``entry`` (a migrate phase) after attempt ``sid``; yields Progress.

    ``session_of(transactional)`` opens a session with the migration's timeouts and tenant;
    ``details_of(**more)`` builds an event's details; ``retries`` is the lock-timeout retry budget.
    Raises StepFailed with ``backfill_next`` in its data.
    """
    from registry.targets.sqlcommon import batches, is_int_key, number_range

    m = entry.migration
    bf = m.backfill
    st = m.settings
    progress = _Rows(adapter, log.origin, entry)
    with session_of(False) as s:
        progress.ensure(s, function=adapter.target.flag("backfill_one_trip", True),
                        runs=adapter.target.flag("backfill_server_runs", False))
    rng = adapter.backfill_range(bf.table, bf.key)
    if rng is None:
        with session_of(False) as s:
            progress.delete(s)
        return
    lo, hi = int(rng[0]), int(rng[1])
    rows, start = entry.backfill_rows, entry.backfill_from

    def position(next_key: int, count: int, **more) -> dict:
        return details_of(backfill={"table": bf.table, "key": bf.key, "next": next_key, "rows": count,
                                    "lo": lo, "hi": hi, **more})

    anchor = sid
    if entry.resumes or start is not None:
        anchor = chain_anchor(log.statements(), m.id, entry.phase, entry.tenant, sid) or sid
        with session_of(True) as s:
            found = progress.read(s)
            if found and found[0] == anchor and found[1] > (lo if start is None else start):
                start, rows = found[1], found[2]
                anchor = log.stage(s, "batch_checkpoint", m, position(start, rows, recovered=True), refs=[sid])
                progress.write(s, anchor, start, rows)
                s.commit()
                log.committed()
                yield Progress("warning", entry.target, m.id, entry.phase, entry.tenant,
                               message=f"{m.id} {entry.phase}: the interrupted backfill had committed up to key "
                                       f"{start} ({rows} rows); resuming there")
    first = lo if start is None else max(lo, start)
    with session_of(True) as s:  # the row every batch moves on
        progress.write(s, anchor, first, rows)
        s.commit()
    pace = Pace(st.batch_size or 1000, int(st.max_batch_ms or 0), int(st.duty_cycle or 100),
                max(0, int(st.pause_between_batches or 0)), max(0, int(st.commit_backoff)))
    extra = getattr(adapter, "backfill_settings", list)()  # e.g. SET LOCAL wal_compression
    every = max(0, int(st.checkpoint_interval or 0)) / 1000
    last_ledgered = time.monotonic()
    n = runs = 0
    a = first
    single = False  # the next batch runs on its own (after a run that failed)
    numbered, values, holder = number_range(bf.update), getattr(adapter, "backfill_values", list)(), \
        getattr(adapter, "lock_pid", None)

    def batch_done(a: int, b: int, note: str = "", **data) -> Progress:
        """The ``batch_done`` record of keys ``[a, b)`` (batch ``n``, ``rows`` done): the fields every
        batch has, then ``data``."""
        return Progress("batch_done", entry.target, m.id, entry.phase, entry.tenant, b - first, hi + 1 - first,
                        message=f"keys [{a}, {b}) — {rows} rows{note}",
                        data={"next": b, "rows": rows, "batch": n, "keys": b - a, **data})

    while a <= hi:
        budget = min(RUN_BUDGET_S, every - (time.monotonic() - last_ledgered), (st.timeout or 0) / 4000 or math.inf)
        if progress.procedure and not single and is_int_key(a) and a + pace.size <= hi and budget > 0.005:
            try:
                with session_of(False) as s:
                    end, size, ran = progress.run(s, numbered, a, hi, pace, budget, holder, values)
            except StepFailed as exc:  # the batches it committed stand, with their progress: read where it stopped
                with session_of(True) as s:
                    found = progress.read(s)
                single = True  # the next batch on its own: its error, retries and backoff as ever
                if found is None or found[1] <= a:
                    if not getattr(exc, "retryable", False):
                        progress.procedure = None  # it cannot run here (or the error is the batch's own): no more runs
                    continue
                runs, n, rows = runs + 1, n + 1, found[2]
                yield batch_done(a, found[1], " (a run of batches, cut short)", run=runs,
                                 cut_short=str(exc).splitlines()[0][:200])
                a = found[1]
                continue
            runs += 1
            pause = 0.0
            for keys, count, work, committing in ran:
                n += 1
                rows += max(count, 0)
                pause = pace.after(keys, work + committing, work, committing)
                timing = {"ms": round((work + committing) * 1000, 1), "statement_ms": round(work * 1000, 1),
                          "commit_ms": round(committing * 1000, 1), "server_ms": round(work * 1000, 2), "run": runs}
                if pace.backed_off:
                    timing["backoff_ms"] = round(pace.backed_off * 1000, 1)
                yield batch_done(a, a + keys, **timing)
                a += keys
            if a != end or not ran:
                raise RuntimeError(f"backfill run ended at key {end}, its batches at {a}")
            pace.size = size
            if pause:
                time.sleep(pause)
            continue
        single = False
        b = next(batches(a, hi, pace.size))[1]
        attempt = 0
        while True:
            attempt += 1
            t0 = time.monotonic()
            ledger = b > hi or every == 0 or t0 - last_ledgered >= every
            try:
                with session_of(True) as s:
                    if extra:
                        s.hold(extra)
                    call = None if ledger or not is_int_key(a) else progress.call(s, b)
                    if call is not None:  # no ledger event: batch, progress row and COMMIT in one round trip
                        count, work, committing = s.run_batch_committing(bf.update, a, b, call, path=m.path)
                        rows, sent, trips = rows + max(count, 0), time.monotonic() - t0, 1
                        break
                    trips = 2
                    count = s.run_batch(bf.update, a, b, path=m.path)
                    sent = time.monotonic() - t0
                    work = getattr(s, "server_s", None)  # the server's own time, when measured
                    done = rows + max(count, 0)
                    new_anchor = anchor
                    if ledger:
                        new_anchor = log.stage(s, "batch_checkpoint", m, position(b, done), refs=[sid])
                    # the progress row moves with the COMMIT, in its round trip
                    last = progress.delete_sql(s) if b > hi else progress.advance_sql(s, new_anchor, b, done)
                    c0 = time.monotonic()
                    s.commit(last=last)
                    committing = time.monotonic() - c0
                if ledger:
                    log.committed()
                    last_ledgered = t0
                rows, anchor = done, new_anchor
                break
            except StepFailed as exc:
                log.discard()
                if getattr(exc, "retryable", False) and attempt <= retries:
                    time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
                    continue
                exc.data["steps_done"] = len(entry.steps)
                exc.data["backfill_next"] = a
                raise
        spent = time.monotonic() - t0
        n += 1
        pause = pace.after(b - a, spent, sent if work is None else work, committing)
        timing = {"ms": round(spent * 1000, 1), "statement_ms": round(sent * 1000, 1),
                  "commit_ms": round(committing * 1000, 1), "trips": trips}
        if work is not None:
            timing["server_ms"] = round(work * 1000, 2)
        if pace.backed_off:  # the commit waited on a congested server: the pause leaves it to the application
            timing["backoff_ms"] = round(pace.backed_off * 1000, 1)
        yield batch_done(a, b, **timing)
        a = b
        if pause and a <= hi:
            time.sleep(pause)
    if n == 0:  # nothing left (a resumed backfill past the range's end): no last batch removed the row
        with session_of(False) as s:
            progress.delete(s)
