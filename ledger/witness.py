"""A witness: cosign a log's checkpoint after checking it extends what it cosigned before.

C2SP tlog-witness in miniature, for an independent party holding its own
Ed25519 key: verify the checkpoint with the policy's log keys, check that it is
consistent with the largest checkpoint this witness cosigned for the origin
(``ledger_witness_state``), then add a ``cosignature/v1`` line with the current
time and remember the new state. A witness never cosigns a smaller tree or a
different root for a size it has seen.
"""

from __future__ import annotations

import time as _time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import cosign, verify_checkpoint
from ledger.errors import LedgerError
from ledger.merkle import ProofError, verify_consistency
from ledger.policy import Policy


class WitnessError(LedgerError):
    """The witness refused to cosign: a bad signature, a shrinking log or a fork."""


def cosign_latest(store, origin: str, name: str, key: Ed25519PrivateKey, policy: Policy,
                  now: int | None = None) -> str:
    """Cosign the latest checkpoint of ``origin`` in ``store`` as witness ``name``; return the note."""
    note = store.latest_checkpoint(origin)
    if note is None:
        raise WitnessError(f"{origin} has no checkpoint to cosign", hint="append to the log first")
    vc = verify_checkpoint(note, policy.keys_for(origin), origin=origin)
    cp = vc.checkpoint
    seen = [w for w in store.witness_state(origin) if w["witness"] == name]
    if seen:
        last = max(seen, key=lambda w: w["size"])
        if cp.size < last["size"]:
            raise WitnessError(f"{origin}: size {cp.size} is smaller than the size {last['size']} already "
                               "cosigned", field="size", expected=f">= {last['size']}", found=cp.size,
                               hint="the log shrank: do not cosign; investigate")
        try:
            verify_consistency(last["size"], cp.size, store.consistency_proof(origin, last["size"], cp.size),
                               last["root"], cp.root)
        except ProofError as exc:
            raise WitnessError(f"{origin}: checkpoint of size {cp.size} does not extend the one of size "
                               f"{last['size']} cosigned before: {exc.message}", field="root",
                               hint="the log forked or was rewritten: do not cosign; investigate") from None
    stamp = int(_time.time()) if now is None else now
    cosigned = cosign(note, name, key, stamp)
    store.add_checkpoint(cosigned)
    store.record_witness(origin, name, cosigned, stamp)
    return cosigned
