"""Start, stop and inspect the dev servers; their state lives in ``<state_dir>/dev/state.json``.

``up`` starts every server the machine can run, each on a free loopback port,
and records its pid, start time, port, data folder, log file and version.
A server that cannot start is reported with its reason; the others still
start. ``down`` stops exactly the processes ``up`` recorded (by pid and start
time, whole process group) and checks they are gone. Nothing here prints:
each function returns one :class:`ServerStatus` per server.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from registry.config import redact_url
from registry.dev import process
from registry.dev.base import HOST, DevServer, DevServerError
from registry.dev.neo4j import Neo4jServer
from registry.dev.postgres import PostgresServer
from registry.dev.redis import RedisServer
from registry.dev.timescale import TimescaleServer

# The dev servers, by name (the names of the embedded default targets).
SERVERS: dict[str, DevServer] = {
    s.name: s for s in (PostgresServer(), TimescaleServer(), Neo4jServer(), RedisServer())
}
# Which dev server serves a target of each type.
SERVER_FOR_TYPE = {s.type: s.name for s in SERVERS.values()}
STATE_VERSION = 1


@dataclass
class ServerStatus:
    """One dev server as ``up``/``down``/``status`` report it.

    ``outcome`` is what the call did: ``started``, ``already running``,
    ``failed``, ``unavailable``, ``stopped``, ``not running``, ``running``.
    ``reason`` says why for ``failed``/``unavailable``.
    """

    name: str
    type: str
    outcome: str
    running: bool
    url: str | None = None
    port: int | None = None
    pid: int | None = None
    version: str | None = None
    data_dir: str | None = None
    log: str | None = None
    reason: str | None = None
    seconds: float | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["url"] = redact_url(self.url) if self.url else None
        return data


def dev_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "dev"


def state_file(state_dir: Path) -> Path:
    return dev_dir(state_dir) / "state.json"


def read_state(state_dir: Path) -> dict:
    """The recorded servers (``{"servers": {name: record}}``); empty when none was started."""
    path = state_file(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": STATE_VERSION, "servers": {}}
    except (OSError, json.JSONDecodeError) as exc:
        raise DevServerError(f"{path}: unreadable dev state ({exc})",
                             hint=f"stop stray servers by hand, then remove {path}") from None
    data.setdefault("servers", {})
    return data


def _write_state(state_dir: Path, data: dict) -> None:
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextmanager
def _locked(state_dir: Path):
    """Hold ``.mreg/dev/lock`` so two `mreg dev up`/`down` never interleave their state changes."""
    folder = dev_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record_running(record: dict | None) -> bool:
    return bool(record) and record.get("ready", False) and process.is_ours(record.get("pid"), record.get("started"))


def _status_of(server: DevServer, record: dict | None, outcome: str | None = None) -> ServerStatus:
    running = _record_running(record)
    if record is None:
        return ServerStatus(server.name, server.type, outcome or "not running", False)
    return ServerStatus(
        server.name, server.type, outcome or ("running" if running else "not running"), running,
        url=record.get("url"), port=record.get("port"), pid=record.get("pid"),
        version=record.get("version"), data_dir=record.get("data_dir"), log=record.get("log"),
    )


def _select(only: list[str] | None) -> list[DevServer]:
    if not only:
        return list(SERVERS.values())
    unknown = [name for name in only if name not in SERVERS]
    if unknown:
        raise DevServerError(f"no dev server named {', '.join(unknown)}",
                             hint=f"pick from: {', '.join(SERVERS)}")
    return [SERVERS[name] for name in only]


def status(state_dir: Path) -> list[ServerStatus]:
    """Every dev server: running or not, with its URL, pid and version."""
    servers = read_state(state_dir)["servers"]
    return [_status_of(server, servers.get(name)) for name, server in SERVERS.items()]


def up(state_dir: Path, only: list[str] | None = None) -> list[ServerStatus]:
    """Start the dev servers that are not running; report each one's outcome."""
    with _locked(state_dir):
        return _up(state_dir, only)


def _launch(state_dir: Path, state: dict, server: DevServer, data_dir: Path, log: Path) -> process.Spawned:
    """Start ``server`` on a free port and record it before anyone waits for it (so `down` finds it)."""
    port = process.free_port()
    launch = server.launch(data_dir, port)
    spawned = process.spawn(launch.argv, cwd=launch.cwd, log=log, env=launch.env, user=launch.user)
    state["servers"][server.name] = {
        "name": server.name, "type": server.type, "port": port, "pid": spawned.pid,
        "started": spawned.started, "data_dir": str(data_dir), "log": str(log),
        "url": server.url(port), "version": None, "ready": False,
        "started_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "argv": launch.argv,
    }
    _write_state(state_dir, state)
    return spawned


def _up(state_dir: Path, only: list[str] | None) -> list[ServerStatus]:
    state = read_state(state_dir)
    records = state["servers"]
    results: dict[str, ServerStatus] = {}
    pending: dict[str, tuple[DevServer, process.Spawned, float, int]] = {}

    for server in _select(only):
        record = records.get(server.name)
        if _record_running(record):
            results[server.name] = _status_of(server, record, "already running")
            continue
        if record:  # left over from a server that died: make sure nothing of it remains
            process.stop(record["pid"], record.get("started"), sig=server.stop_signal, timeout=5)
            records.pop(server.name)
        reason = server.unavailable()
        if reason:
            results[server.name] = ServerStatus(server.name, server.type, "unavailable", False, reason=reason)
            continue
        data_dir = dev_dir(state_dir) / server.name
        log = dev_dir(state_dir) / "logs" / f"{server.name}.log"
        began = time.monotonic()
        try:
            server.prepare(data_dir)
            spawned = _launch(state_dir, state, server, data_dir, log)
        except (DevServerError, OSError) as exc:
            results[server.name] = ServerStatus(server.name, server.type, "failed", False,
                                                reason=str(exc), log=str(log))
            continue
        pending[server.name] = (server, spawned, began, 1)

    while pending:
        for name, (server, spawned, began, attempt) in list(pending.items()):
            record = records[name]
            exited = spawned.popen.poll() is not None
            answering = not exited and process.port_open(HOST, record["port"])
            version = server.probe(record["port"]) if answering else None
            waited = time.monotonic() - began
            if version is not None:
                try:
                    server.after_start(record["port"])
                except Exception as exc:  # noqa: BLE001 - any driver error here means the start failed
                    version, exited = None, True
                    record["error"] = f"set-up after start failed: {exc}"
            if version is not None:
                record.update(version=version, ready=True)
                results[name] = _status_of(server, record, "started")
                results[name].seconds = round(waited, 2)
            else:
                if exited and attempt < 2 and "error" not in record:
                    # most often the free port was taken in the meantime: once more, on another port
                    process.stop(spawned.pid, spawned.started, sig=server.stop_signal, timeout=5)
                    data_dir, log = Path(record["data_dir"]), Path(record["log"])
                    try:
                        relaunched = _launch(state_dir, state, server, data_dir, log)
                        pending[name] = (server, relaunched, began, attempt + 1)
                        continue
                    except (DevServerError, OSError) as exc:
                        record["error"] = str(exc)
                if not exited and waited <= server.start_timeout:
                    continue  # not ready yet
                process.stop(spawned.pid, spawned.started, sig=server.stop_signal, timeout=5)
                why = record.pop("error", None) or (
                    f"exited with status {spawned.popen.returncode}" if exited
                    else f"did not answer within {server.start_timeout:.0f} s")
                log_tail = process.tail(Path(record["log"]), 3)
                results[name] = ServerStatus(name, server.type, "failed", False, reason=(
                    f"{why}; log {record['log']}: {log_tail}" if log_tail else why), log=record["log"])
                records.pop(name)
            pending.pop(name)
            _write_state(state_dir, state)
        if pending:
            time.sleep(0.25)
    return [results[s.name] for s in _select(only)]


def down(state_dir: Path, only: list[str] | None = None) -> list[ServerStatus]:
    """Stop exactly the servers ``up`` started (by pid and start time) and check nothing is left."""
    with _locked(state_dir):
        return _down(state_dir, only)


def _down(state_dir: Path, only: list[str] | None) -> list[ServerStatus]:
    state = read_state(state_dir)
    records = state["servers"]
    results = []
    for server in _select(only):
        record = records.get(server.name)
        if record is None:
            results.append(ServerStatus(server.name, server.type, "not running", False))
            continue
        was_running = process.is_ours(record["pid"], record.get("started"))
        gone = process.stop(record["pid"], record.get("started"), sig=server.stop_signal)
        if not gone:
            results.append(_status_of(server, record, "failed"))
            results[-1].reason = f"process group {record['pid']} is still alive after SIGKILL"
            continue
        records.pop(server.name)
        _write_state(state_dir, state)
        stopped = _status_of(server, record, "stopped" if was_running else "not running")
        stopped.running = False
        results.append(stopped)
    return results


def server_url(state_dir: Path, name: str) -> str | None:
    """The URL of dev server ``name`` if it is running, else None."""
    record = read_state(state_dir)["servers"].get(name)
    return record["url"] if _record_running(record) else None
