"""Cypher statements: split on ``;`` outside strings, backtick names and comments."""

from __future__ import annotations

from dataclasses import dataclass

from registry.parse.errors import ParseError


@dataclass
class CypherStatement:
    """One Cypher statement: text without the trailing ``;`` and its 1-based start line."""

    text: str
    line: int


def split(path: str, text: str, first_line: int = 1) -> list[CypherStatement]:
    """Statements of ``text``; an unterminated string or comment is a ParseError at its opening line."""
    out: list[CypherStatement] = []
    i, n = 0, len(text)
    start = None          # offset of the current statement's first significant character
    line = first_line
    opened_at = (None, 0)  # (what, line) of an open string/comment
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in " \t\r":
            i += 1
            continue
        two = text[i:i + 2]
        if two == "//":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if two == "/*":
            j = text.find("*/", i + 2)
            if j < 0:
                raise ParseError(path, "unterminated /* comment", line=line, field="cypher",
                                 hint="close the comment with */")
            line += text.count("\n", i, j)
            i = j + 2
            continue
        if c == ";":
            if start is not None:
                out.append(CypherStatement(text[start:i].rstrip(), start_line))
            start = None
            i += 1
            continue
        if start is None:
            start, start_line = i, line
        if c in "'\"`":
            opened_at = (c, line)
            j = i + 1
            while j < n:
                d = text[j]
                if d == "\\" and c != "`":
                    j += 2
                    continue
                if d == c:
                    if c == "`" and text[j + 1:j + 2] == "`":   # `` inside a backtick name
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                what = {"'": "string", '"': "string", "`": "backtick name"}[c]
                raise ParseError(path, f"unterminated {what} opened with {c}", line=opened_at[1],
                                 field="cypher", hint=f"close it with a matching {c}")
            line += text.count("\n", i, j)
            i = j + 1
            continue
        i += 1
    if start is not None:
        out.append(CypherStatement(text[start:].rstrip(), start_line))
    return out
