"""The ledger's base error. Concrete errors live beside the code that raises them."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises.

    ``hint`` is the remedy a person can act on; ``exit_code`` is what the CLI
    exits with (1: a check found a problem, 2: bad input or configuration).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data

    def __str__(self) -> str:
        return self.message
