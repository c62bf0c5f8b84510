"""The backfill's pacing (batch sizes, pauses) and the event a progress row must extend."""

from __future__ import annotations

from registry.apply.backfill import (BACKOFF_CAP_S, BACKOFF_FLOOR_S, BACKOFF_MIN_SAMPLES, BACKOFF_WINDOW, FIRST_BATCH,
                                     Pace, chain_anchor)


def test_fixed_batches_without_a_time_bound():
    pace = Pace(cap=2000)
    assert pace.size == 2000
    assert pace.after(2000, 0.5) == 0 and pace.size == 2000


def test_adaptive_size_starts_small_at_most_doubles_and_shrinks_to_fit():
    pace = Pace(cap=5000, max_batch_ms=10)
    assert pace.size == FIRST_BATCH
    pace.after(100, 0.001)  # 1 ms for 100 keys: 1000 would fit, but a batch at most doubles
    assert pace.size == 200
    for _ in range(10):
        pace.after(pace.size, pace.size / 100_000)  # 100 keys per ms
    assert pace.size == 1000  # 10 ms worth, below the cap
    pace.after(1000, 0.1)  # a slow batch (100 ms): shrink to what fits in 10 ms
    assert pace.size == 100
    pace = Pace(cap=300, max_batch_ms=10)
    for _ in range(10):
        pace.after(pace.size, 0.0001)
    assert pace.size == 300  # never above Batch-Size


def test_size_follows_the_statements_time_not_the_transactions():
    """A transaction's fixed cost (round trips, the commit's flush) does not shrink the batches: with
    a 1 ms bound, 0.8 ms of statement in a 1.6 ms transaction still lets the batch grow."""
    pace = Pace(cap=5000, max_batch_ms=1)
    pace.after(100, 0.0016, work=0.0008)
    assert pace.size == 125  # 100 keys * 1 ms / 0.8 ms
    pace = Pace(cap=5000, max_batch_ms=1)
    pace.after(100, 0.0016)  # without the statement's own time: the whole transaction counts
    assert pace.size == 62
    # the duty cycle still paces by the whole transaction
    assert abs(Pace(cap=10, duty_cycle=50).after(10, 0.02, work=0.01) - 0.02) < 1e-9


def test_duty_cycle_and_fixed_pause():
    assert Pace(cap=10, duty_cycle=50).after(10, 0.02) == 0.02
    assert abs(Pace(cap=10, duty_cycle=80).after(10, 0.04) - 0.01) < 1e-9
    assert abs(Pace(cap=10, duty_cycle=50, pause_ms=5).after(10, 0.02) - 0.025) < 1e-9


def test_a_congested_commit_adds_a_backoff_of_its_own_time_times_commit_backoff():
    pace = Pace(cap=1000, max_batch_ms=1)
    for _ in range(BACKOFF_MIN_SAMPLES):
        assert pace.after(100, 0.0015, work=0.001, commit=0.0005) == 0 and pace.backed_off == 0
    assert pace.after(100, 0.003, work=0.001, commit=0.0025) == 0  # 5x, but under the 3 ms floor: usual
    pause = pace.after(100, 0.0215, work=0.001, commit=0.02)  # 40x the median: the server is congested
    assert abs(pause - 0.08) < 1e-9 and pace.backed_off == pause
    assert pace.after(100, 0.0015, work=0.001, commit=0.0005) == 0 and pace.backed_off == 0
    assert pace.after(100, 1.0, work=0.001, commit=0.9) == BACKOFF_CAP_S  # at most half a second
    # the congested commits do not raise the median they are judged by
    assert sorted(pace.commits)[len(pace.commits) // 2] == 0.0005
    # the backoff adds to the duty cycle's and the fixed pause
    pace = Pace(cap=1000, duty_cycle=50, pause_ms=5, backoff=2)
    for _ in range(BACKOFF_MIN_SAMPLES):
        pace.after(100, 0.002, work=0.001, commit=0.001)
    assert abs(pace.after(100, 0.011, work=0.001, commit=0.01) - (0.005 + 0.011 + 0.02)) < 1e-9


def test_no_backoff_before_enough_commits_are_known_nor_with_commit_backoff_0():
    pace = Pace(cap=1000)
    for _ in range(BACKOFF_MIN_SAMPLES - 1):
        pace.after(100, 0.0015, work=0.001, commit=0.0005)
    assert pace.after(100, 0.05, work=0.001, commit=0.049) == 0  # seven known: the eighth is usual
    pace = Pace(cap=1000, backoff=0)
    for _ in range(2 * BACKOFF_MIN_SAMPLES):
        pace.after(100, 0.0015, work=0.001, commit=0.0005)
    assert pace.after(100, 0.05, work=0.001, commit=0.049) == 0 and not pace.commits
    assert BACKOFF_FLOOR_S == 0.003


def _ev(eid, kind, phase="migrate", mid="m1", tenant=None, **details):
    d = {"phase": phase, **details}
    if tenant:
        d["tenant"] = tenant
    return {"event_id": eid, "type": kind, "migration": {"id": mid}, "details": d}


def test_chain_anchor_follows_the_planner_fold():
    log = [_ev("a1", "apply_started"), _ev("c1", "batch_checkpoint", backfill={"next": 11}),
           _ev("x", "apply_started", mid="other"), _ev("f1", "apply_failed", reason="interrupted"),
           _ev("a2", "apply_started", resume_backfill=True), _ev("now", "apply_started", resume_backfill=True)]
    assert chain_anchor(log, "m1", "migrate", None, "now") == "c1"
    assert chain_anchor(log[:1] + [log[-1]], "m1", "migrate", None, "now") == "a1"
    # a fresh start, a finished backfill, another tenant
    fresh = log + [_ev("a3", "apply_started")]
    assert chain_anchor(fresh, "m1", "migrate", None, "zzz") == "a3"
    done = log[:2] + [_ev("ok", "apply_succeeded")]
    assert chain_anchor(done, "m1", "migrate", None, "zzz") is None
    assert chain_anchor(log, "m1", "migrate", "acme", "now") is None


def test_the_median_follows_the_last_commits_only():
    """The window of uncongested commits slides: after BACKOFF_WINDOW quick ones, the slow ones that
    came first no longer count, and the sorted copy the median is read from stays the window's."""
    pace = Pace(cap=1000)
    for _ in range(BACKOFF_WINDOW):
        pace.after(100, 0.01, work=0.001, commit=0.002)  # 2 ms commits: the usual ones at first
    assert not pace.congested(0.0079)
    for i in range(BACKOFF_WINDOW):
        pace.after(100, 0.01, work=0.001, commit=0.0005 + i * 1e-7)  # then ~0.5 ms ones
        assert pace._sorted == sorted(pace.commits) and len(pace.commits) <= BACKOFF_WINDOW
    assert max(pace.commits) < 0.001  # the 2 ms ones have left the window
    assert pace.congested(0.0031)  # over the 3 ms floor and 4x the new median
