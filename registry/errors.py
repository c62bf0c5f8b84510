"""The registry's base errors. Concrete errors live beside the code that raises them.

Each class carries the exit code the CLI maps it to (SPEC §8):
1 a check found a problem, 2 usage or configuration, 3 database or unexpected.
"""

from __future__ import annotations


class MregError(Exception):
    """Base of every error the registry raises; ``hint`` says how to fix it."""

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None, **data: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data = data

    def __str__(self) -> str:
        return self.message


class CheckFailed(MregError):
    """A check ran and found a problem (lint, verify, drift, not at head)."""

    exit_code = 1


class ConfigError(MregError):
    """The configuration or the command line is wrong; nothing was done."""

    exit_code = 2


class TargetUnavailable(ConfigError):
    """A target the command needs has no server configured or started."""


class DatabaseError(MregError):
    """A target's server failed or could not be reached."""

    exit_code = 3
