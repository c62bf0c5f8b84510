"""`mreg init`: make a repository ready for mreg, idempotently.

It writes what is missing and leaves what exists alone: ``mreg.toml`` (the embedded
defaults written out, ready to edit), the migrations folder, ``.mreg/allowed_signers``,
the operator's signing key (outside the repository, trusted in allowed_signers) and the
``.gitignore`` lines for what mreg generates. Each item is reported as a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from registry.config import DEFAULT_TARGETS, Config

GITIGNORE_LINES = ("/catalog.db", "/catalog.db-*", ".mreg/dev/", ".mreg/logs/", ".mreg/cache/")


@dataclass(frozen=True)
class InitItem:
    """One thing init looked at: ``action`` is ``created``, ``updated``, ``exists`` or ``todo``."""

    item: str
    path: str
    action: str
    detail: str = ""


def config_template(project: str) -> str:
    """The embedded defaults as an ``mreg.toml`` to edit (docs/configuration.md explains each key)."""
    lines = [
        "# mreg configuration: see docs/configuration.md. Environment variables override these values.",
        "[project]",
        f'name = "{project}"',
        'catalog = "catalog.db"',
        'migrations = "migrations"',
        "",
    ]
    for name, kind in DEFAULT_TARGETS.items():
        lines += [
            f"[targets.{name}]",
            f'type = "{kind}"',
            'url = "dev"  # the server `mreg dev up` starts; or a URL, or "env:NAME"',
            "",
        ]
    return "\n".join(lines)


def _ensure_lines(path: Path, wanted: tuple[str, ...]) -> str:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in wanted if line not in present]
    if not missing:
        return "exists"
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n".join(missing) + "\n", encoding="utf-8")
    return "updated" if present else "created"


def init_project(cfg: Config, *, comment: str = "", principal: str | None = None) -> list[InitItem]:
    """Create what the project at ``cfg.root`` lacks; return what was done, item by item."""
    from ledger.keyring import generate_key
    from ledger.keys import load_signer

    items: list[InitItem] = []
    toml = cfg.root / "mreg.toml"
    if toml.exists():
        items.append(InitItem("configuration", str(toml), "exists"))
    else:
        toml.write_text(config_template(str(cfg.project.value)), encoding="utf-8")
        items.append(InitItem("configuration", str(toml), "created"))

    folder = Path(cfg.migrations.value)
    items.append(InitItem("migrations folder", str(folder), "exists" if folder.is_dir() else "created"))
    folder.mkdir(parents=True, exist_ok=True)

    signers = cfg.state_dir / "allowed_signers"
    items.append(InitItem("allowed signers", str(signers), "exists" if signers.is_file() else "created"))
    signers.parent.mkdir(parents=True, exist_ok=True)
    signers.touch()

    key = Path(cfg.key.value)
    if key.exists():
        signer = load_signer(key)
        trusted = signer.public_line.split()[1] in signers.read_text(encoding="utf-8")
        items.append(InitItem("signing key", str(key), "exists" if trusted else "todo",
                              "" if trusted else f"not trusted yet: run `mreg keys trust {key}.pub`"))
    else:
        signer = generate_key(key, comment=comment, repo_root=cfg.root, allowed_signers=signers,
                              principal=principal)
        items.append(InitItem("signing key", str(key), "created", f"{signer.keyid}, trusted in {signers.name}"))

    gitignore = cfg.root / ".gitignore"
    items.append(InitItem("gitignore", str(gitignore), _ensure_lines(gitignore, GITIGNORE_LINES)))
    return items
