"""Migration files into ``registry.model.Migration``: one entry point, one module per format.

``parse_migration(path, data)`` picks the format from the extension: ``.sql``,
``.cypher`` (``.cql``), ``.redis`` (script files with the seed's header and phase markers),
``.py`` (a ``migration = Migration(...)`` object read with ``ast``, never run),
``.ts``/``.js``/``.mjs``/``.cjs`` (a module exporting the seed's ``Migration``
object, read with tree-sitter). Every failure is a ``ParseError`` naming file,
line and field; nothing here executes the file.
"""

from __future__ import annotations

from registry.model import Migration, checksum_bytes
from registry.parse.errors import ParseError

SCRIPT_EXTENSIONS = ("sql", "cypher", "cql", "redis")
MODULE_EXTENSIONS = ("ts", "js", "mjs", "cjs", "mts", "cts")
EXTENSIONS = SCRIPT_EXTENSIONS + ("py",) + MODULE_EXTENSIONS

__all__ = ["parse_migration", "ParseError", "EXTENSIONS"]


def parse_migration(path: str, data: bytes, *, database: str | None = None) -> Migration:
    """Parse one migration file's bytes (``path`` names it and picks the format).

    ``database`` is what the caller knows (e.g. from the folder); a ``Database:``
    header wins over it, the extension and the content decide when neither says.
    """
    from registry.parse.sections import decode

    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    if ext not in EXTENSIONS:
        raise ParseError(path, f"not a migration file extension: .{ext}" if ext else "no file extension",
                         field="extension", hint=f"migration files end in .{', .'.join(EXTENSIONS)}")
    checksum = checksum_bytes(data)
    text = decode(path, data)
    if ext in SCRIPT_EXTENSIONS:
        from registry.parse.script import parse_script

        return parse_script(path, text, checksum, ext, database)
    if ext == "py":
        from registry.parse.python import parse_python

        return parse_python(path, text, checksum, database)
    from registry.parse.module import parse_module

    return parse_module(path, text, checksum, ext, database)
