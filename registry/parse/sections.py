"""Reading a script migration (``.sql``, ``.cypher``, ``.redis``): bytes, header, sections.

The layout is the seed's appendix A template. A header of ``<prefix> Key: value``
comment lines at the top, then sections opened by marker comment lines::

    -- Phase 1: EXPAND          -- Phase 2: MIGRATE        -- Phase 3: CONTRACT
    -- Rollback: <text>         -- Rollback: EXPAND        -- Rollback (migrate): <text>
    -- Validation: <text>

Inside sections two directives are read: ``Backfill:`` (migrate phase) and
``check:`` (validation section). Everything here is text; the statement
splitters for each language live in ``sql.py``, ``cypher.py`` and ``redis.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from registry.model import PHASES
from registry.parse.errors import ParseError

COMMENT_PREFIX = {"sql": "--", "cypher": "//", "redis": "#"}

# header key (lower case) -> field name used by the builder
HEADER_KEYS = {
    "migration": "name", "name": "name", "id": "id", "version": "version", "database": "database",
    "author": "author", "created": "created", "breaking": "breaking", "dependencies": "dependencies",
    "txmode": "txmode", "type": "type", "tenant-scoped": "tenant_scoped", "description": "description",
    "batch-size": "batch_size", "pause-between-batches": "pause_between_batches",
    "max-batch-ms": "max_batch_ms", "duty-cycle": "duty_cycle", "checkpoint-interval": "checkpoint_interval",
    "commit-backoff": "commit_backoff",
    "max-retries": "max_retries", "timeout": "timeout", "lock-timeout": "lock_timeout",
    "requires-maintenance-window": "requires_maintenance_window",
}

_PHASE_RE = re.compile(r"^phase\s*(\d+)\s*:\s*(expand|migrate|contract)\b", re.I)
_ROLLBACK_RE = re.compile(r"^rollback\s*(?:\(\s*(expand|migrate|contract)\s*\))?\s*:(.*)$", re.I)
_ROLLBACK_PHASE_RE = re.compile(r"^(EXPAND|MIGRATE|CONTRACT)\b")
_VALIDATION_RE = re.compile(r"^validation\s*:", re.I)
_BACKFILL_RE = re.compile(r"^backfill\s*:(.*)$", re.I)
_CHECK_RE = re.compile(r"^check((?:\s+[A-Za-z0-9_.-]+)?(?:\s*\([^)]*\))?\s*:.*)$", re.I)
_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z_-]*)\s*:\s*(.*?)\s*$")


def decode(path: str, data: bytes) -> str:
    """The file's text: BOM removed, CRLF turned into LF; binary or non-UTF-8 bytes are a ParseError."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ParseError(path, "binary content (NUL byte), not a text migration",
                         line=data[:nul].count(b"\n") + 1, field="encoding",
                         hint="a migration is UTF-8 text; remove this file or restore its text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(path, f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                         line=data[:exc.start].count(b"\n") + 1, field="encoding",
                         hint="re-save the file as UTF-8") from None
    return text.replace("\r\n", "\n")


@dataclass
class Section:
    """A run of lines under one marker. ``role`` is ``phase``, ``rollback`` or ``validation``."""

    role: str
    phase: str | None
    line: int          # line of the first content line (marker line + 1)
    marker_line: int   # 0 for the implicit expand section of a file with no marker
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Directive:
    """A ``Backfill:`` or ``check`` comment line found inside a section."""

    name: str
    line: int
    value: str
    section: Section


@dataclass
class Script:
    """A script migration's header fields and its sections, in file order."""

    header: dict[str, tuple[str, int]]      # field -> (raw value, line)
    extra: dict[str, str]                   # header lines with keys mreg does not know
    sections: list[Section]
    directives: list[Directive]
    has_markers: bool


def _marker(body: str, path: str, lineno: int) -> tuple[str, str | None] | None:
    """(role, phase) if a comment's text is a section marker."""
    m = _PHASE_RE.match(body)
    if m:
        phase = m.group(2).lower()
        expected = PHASES.index(phase) + 1
        if int(m.group(1)) != expected:
            raise ParseError(path, f"phase marker says Phase {m.group(1)} for {phase.upper()}",
                             line=lineno, field="phase",
                             hint=f"write `Phase {expected}: {phase.upper()}`")
        return "phase", phase
    m = _ROLLBACK_RE.match(body)
    if m:
        phase = m.group(1)
        if phase is None:
            pm = _ROLLBACK_PHASE_RE.match(m.group(2).strip())
            phase = pm.group(1) if pm else None
        return "rollback", phase.lower() if phase else None
    if _VALIDATION_RE.match(body):
        return "validation", None
    return None


def read_script(path: str, text: str, kind: str) -> Script:
    """Split ``text`` into header and sections (no statement parsing yet)."""
    prefix = COMMENT_PREFIX[kind]
    header: dict[str, tuple[str, int]] = {}
    extra: dict[str, str] = {}
    sections: list[Section] = [Section("phase", "expand", 1, 0)]
    directives: list[Directive] = []
    in_header = True
    seen: set[tuple[str, str | None]] = set()
    last_phase = 0
    has_markers = False
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        body = stripped[len(prefix):].strip() if stripped.startswith(prefix) else None
        # markers may be decorated: `-- ===== Phase 1: EXPAND =====`, `--- Rollback:`
        marker = _marker(body.lstrip("-=*#/ "), path, lineno) if body is not None else None
        if marker is not None:
            in_header = False
            has_markers = True
            role, phase = marker
            if role == "phase":
                index = PHASES.index(phase) + 1
                if index <= last_phase:
                    raise ParseError(path, f"Phase {index}: {phase.upper()} comes after a later or equal phase",
                                     line=lineno, field="phase",
                                     hint="phases appear once each, in the order EXPAND, MIGRATE, CONTRACT")
                last_phase = index
            if role == "rollback" and phase is None:
                phase = "expand"   # a plain `Rollback:` undoes the whole migration; it runs last
            if (role, phase) in seen and role != "validation":
                raise ParseError(path, f"a second {role} section for {phase}", line=lineno, field=role,
                                 hint="merge the two sections into one")
            seen.add((role, phase))
            sections.append(Section(role, phase, lineno + 1, lineno))
            continue
        if body is not None and in_header:
            m = _KEY_RE.match(body)
            if m and not _BACKFILL_RE.match(body) and not _CHECK_RE.match(body):
                key = m.group(1).lower()
                if key in HEADER_KEYS:
                    name = HEADER_KEYS[key]
                    if name in header:
                        raise ParseError(path, f"header field `{m.group(1)}` given twice", line=lineno,
                                         field=m.group(1), hint="keep one of the two lines")
                    header[name] = (m.group(2), lineno)
                else:
                    extra[m.group(1)] = m.group(2)
        elif stripped and body is None:
            in_header = False
        if body is not None:
            for regex, name in ((_BACKFILL_RE, "backfill"), (_CHECK_RE, "check")):
                dm = regex.match(body)
                if dm and (name == "backfill" or sections[-1].role == "validation"):
                    directives.append(Directive(name, lineno, dm.group(1).strip(), sections[-1]))
        sections[-1].lines.append(line)
    first = sections[0]
    if has_markers and _only_comments(first.lines, prefix):
        sections.pop(0)
    return Script(header, extra, sections, directives, has_markers)


def _only_comments(lines: list[str], prefix: str) -> bool:
    return all(not s.strip() or s.strip().startswith(prefix) for s in lines)
