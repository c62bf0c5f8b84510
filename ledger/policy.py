"""The auditor's policy: which keys may sign checkpoints, which witnesses count, the quorum.

File ``.mreg/policy`` (and ``policy`` in an audit bundle), one directive per line,
lines starting with ``#`` are comments:

    log ssh-ed25519 AAAA… [comment]             may sign checkpoints of every origin
    log <origin>+<hex id>+<base64(0x01‖pub)>    may sign checkpoints of that origin only
    witness <name>+<hex id>+<base64(0x04‖pub)>  a cosignature/v1 witness key
    quorum <n>                                  cosignatures needed from distinct witnesses

Without a policy file the default is: every key in ``allowed_signers`` that is
not revoked for all time is a log key, no witnesses, quorum 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import LedgerError
from ledger.keys import Trust, parse_public_key
from ledger.note import ALG_COSIGNATURE_V1, ALG_ED25519, NoteError, Verifier, parse_verifier


class PolicyError(LedgerError):
    """The policy file cannot be parsed or asks for the impossible."""

    exit_code = 2


@dataclass
class Policy:
    log_keys: list[bytes] = field(default_factory=list)          # raw Ed25519 keys, any origin
    origin_keys: list[Verifier] = field(default_factory=list)    # 0x01 vkeys bound to an origin
    witnesses: list[Verifier] = field(default_factory=list)      # 0x04 vkeys
    quorum: int = 0
    source: str = "default"

    def keys_for(self, origin: str) -> list[bytes]:
        return self.log_keys + [v.public for v in self.origin_keys if v.name == origin]

    def to_text(self) -> str:
        from ledger.keys import public_line

        lines = [f"# mreg ledger policy ({self.source})"]
        lines += [f"log {public_line(k)}" for k in self.log_keys]
        lines += [f"log {v}" for v in self.origin_keys]
        lines += [f"witness {v}" for v in self.witnesses]
        lines.append(f"quorum {self.quorum}")
        return "\n".join(lines) + "\n"


def parse_policy(text: str, path: str = "policy") -> Policy:
    pol = Policy(source=path)
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        where = f"{path}:{n}: "
        try:
            if word == "log" and rest.startswith("ssh-"):
                parts = rest.split(None, 2)
                pol.log_keys.append(parse_public_key(parts[0], parts[1] if len(parts) > 1 else "", where))
            elif word == "log":
                v = parse_verifier(rest)
                if v.alg != ALG_ED25519:
                    raise PolicyError(f"{where}a log key must have type 0x01", hint="use a note vkey")
                pol.origin_keys.append(v)
            elif word == "witness":
                v = parse_verifier(rest)
                if v.alg != ALG_COSIGNATURE_V1:
                    raise PolicyError(f"{where}a witness key must have type 0x04 (cosignature/v1)",
                                      hint="ask the witness for its cosignature/v1 vkey")
                pol.witnesses.append(v)
            elif word == "quorum":
                if not rest.isdigit():
                    raise PolicyError(f"{where}quorum must be a number", found=rest, hint="quorum 1")
                pol.quorum = int(rest)
            else:
                raise PolicyError(f"{where}unknown directive {word!r}", found=word,
                                  hint="use log, witness or quorum")
        except NoteError as exc:
            raise PolicyError(f"{where}{exc.message}", hint=exc.hint) from None
    if pol.quorum > len({w.name for w in pol.witnesses}):
        raise PolicyError(f"{path}: quorum {pol.quorum} exceeds the {len(pol.witnesses)} witnesses listed",
                          hint="lower the quorum or list more witnesses")
    return pol


def default_policy(trust: Trust) -> Policy:
    keys: list[bytes] = []
    for s in trust.signers:
        rev = trust.revoked(s.keyid)
        if rev is not None and rev.revoked_after is None:
            continue
        if s.public not in keys:
            keys.append(s.public)
    return Policy(log_keys=keys, source="default: allowed_signers")


def load_policy(path: Path, trust: Trust) -> Policy:
    if path.is_file():
        return parse_policy(path.read_text(encoding="utf-8"), str(path))
    return default_policy(trust)
