"""Ledger benchmark: append and verify N statements, against the bare floor measured in the same run.

Floor (plain loops over the same bytes): Ed25519 sign of each envelope's PAE,
Ed25519 verify of the same, SHA-256 of each leaf. Measured:

- append: ``LedgerStore.append_many`` in batches (validation, RFC 8785,
  DSSE signing, leaf, hashes, node rows, SQLite insert under BEGIN IMMEDIATE,
  WAL + synchronous=FULL), one process, then with signing in worker processes;
- verify: ``verify_log`` over every leaf (strict parse, canonical checks,
  statement schema, key validity, signature, chain, tree, checkpoint) on one
  process, then on all cores.

Each floor is timed right before and right after its measured counterpart and
averaged, because the machine may be shared. Writes ``bench/results/ledger.json``.

    .venv/bin/python bench/ledger/run.py [--n 100000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import cryptography  # noqa: E402

from ledger.canonical import canonical_json  # noqa: E402
from ledger.dsse import PAYLOAD_TYPE, pae  # noqa: E402
from ledger.keys import Signer, Trust, parse_allowed_signers  # noqa: E402
from ledger.policy import default_policy  # noqa: E402
from ledger.statement import new_statement  # noqa: E402
from ledger.store import LedgerStore  # noqa: E402
from ledger.verify import verify_log  # noqa: E402

ORIGIN = "bench/postgres"


def statements(n: int) -> list[dict]:
    mig = {"id": "20240115_120000_schema_add_email_verified", "version": "1.0.0",
           "checksum": "sha256:" + hashlib.sha256(b"x").hexdigest(),
           "path": "migrations/postgresql/20240115_120000_schema_add_email_verified.sql"}
    types = ("apply_started", "apply_succeeded")
    return [new_statement(ledger=ORIGIN, type=types[i % 2], actor="alice@example.com", migration=mig,
                          target={"engine": "postgresql", "id": "postgres"}, refs=[f"reg-{i // 2}"],
                          details={"execution_time_ms": i % 1000, "rollback_available": True},
                          time="2026-01-15T12:00:00.000000Z", event_id=f"event-{i:08d}")
            for i in range(n)]


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ledger.json"))
    args = ap.parse_args()
    n, batch = args.n, args.batch
    cores = len(os.sched_getaffinity(0))
    signer = Signer.from_seed(bytes(range(32)), "bench@example.com")
    stmts = statements(n)
    msgs = [pae(PAYLOAD_TYPE, canonical_json(s)) for s in stmts]
    key = signer.public_key

    def sign_floor():
        sign = signer.sign
        return [sign(m) for m in msgs]

    with tempfile.TemporaryDirectory() as tmp:
        # --- append, one process
        store = LedgerStore(Path(tmp) / "catalog.db")
        f1 = timed(sign_floor)
        t_append = sum(timed(lambda i=i: store.append_many(ORIGIN, stmts[i:i + batch], signer))
                       for i in range(0, n, batch))
        store.checkpoint(ORIGIN, signer)
        f2 = timed(sign_floor)
        sign_s = (f1 + f2) / 2
        sigs = sign_floor()
        nodes = store.db["ledger_nodes"].count
        leaves = store.leaves(ORIGIN)
        checkpoints = store.checkpoints(ORIGIN)
        store.close()

        # --- append with signing in worker processes (fresh log)
        store2 = LedgerStore(Path(tmp) / "catalog2.db")
        t_append_par = sum(timed(lambda i=i: store2.append_many(ORIGIN, stmts[i:i + batch], signer,
                                                                processes=cores))
                           for i in range(0, n, batch))
        store2.close()

    def verify_floor():
        verify = key.verify
        for s, m in zip(sigs, msgs):
            verify(s, m)

    def sha_floor():
        sha = hashlib.sha256
        for leaf in leaves:
            sha(leaf).digest()

    trust = Trust(parse_allowed_signers(f"bench@example.com {signer.public_line}"))
    policy = default_policy(trust)
    reports = {}
    v1 = timed(verify_floor)
    t_verify1 = timed(lambda: reports.setdefault(1, verify_log(ORIGIN, leaves, checkpoints, trust, policy)))
    v2 = timed(verify_floor)
    t_verify_n = timed(lambda: reports.setdefault(cores, verify_log(ORIGIN, leaves, checkpoints, trust, policy,
                                                                     processes=cores)))
    v3 = timed(verify_floor)
    verify_s = (v1 + v2 + v3) / 3
    sha_s = timed(sha_floor)
    assert all(r.ok for r in reports.values()), [f.line() for r in reports.values() for f in r.errors][:5]

    result = {
        "n": n, "batch": batch, "cores": cores,
        "machine": {"python": platform.python_version(), "cryptography": cryptography.__version__,
                    "platform": platform.platform(), "loadavg_at_end": list(os.getloadavg())},
        "floor_per_s": {"ed25519_sign": round(rate(n, sign_s)), "ed25519_verify": round(rate(n, verify_s)),
                        "sha256_leaf": round(rate(n, sha_s))},
        "append_per_s": round(rate(n, t_append)),
        "append_vs_sign_floor": round(rate(n, t_append) / rate(n, sign_s), 3),
        "append_parallel_signing_per_s": round(rate(n, t_append_par)),
        "append_parallel_vs_sign_floor": round(rate(n, t_append_par) / rate(n, sign_s), 3),
        "verify_1_process_per_s": round(rate(n, t_verify1)),
        "verify_1_process_vs_verify_floor": round(rate(n, t_verify1) / rate(n, verify_s), 3),
        f"verify_{cores}_processes_per_s": round(rate(n, t_verify_n)),
        "verify_speedup": round(t_verify1 / t_verify_n, 2),
        "node_rows_per_append": round(nodes / n, 4),
        "goals": {"append >= 0.70 of sign floor": rate(n, t_append) >= 0.7 * rate(n, sign_s),
                  "verify >= 0.80 of verify floor (1 core)": rate(n, t_verify1) >= 0.8 * rate(n, verify_s),
                  "node rows per append < 2": nodes / n < 2},
        "command": "python bench/ledger/run.py --n %d --batch %d" % (n, batch),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
