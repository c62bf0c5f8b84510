"""Start-up benchmark: wall time of `mreg --help` beside Python's own floor, measured in the same run.

    python bench/startup/run.py [--runs 25] [--out bench/results/startup.json]

Each command runs ``--runs`` times, interleaved (so a busy moment of the machine hurts
all of them alike), after one warm-up run each; the figures are medians and minimums in
seconds. Compared: ``python -c pass`` (the interpreter alone), ``import typer, rich``
(the CLI framework mreg stands on), every database driver and heavy library imported
together (what a careless CLI would pay), and ``mreg --help`` itself. Goal: < 0.15 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOAL_S = 0.15
HEAVY = "import psycopg, neo4j, redis, dulwich, pglast, sqlite_utils, datasette, cryptography"


def commands(python: str) -> dict[str, list[str]]:
    mreg = shutil.which("mreg", path=str(Path(python).parent)) or shutil.which("mreg")
    return {
        "python -c pass": [python, "-c", "pass"],
        "python -c 'import typer, rich'": [python, "-c", "import typer, rich"],
        "python -c 'import <every driver>'": [python, "-c", HEAVY],
        "mreg --help": [mreg, "--help"] if mreg else [python, "-m", "registry.cli.main", "--help"],
    }


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    args = parser.parse_args()

    cmds = commands(sys.executable)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for argv in cmds.values():
        run_once(argv)  # warm the file cache and .pyc files
    for _ in range(args.runs):
        for name, argv in cmds.items():
            times[name].append(run_once(argv))

    results = {
        name: {"median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4), "runs": len(t)}
        for name, t in times.items()
    }
    mreg_median = results["mreg --help"]["median_s"]
    report = {
        "benchmark": "startup",
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "goal_s": GOAL_S,
        "goal_met": mreg_median < GOAL_S,
        "mreg_over_python_s": round(mreg_median - results["python -c pass"]["median_s"], 4),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    width = max(len(name) for name in results)
    print(f"start-up, median of {args.runs} runs (seconds)")
    for name, r in results.items():
        print(f"  {name:<{width}}  {r['median_s']:.3f}  (min {r['min_s']:.3f})")
    print(f"mreg --help: {mreg_median:.3f} s, goal < {GOAL_S} s: {'met' if report['goal_met'] else 'NOT met'}")
    print(f"written to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
