"""`mreg scan | list | show | consolidate | hooks install | serve | catalog rebuild`: the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

hooks_app = typer.Typer(help="Git hooks that check and register migrations.", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog tables in catalog.db.", no_args_is_help=True)


def scan(
    path: Optional[Path] = typer.Argument(None, help="Repository or folder to scan (default: the project root)."),
    rev: Optional[str] = typer.Option(None, "--rev", help="Scan the history of this revision instead of HEAD."),
    all_refs: bool = typer.Option(False, "--all-refs", help="Scan the history of every branch, tag and remote."),
    full: bool = typer.Option(False, "--full", help="Forget what earlier scans saw and walk the whole history."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Discover migrations in Git history and the working tree; register new ones; report findings."""
    from registry import config
    from registry.cli.output import emit_json, say, table
    from registry.registration import scan_and_register

    cfg = config.load()
    items = scan_and_register(cfg, path=path, rev=rev, all_refs=all_refs, full=full)
    if as_json:  # no progress bar: rich.progress is not even imported
        result, done = [item for item in items if isinstance(item, tuple)][0]
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("scanning {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("commits", total=None)
            for item in items:
                if isinstance(item, tuple):
                    result, done = item
                else:
                    bar.update(task, completed=item.done, total=item.total, description=item.stage)
    found = [{"kind": f["kind"], "paths": f["paths"], "message": f["message"]} for f in result.findings]
    if as_json:
        emit_json({"migrations": len(result.migrations), "findings": found})
        return
    say(f"{len(result.migrations)} migrations ({result.new_commits} new commits scanned in {result.seconds:.2f}s); "
        f"{len(done.registered)} registered, {len(done.updated)} updated")
    if found:
        table("findings", ["kind", "message"], [(f["kind"], f["message"]) for f in found])


def list_(
    database: Optional[str] = typer.Option(None, "--database", help="Only this database."),
    status: Optional[str] = typer.Option(None, "--status", help="Only this status: active or deleted."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every migration the catalog knows (run `mreg scan` first)."""
    from registry import config
    from registry.cli.output import emit_json, table
    from registry.registration import list_migrations

    rows = list_migrations(config.load(), database=database, status=status)
    if as_json:
        emit_json(rows)
        return
    table(None, ["id", "database", "scheme", "status", "path", "first commit"],
          [(r["id"], r["database"], r["scheme"], r["status"], r["path"],
            (r["first_commit"] or {}).get("date", "")) for r in rows])


def show(
    migration_id: str = typer.Argument(..., metavar="ID", help="Canonical id, declared id or path."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one migration: provenance, revisions, locations, dependencies, findings."""
    from registry import config
    from registry.cli.output import emit_json, say
    from registry.registration import show_migration

    m = show_migration(config.load(), migration_id)
    if as_json:
        emit_json(m)
        return
    for key in ("id", "path", "database", "scheme", "version", "type", "status", "checksum", "registered_checksum"):
        say(f"{key + ':':<20} {m.get(key)}")
    fc = m.get("first_commit") or {}
    say(f"{'first commit:':<20} {fc.get('sha', '')[:12]} {fc.get('author', '')} {fc.get('date', '')}")
    say(f"{'paths:':<20} {', '.join(m['paths'])}")
    say(f"{'refs:':<20} {', '.join(m.get('refs') or []) or '(none scanned)'}")
    if m.get("undo"):
        say(f"{'rollback:':<20} {m['undo']['path']} (undo file {m['undo']['id']})")
    if m.get("undo_of"):
        say(f"{'undoes:':<20} {m['undo_of']} (never applied; its statements are that migration's rollback)")
    for r in m["revisions"]:
        say(f"  revision {(r.get('sha') or '')[:12]} {r.get('date')} {r.get('checksum')}")
    for r in m["renames"]:
        say(f"  renamed {r['from']} -> {r['to']} in {(r.get('sha') or '')[:12]}")
    for f in m["findings"]:
        say(f"  finding {f['kind']}: {f['message']}")


def consolidate(
    into: Path = typer.Option(Path("migrations"), "--into", help="Folder of canonical migrations."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the moves without making them."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Move legacy migrations to canonical names (history kept), add headers, ledger each move."""
    from registry import config
    from registry.cli.output import emit_json, say
    from registry.consolidate import consolidate as run

    report = run(config.load(), into=into, dry_run=dry_run)
    if as_json:
        emit_json(report)
        return
    for move in report["moves"]:
        say(f"{'would move' if dry_run else 'moved'} {move['from']} -> {move['to']}")
    say(f"{len(report['moves'])} moves{' (dry run)' if dry_run else ''}; mapping in {report['mapping']}")


@hooks_app.command("install")
def hooks_install(
    force: bool = typer.Option(False, "--force", help="Replace existing hooks."),
) -> None:
    """Install the pre-commit hook (refuses bad migrations) and the post-commit hook (registers them)."""
    from registry import config
    from registry.cli.output import say
    from registry.hooks import install

    for path in install(config.load(), force=force):
        say(f"installed {path}")


def serve(
    port: int = typer.Option(8001, "--port", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
) -> None:
    """Serve catalog.db read-only with Datasette (table and column descriptions included)."""
    from registry import catalog, config

    catalog.serve(config.load(), host=host, port=port)


@catalog_app.command("rebuild")
def catalog_rebuild(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Drop and re-project the catalog tables from the registry log."""
    from registry import catalog, config
    from registry.cli.output import emit_json, say

    counts = catalog.rebuild(config.load())
    if as_json:
        emit_json(counts)
        return
    say(", ".join(f"{t}: {n}" for t, n in counts.items()))


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.command("list")(list_)
    app.command("show")(show)
    app.command("consolidate")(consolidate)
    app.command("serve")(serve)
    app.add_typer(hooks_app, name="hooks")
    app.add_typer(catalog_app, name="catalog")
