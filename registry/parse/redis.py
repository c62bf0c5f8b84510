"""Redis commands, one per line, split into arguments exactly as redis-cli does (``sdssplitargs``).

Double quotes take the escapes ``\\n \\r \\t \\b \\a \\\\ \\"`` and ``\\xHH``; single quotes
only ``\\'``; a closing quote must be followed by a space or the end of the line.
Lines starting with ``#`` are comments.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.parse.errors import ParseError

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
_HEX = "0123456789abcdefABCDEF"
_SPACE = " \t\n\v\f\r"  # C isspace(), as sdssplitargs uses


class RedisQuoteError(ValueError):
    """A line redis-cli would refuse: unbalanced quotes or a quote glued to the next word."""


@dataclass
class RedisCommand:
    """One command line: its text, its 1-based line and its arguments."""

    text: str
    line: int
    args: list[str]


def split_args(line: str) -> list[str]:
    """The arguments of one redis-cli command line (``sdssplitargs`` rules)."""
    args: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current: list[str] = []
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    raise RedisQuoteError("unbalanced double quote")
                c = line[i]
                if c == "\\" and i + 3 < n and line[i + 1] == "x" and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    current.append(chr(int(line[i + 2:i + 4], 16)))
                    i += 3
                elif c == "\\" and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == '"':
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise RedisQuoteError("closing quote must be followed by a space")
                    in_dq = False
                    i += 1
                    break
                else:
                    current.append(c)
                i += 1
            elif in_sq:
                if i >= n:
                    raise RedisQuoteError("unbalanced single quote")
                c = line[i]
                if c == "\\" and i + 1 < n and line[i + 1] == "'":
                    i += 1
                    current.append("'")
                elif c == "'":
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise RedisQuoteError("closing quote must be followed by a space")
                    in_sq = False
                    i += 1
                    break
                else:
                    current.append(c)
                i += 1
            else:
                if i >= n or line[i] in _SPACE:
                    break
                c = line[i]
                if c == '"':
                    in_dq = True
                elif c == "'":
                    in_sq = True
                else:
                    current.append(c)
                i += 1
        args.append("".join(current))


def split(path: str, text: str, first_line: int = 1) -> list[RedisCommand]:
    """The commands of ``text``, one per non-blank, non-``#`` line."""
    out = []
    for offset, raw in enumerate(text.split("\n")):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        line = first_line + offset
        try:
            args = split_args(stripped)
        except RedisQuoteError as exc:
            raise ParseError(path, f"redis command: {exc}", line=line, field="redis",
                             hint="quote as redis-cli does: \"...\" with \\ escapes or '...' with \\'") from None
        out.append(RedisCommand(stripped, line, args))
    return out
