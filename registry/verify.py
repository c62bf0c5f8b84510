"""`mreg verify`: every check, as a list of ``Check`` results.

``CHECKS`` is an explicit list of functions ``(cfg) -> list[Check]``; each
part of mreg adds its own (the ledger's logs here; mirrors and file
checksums are added by the apply engine). ``verify_all`` runs them all.

``ANCHOR_SOURCES`` lists where else checkpoints are kept (Git ``refs/notes/mreg``
here); every log must be consistent with all of them.

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


def split_checkpoints(text: str) -> list[str]:
    """Checkpoint notes written one after another, separated by blank lines (as in Git notes)."""
    notes, body = [], None
    for para in text.strip("\n").split("\n\n"):
        if para.startswith("\u2014 ") and body is not None:
            notes.append(body + "\n\n" + para + "\n")
            body = None
        else:
            body = para
    return notes


def git_note_anchors(cfg: Config) -> list[str]:
    """Every checkpoint ever stored under Git ``refs/notes/mreg`` (one note per commit)."""
    import subprocess

    root = Path(cfg.root)
    if not (root / ".git").exists():
        return []
    try:
        listed = subprocess.run(["git", "notes", "--ref=mreg", "list"], cwd=root, capture_output=True,
                                text=True, timeout=30)
        blobs = sorted({line.split()[0] for line in listed.stdout.splitlines() if line.strip()})
        if listed.returncode != 0 or not blobs:
            return []
        cat = subprocess.run(["git", "cat-file", "--batch"], cwd=root, input="\n".join(blobs) + "\n",
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    notes, out = [], cat.stdout
    while out:
        header, _, rest = out.partition("\n")
        parts = header.split()
        if len(parts) != 3:
            break
        size = int(parts[2])
        notes.extend(split_checkpoints(rest[:size]))
        out = rest[size + 1:]
    return notes


# Where else checkpoints of the logs are kept; each source returns signed checkpoint notes.
# A log must be consistent with all of them (a truncated or rewritten catalog is caught even
# if its own checkpoints were replaced). The apply engine compares the targets' mirrors.
ANCHOR_SOURCES: list[Callable[[Config], list[str]]] = [git_note_anchors]


def check_ledger(cfg: Config, *, processes: int | None = None) -> list[Check]:
    """One check per log in the catalog: leaves, chain, signatures, checkpoints and anchors."""
    from ledger.checkpoint import CheckpointError, parse_checkpoint
    from ledger.note import NoteError
    from ledger.verify import default_processes, verify_log

    ctx = LedgerContext(cfg)
    if not cfg.catalog.value.exists():
        return [Check("ledger", "catalog", True, warnings=[f"no catalog at {cfg.catalog.value} yet"])]
    trust = ctx.trust()
    policy = ctx.policy(trust)
    anchors: dict[str, list[str]] = {}
    for source in ANCHOR_SOURCES:
        for note in source(cfg):
            try:
                anchors.setdefault(parse_checkpoint(note).origin, []).append(note)
            except (CheckpointError, NoteError):
                continue
    out = []
    with ctx.store() as store:
        for origin in sorted(set(store.origins()) | set(anchors)):
            notes = store.checkpoints(origin) + anchors.get(origin, [])
            report = verify_log(origin, store.leaves(origin), notes, trust, policy,
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


def verify_all(cfg: Config, on_progress: Callable[[str, int, int], None] | None = None) -> list[Check]:
    """Run every registered check; ``on_progress(name, done, total)`` is called before each one."""
    results: list[Check] = []
    for done, check in enumerate(CHECKS):
        if on_progress is not None:
            on_progress(check.__name__.removeprefix("check_"), done, len(CHECKS))
        results.extend(check(cfg))
    return results
