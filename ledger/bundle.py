"""Audit bundles: a directory an auditor verifies with no database and no Git.

Layout (docs/audit.md)::

    manifest.json                      format, origins, sizes, file SHA-256s
    allowed_signers                    copy of .mreg/allowed_signers
    revoked_signers                    copy of .mreg/revoked_signers (may be empty)
    policy                             the policy in force (written out even when defaulted)
    logs/<origin, percent-encoded>/leaves                one leaf per line, exact bytes
    logs/<…>/checkpoints/<size>-<k>.checkpoint          every stored checkpoint (k-th of that size)
    logs/<…>/proofs/consistency-<a>-<b>.txt             between successive checkpoint sizes
    logs/<…>/proofs/inclusion-<last seq>.tlog-proof     the last leaf in the latest checkpoint

Leaves never contain a newline byte (RFC 8785 escapes control characters),
so one leaf per line is unambiguous.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ledger.checkpoint import parse_checkpoint
from ledger.errors import LedgerError
from ledger.keys import Trust, parse_allowed_signers, parse_revoked_signers
from ledger.merkle import ProofError
from ledger.policy import Policy, PolicyError, parse_policy
from ledger.proof import (ProofTextError, consistency_text, inclusion_text, verify_consistency_text,
                          verify_inclusion_text)
from ledger.checkpoint import CheckpointError
from ledger.note import NoteError
from ledger.verify import Finding, LogReport, verify_log

FORMAT = "mreg-audit-bundle/v1"


class BundleError(LedgerError):
    """An audit bundle is missing files or does not match its manifest."""

    exit_code = 2


def _dirname(origin: str) -> str:
    return quote(origin, safe="")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_bundle(store, out: Path, *, allowed_signers: str, revoked_signers: str, policy: Policy,
                  origins: list[str] | None = None) -> dict:
    """Write an audit bundle of ``origins`` (default: all) from a ``LedgerStore``; return the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not empty", path=str(out),
                          hint="export into a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "allowed_signers").write_text(allowed_signers, encoding="utf-8")
    (out / "revoked_signers").write_text(revoked_signers, encoding="utf-8")
    (out / "policy").write_text(policy.to_text(), encoding="utf-8")
    manifest: dict = {"format": FORMAT, "origins": {}, "files": {}}
    for origin in origins or store.origins():
        folder = out / "logs" / _dirname(origin)
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "proofs").mkdir()
        leaves = store.leaves(origin)
        with (folder / "leaves").open("wb") as fh:
            for leaf in leaves:
                fh.write(leaf + b"\n")
        notes = store.checkpoints(origin)
        names, by_size, count = [], {}, {}
        for note_text in notes:
            cp = parse_checkpoint(note_text)
            name = f"{cp.size}-{count.get(cp.size, 0)}.checkpoint"
            count[cp.size] = count.get(cp.size, 0) + 1
            (folder / "checkpoints" / name).write_text(note_text, encoding="utf-8")
            names.append(name)
            by_size.setdefault(cp.size, note_text)
        sizes = sorted(s for s in by_size if s <= len(leaves))
        for a, b in zip(sizes, sizes[1:]):
            text = consistency_text(a, b, store.consistency_proof(origin, a, b))
            (folder / "proofs" / f"consistency-{a}-{b}.txt").write_text(text, encoding="utf-8")
        if sizes and sizes[-1] > 0:
            last = sizes[-1] - 1
            text = inclusion_text(last, store.inclusion_proof(origin, last, sizes[-1]), by_size[sizes[-1]])
            (folder / "proofs" / f"inclusion-{last}.tlog-proof").write_text(text, encoding="utf-8")
        manifest["origins"][origin] = {"dir": f"logs/{_dirname(origin)}", "size": len(leaves),
                                       "checkpoints": names}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            manifest["files"][path.relative_to(out).as_posix()] = _sha(path)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return manifest


@dataclass
class AuditReport:
    logs: list[LogReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # bundle-level (files, proofs)

    @property
    def ok(self) -> bool:
        return not self.findings and all(r.ok for r in self.logs)

    def all_findings(self) -> list[Finding]:
        return self.findings + [f for r in self.logs for f in r.findings]

    def as_dict(self) -> dict:
        return {"ok": self.ok, "logs": [r.as_dict() for r in self.logs],
                "findings": [f.as_dict() for f in self.findings]}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle file {path} is missing", path=str(path),
                          hint="export the bundle again with `mreg ledger export`") from None


def audit_bundle(folder: Path, *, policy_text: str | None = None, processes: int = 1) -> AuditReport:
    """Verify a bundle: leaves, chain, signatures, checkpoints (per the policy) and proofs.

    ``policy_text`` lets an auditor use their own policy instead of the bundle's.
    """
    folder = Path(folder)
    try:
        manifest = json.loads(_read(folder / "manifest.json"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"manifest.json is not JSON: {exc}", hint="the bundle is damaged") from None
    if manifest.get("format") != FORMAT:
        raise BundleError(f"not an mreg audit bundle ({manifest.get('format')!r})", found=manifest.get("format"),
                          expected=FORMAT, hint="point mreg audit at a directory made by `mreg ledger export`")
    report = AuditReport()
    for rel, digest in manifest.get("files", {}).items():
        path = folder / rel
        found = _sha(path) if path.is_file() else "missing"
        if found != digest:
            report.findings.append(Finding("bundle", None, rel, digest, found, "bundle-file",
                                           "file differs from manifest.json (informative: the manifest is "
                                           "unsigned; the log checks below are what count)", "warning"))
    trust = Trust(parse_allowed_signers(_read(folder / "allowed_signers"), "allowed_signers"),
                  parse_revoked_signers(_read(folder / "revoked_signers"), "revoked_signers"))
    try:
        policy = parse_policy(policy_text if policy_text is not None else _read(folder / "policy"), "policy")
    except PolicyError:
        raise
    for origin, info in manifest["origins"].items():
        base = folder / info["dir"]
        raw = (base / "leaves").read_bytes() if (base / "leaves").is_file() else b""
        leaves = raw.split(b"\n")
        if leaves and leaves[-1] == b"":
            leaves.pop()
        notes = [p.read_text(encoding="utf-8") for p in sorted((base / "checkpoints").glob("*.checkpoint"))]
        log = verify_log(origin, leaves, notes, trust, policy, processes=processes)
        report.logs.append(log)
        by_size = {}
        for n in notes:
            try:
                by_size.setdefault(parse_checkpoint(n).size, n)
            except (CheckpointError, NoteError):
                continue
        for path in sorted((base / "proofs").glob("*")):
            _check_proof(report, origin, path, leaves, by_size, policy)
    return report


def _check_proof(report: AuditReport, origin: str, path: Path, leaves: list[bytes], by_size: dict,
                 policy: Policy) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        if path.name.startswith("inclusion-"):
            seq = int(path.name.split("-")[1].split(".")[0])
            if seq >= len(leaves):
                raise ProofError(f"leaf {seq} is not in the bundle", hint="the bundle is truncated")
            verify_inclusion_text(text, leaves[seq], policy, origin)
        elif path.name.startswith("consistency-"):
            a, b = (int(x) for x in path.name[len("consistency-"):-len(".txt")].split("-"))
            if a not in by_size or b not in by_size:
                raise ProofError("no checkpoint for one of the proof's sizes", hint="the bundle is incomplete")
            verify_consistency_text(text, by_size[a], by_size[b], policy, origin)
    except (ProofError, ProofTextError, CheckpointError, NoteError, ValueError) as exc:
        report.findings.append(Finding(origin, None, f"proofs/{path.name}", "a valid proof",
                                       getattr(exc, "data", {}).get("found"), "proof", str(exc)))
