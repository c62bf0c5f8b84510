"""`mreg init`: make a repository ready for mreg (idempotent)."""

from __future__ import annotations

from typing import Optional

import typer


def init(
    comment: str = typer.Option("", "--comment", help="Comment for a new signing key, e.g. your e-mail."),
    principal: Optional[str] = typer.Option(None, "--principal", help="Principal for a new key in allowed_signers."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Write what the project lacks: mreg.toml, the migrations folder, allowed_signers, a signing key, .gitignore lines."""
    from dataclasses import asdict

    from registry import config
    from registry.cli.output import emit_json, table
    from registry.init import init_project

    items = init_project(config.load(), comment=comment, principal=principal)
    if as_json:
        emit_json([asdict(i) for i in items])
        return
    table(None, ["item", "path", "action", "detail"], [(i.item, i.path, i.action, i.detail) for i in items])


def register(app: typer.Typer) -> None:
    app.command("init")(init)
