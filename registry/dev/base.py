"""What every dev server module provides, and the errors they raise.

A dev server module (``postgres``, ``redis``, ``neo4j``, ``timescale``) knows
how to prepare its data directory, the command line that runs it on a given
loopback port, how to tell it is ready (and its version), and its URL. The
manager (``registry.dev.manager``) does the rest: ports, processes, state.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from registry.errors import MregError

HOST = "127.0.0.1"
# The repository's tools/ folder (launchers for Neo4j and TimescaleDB); MREG_TOOLS_DIR overrides.
REPO_TOOLS = Path(__file__).resolve().parents[2] / "tools"


class DevServerError(MregError):
    """A dev server could not be prepared or started; ``data`` names the server and its log."""

    exit_code = 3


@dataclass
class Launch:
    """How to run a server: its command line, working folder, environment and user."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    user: tuple[int, int] | None = None  # (uid, gid) to run as, when we are root


class DevServer:
    """Base of the four dev servers. Subclasses set the class attributes and override the hooks."""

    name: str = ""            # the dev server's name, also the default target's name
    type: str = ""            # the target type it serves (registry.config.TARGET_TYPES)
    start_timeout: float = 60.0
    stop_signal: int = signal.SIGTERM

    def unavailable(self) -> str | None:
        """Why this machine cannot run the server (a missing program), or None."""
        return None

    def prepare(self, data_dir: Path) -> None:
        """Create or check the data directory (idempotent); slow one-off work happens here."""
        data_dir.mkdir(parents=True, exist_ok=True)

    def launch(self, data_dir: Path, port: int) -> Launch:
        raise NotImplementedError

    def probe(self, port: int) -> str | None:
        """The server's version when it answers on ``port``, else None (not ready yet)."""
        raise NotImplementedError

    def url(self, port: int) -> str:
        raise NotImplementedError

    def after_start(self, port: int) -> None:
        """One-off set-up once the server answers (e.g. create the dev database)."""


def tools_dir() -> Path:
    return Path(os.environ["MREG_TOOLS_DIR"]) if os.environ.get("MREG_TOOLS_DIR") else REPO_TOOLS


def which(program: str) -> str | None:
    return shutil.which(program)


def install_once(argv: list[str], *, cwd: Path, stamp: Path, source: Path, timeout: float,
                 missing: tuple[str, str], failed: tuple[str, str]) -> bool:
    """Run a launcher's install step (``mvn``, ``npm ci``) unless ``stamp`` is newer than ``source``.

    Returns True when it ran. ``missing`` and ``failed`` are (message, hint) pairs: a missing
    program raises ``DevServerError`` with the first, a failed run with the second (its message
    followed by the run's last three output lines).
    """
    if stamp.exists() and stamp.stat().st_mtime >= source.stat().st_mtime:
        return False
    if which(argv[0]) is None:
        raise DevServerError(missing[0], hint=missing[1])
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise DevServerError(f"{failed[0]}: {' | '.join(last)}", hint=failed[1])
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()
    return True
