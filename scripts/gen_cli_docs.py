"""Generate docs/commands.md from the CLI itself (the reference is never hand-kept).

Run: python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import typer.main

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "commands.md"

HEADER = """# Command reference

Generated from the CLI by `python scripts/gen_cli_docs.py`; a test fails when it is out of date.
Exit codes for every command: 0 success; 1 a check found a problem (lint, verify, drift, not at head);
2 usage or configuration error; 3 a database or unexpected error (traceback in `.mreg/logs/`, one line
on the terminal); 130 interrupted. `--debug` (before the command) re-raises errors with their traceback.

**Not built yet** (in the specification, no command today): `mreg lint` (the squawk-style rules;
the pre-commit hook parses SQL with pglast and checks names and headers, not those rules),
`mreg drift`, `mreg check` (the CI gate in one command) and `mreg snapshot`. See [index.md](index.md),
"Not built yet".
"""


def _walk(cmd, path: list[str]):
    yield path, cmd
    if hasattr(cmd, "commands"):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], path + [name])


def render() -> str:
    from registry.cli.main import app

    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, cmd in _walk(root, ["mreg"]):
        if len(path) == 1:
            continue
        ctx = typer.Context(cmd, info_name=" ".join(path))
        title = " ".join(path)
        parts.append(f"\n## `{title}`\n")
        text = (cmd.help or "").strip()
        if text:
            parts.append(text + "\n")
        if hasattr(cmd, "commands"):
            subs = ", ".join(f"`{title} {n}`" for n in sorted(cmd.commands))
            parts.append(f"\nSubcommands: {subs}\n")
            continue
        parts.append(f"\n```\n{cmd.get_usage(ctx)}\n```\n")
        rows = []
        for param in cmd.get_params(ctx):
            if param.name == "help":
                continue
            record = param.get_help_record(ctx)
            if record is None:
                continue
            opt, help_text = record
            cell = help_text.replace("|", "\\|")
            rows.append(f"| `{opt}` | {cell} |")
        if rows:
            parts.append("\n| argument or option | meaning |\n|---|---|\n" + "\n".join(rows) + "\n")
    return "".join(parts)


def main() -> int:
    from docgen import write_or_check

    return write_or_check(OUT, render(), "gen_cli_docs.py")


if __name__ == "__main__":
    sys.exit(main())
