"""`mreg metrics`: the ledger replica in catalog.db as Prometheus exposition.

Read-only and offline: no target is contacted and nothing is written, so a cron job or a
node_exporter textfile collector can run it as often as it likes. What other operators appended
reaches catalog.db with ``mreg sync`` (``mreg apply`` syncs first). Built with ``prometheus_client``
(its own registry, not the process-wide one), so names, labels, escaping and the ``# HELP`` /
``# TYPE`` lines are the client library's.

Metrics (``target`` is the target's name, ``origin`` a log's ``<project>/<target>`` or
``<project>/registry``):

- ``mreg_ledger_statements{origin}``: statements in the log; ``mreg_ledger_bytes{origin}``: the
  size of its leaves (the signed envelopes); ``mreg_ledger_last_statement_timestamp_seconds{origin}``.
- ``mreg_statements_total{origin,type}``: statements by type (``register``, ``apply_started``, …).
- ``mreg_applications_total{target,phase,outcome}``: phases applied (``succeeded``) or failed
  (``failed``); ``mreg_rollbacks_total{target,outcome}`` likewise for rollbacks.
- ``mreg_apply_duration_seconds{target,phase}``: a histogram of applied and failed phases'
  durations (the outcome's ``execution_time_ms`` where recorded, else the time from the
  ``apply_started`` it refers to).
- ``mreg_backfill_checkpoints_total{target}``: ``batch_checkpoint`` statements with a backfill
  position.
- ``mreg_migrations{target,state}``: the target's migrations by state (``applied``, ``pending``,
  ``partial``, ``interrupted``, ``failed``) as the last ``mreg status``, ``apply`` or ``rollback``
  found them (catalog.db's ``target_status``), and ``mreg_status_checked_timestamp_seconds{target}``:
  when that was. Absent before the first of those.
"""

from __future__ import annotations

from ledger.statement import StatementError, parse_time

# seconds: migrations run from milliseconds (DDL) to an hour (a backfill of a large table)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))


def _seconds(stamp: str | None) -> float | None:
    """A statement's ``time`` as Unix seconds (``ledger.statement.parse_time``); None when absent or
    unreadable."""
    if not stamp:
        return None
    try:
        return parse_time(stamp).timestamp()
    except StatementError:
        return None


def collect(store):
    """A ``prometheus_client.CollectorRegistry`` holding the metrics of every log in ``store``
    (a ``LedgerStore``)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from ledger.log import parse_leaf

    reg = CollectorRegistry(auto_describe=True)
    size = Gauge("mreg_ledger_statements", "Statements in the log.", ["origin"], registry=reg)
    nbytes = Gauge("mreg_ledger_bytes", "Bytes of the log's leaves (signed envelopes).", ["origin"], registry=reg)
    last = Gauge("mreg_ledger_last_statement_timestamp_seconds", "Time of the log's last statement.",
                 ["origin"], registry=reg)
    kinds = Counter("mreg_statements", "Statements by type.", ["origin", "type"], registry=reg)
    applied = Counter("mreg_applications", "Phases applied (succeeded) or failed, from the ledger.",
                      ["target", "phase", "outcome"], registry=reg)
    rolled = Counter("mreg_rollbacks", "Rollbacks that succeeded or failed, from the ledger.",
                     ["target", "outcome"], registry=reg)
    durations = Histogram("mreg_apply_duration_seconds", "Durations of applied and failed phases.",
                          ["target", "phase"], buckets=DURATION_BUCKETS, registry=reg)
    checkpoints = Counter("mreg_backfill_checkpoints", "Ledgered backfill positions (batch_checkpoint).",
                          ["target"], registry=reg)
    for origin in store.origins():
        leaves = store.leaves(origin)
        size.labels(origin).set(len(leaves))
        nbytes.labels(origin).set(sum(len(leaf) for leaf in leaves))
        started: dict[str, float | None] = {}
        when = None
        for leaf in leaves:
            st = parse_leaf(leaf).statement
            kind = st.get("type", "")
            kinds.labels(origin, kind).inc()
            at = _seconds(st.get("time"))
            when = at or when
            target = (st.get("target") or {}).get("id") or origin.rpartition("/")[2]
            details = st.get("details") or {}
            phase = details.get("phase") or ""
            if kind == "apply_started":
                started[st.get("event_id", "")] = at
            elif kind in ("apply_succeeded", "apply_failed"):
                applied.labels(target, phase, kind.removeprefix("apply_")).inc()
                took = details.get("execution_time_ms")
                if isinstance(took, (int, float)) and not isinstance(took, bool):
                    durations.labels(target, phase).observe(took / 1000)
                else:
                    begun = next((started[r] for r in st.get("refs") or () if r in started), None)
                    if begun is not None and at is not None:
                        durations.labels(target, phase).observe(max(0.0, at - begun))
            elif kind in ("rollback_succeeded", "rollback_failed"):
                rolled.labels(target, kind.removeprefix("rollback_")).inc()
            elif kind == "batch_checkpoint" and "backfill" in details:
                checkpoints.labels(target).inc()
        if when is not None:
            last.labels(origin).set(when)
    _status(store.conn, reg)
    return reg


def _status(conn, reg) -> None:
    """The gauges read from ``target_status`` (what the last ``mreg status``, apply or rollback
    found), if it exists."""
    from prometheus_client import Gauge

    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'target_status'").fetchone():
        return
    rows = conn.execute("SELECT target, state, count(*), max(checked_at) FROM target_status "
                        "GROUP BY target, state").fetchall()
    if not rows:
        return
    states = Gauge("mreg_migrations", "Migrations of the target by state (catalog.db's target_status).",
                   ["target", "state"], registry=reg)
    checked = Gauge("mreg_status_checked_timestamp_seconds",
                    "When `mreg status`, apply or rollback last checked the target.", ["target"], registry=reg)
    for target, state, n, at in rows:
        states.labels(target, state).set(n)
        stamp = _seconds(at)
        if stamp is not None:
            checked.labels(target).set(stamp)


def exposition(path) -> str:
    """The Prometheus text exposition of the catalog at ``path`` (which must exist: nothing is
    created). Counters carry no ``_created`` series (they would say when this process counted)."""
    from pathlib import Path

    import prometheus_client
    from prometheus_client import generate_latest

    from ledger.store import LedgerStore
    from registry.errors import ConfigError

    if not Path(path).is_file():
        raise ConfigError(f"no catalog at {path}", hint="run `mreg scan` or `mreg apply` first", path=str(path))
    prometheus_client.disable_created_metrics()
    with LedgerStore(path) as store:
        return generate_latest(collect(store)).decode()
