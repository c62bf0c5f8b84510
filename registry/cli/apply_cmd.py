"""`mreg plan|apply|rollback|status|sync|baseline|repair`: the engine's commands (docs/applying.md)."""

from __future__ import annotations

import typer

PHASE_HELP = "expand, migrate, contract or all."


def prefetch() -> None:
    """Start loading the migrations before Typer parses ``apply``'s options (docs/performance.md).

    A large folder is parsed in a worker process meanwhile; ``apply`` takes the result over.
    Nothing is reported here: if the configuration cannot be read, ``apply`` reads it again and
    reports the error itself.
    """
    try:
        from registry import config
        from registry.apply.context import prefetch_loading

        prefetch_loading(config.load())
    except Exception:  # apply_cmd loads the configuration again and reports the problem
        return


def _is_terminal(stream) -> bool:
    """Whether rich would treat ``stream`` as a terminal (its environment overrides included)."""
    import os

    if any(os.environ.get(name) for name in ("FORCE_TERMINAL", "TTY_INTERACTIVE", "TTY_COMPATIBLE")):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _render(records, as_json: bool) -> list[dict]:
    """Show progress records as they come (a rich progress bar per phase); return them as dicts.

    Without a terminal (a pipe, a file, ``--json``) there is no bar to draw: lines are written as
    they come and rich is not imported (it costs start-up time; docs/performance.md).
    """
    import sys
    from contextlib import nullcontext

    seen: list[dict] = []
    out = sys.stderr if as_json else sys.stdout
    console = bars = None
    if not as_json and _is_terminal(out):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console()
        bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
        out = console.file
    tasks: dict = {}
    with bars if bars is not None else nullcontext():
        for rec in records:
            if as_json:
                seen.append(rec.as_dict())
            key = (rec.target, rec.migration, rec.phase, rec.tenant)
            if rec.event == "phase_started":
                if bars is not None:
                    label = f"{rec.target}: {rec.migration} {rec.phase}" + (f" [{rec.tenant}]" if rec.tenant else "")
                    tasks[key] = bars.add_task(label, total=max(rec.total, 1), completed=rec.done)
                continue
            if rec.event in ("step_done", "batch_done") and key in tasks:
                bars.update(tasks[key], completed=rec.done, total=max(rec.total, rec.done, 1))
                continue
            if key in tasks and rec.event in ("phase_succeeded", "phase_failed", "validation_failed"):
                bars.remove_task(tasks.pop(key))
            if as_json or rec.event in ("step_done", "batch_done", "lock_acquired"):
                continue
            mark = _MARKS.get(rec.event, "")
            where = f"[{rec.target}] " if rec.target else ""
            line = f"{mark}{where}{rec.message}\n"
            if bars is not None and bars.live.is_started:
                console.print(line, end="", highlight=False, markup=False)
            else:
                out.write(line)
    return seen


_MARKS = {"phase_succeeded": "applied ", "phase_failed": "FAILED  ", "validation_failed": "INVALID ",
          "skipped": "skipped ", "warning": "warning ", "target_unavailable": "skipped ",
          "dry_run_step": "dry-run ", "rollback_succeeded": "rolled back ", "rollback_started": "rolling back "}


def plan_cmd(
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    phase: str = typer.Option("all", "--phase", help=PHASE_HELP),
    to: str = typer.Option(None, "--to", help="Stop after this migration id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the pending phases per target, in the order `mreg apply` would run them."""
    from registry import config
    from registry.apply import compute_plan
    from registry.cli.output import emit_json, say, warn

    plan, notices = compute_plan(config.load(), target=target, phase=phase, to=to)
    if as_json:
        emit_json({**plan.as_dict(), "unavailable": [n.target for n in notices if n.event == "target_unavailable"]})
        return
    for n in notices:
        warn(n.message)
    if not plan.entries:
        say("nothing to apply")
    width = max((len(e.target) for e in plan.entries), default=0)
    for i, e in enumerate(plan.entries):
        tenant = f" [{e.tenant}]" if e.tenant else ""
        note = _note(e)
        say(f"{i + 1:>3}. {e.target:<{width}}  {e.migration.id}  {e.phase}{tenant}  "
            f"({len(e.steps)} step{'s' if len(e.steps) != 1 else ''})" + (f"  — {note}" if note else ""))
    for b in plan.blocked:
        warn(f"{b.target}: {b.migration} {b.phase} blocked: {b.reason}")


def _note(e) -> str:
    parts = []
    if e.needs_confirmation:
        parts.append("needs --confirm-contract")
    if e.recover or e.resume_from:
        parts.append(f"interrupted; resumes at statement {e.resume_from + 1}")
    if e.phase == "migrate" and e.migration.backfill is not None and (e.resumes or e.backfill_from is not None):
        parts.append("backfill resumes after its last committed batch"
                     + (f" (key {e.backfill_from} or later)" if e.backfill_from is not None else ""))
    elif e.phase == "migrate" and e.migration.backfill is not None:
        parts.append(f"backfill {e.migration.backfill.table} in batches of {e.migration.settings.batch_size}")
    if e.migration.txmode == "none":
        parts.append("txmode none")
    return "; ".join(parts)


def apply_cmd(
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    phase: str = typer.Option("all", "--phase", help=PHASE_HELP),
    to: str = typer.Option(None, "--to", help="Stop after this migration id."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Run what can be undone (a rolled-back transaction, a "
                                 "throw-away shadow database), check and list the rest; record nothing."),
    confirm_contract: bool = typer.Option(False, "--confirm-contract",
                                          help="Allow contract phases (old application versions are gone)."),
    lock_wait: float = typer.Option(60.0, "--lock-wait", help="Seconds to wait for a target's lock."),
    as_json: bool = typer.Option(False, "--json", help="Print the progress records as JSON."),
) -> None:
    """Apply pending migrations phase by phase, under each target's lock, ledgering every step."""
    from registry import config
    from registry.apply import apply
    from registry.apply.context import discard_prefetched
    from registry.cli.output import emit_json

    try:
        records = apply(config.load(), target=target, phase=phase, to=to, dry_run=dry_run,
                        confirm_contract=confirm_contract, lock_wait_s=lock_wait)
        seen = _render(records, as_json)
    finally:
        discard_prefetched()  # a prefetch the command did not take over (it failed before)
    if as_json:
        emit_json({"records": seen})


def rollback_cmd(
    migration_id: str = typer.Option(..., "--migration-id", "-m", help="The migration to roll back."),
    phase: str = typer.Option(None, "--phase", help="Only this phase (default: every applied phase, last first)."),
    tenant: str = typer.Option(None, "--tenant", help="A tenant, or `all` (tenant-scoped migrations)."),
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and show what would run; change nothing."),
    confirm: bool = typer.Option(False, "--confirm", help="Proceed despite warnings (no backup, older than 30 days)."),
    backup_ref: str = typer.Option(None, "--backup-ref", help="Where the backup taken before this rollback is."),
    lock_wait: float = typer.Option(60.0, "--lock-wait", help="Seconds to wait for a target's lock."),
    as_json: bool = typer.Option(False, "--json", help="Print the progress records as JSON."),
) -> None:
    """Roll a migration back after the safety checks (rollback steps, dependents, backup, age)."""
    from registry import config
    from registry.cli.output import emit_json
    from registry.rollback import rollback

    records = rollback(config.load(), migration_id, phase=phase, tenant=tenant, target=target, dry_run=dry_run,
                       confirm=confirm, backup_ref=backup_ref, lock_wait_s=lock_wait)
    seen = _render(records, as_json)
    if as_json:
        emit_json({"records": seen})


def status_cmd(
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per target: version, applied, pending, interrupted, lock holder."""
    from registry import config
    from registry.cli.output import emit_json, say
    from registry.status import status

    data = status(config.load(), target=target)
    if as_json:
        emit_json(data)
        return
    width = max((len(t["name"]) for t in data["targets"]), default=0)
    for t in data["targets"]:
        head = f"{t['name']:<{width}}  {t['type']:<10}"
        if not t["available"]:
            say(f"{head}  unavailable")
            continue
        say(f"{head}  version {t['version'] or '-':<7} {len(t['applied'])} applied, {len(t['pending'])} pending, "
            f"{len(t['interrupted'])} interrupted, {len(t['failed'])} failed; lock: {t['lock_holder'] or 'free'}")
    for t in data["targets"]:
        for p in t["partial"]:
            say(f"{t['name']}: {p['id']} has {', '.join(p['phases_done'])} applied; "
                f"pending {', '.join(p['phases_pending'])}")
        for i in t["interrupted"]:
            say(f"{t['name']}: {i['migration']} {i['phase']} interrupted at statement {i['statement']}"
                " — `mreg apply` resumes it, `mreg rollback` undoes it")
        if not t["available"] and t.get("error"):
            say(f"{t['name']}: {t['error']}")


def sync_cmd(
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pull what other operators appended to the targets' mirrors into catalog.db."""
    from registry import config
    from registry.cli.output import emit_json, say
    from registry.sync import sync

    data = sync(config.load(), target=target)
    if as_json:
        emit_json(data)
        return
    for t in data["targets"]:
        say(f"{t['name']}: {t['pulled']} new entries, log size {t['size']}" if t["available"]
            else f"{t['name']}: skipped ({t['error']})")


def baseline_cmd(
    target: str = typer.Option(..., "--target", "-t", help="The target to adopt."),
    source: str = typer.Option("auto", "--from", help="auto, knex_migrations, flyway_schema_history, "
                                                      "schema_migrations or schema_versions."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the matches; record nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Import what a live database already ran (legacy tracking tables) as `baseline` events."""
    from registry import config
    from registry.baseline import baseline
    from registry.cli.output import emit_json, say, table, warn

    data = baseline(config.load(), target=target, source=source, dry_run=dry_run)
    if as_json:
        emit_json(data)
        return
    say(f"{target}: read {data['source']} ({len(data['rows'])} rows)")
    if data["matched"]:
        table("baselined" if not dry_run else "would baseline", ["migration", "legacy name", "matched by"],
              [(m["migration"], m["name"], m["by"]) for m in data["matched"]])
    for u in data["unmatched"]:
        warn(f"no registered migration matches {u['name']!r} ({u['reason']})")


def repair_cmd(
    migration_id: str = typer.Argument(..., help="The edited migration whose new checksum to accept."),
    target: str = typer.Option(None, "--target", "-t", help="Only this target."),
    reason: str = typer.Option(None, "--reason", help="Why the edit is accepted (ledgered)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Accept an applied migration's edited file: ledger a `repair` with both checksums."""
    from registry import config
    from registry.baseline import repair
    from registry.cli.output import emit_json, say

    data = repair(config.load(), migration_id, target=target, reason=reason)
    if as_json:
        emit_json(data)
        return
    for r in data["repaired"]:
        say(f"{r['target']}: {migration_id} now accepted as {r['new_checksum']} (was {r['old_checksum']})")
    if not data["repaired"]:
        say(f"{migration_id}: nothing to repair (the applied checksum equals the file's)")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
    app.command("apply")(apply_cmd)
    app.command("rollback")(rollback_cmd)
    app.command("status")(status_cmd)
    app.command("sync")(sync_cmd)
    app.command("baseline")(baseline_cmd)
    app.command("repair")(repair_cmd)
