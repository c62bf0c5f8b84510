"""The `mreg` entry point: the Typer app, its command groups and the one error handler.

Command modules are listed explicitly in ``COMMAND_MODULES``; each has a
``register(app)`` function. They import only Typer at module level so that
``mreg --help`` stays fast; drivers and heavy libraries load inside commands.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

import typer

from registry import __version__

COMMAND_MODULES = [
    "registry.cli.init_cmd",
    "registry.cli.registry_cmd",
    "registry.cli.ledger_cmd",
    "registry.cli.config_cmd",
    "registry.cli.apply_cmd",
    "registry.cli.new_cmd",
    "registry.cli.dev_cmd",
]

app = typer.Typer(
    name="mreg",
    help="Git-native migration registry with a signed, append-only ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"mreg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Re-raise errors with their traceback."),
) -> None:
    """Git-native migration registry with a signed, append-only ledger.

    ``--debug`` is declared here for the help text; ``run`` reads it from the arguments, since it
    decides how errors raised anywhere (even while parsing) are reported. Before ``apply``'s own
    options are parsed, its migrations folder starts loading (``apply_cmd.prefetch``).
    """
    if ctx.invoked_subcommand == "apply":
        from registry.cli.apply_cmd import prefetch

        prefetch()


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _log_traceback(exc: BaseException) -> Path | None:
    """Write the traceback under .mreg/logs/ and return the file, or None if that fails."""
    try:
        from registry.config import find_root

        logs = find_root() / ".mreg" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = logs / f"error-{stamp}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
        return path
    except OSError:
        return None


def _fail(message: str, hint: str | None, code: int) -> int:
    """One line on standard error: what went wrong, where, and the fix."""
    line = f"mreg: error: {' '.join(message.split())}"  # a driver's message may span lines
    if hint:
        line += f" (hint: {' '.join(hint.split())})"
    typer.echo(line, err=True)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (SPEC §8: 0, 1, 2, 3, 130)."""
    from ledger.errors import LedgerError
    from registry.errors import MregError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, prog_name="mreg", standalone_mode=True)
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        return code if isinstance(code, int) else 1
    except KeyboardInterrupt:
        typer.echo("mreg: interrupted", err=True)
        return 130
    except (MregError, LedgerError) as exc:
        if debug:
            raise
        return _fail(exc.message, exc.hint, exc.exit_code)
    except Exception as exc:  # the one place that catches everything
        if debug:
            raise
        log = _log_traceback(exc)
        where = f" (traceback in {log})" if log else ""
        return _fail(f"{type(exc).__name__}: {exc}{where}", None, 3)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
