"""Build a benchmark repository with `git fast-import`: N commits touching M migration files.

The files spread over the seed's twelve migration folders with their schemes; a few
commits per hundred also touch application code outside them (which the scan skips).
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

FOLDERS = [
    ("db/migrations", "flyway"),
    ("server/db/migrations/postgres", "date"),
    ("server/db/migrations/neo4j", "cypher"),
    ("server/db/migrations/timescale", "date"),
    ("server/src/db/migrations/postgres", "date"),
    ("server/src/db/migrations/neo4j", "neo4j"),
    ("server/src/migrations", "numbered"),
    ("server/migrations", "knex"),
    ("services/api/migrations", "numbered"),
    ("packages/maestro-core/migrations", "numbered"),
    ("packages/data-catalog/migrations", "flyway"),
    ("prov-ledger/migrations", "date"),
]


def file_name(folder_scheme: str, n: int) -> str:
    if folder_scheme == "flyway":
        return f"V{n}__change_{n}.sql"
    if folder_scheme == "date":
        return f"2023{1 + n % 12:02d}{1 + n % 28:02d}_{n:06d}_change_{n}.sql"
    if folder_scheme == "cypher":
        return f"{n:04d}_change_{n}.cypher"
    if folder_scheme == "neo4j":
        return f"V1_{n}_0__change_{n}.cypher"
    if folder_scheme == "numbered":
        return f"{n:04d}_change_{n}.sql"
    return f"2023{1 + n % 12:02d}{1 + n % 28:02d}{n % 240000:06d}_change_{n}.js"


def content(path: str, n: int, rev: int) -> bytes:
    if path.endswith(".cypher"):
        return (f"// change {n} revision {rev}\nCREATE INDEX idx_{n}_{rev} IF NOT EXISTS "
                f"FOR (e:Entity{n}) ON (e.p{rev});\n").encode()
    if path.endswith(".js"):
        return (f"exports.up = async function (knex) {{\n  await knex.raw(`ALTER TABLE t{n} ADD COLUMN c{rev} int`);\n}};\n"
                f"exports.down = async function (knex) {{\n  await knex.raw(`ALTER TABLE t{n} DROP COLUMN c{rev}`);\n}};\n").encode()
    return (f"-- change {n} revision {rev}\nCREATE TABLE IF NOT EXISTS t{n} (id bigint PRIMARY KEY);\n"
            f"ALTER TABLE t{n} ADD COLUMN IF NOT EXISTS c{rev} integer;\n").encode()


def paths_for(files: int) -> list[str]:
    out = []
    for i in range(files):
        folder, scheme = FOLDERS[i % len(FOLDERS)]
        out.append(f"{folder}/{file_name(scheme, i + 1)}")
    return out


def stream(commits: int, files: int, start: int = 0, parent: str | None = None, seed: int = 7,
           branch: str = "refs/heads/main") -> bytes:
    """A fast-import stream of ``commits`` commits; the first ``files`` add one file each."""
    rnd = random.Random(seed + start)
    paths = paths_for(files)
    out = []
    when = 1_700_000_000 + start * 60
    for i in range(start, start + commits):
        out.append(f"commit {branch}\nmark :{i + 1}\n".encode())
        who = f"Dev{i % 7} <dev{i % 7}@example.com> {when + i * 60} +0000\n".encode()
        out.append(b"author " + who + b"committer " + who)
        msg = f"change {i}\n".encode()
        out.append(b"data %d\n%s" % (len(msg), msg))
        if i == start and parent:
            out.append(f"from {parent}\n".encode())
        k = i if i < files else rnd.randrange(files)
        path, rev = paths[k], (0 if i < files else i)
        data = content(path, k + 1, rev)
        out.append(f"M 100644 inline {path}\n".encode() + b"data %d\n" % len(data) + data)
        if i % 50 == 0:
            code = f"// app code {i}\nexport const v = {i};\n".encode()
            out.append(f"M 100644 inline server/src/app/module{i % 40}.ts\n".encode()
                       + b"data %d\n" % len(code) + code)
        out.append(b"\n")
    return b"".join(out)


def build(repo: Path, commits: int, files: int) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=stream(commits, files), check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "main"], check=True)


def extend(repo: Path, commits: int, files: int, start: int) -> None:
    """Append ``commits`` commits on main (modifying existing files)."""
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "main"], capture_output=True, text=True,
                          check=True).stdout.strip()
    data = stream(commits, files, start=start, parent=head, seed=11)
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet", "--force"], input=data, check=True)
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", "main"], check=True)
