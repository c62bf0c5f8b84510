"""Discovery: migrations in the working tree and across the Git history (SPEC §4).

``discover(root, catalog, scope, rev=..., all_refs=...)`` yields ``Progress`` records and
finally a ``ScanResult`` (migrations with provenance, and findings). See ``docs/registry.md``.
"""

from registry.discovery.rules import Scope
from registry.discovery.scan import Progress, ScanResult, discover

__all__ = ["Progress", "ScanResult", "Scope", "discover"]
