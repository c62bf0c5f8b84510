"""Processes of the dev servers: free ports, starting detached, telling ours from others, stopping.

A server is started in its own session (so its process group id equals its
pid) and identified afterwards by pid *and* start time, so a recycled pid is
never mistaken for it. Stopping signals the whole process group and waits
until no member is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has finished
        return None
    return int(fields[19])


def is_ours(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` is alive and is the very process started at ``started``."""
    if not pid:
        return False
    now = start_time(pid)
    if now is None:
        return False
    return started is None or now == started


def group_alive(pgid: int) -> bool:
    """True when any process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(…, 0) also succeeds for zombies waiting to be reaped; look closer
    return any(int(fields[2]) == pgid and fields[0] != "Z" for _pid, fields in _proc_stats())


def _proc_stats():
    """(pid, the fields of /proc/<pid>/stat after the command name) of every process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield int(entry.name), stat[stat.rindex(")") + 2:].split()


@dataclass
class Spawned:
    pid: int
    started: int | None
    popen: subprocess.Popen


def spawn(argv: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None,
          user: tuple[int, int] | None = None) -> Spawned:
    """Start ``argv`` detached in its own session, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        kwargs: dict = {}
        if user is not None:
            kwargs.update(user=user[0], group=user[1], extra_groups=[])
        popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, **kwargs,
        )
    return Spawned(popen.pid, start_time(popen.pid), popen)


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of ``pid`` (PostgreSQL's children leave its group)."""
    children: dict[int, list[int]] = {}
    for child, fields in _proc_stats():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        started = start_time(child)
        if started is not None:
            found.append((child, started))
        todo.extend(children.get(child, []))
    return found


def stop(pid: int, started: int | None, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> bool:
    """Stop the server ``pid``, its process group and its descendants; True when none is left.

    Sends ``sig`` to the group, waits up to ``timeout`` seconds, then SIGKILL.
    A pid now held by another process (start time differs) is left alone.
    """
    now = start_time(pid)
    if now is not None and started is not None and now != started:
        return True  # the pid was recycled: our server is long gone
    if now is None and not group_alive(pid):
        return True
    family = descendants(pid) if now is not None else []

    def gone() -> bool:
        _reap(pid)
        return (start_time(pid) is None and not group_alive(pid)
                and not any(is_ours(child, t) for child, t in family))

    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGKILL:
            for child, t in family:
                if is_ours(child, t):
                    os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone():
                return True
            time.sleep(0.1)
    return gone()


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it does not linger as a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def tail(path: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
