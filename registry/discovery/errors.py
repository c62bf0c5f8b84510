"""Errors raised while discovering migrations in Git."""

from __future__ import annotations

from registry.errors import ConfigError


class RevisionNotFound(ConfigError):
    """``--rev`` names no branch, tag or commit of the repository."""
