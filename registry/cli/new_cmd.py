"""`mreg new`: write a canonical migration file from the seed's template."""

from __future__ import annotations

from pathlib import Path

import typer


def new(
    type: str = typer.Option(..., "--type", help="schema, data, security or perf."),
    database: str = typer.Option(..., "--database", help="postgresql, timescale, neo4j or redis."),
    description: str = typer.Option(..., "--description", help="What it does; becomes the snake_case name."),
    phases: str = typer.Option("expand", "--phases", help="Comma-separated: expand,migrate,contract."),
    directory: Path = typer.Option(None, "--dir", help="Migrations folder (default: the configured one, `migrations/` at the root)."),
) -> None:
    """Write YYYYMMDD_HHMMSS_<type>_<description>.<ext> from the template and print its path."""
    from registry import config
    from registry.cli.output import say
    from registry.parse.template import new_migration

    cfg = config.load()
    folder = directory.resolve() if directory is not None else Path(cfg.migrations.value)
    wanted = [p.strip().lower() for p in phases.split(",") if p.strip()]
    made = new_migration(folder, type=type, database=database, description=description, phases=wanted)
    say(str(made.path))


def register(app: typer.Typer) -> None:
    app.command("new")(new)
