"""TypeScript/JavaScript modules exporting the seed's ``Migration`` object, read with tree-sitter.

Found, in this order: ``export const migration = {...}``, ``export default {...}`` (or
``export default migration``), ``exports.migration = ...``, ``module.exports = ...``,
``exports.default = ...``, then any top-level ``const migration = ...``. ``as``/
``satisfies`` casts, parentheses and a wrapping call with one object argument
(``defineMigration({...})``) are looked through.

Values are evaluated statically: string, template (``${...}`` only when the
substitution is itself a literal), number, boolean, null, arrays, objects,
``new Date('...')``, ``-n``, string ``+``, tagged templates ``sql``/``cypher``/``dedent``/
``String.raw``, and identifiers bound to such values by a top-level ``const``.
Anything else is left unresolved, and a ParseError only if a needed field holds it.

A module exporting ``up``/``down`` functions instead (knex, custom runners) is read for
the literal queries they run (``session.run('…')``, ``knex.raw('…')``, ``client.query('…')``);
when there are none its steps are code: it parses with no phases, ``metadata["opaque"]``.
"""

from __future__ import annotations

from typing import Any

from registry.model import Migration
from registry.parse.build import Builder, Unresolved, src
from registry.parse.errors import ParseError
from registry.parse.identity import identify

_LANGUAGES: dict[str, Any] = {}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0", "\n": ""}
_TAGS = {"sql", "cypher", "dedent", "raw", "SQL", "gql"}
_UNWRAP = {"as_expression", "satisfies_expression", "parenthesized_expression", "non_null_expression",
           "type_assertion"}


def _parser(ext: str):
    from tree_sitter import Language, Parser

    typescript = ext in ("ts", "mts", "cts")
    key = "ts" if typescript else "js"
    if key not in _LANGUAGES:
        if typescript:
            import tree_sitter_typescript

            _LANGUAGES[key] = Language(tree_sitter_typescript.language_typescript())
        else:
            import tree_sitter_javascript

            _LANGUAGES[key] = Language(tree_sitter_javascript.language())
    return Parser(_LANGUAGES[key])


def _line(node) -> int:
    return node.start_point[0] + 1


def _first_error(node):
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == "ERROR" or n.is_missing:
            return n
        if n.has_error:
            stack.extend(reversed(n.children))
    return None


def _unescape(seq: str) -> str:
    body = seq[1:]
    if body[:1] in _SIMPLE_ESCAPES and not (body[:1] == "0" and len(body) > 1):
        return _SIMPLE_ESCAPES[body[0]]
    if body.startswith("x"):
        return chr(int(body[1:3], 16))
    if body.startswith("u{"):
        return chr(int(body[2:-1], 16))
    if body.startswith("u"):
        return chr(int(body[1:5], 16))
    if body.startswith("\r\n"):
        return ""
    return body


class _Evaluator:
    def __init__(self, root, text: bytes):
        self.root, self.text = root, text
        self.consts: dict[str, Any] = {}
        self.exports: dict[str, Any] = {}
        self.resolving: set[str] = set()
        self._index()

    def _index(self) -> None:
        for stmt in self.root.named_children:
            exported = stmt.type == "export_statement"
            decl = stmt.child_by_field_name("declaration") if exported else stmt
            if decl is not None and decl.type in ("lexical_declaration", "variable_declaration"):
                for d in decl.named_children:
                    if d.type == "variable_declarator":
                        name, value = d.child_by_field_name("name"), d.child_by_field_name("value")
                        if name is not None and name.type == "identifier" and value is not None:
                            self.consts[name.text.decode()] = value
                            if exported:
                                self.exports[name.text.decode()] = value
            elif decl is not None and decl.type == "function_declaration" and exported:
                name = decl.child_by_field_name("name")
                if name is not None:
                    self.exports[name.text.decode()] = decl
            if exported and stmt.child_by_field_name("value") is not None:
                self.exports["default"] = stmt.child_by_field_name("value")
            if stmt.type == "expression_statement":
                expr = stmt.named_children[0] if stmt.named_children else None
                if expr is not None and expr.type == "assignment_expression":
                    left, right = expr.child_by_field_name("left"), expr.child_by_field_name("right")
                    target = left.text.decode() if left is not None else ""
                    if target in ("module.exports", "exports.default", "module.exports.default"):
                        self.exports["default"] = right
                    elif target.startswith(("exports.", "module.exports.")):
                        self.exports[target.rsplit(".", 1)[1]] = right

    def migration_node(self):
        for key in ("migration", "default"):
            node = self.exports.get(key)
            if node is not None:
                return self.unwrap(node)
        if "migration" in self.consts:
            return self.unwrap(self.consts["migration"])
        return None

    def unwrap(self, node):
        while True:
            if node.type in _UNWRAP and node.named_children:
                node = node.named_children[0]
            elif node.type == "identifier" and node.text.decode() in self.consts \
                    and node.text.decode() not in self.resolving:
                node = self.consts[node.text.decode()]
            elif node.type == "call_expression":
                args = node.child_by_field_name("arguments")
                objs = [a for a in (args.named_children if args is not None else []) if a.type == "object"]
                if len(objs) != 1:
                    return node
                node = objs[0]
            else:
                return node

    def unresolved(self, node, reason: str | None = None) -> Unresolved:
        text = node.text.decode("utf-8", "replace").split("\n", 1)[0][:80]
        return Unresolved(_line(node), text, reason or "cannot be evaluated without running the module")

    def eval(self, node):
        t = node.type
        line = _line(node)
        if t in _UNWRAP and node.named_children:
            return self.eval(node.named_children[0])
        if t == "string":
            return src("".join(self._piece(c) for c in node.named_children), line)
        if t == "template_string":
            return self.template(node)
        if t == "number":
            return self.number(node)
        if t in ("true", "false"):
            return t == "true"
        if t in ("null", "undefined"):
            return None
        if t == "array":
            return src([self.eval(c) for c in node.named_children if c.type != "comment"], line)
        if t == "object":
            return self.object(node)
        if t == "unary_expression":
            op, arg = node.child_by_field_name("operator"), node.child_by_field_name("argument")
            value = self.eval(arg)
            if op is not None and op.type == "-" and isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
            if op is not None and op.type == "!" and isinstance(value, (bool, int)):
                return not value
            return self.unresolved(node)
        if t == "new_expression":
            ctor, args = node.child_by_field_name("constructor"), node.child_by_field_name("arguments")
            if ctor is not None and ctor.text == b"Date" and args is not None and len(args.named_children) == 1:
                value = self.eval(args.named_children[0])
                if isinstance(value, str):
                    return src(value, line)
            return self.unresolved(node)
        if t == "binary_expression":
            op = node.child_by_field_name("operator")
            left, right = self.eval(node.child_by_field_name("left")), self.eval(node.child_by_field_name("right"))
            if op is not None and op.type == "+" and isinstance(left, str) and isinstance(right, (str, int)):
                return src(str(left) + str(right), getattr(left, "line", line))
            return self.unresolved(node)
        if t == "identifier":
            name = node.text.decode()
            if name in self.consts and name not in self.resolving:
                self.resolving.add(name)
                try:
                    return self.eval(self.consts[name])
                finally:
                    self.resolving.discard(name)
            return self.unresolved(node, f"refers to `{name}`, which is not a constant defined in the module")
        if t == "call_expression":
            fn, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
            tag = fn.text.decode().rsplit(".", 1)[-1] if fn is not None else ""
            if args is not None and args.type == "template_string" and tag in _TAGS:
                return self.template(args, raw=tag == "raw")
            return self.unresolved(node)
        return self.unresolved(node)

    def _piece(self, child, raw: bool = False) -> str:
        text = child.text.decode("utf-8")
        if child.type == "escape_sequence":
            return text if raw else _unescape(text)
        return text

    def template(self, node, raw: bool = False):
        parts: list[str] = []
        for child in node.named_children:
            if child.type == "template_substitution":
                inner = child.named_children[0] if child.named_children else None
                value = self.eval(inner) if inner is not None else None
                if isinstance(value, Unresolved) or isinstance(value, (dict, list)) or value is None:
                    return Unresolved(_line(child), child.text.decode("utf-8", "replace")[:80],
                                      "is a template literal with a ${...} substitution that is not a constant")
                parts.append(str(value).lower() if isinstance(value, bool) else str(value))
            else:
                parts.append(self._piece(child, raw))
        return src("".join(parts), _line(node))

    def number(self, node):
        text = node.text.decode().replace("_", "")
        try:
            if text.lower().startswith(("0x", "0o", "0b")):
                return int(text, 0)
            value = float(text)
            return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
        except ValueError:
            return self.unresolved(node)

    def object(self, node):
        out: dict[str, Any] = {}
        for child in node.named_children:
            if child.type == "pair":
                key_node, value_node = child.child_by_field_name("key"), child.child_by_field_name("value")
                if key_node.type in ("property_identifier", "number"):
                    key = key_node.text.decode()
                elif key_node.type == "string":
                    key = "".join(self._piece(c) for c in key_node.named_children)
                else:
                    continue
                out[key] = self.eval(value_node)
            elif child.type == "shorthand_property_identifier":
                name = child.text.decode()
                if name in self.consts and name not in self.resolving:
                    self.resolving.add(name)
                    try:
                        out[name] = self.eval(self.consts[name])
                    finally:
                        self.resolving.discard(name)
                else:
                    out[name] = self.unresolved(child)
            elif child.type == "method_definition":
                name = child.child_by_field_name("name")
                if name is not None:
                    out[name.text.decode()] = self.unresolved(child, "is a function")
        return src(out, _line(node))


def parse_module(path: str, text: str, checksum: str, ext: str, database: str | None) -> Migration:
    """The migration a TypeScript/JavaScript module exports (never executed)."""
    data = text.encode("utf-8")
    tree = _parser(ext).parse(data)
    if tree.root_node.has_error:
        bad = _first_error(tree.root_node)
        line = _line(bad) if bad is not None else None
        snippet = bad.text.decode("utf-8", "replace").split("\n", 1)[0][:40] if bad is not None else ""
        what = f"missing {bad.type}" if bad is not None and bad.is_missing else f"unexpected {snippet!r}"
        raise ParseError(path, f"{'TypeScript' if ext.endswith('ts') else 'JavaScript'} does not parse: {what}",
                         line=line, field="module", hint="fix the syntax (the file does not parse)")
    try:
        return _extract(path, tree, data, checksum, database, ext)
    except RecursionError:
        raise ParseError(path, "values nested too deeply to read", field="module",
                         hint="flatten the migration object") from None


def _extract(path: str, tree, data: bytes, checksum: str, database: str | None, ext: str) -> Migration:
    ev = _Evaluator(tree.root_node, data)
    node = ev.migration_node()
    if node is not None and node.type == "object":
        obj = ev.eval(node)
        if isinstance(obj.get("migration"), dict):      # module.exports = { migration }
            obj = obj["migration"]
        if any(k in obj for k in ("phases", "id", "version")):
            return Builder(path, obj, _line(node), checksum, database, "module").build()
    functions = _up_down(ev, node)
    if functions:
        return _code_migration(path, checksum, database, ev, functions)
    raise ParseError(path, "no exported Migration object", line=_line(node) if node is not None else None,
                     field="migration", hint="export it: `export const migration: Migration = { id, version, "
                     "phases: {...} }` (or `export default {...}`)")


_QUERY_METHODS = {"run": "cypher", "executeQuery": "cypher", "writeTransaction": "cypher",
                  "query": "sql", "raw": "sql", "execute": "sql", "none": "sql", "multi": "sql"}


def _up_down(ev: _Evaluator, node) -> dict:
    """The ``up``/``down`` functions a module exports (named exports or methods of the exported object)."""
    found = {k: v for k, v in ev.exports.items() if k in ("up", "down")}
    if node is not None and node.type == "object":
        for child in node.named_children:
            key = child.child_by_field_name("name") if child.type == "method_definition" else \
                child.child_by_field_name("key") if child.type == "pair" else None
            if key is not None and key.text.decode() in ("up", "down"):
                found.setdefault(key.text.decode(), child)
    return found


def _literal_calls(ev: _Evaluator, fn) -> list[tuple[str, str, int]]:
    """(kind, text, line) of ``x.run('…')`` / ``x.query(`…`)`` / ``knex.raw('…')`` calls with a literal first argument."""
    out = []
    stack = [fn]
    while stack:
        n = stack.pop()
        if n.type == "call_expression":
            callee, args = n.child_by_field_name("function"), n.child_by_field_name("arguments")
            prop = callee.child_by_field_name("property") if callee is not None and \
                callee.type == "member_expression" else None
            method = prop.text.decode() if prop is not None else ""
            if method in _QUERY_METHODS and args is not None and args.named_children:
                value = ev.eval(args.named_children[0])
                if isinstance(value, str) and value.strip():
                    out.append((_QUERY_METHODS[method], value, getattr(value, "line", _line(n))))
        stack.extend(reversed(n.named_children))
    return out


def _code_migration(path: str, checksum: str, database: str | None, ev: _Evaluator, functions: dict) -> Migration:
    """A module whose steps are code (``up``/``down``): the literal queries it runs, else an opaque migration."""
    from registry.parse import fields

    up = _literal_calls(ev, functions["up"]) if "up" in functions else []
    down = _literal_calls(ev, functions["down"]) if "down" in functions else []
    kinds = {k for k, _, _ in up + down}
    if database is None and ("neo4j" in path.lower() or kinds == {"cypher"}):
        database = "neo4j"
    if not up:
        ident = identify(path)
        m = Migration(id=ident.id, name=ident.name, path=path, checksum=checksum,
                      scheme=ident.scheme if ident.scheme != "script" else "module",
                      database=fields.database(path, database, None, "database") if database else "postgresql",
                      type=ident.type or "schema", created=ident.created)
        m.metadata = {"opaque": True, "source": "module", "warnings": [
            "the module exports up/down functions whose steps are code mreg cannot extract"]}
        if ident.legacy is not None:
            m.metadata["legacy"] = ident.legacy
        return m
    kind = "cypher" if database == "neo4j" else "sql"
    obj = src({"phases": src({"expand": src([src({"id": f"up.{i}", "type": kind, "content": text}, line)
                                             for i, (_, text, line) in enumerate(up, start=1)], 1)}, 1),
               "rollback": src({"expand": src([src({"id": f"down.{i}", "type": kind, "content": text}, line)
                                               for i, (_, text, line) in enumerate(down, start=1)], 1)}, 1)
               if down else src({}, 1)}, 1)
    m = Builder(path, obj, 1, checksum, database, "module").build()
    m.metadata["code_steps"] = True
    m.metadata["warnings"].append("steps are the literal queries up()/down() run; other code in them is not "
                                  "represented")
    return m
