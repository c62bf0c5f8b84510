"""mreg's ledger: signed statements in append-only transparency logs.

This package knows nothing of Git, migrations or database drivers: statements
go in, bytes, proofs and verdicts come out (see docs/ledger-format.md).
"""
