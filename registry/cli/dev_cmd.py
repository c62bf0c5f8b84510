"""`mreg dev up | down | status`: the development servers (real PostgreSQL, TimescaleDB, Neo4j, Redis)."""

from __future__ import annotations

import typer

dev_app = typer.Typer(help="Start, stop and inspect the development servers.", no_args_is_help=True)

ONLY_HELP = "Comma-separated servers (postgres,timescale,neo4j,redis); default all."


def _only(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _render(records: list, as_json: bool) -> None:
    from registry.cli.output import emit_json, table

    rows = [r.as_dict() for r in records]
    if as_json:
        emit_json(rows)
        return
    table(None, ["server", "type", "outcome", "url", "pid", "version", "note"],
          [(r["name"], r["type"], r["outcome"], r["url"], r["pid"], r["version"], r["reason"]) for r in rows])


@dev_app.command("up")
def up(only: str = typer.Option(None, "--only", help=ONLY_HELP),
       as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Start the servers that are not running, each on a free loopback port (state in .mreg/dev/)."""
    from registry import config
    from registry.cli.output import warn
    from registry.dev import manager

    cfg = config.load()
    records = manager.up(cfg.state_dir, _only(only))
    _render(records, as_json)
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

    cfg = config.load()
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
