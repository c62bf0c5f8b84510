"""`mreg dev up | down | status`: the development servers (real PostgreSQL, TimescaleDB, Neo4j, Redis)."""

from __future__ import annotations

import typer

dev_app = typer.Typer(help="Start, stop and inspect the development servers.", no_args_is_help=True)

ONLY_HELP = "Comma-separated servers (postgres,timescale,neo4j,redis); default all."


def _only(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _render(records: list, as_json: bool, reasons: bool = True) -> None:
    from registry.cli.output import emit_json, say

    rows = [r.as_dict() for r in records]
    if as_json:
        emit_json(rows)
        return
    # one line per server, URL in full (a table would cut it on a narrow terminal)
    for r in rows:
        details = [r["url"] or "", f"pid {r['pid']}" if r["pid"] else "", r["version"] or ""]
        if r["seconds"] is not None:
            details.append(f"{r['seconds']:.1f} s")
        say(f"{r['name']:<10} {r['outcome']:<16} {'  '.join(d for d in details if d)}".rstrip())
        if r["reason"] and reasons:
            say(f"{'':<10} {r['reason']}")


@dev_app.command("up")
def up(only: str = typer.Option(None, "--only", help=ONLY_HELP),
       as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Start the servers that are not running, each on a free loopback port (state in .mreg/dev/)."""
    from registry import config
    from registry.cli.output import warn
    from registry.dev import manager

    from rich.console import Console

    cfg = config.load()
    with Console(stderr=True).status("starting the dev servers (Neo4j takes 10-30 s)"):
        records = manager.up(cfg.state_dir, _only(only))
    _render(records, as_json, reasons=False)  # the reasons go to standard error, below
    failed = [r for r in records if not r.running]
    for record in failed:
        warn(f"{record.name} did not start: {record.reason}")
    if failed and len(failed) == len(records):
        raise typer.Exit(3)


@dev_app.command("down")
def down(only: str = typer.Option(None, "--only", help=ONLY_HELP),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Stop exactly the servers `mreg dev up` started, and check none of their processes is left."""
    from registry import config
    from registry.dev import manager

    from rich.console import Console

    cfg = config.load()
    with Console(stderr=True).status("stopping the dev servers"):
        records = manager.down(cfg.state_dir, _only(only))
    _render(records, as_json)
    if any(r.outcome == "failed" for r in records):
        raise typer.Exit(3)


@dev_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show each dev server: running or not, URL (password removed), pid and version."""
    from registry import config
    from registry.dev import manager

    cfg = config.load()
    _render(manager.status(cfg.state_dir), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
