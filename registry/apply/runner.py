"""Running one plan entry (one phase of one migration on one target and tenant).

Two ways, chosen by the phase's steps:

- **Transactional** (every step can run in a transaction, no backfill): one transaction holds
  the phase's steps, its pre/post validation queries, and both events ``apply_started`` and
  ``apply_succeeded`` (their mirror rows). It commits whole or not at all, so a crash at any
  point leaves either the phase and both events, or neither: nothing to recover, nothing
  applied twice. A failure rolls back, then ``apply_started`` + ``apply_failed`` are recorded
  together in a transaction of their own. A lock timeout (SQLSTATE 55P03) retries the whole
  transaction up to ``max_retries`` times.
- **Step by step** (``txmode: none``, a non-transactional step, or a backfill): ``apply_started``
  commits first. Each transactional step then commits together with a ``batch_checkpoint``
  event naming how many steps are done (``steps_done``); a non-transactional step (``CREATE
  INDEX CONCURRENTLY``, a continuous aggregate) runs in auto-commit and its checkpoint follows
  (a crash in between re-runs that one statement on resume: write such statements with
  ``IF NOT EXISTS``; an INVALID index left by an interrupted ``CREATE INDEX CONCURRENTLY`` or
  ``REINDEX CONCURRENTLY`` is dropped before the statement runs again: ``registry.apply.cic``). A
  backfill runs in batches (``registry.apply.backfill``: sizes bounded in keys and time, a duty
  cycle, its exact position committed with every batch, a ``batch_checkpoint`` ledgered about once
  a second). The outcome event comes last. After a crash the next ``mreg apply`` records the
  interrupted attempt as ``apply_failed`` (``reason: interrupted``, ``resumable: true``) and resumes
  after the last checkpoint (a backfill: after the last committed batch).
"""

from __future__ import annotations

import time
from decimal import Decimal

from registry.apply.progress import Progress
from registry.errors import CheckFailed
from registry.model import Step
from registry.targets.base import StepFailed


class ValidationFailed(CheckFailed):
    """A critical validation rule did not hold; the phase was rolled back.

    ``data``: migration, phase, target, rule, expected, found.
    """


def _rule_query(check: str) -> tuple[str, str]:
    lang, sep, text = check.partition(":")
    if not sep or lang.strip().lower() not in ("sql", "cypher", "redis"):
        return "sql", check
    return lang.strip().lower(), text.strip()


def _norm(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() else value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        try:
            return int(low)
        except ValueError:
            return value
    return value


def rule_holds(rows: list[dict], expected) -> tuple[bool, object]:
    """Whether a validation query's rows match ``expected``; return (holds, what was found)."""
    first = rows[0] if rows else {}
    lowered = {str(k).lower(): v for k, v in first.items()}
    if expected is None:
        value = next(iter(first.values()), None) if first else None
        return bool(_norm(value)), value
    if isinstance(expected, dict):
        found = {k: lowered.get(str(k).lower()) for k in expected}
        ok = all(_norm(found[k]) == _norm(v) for k, v in expected.items())
        return ok, {k: _norm(v) for k, v in found.items()}
    if isinstance(expected, list):
        found = [[_norm(v) for v in r.values()] for r in rows]
        want = [[_norm(v) for v in (r.values() if isinstance(r, dict) else [r])] for r in expected]
        return found == want, found
    value = next(iter(first.values()), None) if first else None
    return _norm(value) == _norm(expected), _norm(value)


def rule_phase(rule, default: str) -> str:
    """The phase a rule belongs to: a name ``<phase>.<name>`` says it, else pre rules run before the
    migration's first phase and post rules after its last one."""
    head = rule.name.split(".", 1)[0].lower()
    return head if head in ("expand", "migrate", "contract") and "." in rule.name else default


def check_rules(session, entry, kind: str, target_type: str):
    """Run the ``kind`` (pre/post) rules; return the first failing critical rule as a dict, or None."""
    if not entry.migration.validation:
        return None
    names = entry.migration.phase_names
    default_phase = names[0] if kind == "pre" else names[-1]
    for rule in entry.migration.validation:
        if rule.type != kind:
            continue
        if rule_phase(rule, default_phase) != entry.phase:
            continue
        lang, text = _rule_query(rule.check)
        if lang == "redis" or (lang == "sql" and target_type == "neo4j") or \
                (lang == "cypher" and target_type != "neo4j"):
            continue
        rows = session.query(text)
        ok, found = rule_holds(rows, rule.expected)
        if not ok and rule.critical:
            return {"rule": rule.name, "check": rule.check, "expected": rule.expected, "found": found}
    return None


def _phase_details(entry, **more) -> dict:
    d = {"phase": entry.phase, "tenant": entry.tenant}
    d.update(more)
    return d


def _session(adapter, transactional: bool, entry):
    kwargs = {}
    if entry.tenant:
        kwargs["tenant"] = entry.tenant
    kwargs["settings"] = entry.migration.settings
    return adapter.session(transactional, **kwargs)


def _execute(session, step: Step, entry, meanwhile=None):
    """Run ``step``; ``meanwhile`` (client work) runs while the server works on it where the
    session can overlap the two (``session.overlaps``), else before the step is sent."""
    if meanwhile is not None:
        if getattr(session, "overlaps", False):
            return session.execute(step, path=entry.migration.path, meanwhile=meanwhile)
        meanwhile()
    try:
        return session.execute(step, path=entry.migration.path)
    except TypeError:  # an adapter whose execute takes only the step
        return session.execute(step)


def _neo4j_auto_commit(step: Step) -> bool:
    """A Neo4j schema command or ``CALL {…} IN TRANSACTIONS``: the adapter runs it in auto-commit."""
    from registry.targets.neo4j import is_batched, is_schema_command

    return is_schema_command(step.content) or is_batched(step.content)


def shares_transaction(adapter, step: Step) -> bool:
    """Whether a step of a step-by-step phase may commit together with its checkpoint.

    SQL statements PostgreSQL accepts in a transaction do (so each commits exactly once with its
    ``batch_checkpoint``); ``CONCURRENTLY``, ``VACUUM`` and continuous aggregates run on their own,
    their checkpoint right after. Neo4j data statements do (the adapter puts them and the mirror
    node in one transaction), its schema commands do not. Redis steps run in the adapter's undo-log
    session, their checkpoint appended at its commit.
    """
    kind = getattr(adapter, "kind", "")
    if kind == "redis":
        return True
    if kind == "neo4j":
        return step.kind == "cypher" and not _neo4j_auto_commit(step)
    if step.kind != "sql" or kind not in ("postgresql", "timescale"):
        return False
    from pglast.parser import ParseError as PgParseError

    from registry.parse.sql import autocommit_reason, parse

    try:
        nodes = parse(step.content)
    except PgParseError:
        return False
    return all(autocommit_reason(getattr(n, "stmt", n)) is None for n in nodes) and bool(nodes)


def needs_stepwise(entry, adapter=None) -> bool:
    """Whether a phase runs step by step (``apply_started`` committed first) rather than in one transaction.

    Besides ``txmode: none``, non-transactional steps and backfills: every Redis phase (a Redis
    command cannot commit together with the mirror, so a crash must leave evidence) and Neo4j phases
    holding schema commands or ``IN TRANSACTIONS`` batches (they commit on their own).
    """
    m = entry.migration
    if (m.txmode == "none" or any(not s.transactional for s in entry.steps)
            or (entry.phase == "migrate" and m.backfill is not None)):
        return True
    kind = getattr(adapter, "kind", "")
    if kind == "redis":
        return True
    if kind == "neo4j":
        return any(_neo4j_auto_commit(s) for s in entry.steps)
    return False


def run_entry(log, adapter, entry, *, dry_run_session=None):
    """Run one plan entry; yields Progress; raises StepFailed / ValidationFailed after ledgering them."""
    m = entry.migration
    if entry.recover:
        log.record("apply_failed", m, _phase_details(
            entry, reason="interrupted", resumable=True, steps_done=entry.resume_from,
            error="the process applying this phase stopped before recording its outcome"))
        yield Progress("warning", entry.target, m.id, entry.phase, entry.tenant,
                       message=f"{m.id} {entry.phase}: an earlier attempt was interrupted "
                               f"after {entry.resume_from} of {len(entry.steps)} steps; resuming")
    if needs_stepwise(entry, adapter):
        yield from _run_stepwise(log, adapter, entry)
    else:
        yield from _run_transactional(log, adapter, entry)


def _retries(entry) -> int:
    return max(0, int(entry.migration.settings.max_retries or 0))


def _record_failure(log, entry, exc, *, started: str | None = None, **more) -> None:
    """Ledger a failed attempt (after its transaction rolled back)."""
    from registry.targets.sqlcommon import ConnectionLost

    m = entry.migration
    if isinstance(exc, ConnectionLost):
        log.sync()  # the connection is new: re-read the mirror before appending
    details = _phase_details(entry, error=str(exc)[:2000], sqlstate=getattr(exc, "data", {}).get("sqlstate"), **more)
    if started is None:
        with log.adapter.session(True) as s:
            sid = log.stage(s, "apply_started", m, _phase_details(entry, steps=len(entry.steps),
                                                                   txmode=m.txmode), refs=log.registration(m.id))
            log.stage(s, "apply_failed", m, details, refs=[sid])
            s.commit()
        log.committed()
    else:
        log.record("apply_failed", m, details, refs=[started])


def _run_transactional(log, adapter, entry):
    m = entry.migration
    total = len(entry.steps)
    attempt = 0
    while True:
        attempt += 1
        t0 = time.monotonic()
        yield Progress("phase_started", entry.target, m.id, entry.phase, entry.tenant, 0, total,
                       message=f"{m.id} {entry.phase}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        try:
            with _session(adapter, True, entry) as s:
                sid = log.stage(s, "apply_started", m, _phase_details(entry, steps=total, txmode=m.txmode,
                                                                      attempt=attempt),
                                refs=log.registration(m.id), defer=True)
                bad = check_rules(s, entry, "pre", adapter.kind)
                if bad is None:
                    for i, step in enumerate(entry.steps):
                        # apply_started (time and id fixed above) is signed while the server runs the step
                        _execute(s, step, entry, log.sign_pending if i == 0 else None)
                        yield Progress("step_done", entry.target, m.id, entry.phase, entry.tenant, i + 1, total,
                                       message=step.name or f"step {i + 1}")
                    bad = check_rules(s, entry, "post", adapter.kind)
                if bad is not None:
                    s.rollback()
                    raise _validation_error(entry, bad)
                ms = int((time.monotonic() - t0) * 1000)
                if getattr(s, "overlaps", False):  # apply_started's row goes out now: the server
                    log.write_deferred(s)           # inserts it while apply_succeeded is signed
                log.stage(s, "apply_succeeded", m, _phase_details(
                    entry, execution_time_ms=ms, steps=total, rollback_available=bool(m.rollback.get(entry.phase))),
                    refs=[sid], defer=True)
                log.write_deferred(s)
                s.commit()
            log.committed()
            yield Progress("phase_succeeded", entry.target, m.id, entry.phase, entry.tenant, total, total,
                           message=f"{m.id} {entry.phase} applied in {ms} ms")
            return
        except ValidationFailed as exc:
            log.discard()
            _ledger_validation(log, entry, exc, rolled_back="transaction")
            yield Progress("validation_failed", entry.target, m.id, entry.phase, entry.tenant, message=str(exc))
            raise
        except StepFailed as exc:
            log.discard()
            if getattr(exc, "retryable", False) and attempt <= _retries(entry):
                yield Progress("warning", entry.target, m.id, entry.phase, entry.tenant,
                               message=f"lock timeout, retrying ({attempt}/{_retries(entry)}): {exc}")
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
                continue
            _record_failure(log, entry, exc, attempts=attempt)
            yield Progress("phase_failed", entry.target, m.id, entry.phase, entry.tenant, message=str(exc))
            raise


def _validation_error(entry, bad: dict) -> ValidationFailed:
    m = entry.migration
    return ValidationFailed(
        f"{m.path}: validation rule {bad['rule']!r} failed after {m.id} {entry.phase} on target "
        f"{entry.target}: expected {bad['expected']!r}, found {bad['found']!r}; the phase was rolled back",
        hint="fix the migration (or the rule) and run `mreg apply` again",
        migration=m.id, phase=entry.phase, target=entry.target, **{k: bad[k] for k in ("rule", "expected", "found")})


def _ledger_validation(log, entry, exc: ValidationFailed, *, rolled_back: str, started: str | None = None) -> None:
    m = entry.migration
    d = exc.data
    with log.adapter.session(True) as s:
        sid = started or log.stage(s, "apply_started", m, _phase_details(entry, steps=len(entry.steps),
                                                                          txmode=m.txmode),
                                   refs=log.registration(m.id))
        log.stage(s, "validation_failed", m, _phase_details(
            entry, rule=d["rule"], expected=_jsonable(d["expected"]), found=_jsonable(d["found"])), refs=[sid])
        log.stage(s, "apply_failed", m, _phase_details(entry, reason="validation", rolled_back=rolled_back,
                                                       error=str(exc)[:2000]), refs=[sid])
        s.commit()
    log.committed()


def _jsonable(value):
    import json

    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


def _run_stepwise(log, adapter, entry):
    m = entry.migration
    total = len(entry.steps)
    t0 = time.monotonic()
    start = entry.resume_from
    backfill = entry.phase == "migrate" and m.backfill is not None
    sid = log.record("apply_started", m, _phase_details(
        entry, steps=total, txmode="none", resume_from=start or None,
        resume_backfill=(backfill and (entry.backfill_from is not None or entry.resumes)) or None),
        refs=log.registration(m.id))
    yield Progress("phase_started", entry.target, m.id, entry.phase, entry.tenant, start, total,
                   message=f"{m.id} {entry.phase} (step by step" + (f", resuming at step {start + 1})" if start else ")"))
    try:
        with _session(adapter, True, entry) as s:
            bad = check_rules(s, entry, "pre", adapter.kind)
        if bad is not None:
            raise _validation_error(entry, bad)
        for i in range(start, total):
            step = entry.steps[i]
            yield from _stepwise_step(log, adapter, entry, i, step, sid)
        if backfill:
            yield from _backfill(log, adapter, entry, sid)
        with _session(adapter, True, entry) as s:
            bad = check_rules(s, entry, "post", adapter.kind)
        if bad is not None:
            raise _validation_error(entry, bad)
    except ValidationFailed as exc:
        yield Progress("validation_failed", entry.target, m.id, entry.phase, entry.tenant, message=str(exc))
        yield from _undo_after_validation(log, adapter, entry, exc, sid)
        raise
    except StepFailed as exc:
        log.discard()
        _record_failure(log, entry, exc, started=sid, resumable=True, steps_done=exc.data.get("steps_done"),
                        backfill_next=exc.data.get("backfill_next"))
        yield Progress("phase_failed", entry.target, m.id, entry.phase, entry.tenant, message=str(exc))
        raise
    ms = int((time.monotonic() - t0) * 1000)
    log.record("apply_succeeded", m, _phase_details(entry, execution_time_ms=ms, steps=total,
                                                    rollback_available=bool(m.rollback.get(entry.phase))),
               refs=[sid])
    yield Progress("phase_succeeded", entry.target, m.id, entry.phase, entry.tenant, total, total,
                   message=f"{m.id} {entry.phase} applied in {ms} ms")


def _stepwise_step(log, adapter, entry, i: int, step: Step, sid: str):
    m = entry.migration
    attempt = 0
    in_tx = step.transactional or shares_transaction(adapter, step)
    index = None
    if not in_tx and getattr(adapter, "kind", "") in ("postgresql", "timescale"):
        from registry.apply.cic import concurrent_index

        index = concurrent_index(step)
    while True:
        attempt += 1
        try:
            details = _phase_details(entry, steps_done=i + 1, line=step.line or None)
            if in_tx:
                with _session(adapter, True, entry) as s:
                    _execute(s, step, entry)
                    log.stage(s, "batch_checkpoint", m, details, refs=[sid])
                    s.commit()
                log.committed()
            else:
                with _session(adapter, False, entry) as s:
                    if index is not None:
                        from registry.apply.cic import drop_invalid

                        dropped = drop_invalid(s, index, line=step.line)
                        if dropped:
                            details["dropped_invalid_index"] = dropped[0] if len(dropped) == 1 else dropped
                            yield Progress("warning", entry.target, m.id, entry.phase, entry.tenant,
                                           message=f"{m.id} {entry.phase}: dropped the INVALID index "
                                                   f"{', '.join(dropped)} an interrupted {index.statement} left; "
                                                   f"building it again")
                    _execute(s, step, entry)
                log.record("batch_checkpoint", m, details, refs=[sid])
            break
        except StepFailed as exc:
            log.discard()
            if getattr(exc, "retryable", False) and attempt <= _retries(entry):
                time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))
                continue
            exc.data["steps_done"] = i
            exc.data["statement"] = i + 1
            raise
    yield Progress("step_done", entry.target, m.id, entry.phase, entry.tenant, i + 1, len(entry.steps),
                   message=step.name or f"step {i + 1}")


def _backfill(log, adapter, entry, sid: str):
    from registry.apply import backfill

    yield from backfill.run(log, adapter, entry, sid, session_of=lambda tx: _session(adapter, tx, entry),
                            retries=_retries(entry), details_of=lambda **more: _phase_details(entry, **more))


def _undo_after_validation(log, adapter, entry, exc: ValidationFailed, sid: str):
    """A step-by-step phase failed validation: run its rollback steps, ledger every fact."""
    m = entry.migration
    steps = list(m.rollback.get(entry.phase) or [])
    d = exc.data
    log.record("validation_failed", m, _phase_details(entry, rule=d["rule"], expected=_jsonable(d["expected"]),
                                                      found=_jsonable(d["found"])), refs=[sid])
    rolled = "none"
    if steps:
        rid = log.record("rollback_started", m, _phase_details(entry, reason="validation", steps=len(steps)))
        try:
            for step in steps:
                with _session(adapter, step.transactional, entry) as s:
                    _execute(s, step, entry)
                    s.commit()
        except StepFailed as rexc:
            log.discard()
            log.record("rollback_failed", m, _phase_details(entry, error=str(rexc)[:2000]), refs=[rid])
            rolled = "failed"
        else:
            log.record("rollback_succeeded", m, _phase_details(entry, reason="validation"), refs=[rid])
            rolled = "rollback steps"
            yield Progress("rollback_succeeded", entry.target, m.id, entry.phase, entry.tenant,
                           message=f"{m.id} {entry.phase} rolled back after the failed validation")
    log.record("apply_failed", m, _phase_details(entry, reason="validation", rolled_back=rolled,
                                                 error=str(exc)[:2000]), refs=[sid])

