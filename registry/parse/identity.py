"""What a file's name says about its migration: id, scheme, type, date (canonical or legacy)."""

from __future__ import annotations

from dataclasses import dataclass

from registry import naming


@dataclass
class Identity:
    """Defaults a file name gives a migration; its header or object may override them."""

    id: str
    name: str
    scheme: str
    type: str | None
    created: str
    canonical: bool
    legacy: dict | None


def identify(path: str) -> Identity:
    """The canonical parts of a canonical name, else the legacy scheme's, else the bare stem."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    canon = naming.parse_canonical_name(base)
    if canon:
        return Identity(canon.id, canon.description.replace("_", " "), "canonical", canon.type,
                        canon.timestamp.date().isoformat(), True, None)
    legacy = naming.parse_legacy_name(base)
    if legacy:
        info = {"scheme": legacy.scheme, "version": legacy.version_str, "description": legacy.description,
                "kind": legacy.kind}
        return Identity(stem, legacy.description.replace("_", " "), legacy.scheme, None, "", False, info)
    return Identity(stem, stem.replace("_", " "), "script", None, "", False, None)
