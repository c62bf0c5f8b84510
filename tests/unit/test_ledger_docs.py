"""The ledger docs tell the truth: every event type, verdict kind and error is documented,
and the worked example and the auditor's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import ledger
from ledger.errors import LedgerError
from ledger.statement import EVENT_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs"
FORMAT = (DOCS / "ledger-format.md").read_text(encoding="utf-8")
AUDIT = (DOCS / "audit.md").read_text(encoding="utf-8")
KEYS = (DOCS / "keys.md").read_text(encoding="utf-8")


def _errors_sections() -> str:
    return "".join(text.split("## Errors", 1)[1] for text in (FORMAT, AUDIT, KEYS))


def _code_after(text: str, marker: str) -> str:
    rest = text.split(marker, 1)[1]
    return rest.split("```python\n", 1)[1].split("```", 1)[0]


def test_event_types_and_verdict_kinds_are_documented():
    for name in EVENT_TYPES:
        assert f"`{name}`" in FORMAT, name
    import ledger.verify as verify

    kinds = re.findall(r"^- ``([a-z-]+)``", verify.__doc__, re.M)
    kinds += [k for line in re.findall(r"^- ``([a-z-]+)`` / ``([a-z-]+)`` / ``([a-z-]+)``", verify.__doc__, re.M)
              for k in line]
    assert len(kinds) >= 15
    for kind in kinds:
        assert f"`{kind}`" in FORMAT, kind


def test_every_ledger_error_is_documented():
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(ledger.__path__):
        importlib.import_module(f"ledger.{mod.name}")

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    errors = _errors_sections()
    for cls in subclasses(LedgerError):
        if cls.__name__ == "KeyProblem":  # abstract base, never raised
            continue
        assert f"`{cls.__name__}`" in errors, cls.__name__


def test_worked_example_recomputes(tmp_path, monkeypatch):
    leaf0 = FORMAT.split("**Leaf 0** (922 bytes):\n\n```\n", 1)[1].split("\n```", 1)[0].encode()
    assert len(leaf0) == 922
    (tmp_path / "leaf0").write_bytes(leaf0)
    monkeypatch.chdir(tmp_path)
    exec(_code_after(FORMAT, "Recompute it with nothing but"), {})


def test_audit_snippets_run_on_a_real_bundle(tmp_path, monkeypatch):
    from ledger.bundle import export_bundle
    from ledger.keys import Trust, parse_allowed_signers
    from ledger.policy import default_policy
    from ledger.store import LedgerStore
    from tests.unit.test_ledger_golden import SIGNER, statements

    store = LedgerStore(tmp_path / "catalog.db")
    s0, s1 = statements()
    store.append("demo/postgres", s0, SIGNER)
    store.checkpoint("demo/postgres", SIGNER)
    store.append("demo/postgres", s1, SIGNER)
    store.checkpoint("demo/postgres", SIGNER)
    allowed = f"alice@example.com {SIGNER.public_line}\n"
    export_bundle(store, tmp_path / "audit-2026-01", allowed_signers=allowed, revoked_signers="",
                  policy=default_policy(Trust(parse_allowed_signers(allowed))))
    monkeypatch.chdir(tmp_path)
    code = _code_after(AUDIT, "Verify a checkpoint with Go's")
    code += _code_after(AUDIT, "Recompute the tree and check")
    between = _code_after(AUDIT, "Between two checkpoints you verified")
    code += "from ledger.checkpoint import parse_checkpoint\n"
    code += "root_m = parse_checkpoint(open('audit-2026-01/logs/demo%2Fpostgres/checkpoints/1-0.checkpoint').read()).root\n"
    code += "root_n = root\n" + between.replace('".../proofs/', '"audit-2026-01/logs/demo%2Fpostgres/proofs/')
    code += _code_after(AUDIT, "Verify a statement's signature by hand").replace(
        "pub = ...", "pub = __import__('ledger.keys').keys.parse_public_line(open('audit-2026-01/allowed_signers').read().split(' ', 1)[1])[0]")
    code += _code_after(AUDIT, "Or do the whole log at once").replace("print(report.ok)", "assert report.ok")
    scope: dict = {}
    exec(code, scope)
    assert scope["size"] == 2 and scope["index"] == 1
    store.close()
