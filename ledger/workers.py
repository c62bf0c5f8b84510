"""How the ledger starts worker processes (parallel signing and verification).

A plain ``fork`` is fastest, but a fork of a process that runs other threads (database drivers,
lease renewers, a test runner's helpers) can copy a lock another thread holds, and the child then
waits on it forever. So: ``fork`` when this process has no other thread, else a fork server.
Every worker starts with ``worker_signals()``.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading


def worker_signals() -> None:
    """In a worker process: die on SIGTERM and leave SIGINT to the parent.

    A forked worker inherits its parent's Python signal handlers; one that turns SIGTERM into an
    exception (a test runner's, a server's) kept ``Pool.terminate()`` waiting forever for a worker
    that caught it at the wrong moment. The parent stops its workers on Ctrl-C itself."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def context():
    """The multiprocessing context to start workers with (see the module docstring)."""
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
