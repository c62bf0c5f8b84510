"""`mreg verify`: every check, as a list of ``Check`` results.

``CHECKS`` is an explicit list of functions ``(cfg) -> list[Check]``; each
part of mreg adds its own (the ledger's logs here; mirrors and file
checksums are added by the apply engine). ``verify_all`` runs them all.

This module also resolves the ledger's files from the configuration
(``LedgerContext``), so commands share one way to open the catalog's logs:

- ``<root>/.mreg/allowed_signers``: trusted signing keys (Git's SSH format)
- ``<root>/.mreg/revoked_signers``: revocations
- ``<root>/.mreg/policy``: the checkpoint policy (default: allowed signers, no witnesses)
- the catalog (``cfg.catalog.value``): ``ledger_*`` tables
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from registry.config import Config


@dataclass
class Check:
    """The result of one check: ``failures`` are one-line verdicts naming log, seq, field,
    expected and found; ``warnings`` do not fail verification."""

    name: str
    subject: str
    ok: bool
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "subject": self.subject, "ok": self.ok, "failures": self.failures,
                "warnings": self.warnings, "data": self.data}


@dataclass
class LedgerContext:
    """The ledger files of a project."""

    cfg: Config

    @property
    def allowed_signers(self) -> Path:
        return self.cfg.state_dir / "allowed_signers"

    @property
    def revoked_signers(self) -> Path:
        return self.cfg.state_dir / "revoked_signers"

    @property
    def policy_file(self) -> Path:
        return self.cfg.state_dir / "policy"

    @property
    def registry_origin(self) -> str:
        return f"{self.cfg.project.value}/registry"

    def origin(self, target: str | None) -> str:
        return self.registry_origin if target in (None, "registry") else f"{self.cfg.project.value}/{target}"

    def trust(self):
        from ledger.keys import Trust

        return Trust.from_files(self.allowed_signers, self.revoked_signers)

    def policy(self, trust=None):
        from ledger.policy import load_policy

        return load_policy(self.policy_file, trust if trust is not None else self.trust())

    def store(self):
        from ledger.store import LedgerStore

        return LedgerStore(self.cfg.catalog.value)

    def signer(self):
        from ledger.keys import load_signer

        return load_signer(self.cfg.key.value)


def check_ledger(cfg: Config, *, processes: int | None = None) -> list[Check]:
    """One check per log in the catalog: leaves, chain, signatures, checkpoints."""
    from ledger.verify import default_processes, verify_log

    ctx = LedgerContext(cfg)
    if not cfg.catalog.value.exists():
        return [Check("ledger", "catalog", True, warnings=[f"no catalog at {cfg.catalog.value} yet"])]
    trust = ctx.trust()
    policy = ctx.policy(trust)
    out = []
    with ctx.store() as store:
        for origin in store.origins():
            report = verify_log(origin, store.leaves(origin), store.checkpoints(origin), trust, policy,
                                processes=processes or default_processes())
            out.append(Check("ledger", origin, report.ok,
                             failures=[f.line() for f in report.errors],
                             warnings=[f.line() for f in report.findings if f.severity != "error"],
                             data=report.as_dict()))
    return out


def check_mirrors(cfg: Config) -> list[Check]:
    """Mirrors equal catalog.db, column by column (added by the apply engine)."""
    from registry.apply.checks import check_mirrors as run

    return run(cfg)


def check_files(cfg: Config) -> list[Check]:
    """Applied files' checksums equal the files in the tree (added by the apply engine)."""
    from registry.apply.checks import check_files as run

    return run(cfg)


CHECKS: list[Callable[[Config], list[Check]]] = [check_ledger, check_mirrors, check_files]


def verify_all(cfg: Config) -> list[Check]:
    """Run every registered check."""
    results: list[Check] = []
    for check in CHECKS:
        results.extend(check(cfg))
    return results
