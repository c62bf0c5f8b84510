"""docs/ is tested too (datasette's test_docs.py): the CLI reference is generated and current,
every command, event type, configuration key and error class is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _all_docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))


def test_cli_reference_is_generated_and_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_command_has_a_help_text():
    import typer.main

    from registry.cli.main import app

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, path + [name])

    missing = [" ".join(p) for p, c in walk(typer.main.get_command(app), ["mreg"]) if not (c.help or "").strip()]
    assert not missing, f"commands without help: {missing}"


def test_every_event_type_is_specified_in_the_ledger_format():
    from ledger.statement import EVENT_TYPES

    text = (DOCS / "ledger-format.md").read_text(encoding="utf-8")
    missing = [t for t in EVENT_TYPES if f"`{t}`" not in text]
    assert not missing, f"event types missing from docs/ledger-format.md: {missing}"


def test_every_configuration_key_is_documented():
    from registry import config

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    keys = [f"project.{k}" for k in config.KNOWN_PROJECT_KEYS]
    keys += [f"targets.<name>.{k}" for k in config.KNOWN_TARGET_KEYS]
    keys += [f"`{k}`" for k in config.KNOWN_TOP_KEYS if k not in ("project", "targets")]
    missing = [k for k in keys if k not in text]
    assert not missing, f"configuration keys missing from docs/configuration.md: {missing}"


def test_error_reference_is_generated_and_current():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_error_docs.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_concrete_error_has_its_remedy_on_a_page():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_error_docs
    finally:
        sys.path.pop(0)
    missing = [
        f"{cls.__module__}.{cls.__name__}"
        for cls in gen_error_docs.error_classes()
        if not cls.__subclasses__() and not gen_error_docs.pages_mentioning(cls.__name__)
    ]
    assert not missing, f"errors with no page giving their remedy (add them to a `## Errors` section): {missing}"
