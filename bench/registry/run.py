"""Registry benchmark: scan a 20,000-commit repository against `git log --name-status`.

    .venv/bin/python bench/registry/run.py [--commits 20000] [--files 2000] [--out bench/results/registry.json]

Builds the repository with `git fast-import` (bench/registry/build.py), then times in the
same run: `git log --name-status` (the peer), a first full `mreg scan` (with its parsing
worker processes, and again with ``MREG_SCAN_WORKERS=0`` into another catalog), re-scans
after 100 and after 1,000 new commits, a re-scan with nothing new, and the post-commit
registration of one new migration (interpreter start-up included). CPU seconds (user + system,
worker processes included) are recorded beside wall seconds: the machine may be shared.
Goals (issue 4): first scan within 5x git log; re-scan proportional to the new commits;
hook under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import build  # noqa: E402


def timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, str]:
    return timed_cpu(cmd, env, cwd)[::2]


def timed_cpu(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, str]:
    """``(wall seconds, CPU seconds of the command and the processes it waited for, stdout)``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=2_000)
    ap.add_argument("--new", type=int, default=100)
    ap.add_argument("--hook-runs", type=int, default=7)
    ap.add_argument("--out", default=str(HERE.parents[1] / "bench" / "results" / "registry.json"))
    args = ap.parse_args()

    load_start = os.getloadavg()  # the machine may be shared: the figures carry its load
    work = Path(tempfile.mkdtemp(prefix="mreg-bench-registry-"))
    repo = work / "repo"
    t0 = time.perf_counter()
    build.build(repo, args.commits, args.files)
    build_s = time.perf_counter() - t0

    key = work / "key" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run([sys.executable, "-c", "import sys\nfrom ledger.keys import Signer\n"
                    "Signer.generate(comment='bench').save(sys.argv[1])", str(key)], check=True)
    env = {**os.environ, "MREG_ROOT": str(repo), "MREG_CATALOG": str(work / "catalog.db"), "MREG_KEY": str(key),
           "MREG_PROJECT": "bench", "HOME": str(work)}
    mreg = [sys.executable, "-m", "registry.cli.main"]

    git_log = min(timed(["git", "-C", str(repo), "log", "--name-status"])[0] for _ in range(3))
    git_log_migr = min(timed(["git", "-C", str(repo), "log", "--name-status", "--", "*migrations*"])[0]
                       for _ in range(3))

    load_scan = os.getloadavg()
    first_s, first_cpu, first_out = timed_cpu(mreg + ["scan", "--json"], env)
    first = json.loads(first_out)
    in_place_s, in_place_cpu, in_place_out = timed_cpu(
        mreg + ["scan", "--json"], {**env, "MREG_SCAN_WORKERS": "0", "MREG_CATALOG": str(work / "in-place.db")})
    assert json.loads(in_place_out) == first, "the scan differs without worker processes"

    build.extend(repo, args.new, args.files, start=args.commits)
    rescan_s, rescan_cpu, rescan_out = timed_cpu(mreg + ["scan", "--json"], env)
    build.extend(repo, 10 * args.new, args.files, start=args.commits + args.new)
    rescan10_s, rescan10_cpu, _ = timed_cpu(mreg + ["scan", "--json"], env)
    noop_s, noop_cpu, _ = timed_cpu(mreg + ["scan", "--json"], env)

    # The installed hooks (`mreg hooks install`), as Git runs them: pre-commit reads the staged file,
    # the commit is made, the post-commit hook is timed alone (bench/hooks/run.py times more cases).
    timed(mreg + ["hooks", "install"], {**env, "MREG_PYTHON": sys.executable})
    hooks = repo / ".git" / "hooks"
    hook_times = []
    for i in range(args.hook_runs + 1):
        rel = f"migrations/29990101_{i:06d}_schema_bench_hook_{i}.sql"
        (repo / "migrations").mkdir(exist_ok=True)
        (repo / rel).write_text(f"-- Migration: bench hook {i}\n-- Version: 1.0.{i}\n-- Database: postgresql\n"
                                f"CREATE TABLE bench_hook_{i} (id bigint PRIMARY KEY);\n")
        subprocess.run(["git", "-C", str(repo), "add", rel], check=True)
        timed([str(hooks / "pre-commit")], env, cwd=repo)
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=Bench", "-c", "user.email=b@example.com",
                        "-c", "core.hooksPath=/nonexistent", "commit", "-q", "-m", f"hook {i}"], check=True)
        t, _ = timed([str(hooks / "post-commit")], env, cwd=repo)
        if i:  # the first run writes the hook's bytecode cache when PYTHONDONTWRITEBYTECODE is set
            hook_times.append(t)
    listed = json.loads(timed(mreg + ["list", "--json"], env)[1])
    hooked = sum(1 for m in listed if "bench_hook_" in m["path"])

    result = {
        "benchmark": "registry",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_start],
                    "load_average_before_first_scan": [round(x, 2) for x in load_scan],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "repository": {"commits": args.commits, "migration_files": args.files, "folders": len(build.FOLDERS),
                       "build_seconds": round(build_s, 2)},
        "peer": {"git_log_name_status_seconds": round(git_log, 3),
                 "git_log_name_status_migration_paths_seconds": round(git_log_migr, 3)},
        "mreg": {
            "first_scan_seconds": round(first_s, 2),
            "first_scan_cpu_seconds": round(first_cpu, 2),
            "first_scan_migrations": first["migrations"],
            "first_scan_over_git_log": round(first_s / git_log, 1),
            "first_scan_without_workers_seconds": round(in_place_s, 2),
            "first_scan_without_workers_cpu_seconds": round(in_place_cpu, 2),
            "rescan_new_commits": args.new,
            "rescan_seconds": round(rescan_s, 3),
            "rescan_cpu_seconds": round(rescan_cpu, 3),
            "rescan_10x_new_commits": 10 * args.new,
            "rescan_10x_seconds": round(rescan10_s, 3),
            "rescan_10x_cpu_seconds": round(rescan10_cpu, 3),
            "noop_rescan_seconds": round(noop_s, 3),
            "noop_rescan_cpu_seconds": round(noop_cpu, 3),
            "post_commit_hook_seconds": {"median": round(statistics.median(hook_times), 3),
                                         "min": round(min(hook_times), 3), "max": round(max(hook_times), 3),
                                         "runs": len(hook_times)},
            "hook_registered": hooked,
        },
        "goals": {"first_scan_within_5x_git_log": first_s <= 5 * git_log,
                  "hook_under_0_3_s": statistics.median(hook_times) < 0.3},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
