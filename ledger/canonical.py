"""Canonical JSON (RFC 8785, JCS) for statements and leaves.

Every byte string the ledger signs or hashes is the RFC 8785 serialisation of
a JSON value made of objects, arrays, strings, booleans, null and integers
within ±(2**53 − 1). Floats are refused outright: their canonical form
depends on ECMAScript number formatting, and mreg never needs them.

``canonical_json`` takes the `rfc8785` package as the reference. For
validated values whose object keys are all ASCII (every value mreg writes),
``orjson.dumps(OPT_SORT_KEYS)`` (or, without orjson, Python's
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``)
produces the same bytes — same key order, same string escapes, same
integers — and is much faster; anything else goes through ``rfc8785``. The
property tests in ``tests/unit/test_ledger_canonical.py`` hold them together.
"""

from __future__ import annotations

import json

import rfc8785

from ledger.errors import LedgerError

try:  # a faster serialiser with the same output on validated values (tests hold them together)
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a dependency; json is the fallback
    _orjson = None

MAX_SAFE_INT = 2**53 - 1

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          check_circular=False, allow_nan=False).encode


class CanonicalError(LedgerError):
    """A value cannot be canonicalised, or bytes are not the canonical form of their value."""


def _check(value: object, path: str) -> bool:
    """Validate ``value`` recursively; return True when every object key is ASCII."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            return True
        raise CanonicalError(
            f"{path or 'value'}: integer {value} is outside ±(2**53-1)",
            hint="store large numbers as strings", field=path, found=value)
    if kind is dict:
        ascii_keys = True
        for key, item in value.items():
            if type(key) is not str:
                raise CanonicalError(f"{path or 'value'}: object key {key!r} is not a string",
                                     hint="use string keys only", field=path, found=repr(key))
            if not key.isascii():
                ascii_keys = False
            if not _check(item, f"{path}.{key}" if path else key):
                ascii_keys = False
        return ascii_keys
    if kind is list or kind is tuple:
        ok = True
        for i, item in enumerate(value):
            if not _check(item, f"{path}[{i}]"):
                ok = False
        return ok
    if kind is float or isinstance(value, float):
        raise CanonicalError(f"{path or 'value'}: floats are not allowed ({value!r})",
                             hint="use an integer (e.g. milliseconds) or a string",
                             field=path, found=repr(value))
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return _check(int(value), path)
    if isinstance(value, str):
        return True
    raise CanonicalError(f"{path or 'value'}: {type(value).__name__} is not a JSON value",
                         hint="use str, int, bool, None, list or dict", field=path,
                         found=type(value).__name__)


def canonical_json(obj: object) -> bytes:
    """The RFC 8785 bytes of ``obj``; refuses floats and integers beyond ±(2**53-1)."""
    if _check(obj, ""):  # valid, and every object key is ASCII: Python's key order is RFC 8785's
        return dumps_ascii_keys(obj)
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalError(f"cannot canonicalise: {exc}", hint="use plain JSON values") from None


def dumps_ascii_keys(obj: object) -> bytes:
    """RFC 8785 bytes of an already validated value whose object keys are all ASCII."""
    try:
        if _orjson is not None:
            return _orjson.dumps(obj, option=_orjson.OPT_SORT_KEYS)
        return _dumps(obj).encode("utf-8")
    except (UnicodeEncodeError, TypeError) as exc:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate?): {exc}",
                             hint="remove unpaired surrogates from strings") from None


def _no_float(text: str) -> object:
    raise CanonicalError(f"float {text} in JSON", field="", found=text,
                         hint="canonical mreg JSON has no floats")


def _bounded_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise CanonicalError(f"integer {text} is outside ±(2**53-1)", found=text,
                             hint="store large numbers as strings")
    return value


def _no_constant(text: str) -> object:
    raise CanonicalError(f"{text} in JSON", found=text, hint="NaN and Infinity are not JSON")


_decoder = json.JSONDecoder(parse_float=_no_float, parse_int=_bounded_int,
                            parse_constant=_no_constant)


def loads_canonical(data: bytes, what: str = "JSON") -> object:
    """Parse ``data`` and insist that it is exactly the canonical form of its value.

    Raises ``CanonicalError`` (with ``expected`` holding the canonical bytes when
    the value parses) for invalid UTF-8, invalid JSON, floats, big integers,
    duplicate keys, whitespace, key order or escapes other than RFC 8785's.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalError(f"{what} is not UTF-8: {exc}", hint="the bytes were altered") from None
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise CanonicalError(f"{what} is not valid JSON: {exc}", hint="the bytes were altered",
                             found=text[:80]) from None
    if data.isascii():  # parsed from ASCII: keys are ASCII, numbers already bounded by the decoder
        try:
            canon = _dumps(value).encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(f"{what} holds an unpaired surrogate", found=text[:80],
                                 hint="the bytes were altered") from None
    else:
        canon = canonical_json(value)
    if canon != data:
        raise CanonicalError(f"{what} is not in canonical (RFC 8785) form",
                             hint="canonical bytes are rfc8785.dumps(value); the bytes were "
                                  "re-serialised or altered",
                             expected=canon.decode("utf-8", "replace")[:120],
                             found=text[:120])
    return value
