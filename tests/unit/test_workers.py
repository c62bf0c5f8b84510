"""Worker processes die on SIGTERM whatever handler their parent installed (ledger.workers)."""

from __future__ import annotations

import multiprocessing
import signal
import time

from ledger.workers import worker_signals


def _sleep_after_signals() -> None:
    worker_signals()
    time.sleep(60)


def _sleep_with_inherited_handlers() -> None:
    time.sleep(60)


def _refuse(signum, frame):
    raise KeyboardInterrupt  # what pytest's conftest and many servers install


def _handlers() -> tuple:
    return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)


def test_a_forked_worker_dies_on_sigterm_despite_the_parents_handler():
    ctx = multiprocessing.get_context("fork")
    old = signal.signal(signal.SIGTERM, _refuse)
    try:
        proc = ctx.Process(target=_sleep_after_signals)
        proc.start()
        time.sleep(0.3)  # past worker_signals()
        proc.terminate()
        proc.join(10)
        assert proc.exitcode == -signal.SIGTERM
        # without it, the inherited handler turns SIGTERM into an exception the worker may catch
        proc = ctx.Process(target=_sleep_with_inherited_handlers)
        proc.start()
        time.sleep(0.3)
        proc.terminate()
        proc.join(10)
        assert proc.exitcode != -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, old)


def test_pool_workers_start_with_default_sigterm_and_ignored_sigint():
    ctx = multiprocessing.get_context("fork")
    old = signal.signal(signal.SIGTERM, _refuse)
    try:
        with ctx.Pool(2, initializer=worker_signals) as pool:
            got = pool.apply(_handlers)
        assert got == (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        signal.signal(signal.SIGTERM, old)
