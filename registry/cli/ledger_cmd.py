"""`mreg keys …`, `mreg verify`, `mreg ledger show|prove|export`, `mreg audit`, `mreg metrics`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

keys_app = typer.Typer(help="Manage signing keys (allowed_signers, revocations).", no_args_is_help=True)
ledger_app = typer.Typer(help="Inspect, prove and export the ledger's logs.", no_args_is_help=True)


def _ctx():
    from registry import config
    from registry.verify import LedgerContext

    return LedgerContext(config.load())


def _actor(signer) -> str:
    import getpass
    import os

    return os.environ.get("MREG_ACTOR") or signer.comment or getpass.getuser()


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _origin(ctx, origin: str | None) -> str:
    return origin if origin and "/" in origin else ctx.origin(origin)


@keys_app.command("generate")
def keys_generate(
    out: Optional[Path] = typer.Option(None, "--out", help="Private key path (default: the configured key)."),
    comment: str = typer.Option("", "--comment", help="Comment, e.g. your e-mail."),
    principal: Optional[str] = typer.Option(None, "--principal", help="Principal in allowed_signers."),
) -> None:
    """Create an Ed25519 key (0600, outside the repository) and trust it in .mreg/allowed_signers."""
    from ledger.keyring import generate_key
    from registry.cli.output import say

    ctx = _ctx()
    path = out or ctx.cfg.key.value
    signer = generate_key(path, comment=comment, repo_root=ctx.cfg.root,
                          allowed_signers=ctx.allowed_signers, principal=principal)
    say(f"wrote {path} (mode 0600) and {path}.pub")
    say(f"key id {signer.keyid} added to {ctx.allowed_signers}")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the keys in allowed_signers with their validity and revocation status."""
    from ledger.keyring import list_keys
    from registry.cli.output import emit_json, table

    rows = list_keys(_ctx().trust())
    if as_json:
        emit_json(rows)
        return
    table("allowed signers", ["key id", "principals", "valid after", "valid before", "status", "comment"],
          [(r["keyid"], ",".join(r["principals"]), r["valid_after"], r["valid_before"], r["status"],
            r["comment"]) for r in rows])


@keys_app.command("trust")
def keys_trust(
    public_key: str = typer.Argument(..., help="A public key line or a .pub file."),
    principal: str = typer.Option(..., "--principal", help="Who the key belongs to."),
    valid_after: Optional[str] = typer.Option(None, "--valid-after", help="YYYYMMDD[HHMM[SS]]Z"),
    valid_before: Optional[str] = typer.Option(None, "--valid-before", help="YYYYMMDD[HHMM[SS]]Z"),
) -> None:
    """Trust a key: add it to allowed_signers and ledger a key_add statement."""
    from ledger.keyring import trust_key
    from registry.cli.output import say

    ctx = _ctx()
    line = Path(public_key).read_text(encoding="utf-8") if Path(public_key).is_file() else public_key
    signer = ctx.signer()
    with ctx.store() as store:
        stmt = trust_key(store, ctx.registry_origin, signer, ctx.allowed_signers, line, principal=principal,
                         actor=_actor(signer), valid_after=valid_after, valid_before=valid_before)
    say(f"trusted {stmt['details']['keyid']} for {principal} (key_add in {ctx.registry_origin})")


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="SHA256:… key id or a public key line."),
    at: Optional[str] = typer.Option(None, "--at", help="Revoked from YYYYMMDD[HHMM[SS]]Z (default: now)."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the ledger)."),
) -> None:
    """Revoke a key: add it to revoked_signers and ledger a key_revoke statement."""
    from ledger.keyring import revoke_key
    from registry.cli.output import say

    ctx = _ctx()
    signer = ctx.signer()
    with ctx.store() as store:
        stmt = revoke_key(store, ctx.registry_origin, signer, ctx.allowed_signers, ctx.revoked_signers, key,
                          actor=_actor(signer), at=at, reason=reason)
    say(f"revoked {stmt['details']['keyid']} from {stmt['details']['revoked_after']}")


def verify(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Verify the ledger (and whatever else registers a check); exit 1 on any failure."""
    from registry import config
    from registry.cli.output import emit_json, say, warn
    from registry.verify import verify_all

    cfg = config.load()
    if as_json:
        checks = verify_all(cfg)
    else:
        from rich.progress import Progress

        with Progress(transient=True, console=_stderr()) as bar:
            task = bar.add_task("verifying", total=None)
            checks = verify_all(cfg, lambda name, done, total: bar.update(
                task, description=f"verifying: {name}", completed=done, total=total))
    if as_json:
        emit_json({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]})
    else:
        for c in checks:
            say(f"{'ok  ' if c.ok else 'FAIL'} {c.name} {c.subject}")
            for line in c.failures:
                say(f"  {line}")
            for line in c.warnings:
                warn(line)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@ledger_app.command("show")
def ledger_show(
    origin: Optional[str] = typer.Option(None, "--origin", help="A log's origin or target name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Summarise every log, or list the events of one log."""
    import base64

    from registry.cli.output import emit_json, table

    ctx = _ctx()
    with ctx.store() as store:
        if origin:
            name = _origin(ctx, origin)
            data = {"origin": name, "size": store.size(name), "events": store.events(name),
                    "checkpoint": store.latest_checkpoint(name)}
        else:
            data = [{"origin": o, "size": store.size(o), "root": base64.b64encode(store.root(o)).decode(),
                     "checkpoints": len(store.checkpoints(o))} for o in store.origins()]
    if as_json:
        emit_json(data)
    elif origin:
        table(f"{data['origin']} ({data['size']} leaves)", ["seq", "type", "event id", "actor", "time", "key id"],
              [(e["seq"], e["type"], e["event_id"], e["actor"], e["time"], e["keyid"]) for e in data["events"]])
    else:
        table("logs", ["origin", "size", "root", "checkpoints"],
              [(d["origin"], d["size"], d["root"], d["checkpoints"]) for d in data])


@ledger_app.command("prove")
def ledger_prove(
    inclusion: Optional[int] = typer.Option(None, "--inclusion", help="Prove leaf SEQ is in the log."),
    consistency: Optional[List[int]] = typer.Option(None, "--consistency", help="Two sizes A B (repeat: --consistency A --consistency B)."),
    sizes: Optional[List[int]] = typer.Argument(None, help="B when written --consistency A B."),
    origin: Optional[str] = typer.Option(None, "--origin", help="A log's origin or target name (default: registry)."),
) -> None:
    """Print an inclusion proof (c2sp.org/tlog-proof@v1) or a consistency proof."""
    from ledger.proof import consistency_text, inclusion_text
    from registry.cli.output import say
    from registry.errors import ConfigError

    ctx = _ctx()
    name = _origin(ctx, origin)
    pair = list(consistency or []) + list(sizes or [])
    if (inclusion is None) == (not pair) or (pair and len(pair) != 2):
        raise ConfigError("give --inclusion SEQ or --consistency A B", hint="mreg ledger prove --inclusion 3")
    with ctx.store() as store:
        if inclusion is not None:
            note = store.latest_checkpoint(name)
            if note is None:
                raise ConfigError(f"{name} has no checkpoint yet", hint="append to the log first")
            from ledger.checkpoint import parse_checkpoint

            size = parse_checkpoint(note).size
            text = inclusion_text(inclusion, store.inclusion_proof(name, inclusion, size), note)
        else:
            text = consistency_text(pair[0], pair[1], store.consistency_proof(name, pair[0], pair[1]))
    say(text.rstrip("\n"))


@ledger_app.command("cosign")
def ledger_cosign(
    key: Path = typer.Option(..., "--key", help="The witness's Ed25519 private key (OpenSSH file)."),
    name: str = typer.Option(..., "--name", help="The witness's key name, e.g. witness.example.com/w1."),
    origin: Optional[str] = typer.Option(None, "--origin", help="A log's origin or target name (default: registry)."),
) -> None:
    """Cosign a log's latest checkpoint as a witness (cosignature/v1), after checking consistency."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.keys import load_signer
    from ledger.note import ALG_COSIGNATURE_V1, verifier_key
    from ledger.witness import cosign_latest
    from registry.cli.output import say

    ctx = _ctx()
    witness = load_signer(key)
    with ctx.store() as store:
        note = cosign_latest(store, _origin(ctx, origin), name, Ed25519PrivateKey.from_private_bytes(witness.seed),
                             ctx.policy())
    say(note.rstrip("\n"))
    say(f"# policy line for this witness: witness {verifier_key(name, witness.public, ALG_COSIGNATURE_V1)}")


@ledger_app.command("export")
def ledger_export(out: Path = typer.Argument(..., help="A new or empty directory.")) -> None:
    """Write an audit bundle: leaves, checkpoints, proofs, allowed signers, policy."""
    from ledger.bundle import export_bundle
    from registry.cli.output import say

    ctx = _ctx()
    trust = ctx.trust()
    read = lambda p: p.read_text(encoding="utf-8") if p.is_file() else ""  # noqa: E731
    with ctx.store() as store:
        manifest = export_bundle(store, out, allowed_signers=read(ctx.allowed_signers),
                                 revoked_signers=read(ctx.revoked_signers), policy=ctx.policy(trust))
    say(f"exported {len(manifest['origins'])} log(s) to {out}; check it with `mreg audit {out}`")


def audit(
    bundle: Path = typer.Argument(..., help="A directory written by `mreg ledger export`."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Use this policy instead of the bundle's."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Verify an audit bundle offline (no database, no Git); exit 1 on any failure."""
    from ledger.bundle import audit_bundle
    from ledger.verify import default_processes
    from registry.cli.output import emit_json, say, warn

    report = audit_bundle(bundle, policy_text=policy.read_text(encoding="utf-8") if policy else None,
                          processes=default_processes())
    if as_json:
        emit_json(report.as_dict())
    else:
        for log in report.logs:
            say(f"{'ok  ' if log.ok else 'FAIL'} {log.origin} size {log.size} "
                f"(checkpointed {log.checkpoint_size})")
        for f in report.all_findings():
            (say if f.severity == "error" else warn)(f"  {f.line()}")
    if not report.ok:
        raise typer.Exit(1)


def metrics() -> None:
    """Print Prometheus exposition of the ledger in catalog.db (applications, failures, durations,
    rollbacks, log sizes); offline, read-only."""
    import sys

    from registry import config
    from registry.metrics import exposition

    sys.stdout.write(exposition(config.load().catalog.value))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(ledger_app, name="ledger")
    app.command("verify")(verify)
    app.command("audit")(audit)
    app.command("metrics")(metrics)
