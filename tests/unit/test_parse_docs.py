"""docs/migration-files.md stays true: every error class of the parse helper has an entry under `## Errors`."""

from __future__ import annotations

import inspect
from pathlib import Path

import registry.graph
import registry.naming
import registry.parse.errors
import registry.parse.template
from registry.errors import MregError

DOC = Path(__file__).resolve().parents[2] / "docs" / "migration-files.md"


def test_every_error_class_is_documented():
    text = DOC.read_text(encoding="utf-8")
    errors = text.split("## Errors", 1)[1]
    modules = (registry.parse.errors, registry.naming, registry.graph, registry.parse.template)
    classes = {obj for mod in modules for _, obj in inspect.getmembers(mod, inspect.isclass)
               if issubclass(obj, MregError) and obj.__module__ == mod.__name__}
    assert {c.__name__ for c in classes} >= {"ParseError", "CycleError", "MissingDependency"}
    for cls in classes:
        assert f"`{cls.__name__}`" in errors, f"{cls.__name__} has no entry under ## Errors"


def test_documented_legacy_examples_parse_as_documented():
    from registry.naming import parse_legacy_name

    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Legacy names", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    assert len(rows) >= 7
    for row in rows:
        scheme = row.split("|")[1].strip().strip("`")
        first_example = row.split("|")[2].split("`")[1]
        got = parse_legacy_name(first_example)
        assert got is not None and got.scheme == scheme, (first_example, got)
