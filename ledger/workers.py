"""How the ledger starts worker processes (parallel signing and verification).

A plain ``fork`` is fastest, but a fork of a process that runs other threads (database drivers,
lease renewers, a test runner's helpers) can copy a lock another thread holds, and the child then
waits on it forever. So: ``fork`` when this process has no other thread, else a fork server.
"""

from __future__ import annotations

import multiprocessing
import threading


def context():
    """The multiprocessing context to start workers with (see the module docstring)."""
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "forkserver")
