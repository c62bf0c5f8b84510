"""The seed's ``Migration`` object (from a ``.py`` or TypeScript/JavaScript module) into ``Migration``.

Both module readers evaluate the object statically into plain values that
remember their line (``Src*`` below) and hand them here, so the field rules are
written once. Field names are accepted in the seed's camelCase and in snake_case.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.model import MIGRATION_TYPES, PHASES, Backfill, Migration, Step, ValidationRule
from registry.parse import cypher, fields, redis, sql
from registry.parse.errors import ParseError
from registry.parse.identity import identify


class SrcStr(str):
    """A string value read from a module, with the line of its first character."""

    line: int = 0


class SrcDict(dict):
    line: int = 0


class SrcList(list):
    line: int = 0


def src(value, line: int):
    """Attach ``line`` to a str/dict/list value (other values are returned as they are)."""
    if isinstance(value, str) and not isinstance(value, SrcStr):
        value = SrcStr(value)
    elif isinstance(value, dict) and not isinstance(value, SrcDict):
        value = SrcDict(value)
    elif isinstance(value, list) and not isinstance(value, SrcList):
        value = SrcList(value)
    if isinstance(value, (SrcStr, SrcDict, SrcList)):
        value.line = line
    return value


@dataclass
class Unresolved:
    """A value the reader could not compute without running the module (a variable, a call...)."""

    line: int
    text: str
    reason: str = "cannot be evaluated without running the module"


def line_of(value, default: int | None = None) -> int | None:
    line = getattr(value, "line", 0)
    return line or default


KINDS = ("sql", "cypher", "redis")
_SOFT_METADATA = {"author", "createdAt", "created_at", "created", "estimatedDuration", "estimated_duration"}
_DEFAULT_KIND = {"postgresql": "sql", "timescale": "sql", "neo4j": "cypher", "redis": "redis"}
_KIND_DATABASE = {"sql": "postgresql", "cypher": "neo4j", "redis": "redis"}


class Builder:
    """Turns one evaluated object into a Migration, raising ParseError with the value's line."""

    def __init__(self, path: str, obj: dict, line: int, checksum: str, database: str | None, source: str):
        self.path, self.obj, self.line, self.checksum = path, obj, line, checksum
        self.given_database, self.source = database, source
        self.warnings: list[str] = []

    # -- access helpers ------------------------------------------------------------------
    def fail(self, message: str, value=None, field: str | None = None, hint: str | None = None,
             line: int | None = None):
        raise ParseError(self.path, message, line=line or line_of(value, self.line), field=field, hint=hint)

    def get(self, obj: dict, *names: str, default=None, field: str | None = None):
        for name in names:
            if name in obj:
                value = obj[name]
                if isinstance(value, Unresolved):
                    self.fail(f"`{name}` {value.reason}: {value.text}", value, field or name,
                              "write the value as a literal (a string without ${...}, a number, a list)",
                              line=value.line)
                return value
        return default

    def need_str(self, value, field: str) -> str:
        if not isinstance(value, str):
            self.fail(f"`{field}` must be a string", value, field, f"write {field}: '...'")
        return value

    def need_dict(self, value, field: str) -> dict:
        if not isinstance(value, dict):
            self.fail(f"`{field}` must be an object", value, field, f"write {field}: {{ ... }}")
        return value

    def need_list(self, value, field: str) -> list:
        if not isinstance(value, list):
            self.fail(f"`{field}` must be a list", value, field, f"write {field}: [ ... ]")
        return value

    # -- the migration -------------------------------------------------------------------
    def build(self) -> Migration:
        o, path = self.obj, self.path
        ident = identify(path)
        m = Migration(id=ident.id, name=ident.name, database="postgresql", path=path, checksum=self.checksum,
                      scheme=ident.scheme if ident.scheme != "script" else "module")
        if (v := self.get(o, "id")) is not None:
            m.id = fields.migration_id(path, self.need_str(v, "id"), line_of(v, self.line), "id")
        m.name = self.need_str(self.get(o, "name", default=m.name), "name")
        m.description = self.need_str(self.get(o, "description", default=m.name), "description")
        if (v := self.get(o, "version")) is not None:
            m.version = fields.version(path, v, line_of(v, self.line), "version")
        if (v := self.get(o, "dependencies")) is not None:
            m.dependencies = fields.dependencies(path, self.need_list(v, "dependencies"), line_of(v), "dependencies")
        if (v := self.get(o, "txmode")) is not None:
            m.txmode = fields.txmode(path, v, line_of(v, self.line))
        declared_type = self.get(o, "type")
        mtype = self.get(o, "migrationType", "migration_type", "kind")
        if declared_type is not None and str(declared_type).lower() in MIGRATION_TYPES:
            mtype, declared_type = declared_type, None
        database = self.get(o, "database")
        self._metadata(m, o)
        self._settings(m, o)
        kinds = self._kinds(o)
        m.database = self._database(database or declared_type, kinds)
        default_kind = _DEFAULT_KIND[m.database]
        nodes: list = []
        phases = self.need_dict(self.get(o, "phases", default=SrcDict()), "phases")
        step_rollbacks: dict[str, list[Step]] = {}
        for phase, steps in phases.items():
            if phase not in PHASES:
                self.fail(f"unknown phase `{phase}`", phases, "phases", "phases are expand, migrate, contract")
            for raw in self.need_list(steps, f"phases.{phase}"):
                made, back, stmt_nodes = self._step(raw, phase, default_kind, m.txmode)
                m.phases.setdefault(phase, []).extend(made)
                nodes.extend(stmt_nodes)
                if back:
                    step_rollbacks.setdefault(phase, [])[:0] = back
        rollback = self.need_dict(self.get(o, "rollback", default=SrcDict()), "rollback")
        for phase, steps in rollback.items():
            if phase not in PHASES:
                self.fail(f"unknown rollback phase `{phase}`", rollback, "rollback",
                          "rollback phases are expand, migrate, contract")
            for raw in self.need_list(steps, f"rollback.{phase}"):
                made, _, _ = self._step(raw, f"rollback_{phase}", default_kind, m.txmode)
                m.rollback.setdefault(phase, []).extend(made)
        for phase, steps in step_rollbacks.items():
            m.rollback.setdefault(phase, steps)
        for i, rule in enumerate(self.need_list(self.get(o, "validation", default=SrcList()), "validation")):
            m.validation.append(self._rule(rule, i, default_kind))
        if (bf := self.get(o, "backfill")) is not None:
            bf = self.need_dict(bf, "backfill")
            m.backfill = Backfill(**{k: self.need_str(self.get(bf, k), f"backfill.{k}") for k in ("table", "key", "update")})
        m.phases = {p: s for p, s in m.phases.items() if s}
        if m.database == "postgresql" and nodes and sql.uses_timescale(nodes, "\n".join(n.text for n in nodes)) \
                and not (database or declared_type):
            m.database = "timescale"
        if mtype is not None:
            m.type = fields.migration_type(path, mtype, line_of(mtype, self.line), "type")
        elif ident.type:
            m.type = ident.type
        else:
            from registry.naming import infer_type

            m.type = infer_type(m)
        m.metadata.update({"warnings": self.warnings, "source": self.source})
        if ident.legacy is not None:
            m.metadata["legacy"] = ident.legacy
        return m

    def _metadata(self, m: Migration, o: dict) -> None:
        meta = self.get(o, "metadata", default=SrcDict())
        meta = self.need_dict(meta, "metadata")
        both = {**o, **meta}
        for key, value in list(both.items()):
            # descriptive fields computed at run time (`createdAt: new Date()`) are skipped, not fatal
            if isinstance(value, Unresolved) and key in _SOFT_METADATA:
                self.warnings.append(f"line {value.line}: `{key}` {value.reason}; ignored")
                del both[key]
        if (v := self.get(both, "author")) is not None:
            m.author = self.need_str(v, "author")
        if (v := self.get(both, "createdAt", "created_at", "created")) is not None:
            m.created = fields.created(self.path, v, line_of(v, self.line), "createdAt")
        if (v := self.get(both, "breakingChange", "breaking_change", "breaking")) is not None:
            m.breaking = fields.boolean(self.path, v, line_of(v, self.line), "breakingChange")
        if (v := self.get(both, "tenantScoped", "tenant_scoped")) is not None:
            m.tenant_scoped = fields.boolean(self.path, v, line_of(v, self.line), "tenantScoped")
        known = {"author", "createdAt", "created_at", "created", "breakingChange", "breaking_change", "breaking",
                 "tenantScoped", "tenant_scoped"}
        m.metadata = {"object": {k: strip_src(v) for k, v in meta.items()
                                 if k not in known and not isinstance(v, Unresolved)}}
        if not m.created:
            m.created = identify(self.path).created

    def _settings(self, m: Migration, o: dict) -> None:
        s = self.need_dict(self.get(o, "settings", default=SrcDict()), "settings")
        ints = {"batchSize": "batch_size", "pauseBetweenBatches": "pause_between_batches",
                "maxRetries": "max_retries", "timeout": "timeout", "lockTimeout": "lock_timeout",
                "maxBatchMs": "max_batch_ms", "dutyCycle": "duty_cycle", "checkpointInterval": "checkpoint_interval",
                "commitBackoff": "commit_backoff"}
        for key, value in s.items():
            name = ints.get(key, key)
            if name in ints.values():
                check = fields.duty_cycle if name == "duty_cycle" else fields.integer
                setattr(m.settings, name, check(self.path, self.get(s, key), line_of(s, self.line),
                                                f"settings.{key}"))
            elif name in ("requiresMaintenanceWindow", "requires_maintenance_window"):
                m.settings.requires_maintenance_window = fields.boolean(
                    self.path, self.get(s, key), line_of(s, self.line), f"settings.{key}")
            else:
                self.fail(f"unknown setting `{key}`", s, "settings",
                          "settings are batchSize, pauseBetweenBatches, maxBatchMs, dutyCycle, "
                          "checkpointInterval, commitBackoff, maxRetries, timeout, lockTimeout, requiresMaintenanceWindow")

    def _kinds(self, o: dict) -> set[str]:
        kinds = set()
        for group in ("phases", "rollback"):
            value = o.get(group)
            if isinstance(value, dict):
                for steps in value.values():
                    for raw in steps if isinstance(steps, list) else ():
                        if isinstance(raw, dict) and isinstance(raw.get("type"), str):
                            kinds.add(raw["type"].lower())
        return kinds & set(KINDS)

    def _database(self, declared, kinds: set[str]) -> str:
        if declared is not None and str(declared).lower() != "mixed":
            return fields.database(self.path, declared, line_of(declared, self.line), "type")
        if self.given_database:
            return fields.database(self.path, self.given_database, None, "database")
        if len(kinds) > 1:
            self.fail(f"a migration mixing {' and '.join(sorted(kinds))} steps", declared, "type",
                      "split it into one migration per database (mreg applies a migration to one target)")
        return _KIND_DATABASE[next(iter(kinds))] if kinds else "postgresql"

    def _step(self, raw, label: str, default_kind: str, txmode: str):
        """Steps for one seed step (one per statement of its content), its rollback steps, SQL nodes."""
        if isinstance(raw, str):
            raw = src({"content": raw}, line_of(raw, self.line))
        step = self.need_dict(raw, label)
        name = str(self.get(step, "id", "name", default=label))
        kind = str(self.get(step, "type", default=default_kind)).lower()
        if kind not in KINDS:
            self.fail(f"step `{name}` has type {kind!r}", step, "type", "step types are sql, cypher, redis")
        content = self.get(step, "content", "sql", "cypher", "query")
        if content is None:
            self.fail(f"step `{name}` has no content", step, "content", "add content: `...` with the statements")
        content = self.need_str(content, "content")
        retryable = self.get(step, "retryable", default=True)
        made, nodes = self._statements(content, kind, name, txmode, bool(retryable), line_of(content, self.line))
        back = []
        if (rb := self.get(step, "rollback")) is not None:
            rb_text = self.need_str(rb, "rollback")
            back, _ = self._statements(rb_text, kind, f"{name}.rollback", txmode, True, line_of(rb, self.line))
        return made, back, nodes

    def _statements(self, content: str, kind: str, name: str, txmode: str, retryable: bool, line: int):
        steps: list[Step] = []
        nodes: list = []
        if kind == "sql":
            statements, _ = sql.split(self.path, content, line)
            for st in statements:
                reason = sql.statement_autocommit_reason(st)
                if reason and txmode != "none":
                    self.warnings.append(f"line {st.line}: {reason} cannot run inside a transaction; this step "
                                         f"runs on its own outside one (set txmode: 'none' to say so)")
                nodes.append(st)
                steps.append(Step(st.text, "sql", name, st.line, txmode != "none" and reason is None, retryable,
                                  locks=st.locks and (st.locks,)))
        elif kind == "cypher":
            for st in cypher.split(self.path, content, line):
                steps.append(Step(st.text, "cypher", name, st.line, txmode != "none", retryable))
        else:
            for cmd in redis.split(self.path, content, line):
                steps.append(Step(cmd.text, "redis", name, cmd.line, txmode != "none", retryable))
        if len(steps) > 1:
            for i, s in enumerate(steps[1:], start=2):
                s.name = f"{name}#{i}"
        return steps, nodes

    def _rule(self, raw, index: int, default_kind: str) -> ValidationRule:
        rule = self.need_dict(raw, f"validation[{index}]")
        check = self.need_str(self.get(rule, "check", default=""), "check")
        if not check.strip():
            self.fail("a validation rule has no check", rule, "check",
                      "write check: 'sql:SELECT ...' (or cypher:/redis:)")
        lang, _, rest = check.partition(":")
        if lang.strip().lower() not in KINDS:
            check = f"{default_kind}:{check.strip()}"
        else:
            check = f"{lang.strip().lower()}:{rest.strip()}"
        kind = str(self.get(rule, "type", default="post")).lower()
        if kind not in ("pre", "post"):
            self.fail(f"validation type {kind!r}", rule, "validation.type", "use 'pre' or 'post'")
        return ValidationRule(
            name=str(self.get(rule, "name", default=f"check_{index + 1}")), type=kind, check=check.strip(),
            expected=strip_src(self.get(rule, "expectedResult", "expected_result", "expected")),
            critical=bool(self.get(rule, "critical", default=True)))


def strip_src(value):
    """Plain Python values (for JSON) from evaluated ones."""
    if isinstance(value, dict):
        return {str(k): strip_src(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_src(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value
