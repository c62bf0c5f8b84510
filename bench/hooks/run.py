"""Hooks benchmark: the cost of `git commit` of one new migration with mreg's hooks installed.

    .venv/bin/python bench/hooks/run.py [--commits 20000] [--files 2000] [--runs 11] [--out bench/results/hooks.json]

Builds the registry benchmark's repository (bench/registry/build.py: N commits, M migration
files in twelve folders), scans it once (so catalog.db holds M migrations and the findings
refresh has them all to read), runs `mreg hooks install`, then times, each over --runs commits
of one new canonical migration (interpreter start-up included, as Git runs the hooks):

- ``post_commit``: the installed post-commit hook alone, after the installed pre-commit hook
  read the staged file (the normal path; the commit itself is made with hooks disabled);
- ``post_commit_unchecked``: the same without pre-commit (``git commit --no-verify``):
  the hook reads the file itself, with the full parser (pglast);
- ``post_commit_bare``: ``python -m registry.hooks post-commit`` in this process's environment
  (when PYTHONDONTWRITEBYTECODE is set and the sources have no __pycache__, every run compiles
  the modules it imports; the installed hook avoids that, see docs/registry.md#hooks);
- ``git_commit``: the whole `git commit` with both hooks;
- ``read_commit_git`` / ``read_commit_dulwich``: only reading the commit's changes and the new
  file's bytes in a fresh interpreter, through `git diff-tree` + `git cat-file --batch` (what
  the hook does) or through dulwich (the project's Git library), for the choice between them.

Each series gives wall-clock median/min/max and the median CPU time (user + system of the hook and
the processes it waited for), which a shared machine's load does not inflate as much.
Goal (issue 4): post-commit registration under 0.3 s; aimed at 0.15-0.2 s on a quiet machine.
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
sys.path.insert(0, str(HERE.parent / "registry"))

import build  # noqa: E402  (bench/registry/build.py)

READ_GIT = """
import subprocess, sys
root = sys.argv[1]
out = subprocess.run(["git", "-C", root, "diff-tree", "-r", "-z", "--raw", "--no-abbrev", "--no-renames", "--root",
                      "--format=%H%x00%an <%ae>%x00%at", "HEAD"], capture_output=True, check=True).stdout
fields = out.split(b"\\0")
blobs = [f.split(b" ")[3] for f in fields if f.lstrip(b"\\n").startswith(b":")]
data = subprocess.run(["git", "-C", root, "cat-file", "--batch"], input=b"\\n".join(blobs) + b"\\n",
                      capture_output=True, check=True).stdout
assert data
"""

READ_DULWICH = """
import sys
from dulwich.repo import Repo
from dulwich.diff_tree import tree_changes
repo = Repo(sys.argv[1])
commit = repo[repo.head()]
parent = repo[commit.parents[0]].tree if commit.parents else None
changes = list(tree_changes(repo.object_store, parent, commit.tree))
data = [repo[c.new.sha].data for c in changes if c.new and c.new.sha]
assert data and commit.author
"""


CPU: dict[str, list[float]] = {}  # CPU seconds (user + sys, the process and what it waited for) per series


def run(cmd: list[str], env: dict, cwd: Path | None = None, timed: bool = False):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    out.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (elapsed, out) if timed else out


def stats(times: list[float], cpu: list[float] | None = None) -> dict:
    out = {"median": round(statistics.median(times), 3), "min": round(min(times), 3),
           "max": round(max(times), 3), "runs": len(times)}
    if cpu:
        out["cpu_median"] = round(statistics.median(cpu), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--out", default=str(HERE.parents[1] / "bench" / "results" / "hooks.json"))
    args = ap.parse_args()

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mreg-bench-hooks-"))
    repo = work / "repo"
    build.build(repo, args.commits, args.files)
    key = work / "key" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run([sys.executable, "-c", "import sys\nfrom ledger.keys import Signer\n"
                    "Signer.generate(comment='bench').save(sys.argv[1])", str(key)], check=True)
    env = {**os.environ, "MREG_ROOT": str(repo), "MREG_CATALOG": str(work / "catalog.db"), "MREG_KEY": str(key),
           "MREG_PROJECT": "bench", "HOME": str(work), "MREG_PYTHON": sys.executable,
           "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "b@example.com"}
    mreg = [sys.executable, "-m", "registry.cli.main"]
    scanned = json.loads(run(mreg + ["scan", "--json"], env).stdout)
    run(mreg + ["hooks", "install"], env)
    hooks = repo / ".git" / "hooks"
    counter = iter(range(1_000_000))

    def stage() -> str:
        i = next(counter)
        rel = f"migrations/29990101_{i:06d}_schema_bench_hook_{i}.sql"
        (repo / "migrations").mkdir(exist_ok=True)
        (repo / rel).write_text(f"-- Migration: bench hook {i}\n-- Version: 1.0.{i}\n-- Database: postgresql\n"
                                f"-- Dependencies: []\n\nCREATE TABLE bench_hook_{i} (id bigint PRIMARY KEY);\n\n"
                                f"-- Rollback:\nDROP TABLE bench_hook_{i};\n")
        run(["git", "add", rel], env, cwd=repo)
        return rel

    def commit_without_hooks() -> None:
        run(["git", "-c", "core.hooksPath=/nonexistent", "commit", "-q", "-m", "bench"], env, cwd=repo)

    def registered(out) -> None:
        if "registered 29990101_" not in out.stderr:
            raise SystemExit(f"the hook did not register: {out.stderr}")

    stage()
    first, out = run(["git", "commit", "-q", "-m", "first"], env, cwd=repo, timed=True)  # writes bytecode
    registered(out)
    series: dict[str, list[float]] = {k: [] for k in ("post_commit", "post_commit_unchecked", "post_commit_bare",
                                                      "git_commit", "read_commit_git", "read_commit_dulwich")}
    for _ in range(args.runs):
        stage()
        run([str(hooks / "pre-commit")], env, cwd=repo)
        commit_without_hooks()
        t, out = run([str(hooks / "post-commit")], env, cwd=repo, timed=True)
        registered(out)
        series["post_commit"].append(t)
        CPU.setdefault("post_commit", []).append(out.cpu)

        stage()
        commit_without_hooks()
        t, out = run([str(hooks / "post-commit")], env, cwd=repo, timed=True)
        registered(out)
        series["post_commit_unchecked"].append(t)
        CPU.setdefault("post_commit_unchecked", []).append(out.cpu)

        stage()
        run([str(hooks / "pre-commit")], env, cwd=repo)
        commit_without_hooks()
        t, out = run([sys.executable, "-m", "registry.hooks", "post-commit"], env, cwd=repo, timed=True)
        registered(out)
        series["post_commit_bare"].append(t)
        CPU.setdefault("post_commit_bare", []).append(out.cpu)

        stage()
        t, out = run(["git", "commit", "-q", "-m", "bench"], env, cwd=repo, timed=True)
        registered(out)
        series["git_commit"].append(t)
        CPU.setdefault("git_commit", []).append(out.cpu)

        series["read_commit_git"].append(run([sys.executable, "-c", READ_GIT, str(repo)], env, timed=True)[0])
        series["read_commit_dulwich"].append(
            run([sys.executable, "-c", READ_DULWICH, str(repo)], env, timed=True)[0])

    listed = json.loads(run(mreg + ["list", "--json"], env).stdout)
    hooked = sum(1 for m in listed if "bench_hook_" in m["path"])
    result = {
        "benchmark": "hooks",
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in load_start],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "PYTHONDONTWRITEBYTECODE": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))},
        "repository": {"commits": args.commits, "migration_files": args.files,
                       "catalog_migrations": scanned["migrations"]},
        "seconds": {"first_commit_with_hooks": round(first, 3), **{k: stats(v, CPU.get(k)) for k, v in series.items()}},
        "registered_by_hooks": hooked,
        "goals": {"post_commit_under_0_3_s": statistics.median(series["post_commit"]) < 0.3,
                  "post_commit_at_most_0_2_s": statistics.median(series["post_commit"]) <= 0.2},
    }
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
