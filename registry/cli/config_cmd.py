"""`mreg config show`: the resolved configuration and where each value came from."""

from __future__ import annotations

import typer

config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@config_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the resolved configuration (passwords removed) and each value's source."""
    from registry import config
    from registry.cli.output import emit_json, say, table

    cfg = config.load()
    data = cfg.as_dict()
    if as_json:
        emit_json(data)
        return
    say(f"root:       {data['root']}")
    say(f"file:       {data['file'] or '(none: embedded defaults)'}")
    for key in ("project", "catalog", "key", "migrations"):
        say(f"{key + ':':<11} {data[key]['value']}  [{data[key]['source']}]")
    table("targets", ["name", "type", "url", "source"],
          [(t["name"], t["type"], t["url"], t["source"]) for t in data["targets"]])


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
