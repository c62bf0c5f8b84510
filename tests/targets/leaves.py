"""Chained, signed leaves for the adapter tests, built with the ledger's own API (SPEC §5)."""

from __future__ import annotations

import hashlib

ORIGIN = "conformance/main"
ZERO = bytes(32)


def make_log(n: int, origin: str = ORIGIN, engine: str = "postgresql", signer=None, start: int = 0,
             prev: bytes = ZERO, major: int = 2) -> list[bytes]:
    """``n`` chained leaves of ``origin`` (seq ``start``..), each a different event with real fields.

    Migration versions are ``<major>.<seq>.0``; ``prev`` is the leaf hash before seq ``start``.
    """
    from ledger.dsse import sign_envelope
    from ledger.keys import Signer
    from ledger.log import build_leaf
    from ledger.statement import new_statement

    signer = signer or Signer.generate(comment="adapter-tests")
    types = ("apply_started", "apply_succeeded", "batch_checkpoint", "apply_failed")
    leaves = []
    for i in range(start, start + n):
        stmt = new_statement(
            ledger=origin, type=types[i % len(types)], actor=f"tester-{i}@example.org",
            migration={"id": f"20251120_15000{i % 10}_schema_m{i}", "version": f"{major}.{i}.0",
                       "checksum": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
                       "path": f"migrations/m{i}.sql"},
            target={"engine": engine, "id": "conf"},
            details={"execution_time_ms": 10 + i, "rollback_available": i % 2 == 0, "note": f"ünïcode {i}"},
        )
        leaf = build_leaf(i, prev, sign_envelope(stmt, signer))
        leaves.append(leaf)
        prev = hashlib.sha256(b"\x00" + leaf).digest()
    return leaves
