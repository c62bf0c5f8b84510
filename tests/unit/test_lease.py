"""The lease-lock loop shared by the Neo4j and Redis adapters (pure: the attempts are functions)."""

from __future__ import annotations

import threading

import pytest

from registry.targets.base import LockTimeout
from registry.targets.lease import Lease, wait_for_lease


def test_wait_for_lease_retries_until_taken():
    attempts = []

    def take():
        attempts.append(1)
        return Lease(lease_ms=300) if len(attempts) == 3 else None

    lock = wait_for_lease(take, target="t", lease_ms=300, timeout_s=5, holder=lambda: "x")
    assert isinstance(lock, Lease) and len(attempts) == 3


def test_wait_for_lease_names_the_holder_when_it_gives_up():
    with pytest.raises(LockTimeout) as err:
        wait_for_lease(lambda: None, target="graph", lease_ms=2000, timeout_s=0.1, holder=lambda: "bob@desk")
    assert "graph" in err.value.message and "bob@desk" in err.value.message
    assert err.value.data["holder"] == "bob@desk" and "2s" in err.value.hint


def test_renewal_marks_the_lease_lost_and_survives_transient_errors():
    calls = []
    done = threading.Event()

    def renew():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("server away")
        done.set()
        return False

    lock = Lease(lease_ms=30)
    lock.start_renewal(renew, (ConnectionError,), "test-lease")
    assert done.wait(5)
    lock._thread.join(5)
    assert lock.lost and len(calls) == 2
    lock.stop_renewal()


def test_stop_renewal_stops_the_thread():
    lock = Lease(lease_ms=30)
    lock.start_renewal(lambda: True, (), "test-lease")
    lock.stop_renewal()
    assert not lock._thread.is_alive() and not lock.lost
