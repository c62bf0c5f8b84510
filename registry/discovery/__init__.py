"""Discovery: migrations in the working tree and across the Git history (SPEC §4).

``discover(root, catalog, scope, rev=..., all_refs=...)`` yields ``Progress`` records and
finally a ``ScanResult`` (migrations with provenance, and findings). See ``docs/registry.md``.
Names load lazily so that the post-commit hook can import ``registry.discovery.rules``
without dulwich.
"""

from __future__ import annotations

__all__ = ["Progress", "ScanResult", "Scope", "discover"]


def __getattr__(name: str):
    if name == "Scope":
        from registry.discovery.rules import Scope

        return Scope
    if name in ("Progress", "ScanResult", "discover"):
        from registry.discovery import scan

        return getattr(scan, name)
    raise AttributeError(name)
