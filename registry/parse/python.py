"""``.py`` migrations: ``migration = Migration(...)`` read with ``ast``, never executed.

Migrations come from Git history, so running them is out of the question. The
object's arguments are evaluated statically: literals, lists, dicts, calls of
``Migration``/``Step``/``MigrationStep``/``ValidationRule``/``Settings``/``Backfill``/
``dict`` with keyword arguments (read as dicts), ``textwrap.dedent`` of a literal,
``date``/``datetime`` of literals, string concatenation, and names bound to such
values at module level. Anything else in a field mreg needs is a ParseError.
"""

from __future__ import annotations

import ast
import textwrap
import warnings
from datetime import date, datetime

from registry.model import Migration
from registry.parse.build import Builder, Unresolved, src
from registry.parse.errors import ParseError

_RECORD_CALLS = {"Migration", "Step", "MigrationStep", "ValidationRule", "Settings", "Backfill", "dict"}


class _Evaluator:
    def __init__(self, path: str, text: str, tree: ast.Module):
        self.path, self.text = path, text
        self.names: dict[str, ast.AST] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.names[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.names[node.target.id] = node.value
        self.resolving: set[str] = set()

    def unresolved(self, node: ast.AST) -> Unresolved:
        return Unresolved(node.lineno, (ast.get_source_segment(self.text, node) or "")[:80])

    def eval(self, node: ast.AST):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant):
            return src(node.value, line)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return src([self.eval(e) for e in node.elts], line)
        if isinstance(node, ast.Dict):
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None or not isinstance(k, ast.Constant) or not isinstance(k.value, str):
                    return self.unresolved(node)
                out[k.value] = self.eval(v)
            return src(out, line)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.eval(node.left), self.eval(node.right)
            if isinstance(left, str) and isinstance(right, str):
                return src(str(left) + str(right), getattr(left, "line", line))
            if isinstance(left, list) and isinstance(right, list):
                return src(list(left) + list(right), line)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.eval(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        if isinstance(node, ast.JoinedStr):
            if all(isinstance(v, ast.Constant) for v in node.values):
                return src("".join(v.value for v in node.values), line)
            return Unresolved(line, "f-string", "is an f-string with substitutions; mreg cannot evaluate it")
        if isinstance(node, ast.Name):
            if node.id in self.names and node.id not in self.resolving:
                self.resolving.add(node.id)
                try:
                    return self.eval(self.names[node.id])
                finally:
                    self.resolving.discard(node.id)
            return Unresolved(line, node.id, f"refers to `{node.id}`, which is not a literal defined in the module")
        return self.unresolved(node)

    def call(self, node: ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        line = node.lineno
        if name in _RECORD_CALLS:
            if node.args:
                return Unresolved(line, name, f"`{name}(...)` takes keyword arguments only here")
            out = {}
            for kw in node.keywords:
                if kw.arg is None:
                    return self.unresolved(node)
                out[kw.arg] = self.eval(kw.value)
            return src(out, line)
        if name == "dedent" and len(node.args) == 1:
            value = self.eval(node.args[0])
            if isinstance(value, str):
                return src(textwrap.dedent(value), getattr(value, "line", line))
        if name in ("date", "datetime") and node.args and not node.keywords:
            args = [self.eval(a) for a in node.args]
            if all(isinstance(a, int) and not isinstance(a, bool) for a in args):
                try:
                    value = (date if name == "date" else datetime)(*args)
                except (TypeError, ValueError):
                    return self.unresolved(node)
                return src(value.isoformat(), line)
        return self.unresolved(node)


def parse_python(path: str, text: str, checksum: str, database: str | None) -> Migration:
    """The migration a ``.py`` module defines as ``migration = Migration(...)`` (not executed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # invalid escapes in someone's old module are not our output
            tree = ast.parse(text, path)
    except (RecursionError, MemoryError):
        raise ParseError(path, "the module is nested too deeply to read", field="python",
                         hint="flatten the migration object") from None
    except SyntaxError as exc:
        raise ParseError(path, f"Python syntax error: {exc.msg}", line=exc.lineno, field="python",
                         hint="fix the module so that `python -m py_compile` accepts it") from None
    evaluator = _Evaluator(path, text, tree)
    target = evaluator.names.get("migration")
    if target is None:
        raise ParseError(path, "no module-level `migration = Migration(...)`", field="migration",
                         hint="define `migration = Migration(id=..., version=..., phases={...})` at module level")
    try:
        obj = evaluator.eval(target)
    except RecursionError:
        raise ParseError(path, "values nested too deeply to read", line=target.lineno, field="migration",
                         hint="flatten the migration object") from None
    if isinstance(obj, Unresolved) or not isinstance(obj, dict):
        raise ParseError(path, "`migration` is not a Migration(...) call or a dict literal",
                         line=target.lineno, field="migration",
                         hint="write `migration = Migration(...)` with keyword arguments")
    return Builder(path, obj, target.lineno, checksum, database, "python").build()
