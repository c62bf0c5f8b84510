"""Lease locks, shared by the adapters whose server has no session lock (Neo4j, Redis).

A lease lock is taken by a compare-and-set the adapter runs (a lock node, a key), lives
for ``lease_ms`` and is renewed in the background every third of it while held. What
is the same for every such adapter lives here: waiting for the lock with a backoff and
the renewal thread. The adapter's own part is one attempt to take it and one renewal.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from registry.targets.base import LockTimeout

L = TypeVar("L", bound="Lease")
DEFAULT_LEASE_MS = 15_000


def lease_options(options: dict, target_name: str) -> tuple[int, str]:
    """A target's ``lock_lease_ms`` (default 15 s) and ``lock_name`` (default: the target's name)."""
    return int(options.get("lock_lease_ms", DEFAULT_LEASE_MS)), str(options.get("lock_name", target_name))


@dataclass(kw_only=True)
class Lease:
    """What every held lease lock has: its length, whether it was lost, its renewal thread."""

    lease_ms: int
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start_renewal(self, renew: Callable[[], bool], transient: tuple[type[BaseException], ...],
                      name: str) -> None:
        """Call ``renew`` every third of the lease until stopped or until it says the lock is gone.

        An error of a ``transient`` class (the server is away) is ignored: the lease keeps
        ticking and fencing catches a loss.
        """

        def loop() -> None:
            while not self._stop.wait(self.lease_ms / 3000):
                try:
                    if not renew():
                        self.lost = True
                        return
                except transient:
                    continue

        self._thread = threading.Thread(target=loop, name=name, daemon=True)
        self._thread.start()

    def stop_renewal(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def wait_for_lease(take: Callable[[], L | None], *, target: str, lease_ms: int, timeout_s: float,
                   holder: Callable[[], str | None]) -> L:
    """The lock ``take`` returns, trying again with a growing pause until ``timeout_s`` has passed.

    Past the deadline: ``LockTimeout`` naming the holder (``holder()``).
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        lock = take()
        if lock is not None:
            return lock
        if time.monotonic() >= deadline:
            who = holder() or "an operator whose lease just ended"
            raise LockTimeout(
                f"target {target}: the lock is held by {who}; gave up after {timeout_s:g}s",
                hint=f"wait for that operator to finish; a crashed holder's lease expires within "
                     f"{lease_ms / 1000:g}s", target=target, holder=who)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
