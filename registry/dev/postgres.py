"""PostgreSQL 16 from the ``pgserver`` wheel, run with its own binaries on a loopback port.

pgserver's Python API serves on a Unix socket only; we run the ``initdb`` and
``postgres`` binaries it ships ourselves, listening on 127.0.0.1 with Unix
sockets off. PostgreSQL refuses to run as root: when we are root the server
runs as an unprivileged user (``nobody`` unless ``MREG_DEV_PG_USER`` names
another), which owns the data directory; folders above it are made
traversable (``o+x``) if they are not.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path

from registry.dev.base import HOST, DevServer, DevServerError, Launch

DATABASE = "mreg"  # created on first start; the dev target's database


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "pginstall" / "bin"
    return folder if (folder / "postgres").exists() else None


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) of the unprivileged user to run as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MREG_DEV_PG_USER", "nobody")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise DevServerError(
            f"PostgreSQL refuses to run as root and there is no user {name!r} to run it as",
            hint="create an unprivileged user and set MREG_DEV_PG_USER to its name",
        ) from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let other users walk down to ``path`` (adds o+x to folders above it that lack it)."""
    for folder in reversed(path.resolve().parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class PostgresServer(DevServer):
    name = "postgres"
    type = "postgresql"
    start_timeout = 60.0
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave

    def unavailable(self) -> str | None:
        if bin_dir() is None:
            return "the pgserver package is not installed (pip install 'mreg[dev]')"
        return None

    def prepare(self, data_dir: Path) -> None:
        user = _run_as()
        data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_traversable(data_dir)
            os.chown(data_dir, *user)
        pgdata = data_dir / "data"
        if (pgdata / "PG_VERSION").exists():
            return
        argv = [str(bin_dir() / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(argv, cwd=data_dir, capture_output=True, text=True, timeout=120,
                              **({"user": user[0], "group": user[1], "extra_groups": []} if user else {}))
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DevServerError(f"initdb failed in {pgdata}: {last[0]}",
                                 hint=f"remove {data_dir} and run `mreg dev up` again")

    def launch(self, data_dir: Path, port: int) -> Launch:
        argv = [str(bin_dir() / "postgres"), "-D", str(data_dir / "data"),
                "-h", HOST, "-p", str(port), "-k", "",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200", "-c", "logging_collector=off"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return Launch(argv, data_dir, env, _run_as())

    def probe(self, port: int) -> str | None:
        import psycopg

        try:
            with psycopg.connect(host=HOST, port=port, user="postgres", dbname="postgres",
                                 connect_timeout=2, sslmode="disable") as conn:
                return str(conn.execute("SHOW server_version").fetchone()[0])
        except psycopg.OperationalError:
            return None

    def after_start(self, port: int) -> None:
        import psycopg

        with psycopg.connect(host=HOST, port=port, user="postgres", dbname="postgres",
                             connect_timeout=5, sslmode="disable", autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def url(self, port: int) -> str:
        return f"postgresql://postgres@{HOST}:{port}/{DATABASE}"
