"""Apply 1,000 trivial PostgreSQL migrations with mreg and with its peers, in one run, on one server.

Each tool gets a fresh database on the same PostgreSQL and runs as a separate process (its
start-up counted, as an operator would see it):

- ``mreg``: ``mreg apply`` — planning, each migration's step with both signed events
  (``apply_started``/``apply_succeeded``) as mirror rows in the same transaction, catalog.db replica,
  checkpoint; these migrations only create tables, so consecutive ones share a commit (group commit,
  docs/applying.md);
- ``mreg-one-commit-per-phase``: the same with ``group_commit = false`` (one transaction per migration,
  as the loop);
- ``psql``: the 1,000 statements in one ``psql`` session (no history at all: the raw floor);
- ``psycopg-loop``: a minimal Python loop, one transaction per migration plus a history row
  (the floor for any Python tool);
- ``alembic``: 1,000 chained revisions, ``alembic upgrade head`` with the default env.py;
- ``yoyo``: 1,000 ``.sql`` migrations, ``yoyo apply --batch``;
- ``sqitch``: 1,000 changes, ``sqitch deploy`` (Debian's package), when installed.

Usage: ``python bench/apply/run.py [--n 1000] [--dsn postgresql://…] [--out bench/results/apply.json]``.
Without ``--dsn`` a pgserver (PostgreSQL 16) is started in a temporary folder. mreg's bytecode is
compiled first (as an installed package has it): with ``PYTHONDONTWRITEBYTECODE=1`` set, every run
would otherwise recompile mreg's modules, a cost the peers (installed packages) do not pay.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def new_db(admin: str) -> str:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = "bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    if "://" in admin:
        from urllib.parse import urlsplit, urlunsplit

        p = urlsplit(admin)
        return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))
    return make_conninfo(admin, dbname=name) if conninfo_to_dict(admin) else admin


def timed(cmd: list[str], *, cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed


def count_tables(dsn: str, n: int) -> None:
    import psycopg

    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'bench\\_t\\_%'").fetchone()[0]
    if got != n:
        raise RuntimeError(f"expected {n} tables, found {got}")


def stmt(i: int) -> str:
    return f"CREATE TABLE bench_t_{i:05d} (id integer)"


def run_mreg(admin: str, n: int, work: Path, *, group_commit: bool = True) -> dict:
    dsn = new_db(admin)
    root = work / "mreg"
    (root / "migrations").mkdir(parents=True)
    (work / "mreg.key").unlink(missing_ok=True)
    for i in range(n):
        (root / "migrations" / f"20250101_{i:06d}_schema_bench_t_{i:05d}.sql").write_text(
            f"-- Phase 1: EXPAND\n{stmt(i)};\n")
    (root / "mreg.toml").write_text(f'[project]\nname = "bench"\n[targets.main]\ntype = "postgresql"\n'
                                    f'url = "{dsn}"\n[targets.main.options]\n'
                                    f'group_commit = {str(group_commit).lower()}\n')
    sys.path.insert(0, str(REPO))
    from ledger.keys import Signer

    Signer.generate("bench").save(work / "mreg.key")
    env = dict(os.environ, MREG_ROOT=str(root), MREG_CATALOG=str(root / "catalog.db"),
               MREG_KEY=str(work / "mreg.key"))
    secs = timed([PY, "-m", "registry.cli.main", "apply"], cwd=root, env=env)
    count_tables(dsn, n)
    import psycopg

    with psycopg.connect(dsn) as c:
        rows = c.execute("SELECT count(*) FROM schema_versions").fetchone()[0]
    return {"seconds": round(secs, 3), "mirror_rows": rows, "signed_events": rows}


def run_mreg_one_commit_each(admin: str, n: int, work: Path) -> dict:
    """mreg with ``group_commit = false``: one transaction (one WAL flush) per phase, as the loop."""
    return run_mreg(admin, n, work, group_commit=False)


def run_psql(admin: str, n: int, work: Path) -> dict:
    psql = shutil.which("psql") or "/usr/bin/psql"
    dsn = new_db(admin)
    f = work / "all.sql"
    f.write_text("".join(stmt(i) + ";\n" for i in range(n)))
    secs = timed([psql, "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(f)], cwd=work)
    count_tables(dsn, n)
    return {"seconds": round(secs, 3)}


LOOP = r"""
import sys, psycopg
dsn, n = sys.argv[1], int(sys.argv[2])
with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS history (id integer PRIMARY KEY, applied_at timestamptz DEFAULT now())")
    done = {r[0] for r in conn.execute("SELECT id FROM history")}
    for i in range(n):
        if i in done:
            continue
        with conn.transaction():
            conn.execute(f"CREATE TABLE bench_t_{i:05d} (id integer)")
            conn.execute("INSERT INTO history (id) VALUES (%s)", (i,))
"""


def run_loop(admin: str, n: int, work: Path) -> dict:
    dsn = new_db(admin)
    secs = timed([PY, "-c", LOOP, dsn, str(n)], cwd=work)
    count_tables(dsn, n)
    return {"seconds": round(secs, 3)}


def run_alembic(admin: str, n: int, work: Path) -> dict:
    dsn = new_db(admin).replace("postgresql://", "postgresql+psycopg://", 1)
    root = work / "alembic"
    versions = root / "versions"
    versions.mkdir(parents=True)
    (root / "env.py").write_text(
        "from alembic import context\nfrom sqlalchemy import create_engine\n"
        "engine = create_engine(context.config.get_main_option('sqlalchemy.url'))\n"
        "with engine.connect() as connection:\n"
        "    context.configure(connection=connection)\n"
        "    with context.begin_transaction():\n"
        "        context.run_migrations()\n")
    (root / "script.py.mako").write_text("")
    prev = None
    for i in range(n):
        rev = f"r{i:05d}"
        (versions / f"{rev}.py").write_text(
            f"from alembic import op\nrevision = {rev!r}\ndown_revision = {prev!r}\nbranch_labels = None\n"
            f"depends_on = None\ndef upgrade():\n    op.execute({stmt(i)!r})\ndef downgrade():\n    pass\n")
        prev = rev
    ini = work / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {root}\nsqlalchemy.url = {dsn.replace('%', '%%')}\n")
    alembic = str(Path(PY).parent / "alembic")
    secs = timed([alembic, "-c", str(ini), "upgrade", "head"], cwd=work)
    count_tables(dsn.replace("postgresql+psycopg://", "postgresql://", 1), n)
    return {"seconds": round(secs, 3), "mode": "default env.py: one transaction for the whole upgrade"}


def run_yoyo(admin: str, n: int, work: Path) -> dict:
    dsn = new_db(admin)
    root = work / "yoyo"
    root.mkdir()
    for i in range(n):
        (root / f"{i:05d}_bench.sql").write_text(stmt(i) + ";\n")
    yoyo = str(Path(PY).parent / "yoyo")
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    secs = timed([yoyo, "apply", "--batch", "--no-config-file", "--database", url, str(root)], cwd=work)
    count_tables(dsn, n)
    return {"seconds": round(secs, 3)}


def run_sqitch(admin: str, n: int, work: Path) -> dict:
    sqitch = shutil.which("sqitch")
    if not sqitch:
        return {"skipped": "sqitch is not installed (apt-get install sqitch libdbd-pg-perl)"}
    dsn = new_db(admin)
    root = work / "sqitch"
    for d in ("deploy", "revert", "verify"):
        (root / d).mkdir(parents=True)
    (root / "sqitch.conf").write_text("[core]\n\tengine = pg\n\ttop_dir = .\n")
    lines = ["%syntax-version=1.0.0", "%project=bench", ""]
    for i in range(n):
        name = f"t{i:05d}"
        (root / "deploy" / f"{name}.sql").write_text(f"BEGIN;\n{stmt(i)};\nCOMMIT;\n")
        (root / "revert" / f"{name}.sql").write_text(f"DROP TABLE bench_t_{i:05d};\n")
        (root / "verify" / f"{name}.sql").write_text("SELECT 1;\n")
        lines.append(f"{name} 2025-01-01T00:00:00Z bench <bench@example.com> # t")
    (root / "sqitch.plan").write_text("\n".join(lines) + "\n")
    target = "db:" + dsn.replace("postgresql://", "pg://", 1)
    env = dict(os.environ, SQITCH_USER_CONFIG="/dev/null", SQITCH_FULLNAME="bench", SQITCH_EMAIL="b@example.com")
    secs = timed([sqitch, "deploy", "--no-verify", target], cwd=root, env=env)
    count_tables(dsn, n)
    return {"seconds": round(secs, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dsn", default=os.environ.get("MREG_BENCH_PG_DSN"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "apply.json"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    args = ap.parse_args()
    import compileall

    for package in ("registry", "ledger"):
        compileall.compile_dir(REPO / package, quiet=1)
    work = Path(tempfile.mkdtemp(prefix="mreg-bench-apply-"))
    server = None
    admin = args.dsn
    if admin is None:
        import pgserver

        server = pgserver.get_server(work / "pg", cleanup_mode="stop")
        admin = server.get_uri()
    results = {}
    tools = [("psql", run_psql), ("psycopg-loop", run_loop), ("mreg", run_mreg),
             ("mreg-one-commit-per-phase", run_mreg_one_commit_each), ("alembic", run_alembic), ("yoyo", run_yoyo)]
    runs: dict[str, list] = {name: [] for name, _ in tools}
    try:
        for r in range(args.rounds):  # interleaved rounds: a busy machine slows every tool alike
            order = tools if r % 2 == 0 else list(reversed(tools))
            for name, fn in order:
                sub = work / f"{name}-{r}"
                sub.mkdir()
                try:
                    runs[name].append(fn(admin, args.n, sub))
                except RuntimeError as exc:
                    runs[name].append({"error": str(exc)})
                print(f"round {r + 1} {name:>13}: {runs[name][-1]}", flush=True)
        for name, items in runs.items():
            ok = [x for x in items if "seconds" in x]
            if not ok:
                results[name] = items[-1]
                continue
            secs = sorted(x["seconds"] for x in ok)
            results[name] = {**ok[0], "seconds": secs[len(secs) // 2], "runs": [x["seconds"] for x in ok]}
        sub = work / "sqitch"
        sub.mkdir()
        try:
            results["sqitch"] = run_sqitch(admin, args.n, sub)
        except RuntimeError as exc:
            results["sqitch"] = {"error": str(exc)}
        print(f"{'sqitch':>13}: {results['sqitch']}", flush=True)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    floor = results.get("psycopg-loop", {}).get("seconds")
    mine = results.get("mreg", {}).get("seconds")
    ratios = {k: round(v["seconds"] / mine, 2) for k, v in results.items() if "seconds" in v and mine}
    out = {
        "benchmark": "apply 1,000 trivial PostgreSQL migrations",
        "n": args.n,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg())},
        "method": "each tool a separate process on a fresh database of one PostgreSQL server; "
                  f"median of {args.rounds} interleaved rounds (sqitch: one run)",
        "results": results,
        "mreg_vs_minimal_loop": round(mine / floor, 3) if mine and floor else None,
        "mreg_one_commit_per_phase_vs_minimal_loop": (
            round(results["mreg-one-commit-per-phase"]["seconds"] / floor, 3)
            if floor and "seconds" in results.get("mreg-one-commit-per-phase", {}) else None),
        "peer_seconds_over_mreg": ratios,
        "goals": {"within_1.3x_of_minimal_loop": bool(mine and floor and mine <= 1.3 * floor),
                  "faster_than_each_peer": {k: results[k]["seconds"] > mine for k in ("alembic", "yoyo", "sqitch")
                                            if "seconds" in results.get(k, {}) and mine}},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
