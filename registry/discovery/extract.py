"""Extract migrations from TypeScript/JavaScript modules with tree-sitter (no regular expressions).

Two shapes are recognised:

- a module exporting the seed's ``Migration`` object (``export const migration: Migration =
  {id, version, dependencies, phases: {expand: [{type, content}]}, rollback, validation, …}``):
  its literal values are evaluated from the syntax tree; step contents are the SQL/Cypher strings;
- a knex module (``exports.up = …`` / ``export async function up(knex)``): the SQL of its
  ``knex.raw(`…`)`` calls is extracted, in order.

Anything else (framework code, helpers, types) is not a migration: :func:`extract` returns None.
A module that does not parse raises :class:`ModuleSyntaxError` with the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from registry.errors import MregError

PHASES = ("expand", "migrate", "contract")


class ModuleSyntaxError(MregError):
    """A TypeScript/JavaScript file in a migrations folder does not parse."""

    exit_code = 2


@dataclass
class ModuleMigration:
    """What a module declares: the seed's Migration fields, or a knex module's raw SQL."""

    shape: str  # "migration-object" | "knex"
    fields: dict = field(default_factory=dict)  # id, name, description, type, version, dependencies, metadata, settings
    phases: dict[str, list[dict]] = field(default_factory=dict)  # phase -> [{"type", "content", "name"}]
    rollback: dict[str, list[dict]] = field(default_factory=dict)
    validation: list = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # fields whose value is not a literal


@lru_cache(maxsize=4)
def _parser(lang: str):
    import tree_sitter as ts

    if lang == "typescript":
        import tree_sitter_typescript as mod

        language = ts.Language(mod.language_typescript())
    else:
        import tree_sitter_javascript as mod

        language = ts.Language(mod.language())
    return ts.Parser(language)


_UNKNOWN = object()


def _value(node, unresolved: list[str], where: str):
    """The literal value of an expression node, or _UNKNOWN."""
    t = node.type
    if t in ("parenthesized_expression", "as_expression", "satisfies_expression", "non_null_expression",
             "type_assertion"):
        return _value(node.named_children[0], unresolved, where)
    if t == "string":
        return "".join(c.text.decode("utf-8") if c.type == "string_fragment" else _escape(c)
                       for c in node.named_children)
    if t == "template_string":
        parts = []
        for c in node.named_children:
            if c.type == "string_fragment":
                parts.append(c.text.decode("utf-8"))
            elif c.type == "escape_sequence":
                parts.append(_escape(c))
            else:  # template_substitution: ${…} cannot be evaluated statically
                unresolved.append(where)
                parts.append(c.text.decode("utf-8"))
        return "".join(parts)
    if t == "number":
        text = node.text.decode()
        try:
            return int(text)
        except ValueError:
            return float(text)
    if t in ("true", "false"):
        return t == "true"
    if t in ("null", "undefined"):
        return None
    if t == "array":
        return [_value(c, unresolved, f"{where}[{i}]") for i, c in enumerate(node.named_children)
                if c.type != "comment"]
    if t == "object":
        out = {}
        for pair in node.named_children:
            if pair.type != "pair":
                continue
            key_node = pair.child_by_field_name("key")
            val_node = pair.child_by_field_name("value")
            key = _key(key_node)
            if key is None or val_node is None:
                continue
            out[key] = _value(val_node, unresolved, f"{where}.{key}" if where else key)
        return out
    if t == "new_expression":  # new Date("2025-11-20")
        args = node.child_by_field_name("arguments")
        if args is not None and args.named_children:
            return _value(args.named_children[0], unresolved, where)
    unresolved.append(where)
    return _UNKNOWN


def _escape(node) -> str:
    text = node.text.decode("utf-8")
    return {"\\n": "\n", "\\t": "\t", "\\'": "'", '\\"': '"', "\\\\": "\\", "\\`": "`"}.get(text, text)


def _key(node) -> str | None:
    if node is None:
        return None
    if node.type in ("property_identifier", "identifier"):
        return node.text.decode("utf-8")
    if node.type == "string":
        return "".join(c.text.decode("utf-8") for c in node.named_children)
    return None


def _iter(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.named_children))


def _first_error_line(node) -> int:
    for n in _iter(node):
        if n.type == "ERROR" or n.is_missing:
            return n.start_point[0] + 1
    return 1


def _steps(value, kind_default: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if not isinstance(value, dict):
        return out
    for phase in PHASES:
        steps = value.get(phase)
        if not isinstance(steps, list):
            continue
        out[phase] = [
            {"type": str(s.get("type") or kind_default), "content": s.get("content"),
             "name": str(s.get("name") or s.get("id") or ""), "rollback": s.get("rollback")}
            for s in steps if isinstance(s, dict)
        ]
    return out


def extract(path: str, data: bytes) -> ModuleMigration | None:
    """The migration a module at ``path`` declares, None if it declares none."""
    lang = "typescript" if path.lower().endswith((".ts", ".mts", ".cts")) else "javascript"
    tree = _parser(lang).parse(data)
    root = tree.root_node
    if root.has_error:
        line = _first_error_line(root)
        raise ModuleSyntaxError(
            f"{path}:{line}: {lang} does not parse",
            hint="fix the syntax at that line (the file is skipped until it parses)",
            file=path, line=line,
        )
    for node in _iter(root):
        if node.type != "object":
            continue
        keys = {_key(p.child_by_field_name("key")) for p in node.named_children if p.type == "pair"}
        if "id" in keys and "phases" in keys:
            unresolved: list[str] = []
            obj = _value(node, unresolved, "")
            kind = "cypher" if obj.get("type") == "neo4j" else "sql"
            fields = {k: v for k, v in obj.items()
                      if k not in ("phases", "rollback", "validation") and v is not _UNKNOWN}
            return ModuleMigration(
                "migration-object", fields, _steps(obj.get("phases"), kind), _steps(obj.get("rollback"), kind),
                [v for v in obj.get("validation") or [] if isinstance(v, dict)]
                if isinstance(obj.get("validation"), list) else [],
                unresolved,
            )
    if _exports_up(root):
        raws = _raw_calls(root)
        return ModuleMigration("knex", {}, {"expand": [{"type": "sql", "content": r, "name": ""} for r in raws]})
    return None


def _exports_up(root) -> bool:
    for n in _iter(root):
        if n.type == "assignment_expression":
            left = n.child_by_field_name("left")
            if left is not None and left.type == "member_expression":
                prop = left.child_by_field_name("property")
                if prop is not None and prop.text == b"up":
                    return True
        if n.type == "function_declaration" and n.parent is not None and n.parent.type == "export_statement":
            name = n.child_by_field_name("name")
            if name is not None and name.text == b"up":
                return True
    return False


def _raw_calls(root) -> list[str]:
    out = []
    for n in _iter(root):
        if n.type != "call_expression":
            continue
        fn = n.child_by_field_name("function")
        if fn is None or fn.type != "member_expression":
            continue
        prop = fn.child_by_field_name("property")
        if prop is None or prop.text != b"raw":
            continue
        args = n.child_by_field_name("arguments")
        if args is not None and args.named_children:
            val = _value(args.named_children[0], [], "raw")
            if isinstance(val, str):
                out.append(val)
    return out
