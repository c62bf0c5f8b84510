"""The error every migration parser raises: a file that cannot be read as a migration."""

from __future__ import annotations

from registry.errors import ConfigError


class ParseError(ConfigError):
    """A migration file is malformed; ``path``, ``line`` and ``field`` say where, ``hint`` how to fix it.

    The message always starts with ``path:line:`` (line omitted when unknown) so
    editors and the pre-commit hook can jump to the spot.
    """

    def __init__(self, path: str, message: str, *, line: int | None = None,
                 field: str | None = None, hint: str | None = None) -> None:
        where = f"{path}:{line}" if line else path
        what = f" [{field}]" if field else ""
        super().__init__(f"{where}:{what} {message}", hint=hint, path=path, line=line, field=field)
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
