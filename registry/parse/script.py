"""Script migrations (``.sql``, ``.cypher``, ``.redis``) into the one ``Migration`` shape."""

from __future__ import annotations

import json
import re

from registry.model import Backfill, Migration, Step, ValidationRule
from registry.parse import cypher, fields, redis, sql
from registry.parse.errors import ParseError
from registry.parse.identity import identify
from registry.parse.sections import Directive, Script, Section, read_script

KIND_BY_EXT = {"sql": "sql", "cypher": "cypher", "cql": "cypher", "redis": "redis"}
DATABASE_BY_KIND = {"cypher": "neo4j", "redis": "redis", "sql": "postgresql"}

_CHECK_BODY = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.-]+)?\s*(?:\((?P<opts>[^)]*)\))?\s*:\s*(?P<body>.*)$")
_EXPECT = re.compile(r";?\s*expect\s*:\s*", re.I)
_LANG = re.compile(r"^(sql|cypher|redis)\s*:\s*", re.I)
_PARAM = re.compile(r"(\w+)\s*=\s*(\S+)")


def parse_script(path: str, text: str, checksum: str, ext: str, database: str | None) -> Migration:
    """The migration a script file describes (header, phases, rollback, validation, backfill)."""
    kind = KIND_BY_EXT[ext]
    script = read_script(path, text, kind)
    ident = identify(path)
    header = {k: v for k, v in script.header.items()}
    warnings: list[str] = []
    # Canonical files (by name or by an ID: header) must have valid header values; in a legacy
    # file the same comment lines were written for humans, so a bad value is a warning, not an error.
    strict = ident.canonical or "id" in header

    def get(name: str, convert, default=None):
        if name not in header:
            return default
        raw, line = header[name]
        try:
            return convert(path, raw, line)
        except ParseError as exc:
            if strict:
                raise
            warnings.append(f"line {line}: {exc.reason}; ignored in a legacy file")
            return default

    m = Migration(id=ident.id, name=ident.name, database=DATABASE_BY_KIND[kind], path=path, checksum=checksum,
                  scheme=ident.scheme)
    m.id = get("id", fields.migration_id, m.id)
    m.name = header["name"][0].strip() if "name" in header else m.name
    m.description = header["description"][0].strip() if "description" in header else m.name
    m.version = get("version", fields.version, m.version)
    m.author = header["author"][0].strip() if "author" in header else ""
    m.created = get("created", fields.created, ident.created)
    m.breaking = get("breaking", lambda p, v, ln: fields.boolean(p, v, ln, "Breaking"), False)
    m.dependencies = get("dependencies", fields.dependencies, [])
    m.txmode = get("txmode", fields.txmode, "transaction")
    m.tenant_scoped = get("tenant_scoped", lambda p, v, ln: fields.boolean(p, v, ln, "Tenant-Scoped"), False)
    for name, label in (("batch_size", "Batch-Size"), ("pause_between_batches", "Pause-Between-Batches"),
                        ("max_retries", "Max-Retries"), ("timeout", "Timeout"), ("lock_timeout", "Lock-Timeout"),
                        ("max_batch_ms", "Max-Batch-Ms"), ("duty_cycle", "Duty-Cycle"),
                        ("checkpoint_interval", "Checkpoint-Interval"), ("commit_backoff", "Commit-Backoff")):
        check = fields.duty_cycle if name == "duty_cycle" else fields.integer
        value = get(name, lambda p, v, ln, lab=label, f=check: f(p, v, ln, lab))
        if value is not None:
            setattr(m.settings, name, value)
    mw = get("requires_maintenance_window",
             lambda p, v, ln: fields.boolean(p, v, ln, "Requires-Maintenance-Window"))
    if mw is not None:
        m.settings.requires_maintenance_window = mw

    nodes: list = []
    wrappers = 0
    for section in script.sections:
        if section.role == "validation":
            continue
        steps, section_nodes, n = _steps(path, kind, section, m.txmode, warnings)
        wrappers += n
        if section.role == "phase":
            nodes.extend(section_nodes)
            m.phases.setdefault(section.phase, []).extend(steps)
        else:
            m.rollback.setdefault(section.phase, []).extend(steps)
    for section in script.sections:
        if section.role == "validation":
            m.validation.extend(_validation(path, kind, section, script.directives, len(m.validation)))
    _backfill(path, kind, m, script)

    m.phases = {p: s for p, s in m.phases.items() if s}
    m.rollback = {p: s for p, s in m.rollback.items() if s}
    if "database" in header and get("database", fields.database) is None:
        del header["database"]
    m.database = _database(path, kind, header, database, nodes, warnings, text)
    declared_type = get("type", fields.migration_type)
    if declared_type is not None:
        m.type = declared_type
    elif ident.type:
        m.type = ident.type
    elif kind == "sql":
        from registry.parse.classify import classify_sql_node, combine

        found = {k for k in map(classify_sql_node, nodes) if k}
        m.type = combine(found | ({"data"} if m.backfill else set())) or "schema"
    else:
        from registry.naming import infer_type

        m.type = infer_type(m)
    if "id" in header and ident.canonical and m.id != ident.id:
        warnings.append(f"header ID {m.id} differs from the file name {ident.id}")
    if not any(m.phases.values()) and m.backfill is None:
        warnings.append("no statements in any phase")
    m.metadata = {"header": bool(header), "extra_header": dict(script.extra), "warnings": warnings,
                  "transaction_wrappers": wrappers}
    if ident.legacy is not None:
        m.metadata["legacy"] = ident.legacy
    return m


def _database(path: str, kind: str, header: dict, given: str | None, nodes: list, warnings: list[str],
              text: str) -> str:
    declared = fields.database(path, *header["database"]) if "database" in header else None
    given = fields.database(path, given, None, "database") if given else None
    if declared and given and declared != given:
        warnings.append(f"header says Database: {declared}, the caller said {given}; the header wins")
    chosen = declared or given
    if chosen is None:
        chosen = DATABASE_BY_KIND[kind]
        if kind == "sql" and sql.uses_timescale(nodes, text):
            chosen = "timescale"
    expected = {"cypher": ("neo4j",), "redis": ("redis",), "sql": ("postgresql", "timescale")}[kind]
    if chosen not in expected:
        line = header["database"][1] if "database" in header else None
        raise ParseError(path, f"a {kind} file cannot target {chosen}", line=line, field="Database",
                         hint=f"use Database: {' or '.join(expected)}, or rename the file")
    return chosen


def _steps(path: str, kind: str, section: Section, txmode: str, warnings: list[str]):
    """Steps of one section; SQL steps get ``transactional=False`` when PostgreSQL requires it."""
    label = section.phase if section.role == "phase" else f"rollback_{section.phase}"
    steps: list[Step] = []
    nodes: list = []
    wrappers = 0
    if kind == "sql":
        statements, wrappers = sql.split(path, section.text, section.line)
        for i, st in enumerate(statements, start=1):
            reason = sql.statement_autocommit_reason(st)
            if reason and txmode != "none":
                warnings.append(f"line {st.line}: {reason} cannot run inside a transaction; this step runs "
                                f"on its own outside one (add `txmode: none` to the header to say so)")
            nodes.append(st)
            steps.append(Step(st.text, "sql", f"{label}.{i}", st.line,
                              transactional=txmode != "none" and reason is None, locks=(st.locks and (st.locks,))))
    elif kind == "cypher":
        for i, st in enumerate(cypher.split(path, section.text, section.line), start=1):
            steps.append(Step(st.text, "cypher", f"{label}.{i}", st.line, transactional=txmode != "none"))
    else:
        for i, cmd in enumerate(redis.split(path, section.text, section.line), start=1):
            steps.append(Step(cmd.text, "redis", f"{label}.{i}", cmd.line, transactional=txmode != "none"))
    return steps, nodes, wrappers


def parse_check(path: str, kind: str, directive: Directive, index: int) -> ValidationRule:
    """One ``check`` line: ``check [name] [(pre|post[, noncritical])]: [lang:]query [; expect: JSON]``."""
    m = _CHECK_BODY.match(directive.value)
    line = directive.line
    hint = 'write `check [name] [(pre|post)]: sql:SELECT count(*) AS count FROM t; expect: {"count": 1}`'
    if not m or not m["body"].strip():
        raise ParseError(path, "a check needs a query after the colon", line=line, field="check", hint=hint)
    rule = ValidationRule(name=m["name"] or f"check_{index + 1}")
    for opt in filter(None, (o.strip().lower() for o in (m["opts"] or "").split(","))):
        if opt in ("pre", "post"):
            rule.type = opt
        elif opt == "critical":
            rule.critical = True
        elif opt in ("noncritical", "warn", "warning"):
            rule.critical = False
        else:
            raise ParseError(path, f"unknown check option {opt!r}", line=line, field="check",
                             hint="options are pre, post, critical, noncritical")
    body = m["body"].strip()
    matches = list(_EXPECT.finditer(body))
    if matches:
        last = matches[-1]
        query, expected = body[:last.start()], body[last.end():].strip()
        try:
            rule.expected = json.loads(expected)
        except ValueError as exc:
            raise ParseError(path, f"expect is not JSON: {exc.msg}", line=line, field="expect",
                             hint='write the expected result as JSON, e.g. expect: {"count": 1}') from None
    else:
        query = body
    query = query.strip().rstrip(";").strip()
    lang = _LANG.match(query)
    language = lang.group(1).lower() if lang else kind
    query = query[lang.end():].strip() if lang else query
    if not query:
        raise ParseError(path, "a check needs a query", line=line, field="check", hint=hint)
    rule.check = f"{language}:{query}"
    return rule


def _validation(path: str, kind: str, section: Section, directives: list[Directive], start: int):
    rules = [parse_check(path, kind, d, start + i)
             for i, d in enumerate(d for d in directives if d.name == "check" and d.section is section)]
    steps, _, _ = _steps(path, kind, section, "transaction", [])
    for step in steps:
        rules.append(ValidationRule(name=f"validation_{start + len(rules) + 1}", check=f"{kind}:{step.content}"))
    return rules


def _backfill(path: str, kind: str, m: Migration, script: Script) -> None:
    found = [d for d in script.directives if d.name == "backfill"]
    if not found:
        return
    hint = ("write `-- Backfill: table=users key=id batch_size=1000` under `-- Phase 2: MIGRATE`, followed by "
            "one UPDATE bounded by `key >= :lo AND key < :hi`")
    if len(found) > 1:
        raise ParseError(path, "a second Backfill directive", line=found[1].line, field="Backfill",
                         hint="one migration has at most one backfill; split the file")
    d = found[0]
    if d.section.role != "phase" or d.section.phase != "migrate":
        raise ParseError(path, "Backfill outside the MIGRATE phase", line=d.line, field="Backfill", hint=hint)
    if kind != "sql":
        raise ParseError(path, "Backfill is only for SQL migrations", line=d.line, field="Backfill",
                         hint="remove the directive")
    params = dict(_PARAM.findall(d.value))
    unknown = set(params) - {"table", "key", "batch_size"}
    if unknown or "table" not in params or "key" not in params:
        what = f"unknown parameter {sorted(unknown)[0]!r}" if unknown else "Backfill needs table= and key="
        raise ParseError(path, what, line=d.line, field="Backfill", hint=hint)
    if "batch_size" in params:
        m.settings.batch_size = fields.integer(path, params["batch_size"], d.line, "batch_size")
    steps = m.phases.get("migrate", [])
    after = [s for s in steps if s.line > d.line]
    if not after:
        raise ParseError(path, "Backfill is not followed by its UPDATE statement", line=d.line, field="Backfill",
                         hint=hint)
    update = after[0]
    if not re.search(r"(?<![:\w]):lo\b", update.content) or not re.search(r"(?<![:\w]):hi\b", update.content):
        raise ParseError(path, "the backfill statement must use both :lo and :hi", line=update.line,
                         field="Backfill", hint=hint)
    steps.remove(update)
    m.backfill = Backfill(table=params["table"], key=params["key"], update=update.content)
