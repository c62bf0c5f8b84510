"""Adding a required column to a 2,000,000-row table under load, in three phases, with mreg.

Each of ``--rounds`` independent rounds (default 3):

1. Build ``accounts`` (``--rows``, default 2,000,000) on a PostgreSQL (a pgserver unless ``--dsn``),
   ``VACUUM ANALYZE`` and ``CHECKPOINT`` it (so the build's writes are not part of the baseline).
2. Start a steady read/write load on loopback: ``--workers`` threads, each a bounded loop of
   ``--rate`` operations per second (70% reads by random id, 20% updates of a random row, 10% inserts
   of new rows), recording every operation's latency and every error.
3. Baseline: ``--baseline`` seconds (default 30) of load alone (p50/p95/p99/max).
4. ``mreg apply --confirm-contract`` of one migration adding ``email_verified`` the zero-downtime way:
   expand (nullable column, then its default), migrate (a batched backfill paced by ``--batch``,
   ``--max-batch-ms``, ``--duty``, ``--pause``, ``--checkpoint-interval``, ``--commit-backoff``), contract (``CHECK … NOT
   VALID``, ``VALIDATE``, ``SET NOT NULL`` using the validated check, drop the check) — every step with
   ``lock_timeout`` = 2 s. The load's statistics during the migration (slow operations counted per
   phase); the migration window ends when mreg's process does (this process reads mreg's output after).
5. The reference: a fresh table of the same size, the same load, and one plain ``UPDATE`` of the whole
   table; the backfill's rows per second (its ledgered rows over the migrate phase's time) against it.

Goals, per round: zero load errors, p99 during the migration ≤ 2x the baseline p99, no wait beyond
``lock_timeout``, backfill ≥ half the speed of the plain UPDATE. Results (every round, its load
averages, and a summary): ``bench/results/zero-downtime.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK_TIMEOUT_MS = 2000

MIGRATION = """\
-- Migration: Add accounts.email_verified without downtime
-- Version: 1.1.0
-- txmode: none
-- Lock-Timeout: {lock_timeout}
-- Timeout: 600000
-- Max-Retries: 10
-- Pause-Between-Batches: {pause}
-- Max-Batch-Ms: {max_batch_ms}
-- Duty-Cycle: {duty}
-- Checkpoint-Interval: {checkpoint}
-- Commit-Backoff: {backoff}

-- Phase 1: EXPAND
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS email_verified BOOLEAN;
ALTER TABLE accounts ALTER COLUMN email_verified SET DEFAULT FALSE;

-- Phase 2: MIGRATE
-- Backfill: table=accounts key=id batch_size={batch}
UPDATE accounts SET email_verified = (email_confirmed_at IS NOT NULL)
WHERE id >= :lo AND id < :hi AND email_verified IS NULL;

-- Phase 3: CONTRACT
ALTER TABLE accounts ADD CONSTRAINT accounts_email_verified_nn CHECK (email_verified IS NOT NULL) NOT VALID;
ALTER TABLE accounts VALIDATE CONSTRAINT accounts_email_verified_nn;
ALTER TABLE accounts ALTER COLUMN email_verified SET NOT NULL;
ALTER TABLE accounts DROP CONSTRAINT accounts_email_verified_nn;
"""


def meminfo(*keys: str) -> dict[str, int]:
    """``/proc/meminfo``'s values (kB) for ``keys``; 0 for one that is not there."""
    found = dict.fromkeys(keys, 0)
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in found:
                found[k] = int(v.split()[0])
    return found


class PageCache:
    """The kernel's dirty page cache (``/proc/meminfo`` Dirty, Writeback) sampled every 20 ms, when the
    server runs on this machine (Linux): a table's dirty pages are written back by the kernel all at
    once when the file's oldest dirty page is ``vm.dirty_expire_centisecs`` old, and the application's
    commits wait behind that burst. ``bursts()``: the moments Dirty fell by more than 32 MB within
    0.5 s, with how much."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (epoch s, Dirty kB, Writeback kB)
        self.stop = threading.Event()
        self.ok = os.path.exists("/proc/meminfo")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.ok:
            self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            vals = meminfo("Dirty", "Writeback")
            self.samples.append((time.time(), vals["Dirty"], vals["Writeback"]))

    def bursts(self, since: float, until: float) -> list[tuple[float, float]]:
        """(time, MB written back) of each fall of Dirty by over 32 MB within 0.5 s, in [since, until]."""
        out: list[tuple[float, float]] = []
        xs = [x for x in self.samples if since <= x[0] <= until]
        j = 0
        for i, (t, dirty, _) in enumerate(xs):
            while xs[j][0] < t - 0.5:
                j += 1
            top = max(range(j, i + 1), key=lambda k: xs[k][1])
            fell = (xs[top][1] - dirty) / 1024
            if fell > 32 and not (out and xs[top][0] - out[-1][0] < 1.0):
                out.append((xs[top][0], round(fell)))
            elif fell > 32 and out and fell > out[-1][1]:
                out[-1] = (out[-1][0], round(fell))
        return out

    def peak_mb(self, since: float, until: float) -> float:
        return round(max((d for t, d, _ in self.samples if since <= t <= until), default=0) / 1024, 1)


class Load:
    """A steady read/write load: each worker a bounded loop at a fixed rate; latencies in windows."""

    def __init__(self, dsn: str, workers: int, rate: float, rows: int) -> None:
        self.dsn, self.workers, self.rate, self.rows = dsn, workers, rate, rows
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.window = "warmup"
        self.samples: dict[str, list[float]] = {}
        self.ops: dict[str, list[tuple[float, str, float]]] = {}  # window -> (time, kind, ms) of every op
        self.slow_ms = 10.0
        self.errors: dict[str, list[str]] = {}
        self.next_id = rows
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def set_window(self, name: str) -> None:
        with self.lock:
            self.window = name
            self.samples.setdefault(name, [])
            self.errors.setdefault(name, [])

    def _new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def _work(self, seed: int) -> None:
        import psycopg

        rng = random.Random(seed)
        conn = psycopg.connect(self.dsn, autocommit=True)
        period = 1.0 / self.rate
        due = time.perf_counter()
        while not self.stop.is_set():
            due += period
            r = rng.random()
            key = rng.randint(1, self.rows)
            t0 = time.perf_counter()
            window = self.window
            kind = "read" if r < 0.7 else "update" if r < 0.9 else "insert"
            try:
                if r < 0.7:
                    conn.execute("SELECT id, payload FROM accounts WHERE id = %s", (key,)).fetchone()
                elif r < 0.9:
                    conn.execute("UPDATE accounts SET payload = md5(random()::text) WHERE id = %s", (key,))
                else:
                    conn.execute("INSERT INTO accounts (id, email_confirmed_at, payload) VALUES (%s, now(), 'new')",
                                 (self._new_id(),))
                ms = (time.perf_counter() - t0) * 1000
                with self.lock:
                    self.samples.setdefault(window, []).append(ms)
                    self.ops.setdefault(window, []).append((time.time(), kind, ms))
            except psycopg.Error as exc:
                with self.lock:
                    self.errors.setdefault(window, []).append(str(exc).strip()[:200])
                if conn.broken:
                    conn = psycopg.connect(self.dsn, autocommit=True)
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                due = time.perf_counter()
        conn.close()

    def slow(self, name: str, ms: float) -> list[tuple[float, str, float]]:
        """The operations of window ``name`` that took ``ms`` or longer: (time, kind, ms)."""
        return [op for op in self.ops.get(name, []) if op[2] >= ms]

    def stats(self, name: str) -> dict:
        xs = sorted(self.samples.get(name, []))
        errs = self.errors.get(name, [])
        if not xs:
            return {"ops": 0, "errors": len(errs)}

        def pct(p: float) -> float:
            return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2)

        slow = self.slow(name, self.slow_ms)
        return {"ops": len(xs), "errors": len(errs), "error_samples": errs[:3],
                "slow_ops": {k: sum(1 for _, kind, _ in slow if kind == k) for k in ("read", "update", "insert")},
                "p50_ms": pct(0.50),
                "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": round(xs[-1], 2)}


def build_table(dsn: str, rows: int) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, email_confirmed_at timestamptz, payload text)")
        c.execute("INSERT INTO accounts SELECT g, CASE WHEN g %% 3 = 0 THEN NULL ELSE now() END, md5(g::text) "
                  "FROM generate_series(1, %s) AS g", (rows,))
        c.execute("VACUUM ANALYZE accounts")
        c.execute("CHECKPOINT")  # the build's dirty pages written now, not during the baseline
    return time.perf_counter() - t0


def run_mreg(dsn: str, work: Path, args, done) -> tuple[float, list[dict], list[dict]]:
    sys.path.insert(0, str(REPO))
    from ledger.keys import Signer

    root = work / "proj"
    (root / "migrations").mkdir(parents=True)
    (root / "migrations" / "20250101_000000_schema_add_email_verified.sql").write_text(
        MIGRATION.format(lock_timeout=LOCK_TIMEOUT_MS, batch=args.batch, pause=args.pause,
                         max_batch_ms=args.max_batch_ms, duty=args.duty, checkpoint=args.checkpoint_interval,
                         backoff=args.commit_backoff))
    (root / "mreg.toml").write_text(f'[project]\nname = "zd"\n[targets.main]\ntype = "postgresql"\nurl = "{dsn}"\n'
                                    f'[targets.main.options]\nbackfill_wal_compression = {str(args.wal_compression).lower()}\n'
                                    f'backfill_sparse_wal = {str(not args.no_sparse_wal).lower()}\n'
                                    f'backfill_flush_writes = {str(not args.no_flush_writes).lower()}\n'
                                    f'backfill_one_trip = {str(not args.two_trips).lower()}\n'
                                    f'backfill_server_runs = {str(args.server_runs).lower()}\n')
    Signer.generate("bench").save(work / "key")
    env = dict(os.environ, MREG_ROOT=str(root), MREG_CATALOG=str(root / "catalog.db"), MREG_KEY=str(work / "key"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "registry.cli.main", "apply", "--confirm-contract", "--json"],
                          cwd=root, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    done()  # the load's migration window ends with mreg's process, before this process reads its output
    if proc.returncode != 0:
        raise RuntimeError(f"mreg apply failed: {proc.stderr[-2000:]}")
    from ledger.log import parse_leaf
    from ledger.store import LedgerStore

    with LedgerStore(root / "catalog.db") as store:
        log = [parse_leaf(leaf).statement for leaf in store.leaves("zd/main")]
    records = json.loads(proc.stdout)["records"]
    return secs, log, [r for r in records if r["event"] == "batch_done"]


def phase_spans(log: list[dict]) -> dict[str, list]:
    """Each phase's [start, end] (epoch seconds) from its ledgered apply_started and apply_succeeded."""
    import datetime as dt

    def at(s: dict) -> float:
        return dt.datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp()

    spans: dict[str, list] = {}
    for s in log:
        phase = s["details"].get("phase")
        if s["type"] == "apply_started" and phase:
            spans[phase] = [at(s), None]
        elif s["type"] == "apply_succeeded" and phase in spans:
            spans[phase][1] = at(s)
    return spans


def slow_by_phase(log: list[dict], slow: list[tuple[float, str, float]]) -> dict:
    """How many of the load operations ``slow`` fell in each phase of the migration, between two phases,
    before the first (mreg starting, registering, taking its lock) or after the last (mreg finishing)."""
    spans = phase_spans(log)
    first = min((a for a, _ in spans.values()), default=0)
    last = max((b or a for a, b in spans.values()), default=0)
    out = {p: 0 for p in ("before", *spans, "between", "after")}
    for t, _, _ in slow:
        phase = next((p for p, (a, b) in spans.items() if a <= t <= (b or a)), None)
        out[phase or ("before" if t < first else "after" if t > last else "between")] += 1
    return out


def one_round(dsn: str, work: Path, args) -> dict:
    """Build, baseline, migrate under load; then a fresh table and one plain UPDATE under the same load."""
    import psycopg

    load_start = list(os.getloadavg())
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS accounts")
        c.execute("DROP TABLE IF EXISTS schema_versions, schema_checkpoints, mreg_lock_owner, "
                  "mreg_backfill_progress CASCADE")
    build_s = build_table(dsn, args.rows)
    print(f"table of {args.rows} rows built in {build_s:.1f}s", flush=True)
    load = Load(dsn, args.workers, args.rate, args.rows)
    cache = PageCache()  # meaningful when the server runs here (the default pgserver, a loopback --dsn)
    marks = {}
    load.set_window("warmup")
    cache.start()
    load.start()
    time.sleep(3)
    marks["baseline"] = time.time()
    load.set_window("baseline")
    time.sleep(args.baseline)
    marks["migration"] = time.time()
    load.set_window("migration")

    def done() -> None:
        marks["after"] = time.time()
        load.set_window("after")

    mig_s, log, batch_records = run_mreg(dsn, work / f"mreg-{time.monotonic_ns()}", args, done=done)
    time.sleep(1)
    cache.stop.set()
    load.stop.set()
    for t in load.threads:
        t.join(10)
    with psycopg.connect(dsn, autocommit=True) as c:
        nulls = c.execute("SELECT count(*) FROM accounts WHERE email_verified IS NULL").fetchone()[0]
        nullable = c.execute("SELECT is_nullable FROM information_schema.columns WHERE table_name = 'accounts' "
                             "AND column_name = 'email_verified'").fetchone()[0]
        c.execute("DROP TABLE accounts")
    # the reference: one plain UPDATE of a fresh table of the same size, under the same load
    build_table(dsn, args.rows)
    plain_load = Load(dsn, args.workers, args.rate, args.rows)
    plain_load.set_window("warmup")
    plain_load.start()
    time.sleep(3)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE accounts ADD COLUMN plain_copy boolean")
        plain_load.set_window("plain_update")
        t0 = time.perf_counter()
        plain_rows = c.execute("UPDATE accounts SET plain_copy = (email_confirmed_at IS NOT NULL)").rowcount
        plain_s = time.perf_counter() - t0
    plain_load.stop.set()
    for t in plain_load.threads:
        t.join(10)

    def phase_ms(phase: str) -> int | None:
        for s in log:
            if s["type"] == "apply_succeeded" and s["details"]["phase"] == phase:
                return s["details"].get("execution_time_ms")
        return None

    checkpoints = [s for s in log if s["type"] == "batch_checkpoint" and "backfill" in s["details"]]
    keys = sorted(r["data"]["keys"] for r in batch_records)
    batch_ms = sorted(r["data"]["ms"] for r in batch_records)
    statement_ms = sorted(r["data"].get("statement_ms", 0) for r in batch_records)
    server_ms = sorted(r["data"]["server_ms"] for r in batch_records if "server_ms" in r["data"])
    backfill_rows = checkpoints[-1]["details"]["backfill"]["rows"] if checkpoints else 0
    backfill_ms = phase_ms("migrate") or 1
    retries = [s["details"].get("attempt", 1) for s in log if s["type"] == "apply_started"]
    base, during = load.stats("baseline"), load.stats("migration")
    during["slow_ops_by_phase"] = slow_by_phase(log, load.slow("migration", load.slow_ms))
    if base.get("p99_ms"):  # where the operations over the p99 goal (2x the baseline p99) fell
        over = load.slow("migration", 2 * base["p99_ms"])
        during["over_goal_by_phase"] = slow_by_phase(log, over)
        t0 = load.ops["migration"][0][0] if load.ops.get("migration") else 0
        during["t0_epoch"] = round(t0, 3)  # over_goal_ops and phase_spans_s count from here (to match server logs)
        during["over_goal_ops"] = [[round(t - t0, 3), kind, round(ms, 2)] for t, kind, ms in over[:60]]
        during["phase_spans_s"] = {p: [round(a - t0, 3), round((b or a) - t0, 3)]
                                   for p, (a, b) in phase_spans(log).items()}
        if cache.ok:  # the kernel's writeback bursts, and the operations over the goal that ended in one
            bursts = cache.bursts(marks["migration"], marks["after"])
            near = [o for o in over if any(b - 0.2 <= o[0] <= b + 1.0 for b, _ in bursts)]
            during["page_cache"] = {
                "dirty_peak_mb": cache.peak_mb(marks["migration"], marks["after"]),
                "writeback_bursts": [[round(b - t0, 2), mb] for b, mb in bursts],
                "over_goal_ops_in_bursts": len(near), "over_goal_ops": len(over),
                "baseline_dirty_peak_mb": cache.peak_mb(marks["baseline"], marks["migration"]),
                "baseline_writeback_bursts": len(cache.bursts(marks["baseline"], marks["migration"]))}
    backfill_rps = backfill_rows / (backfill_ms / 1000)
    plain_rps = plain_rows / plain_s
    return {
        "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
        "baseline": base,
        "during_migration": during,
        "during_plain_update": plain_load.stats("plain_update"),
        "migration": {"seconds": round(mig_s, 2), "expand_ms": phase_ms("expand"), "migrate_ms": phase_ms("migrate"),
                      "contract_ms": phase_ms("contract"), "batches": len(batch_records),
                      "ledgered_checkpoints": len(checkpoints),
                      "batch_keys_median": keys[len(keys) // 2] if keys else 0,
                      "batch_ms_median": batch_ms[len(batch_ms) // 2] if batch_ms else 0,
                      "batch_ms_p99": batch_ms[int(0.99 * len(batch_ms))] if batch_ms else 0,
                      "statement_ms_median": statement_ms[len(statement_ms) // 2] if statement_ms else 0,
                      "server_ms_median": server_ms[len(server_ms) // 2] if server_ms else None,
                      "backoffs": sum(1 for r in batch_records if "backoff_ms" in r["data"]),
                      "backoff_ms": round(sum(r["data"].get("backoff_ms", 0) for r in batch_records)),
                      "backfill_rows": backfill_rows, "ledger_entries": len(log),
                      "rows_left_null": nulls, "is_nullable_after": nullable},
        "backfill_rows_per_s": round(backfill_rps),
        "plain_update": {"rows": plain_rows, "seconds": round(plain_s, 2), "rows_per_s": round(plain_rps)},
        "p99_ratio": round(during.get("p99_ms", 1e9) / base["p99_ms"], 2) if base.get("p99_ms") else None,
        "backfill_ratio": round(backfill_rps / plain_rps, 2),
        "goals": {
            "zero_load_errors": during["errors"] == 0,
            "p99_within_2x_baseline": bool(base.get("p99_ms") and during.get("p99_ms", 1e9) <= 2 * base["p99_ms"]),
            "no_wait_beyond_lock_timeout": during.get("max_ms", 1e9) <= LOCK_TIMEOUT_MS,
            "backfill_at_least_half_plain_update": backfill_rps >= 0.5 * plain_rps,
        },
        "step_retries_on_lock_timeout": sum(a - 1 for a in retries),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=50.0, help="operations per second per worker")
    ap.add_argument("--baseline", type=float, default=30.0, help="seconds of load before migrating")
    ap.add_argument("--rounds", type=int, default=3, help="independent rounds (each builds its tables anew)")
    ap.add_argument("--batch", type=int, default=5_000, help="Batch-Size: most keys in one batch")
    ap.add_argument("--pause", type=int, default=0, help="Pause-Between-Batches (ms)")
    ap.add_argument("--max-batch-ms", type=int, default=1, help="Max-Batch-Ms (0: every batch is --batch keys)")
    ap.add_argument("--duty", type=int, default=100, help="Duty-Cycle: percent of the backfill's time in batches")
    ap.add_argument("--checkpoint-interval", type=int, default=1000, help="Checkpoint-Interval (ms)")
    ap.add_argument("--commit-backoff", type=int, default=4,
                    help="Commit-Backoff: pause this many times a congested commit's time (0: never)")
    ap.add_argument("--wal-compression", action="store_true",
                    help="options.backfill_wal_compression = true (batches compress their own WAL)")
    ap.add_argument("--no-flush-writes", action="store_true",
                    help="target option backfill_flush_writes = false (batches leave backend_flush_after alone)")
    ap.add_argument("--two-trips", action="store_true",
                    help="target option backfill_one_trip = false (every batch commits in a second round trip)")
    ap.add_argument("--server-runs", action="store_true",
                    help="batches in runs on the server (target option backfill_server_runs = true)")
    ap.add_argument("--no-sparse-wal", action="store_true",
                    help="options.backfill_sparse_wal = false (new WAL files zero-filled, as the server does)")
    ap.add_argument("--dsn", default=os.environ.get("MREG_BENCH_PG_DSN"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "zero-downtime.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mreg-bench-zd-"))
    server = None
    dsn = args.dsn
    if dsn is None:
        import pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        dsn = server.get_uri()
    rounds = []
    try:
        for i in range(args.rounds):
            rounds.append(one_round(dsn, work, args))
            r = rounds[-1]
            print(f"round {i + 1}: load {[round(x, 2) for x in r['load_average_start']]}: p99 "
                  f"{r['during_migration'].get('p99_ms')} ms vs baseline {r['baseline'].get('p99_ms')} ms "
                  f"({r['p99_ratio']}x), backfill {r['backfill_rows_per_s']} rows/s vs plain UPDATE "
                  f"{r['plain_update']['rows_per_s']} ({r['backfill_ratio']}x)", flush=True)
            pc = r["during_migration"].get("page_cache")
            if pc:
                print(f"  kernel writeback bursts (s into the migration, MB): {pc['writeback_bursts']}; "
                      f"{pc['over_goal_ops_in_bursts']} of {pc['over_goal_ops']} operations over the goal "
                      f"ended in one", flush=True)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def median(xs: list) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    both = [r["goals"]["p99_within_2x_baseline"] and r["goals"]["backfill_at_least_half_plain_update"]
            for r in rounds]
    out_doc = {
        "benchmark": "three-phase required column with a batched backfill under load",
        "rows": args.rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load": {"workers": args.workers, "rate_per_worker": args.rate, "mix": "70% read, 20% update, 10% insert"},
        "lock_timeout_ms": LOCK_TIMEOUT_MS,
        "settings": {"batch_size": args.batch, "max_batch_ms": args.max_batch_ms, "duty_cycle": args.duty,
                     "backfill_wal_compression": args.wal_compression, "backfill_sparse_wal": not args.no_sparse_wal,
                     "backfill_flush_writes": not args.no_flush_writes, "backfill_one_trip": not args.two_trips,
                     "backfill_server_runs": args.server_runs,
                     "pause_between_batches": args.pause, "checkpoint_interval_ms": args.checkpoint_interval,
                     "commit_backoff": args.commit_backoff},
        "summary": {
            "rounds": len(rounds),
            "rounds_meeting_p99_and_speed_goals": sum(both),
            "median_p99_ratio": median([r["p99_ratio"] for r in rounds if r["p99_ratio"] is not None] or [0]),
            "median_backfill_ratio": median([r["backfill_ratio"] for r in rounds]),
            "load_errors": sum(r["during_migration"]["errors"] for r in rounds),
            "longest_operation_ms": max(r["during_migration"].get("max_ms", 0) for r in rounds),
        },
        "rounds": rounds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out_doc, indent=2) + "\n")
    print(json.dumps(out_doc["summary"], indent=2))


if __name__ == "__main__":
    main()
