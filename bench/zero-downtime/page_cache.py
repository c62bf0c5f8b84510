"""What a backfill leaves dirty in the kernel's page cache, with and without ``backend_flush_after``.

No load and no mreg: on a freshly started pgserver, for each variant, build the benchmark's
2,000,000-row ``accounts`` table (``run.py``'s ``build_table``), add ``email_verified``, then run
the backfill's batches (250 keys, one transaction each, the variant's ``SET LOCAL`` first) in one
session while ``/proc/meminfo`` is sampled every 20 ms. After the last batch, ``fsync`` of the
table's and the index's files says how much of the dirty data was theirs. Linux only (it reads
``/proc/meminfo``); the server must run on this machine, so it always starts its own.

    python bench/zero-downtime/page_cache.py            # variants: default, flush (backend_flush_after = 32)

Results: ``bench/results/zero-downtime-page-cache.json``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, PageCache, build_table, meminfo  # noqa: E402

VARIANTS = {"default": [], "flush": ["SET LOCAL backend_flush_after = 32"]}
UPDATE = ("UPDATE accounts SET email_verified = (email_confirmed_at IS NOT NULL) "
          "WHERE id >= {a} AND id < {b} AND email_verified IS NULL")


def dirty_mb() -> float:
    return round(meminfo("Dirty")["Dirty"] / 1024, 1)


def fsync_files(pattern: str) -> None:
    for name in glob.glob(pattern):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def one(dsn: str, data_dir: str, variant: str, rows: int, keys: int) -> dict:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS accounts")
    build_table(dsn, rows)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("ALTER TABLE accounts ADD COLUMN email_verified boolean")
        c.execute("ALTER TABLE accounts SET (autovacuum_enabled = off)")  # no vacuum's writes in the figures
        c.execute("SELECT pg_stat_reset_shared('io')")
        c.execute("CHECKPOINT")
    time.sleep(6)  # the kernel's writeback of the build is over
    cache = PageCache()
    cache.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.time()
        for a in range(1, rows + 1, keys):
            conn.execute("; ".join(["BEGIN", *VARIANTS[variant], UPDATE.format(a=a, b=a + keys), "COMMIT"]))
        seconds = time.time() - t0
        time.sleep(2)
        cache.stop.set()
        io = conn.execute("SELECT backend_type, sum(writes), sum(extends), sum(writebacks) FROM pg_stat_io "
                          "WHERE object = 'relation' AND backend_type IN ('client backend', 'background writer', "
                          "'checkpointer') GROUP BY 1 ORDER BY 1").fetchall()
        files = {rel: conn.execute("SELECT pg_relation_filepath(%s)", (rel,)).fetchone()[0]
                 for rel in ("accounts", "accounts_pkey")}
    before = dirty_mb()
    fsync_files(os.path.join(data_dir, files["accounts"]) + "*")
    after_table = dirty_mb()
    fsync_files(os.path.join(data_dir, files["accounts_pkey"]) + "*")
    after_index = dirty_mb()
    return {
        "variant": variant, "settings": VARIANTS[variant], "seconds": round(seconds, 1),
        "rows_per_s": round(rows / seconds),
        "dirty_peak_mb": cache.peak_mb(t0, t0 + 3600),
        "dirty_at_end_mb": before, "of_it_the_table_mb": round(before - after_table, 1),
        "of_it_the_index_mb": round(after_table - after_index, 1),
        "dirty_mb_every_2s": [round(d / 1024) for t, d, _ in cache.samples[::100]],
        "pg_stat_io": {b: {"writes": int(w or 0), "extends": int(e or 0), "writebacks": int(wb or 0)}
                       for b, w, e, wb in io},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--keys", type=int, default=250, help="keys a batch")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "zero-downtime-page-cache.json"))
    args = ap.parse_args()
    import pgserver

    data_dir = tempfile.mkdtemp(prefix="mreg-bench-pc-")
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    try:
        results = []
        for variant in args.variants:
            r = one(server.get_uri(), data_dir, variant, args.rows, args.keys)
            results.append(r)
            print(f"{variant}: {r['seconds']} s, dirty page cache at most {r['dirty_peak_mb']} MB, at the end "
                  f"{r['dirty_at_end_mb']} MB (table {r['of_it_the_table_mb']}, index {r['of_it_the_index_mb']})",
                  flush=True)
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)
    Path(args.out).write_text(json.dumps({
        "what": "dirty page cache left by a backfill's batches, with and without backend_flush_after (no load)",
        "rows": args.rows, "keys_per_batch": args.keys,
        "vm": {k: Path(f"/proc/sys/vm/{k}").read_text().strip()
               for k in ("dirty_expire_centisecs", "dirty_writeback_centisecs", "dirty_background_ratio")},
        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
