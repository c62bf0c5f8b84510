"""The backfill's pacing (batch sizes, pauses) and the event a progress row must extend."""

from __future__ import annotations

from registry.apply.backfill import FIRST_BATCH, Pace, chain_anchor


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
