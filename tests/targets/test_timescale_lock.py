"""The TimescaleDB lock on the single-connection server: an owner row, taken over from a dead client."""

from __future__ import annotations

import os
import signal
import time

import pytest

from registry.config import Target
from registry.targets.base import LockTimeout
from registry.targets.timescale import ServerBusy, TimescaleAdapter

from tests.targets.test_conformance import start_holder


def adapter(dsn: str, **options) -> TimescaleAdapter:
    return TimescaleAdapter(Target("analytics", "timescale", dsn, "test", options), dsn)


def test_waiter_gets_server_busy_then_takes_over_from_a_dead_holder(timescale_dsn):
    holder = start_holder("timescale", timescale_dsn, "crashy@host pid 7")
    try:
        waiter = adapter(timescale_dsn)
        started = time.monotonic()
        with pytest.raises(LockTimeout) as err:
            waiter.acquire_lock("bob@desk", 1)
        assert time.monotonic() - started < 10
        assert err.value.hint
        if isinstance(err.value, ServerBusy):  # pglite: the waiter could not even connect
            assert "one connection at a time" in str(err.value)
        else:
            assert "crashy@host" in str(err.value)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        handle = waiter.acquire_lock("bob@desk", 20)
        if waiter.single_connection:
            assert waiter.recovered_from == "crashy@host pid 7"
            rows = waiter.conn.execute("SELECT owner, lease_until > now() FROM mreg_lock_owner").fetchall()
            assert rows == [("bob@desk", True)]
        assert waiter.lock_holder().startswith("bob@desk")
        waiter.release_lock(handle)
        assert waiter.lock_holder() is None
        waiter.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_lock_survives_sessions_and_is_reentrant_for_its_holder(timescale_dsn):
    a = adapter(timescale_dsn, lock_lease_s=5)
    a.connect()
    try:
        handle = a.acquire_lock("alice", 1)
        with a.session(transactional=True) as s:
            s.query("SELECT 1")
        with a.session(transactional=False) as s:
            s.query("SELECT 1")
        assert a.lock_alive()
        assert a.lock_holder().startswith("alice")
        a.renew_lease()
        again = a.acquire_lock("alice", 1)  # the holder itself: no wait
        assert again.key == handle.key
        a.release_lock(again)
        assert a.lock_holder() is None
        assert not a.lock_alive()
    finally:
        a.close()


def test_a_lost_connection_loses_the_lock_and_is_never_silently_reopened(timescale_dsn):
    from registry.targets.sqlcommon import LockLost

    a = adapter(timescale_dsn)
    a.connect()
    try:
        a.acquire_lock("alice", 1)
        if not a.single_connection:
            pytest.skip("a real server keeps the lock on its own connection (see test_postgres_lock.py)")
        a._conn.pgconn.finish()  # the dev server dropped us (idle timeout, restart)
        with pytest.raises(LockLost) as err:
            with a.session(transactional=True) as s:
                s.query("SELECT 1")
        assert "alice" in str(err.value)
        assert not a.lock_alive()
        a.connect()  # without a lock, reconnecting is fine; taking the lock anew works
        handle = a.acquire_lock("alice", 1)
        assert a.lock_holder().startswith("alice")
        a.release_lock(handle)
    finally:
        a.close()
