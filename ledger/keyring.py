"""Key administration: generate, list, trust and revoke signing keys.

``trust_key`` and ``revoke_key`` change the repository's trust files
(``allowed_signers``, ``revoked_signers``) *and* record the change as a signed
``key_add`` / ``key_revoke`` statement in the registry log, followed by a new
checkpoint, so the history of who was trusted when is itself in the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from ledger.keys import (AllowedSigner, KeyFileError, Revocation, Signer, Trust, fingerprint,
                         format_ssh_time, parse_allowed_signers, parse_public_line, parse_ssh_time)
from ledger.statement import new_statement


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n", encoding="utf-8")


def generate_key(path: Path, *, comment: str, repo_root: Path, allowed_signers: Path,
                 principal: str | None = None, passphrase: bytes | None = None) -> Signer:
    """Create an Ed25519 key at ``path`` (0600, outside ``repo_root``) and trust it in allowed_signers."""
    path = Path(path).expanduser().resolve()
    root = Path(repo_root).resolve()
    if path == root or root in path.parents:
        raise KeyFileError(f"refusing to write a private key inside the repository ({path})", path=str(path),
                           hint="keep private keys outside the repository, e.g. ~/.config/mreg/id_ed25519")
    signer = Signer.generate(comment)
    signer.save(path, passphrase)
    entry = AllowedSigner((principal or comment or "mreg",), signer.public, signer.keyid, comment=comment)
    _append_line(allowed_signers, entry.to_line())
    return signer


def list_keys(trust: Trust, now: datetime | None = None) -> list[dict]:
    """One dict per allowed_signers line, with its status now."""
    now = now or datetime.now(timezone.utc)
    out = []
    for s in trust.signers:
        rev = trust.revoked(s.keyid)
        status = "valid" if s.covers(now) else "outside validity window"
        if rev is not None:
            status = ("revoked" if rev.revoked_after is None else
                      f"revoked from {format_ssh_time(rev.revoked_after)}")
        out.append({"keyid": s.keyid, "principals": list(s.principals), "comment": s.comment,
                    "valid_after": s.valid_after.isoformat() if s.valid_after else None,
                    "valid_before": s.valid_before.isoformat() if s.valid_before else None,
                    "status": status, "line": s.line})
    return out


def trust_key(store, origin: str, signer: Signer, allowed_signers: Path, public_key_line: str, *,
              principal: str, actor: str, valid_after: str | None = None,
              valid_before: str | None = None) -> dict:
    """Add a key to allowed_signers and ledger a ``key_add`` statement; return the statement."""
    public, comment = parse_public_line(public_key_line)
    entry = AllowedSigner((principal,), public, fingerprint(public),
                          valid_after=parse_ssh_time(valid_after) if valid_after else None,
                          valid_before=parse_ssh_time(valid_before) if valid_before else None,
                          comment=comment)
    stmt = new_statement(ledger=origin, type="key_add", actor=actor, details={
        "keyid": entry.keyid, "principal": principal, "allowed_signers": entry.to_line()})
    store.append(origin, stmt, signer)
    store.checkpoint(origin, signer)
    _append_line(allowed_signers, entry.to_line())
    return stmt


def revoke_key(store, origin: str, signer: Signer, allowed_signers: Path, revoked_signers: Path,
               key: str, *, actor: str, at: str | None = None, reason: str = "") -> dict:
    """Revoke a key (by ``SHA256:`` key id or public key line) from ``at`` (default now)."""
    signers = (parse_allowed_signers(allowed_signers.read_text(encoding="utf-8"), str(allowed_signers))
               if allowed_signers.is_file() else [])
    if key.startswith("SHA256:"):
        match = [s for s in signers if s.keyid == key]
        if not match:
            raise KeyFileError(f"no key {key} in {allowed_signers}", found=key,
                               hint="`mreg keys list` shows the key ids")
        public = match[0].public
    else:
        public, _ = parse_public_line(key)
    now = datetime.now(timezone.utc)
    # Default: revoked from the next whole second, so this key_revoke (which may be signed by
    # the key being revoked) is still valid and everything after it is not.
    moment = parse_ssh_time(at) if at else now.replace(microsecond=0) + timedelta(seconds=1)
    rev = Revocation(public, fingerprint(public), moment, comment=reason)
    stmt = new_statement(ledger=origin, type="key_revoke", actor=actor, details={
        "keyid": rev.keyid, "revoked_after": format_ssh_time(moment), "reason": reason,
        "revoked_signers": rev.to_line()}, time=now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    store.append(origin, stmt, signer)
    store.checkpoint(origin, signer)
    _append_line(revoked_signers, rev.to_line())
    return stmt
