"""Canonical JSON (RFC 8785) and statement validation."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import MAX_SAFE_INT, CanonicalError, canonical_json, loads_canonical
from ledger.statement import EVENT_TYPES, StatementError, new_statement, validate_statement

safe_ints = st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_equals_rfc8785_and_round_trips(value):
    data = canonical_json(value)
    assert data == rfc8785.dumps(value)
    assert loads_canonical(data) == value


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(text, safe_ints, min_size=2, max_size=6))
def test_non_canonical_serialisations_are_refused(value):
    spaced = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    if spaced != canonical_json(value):
        with pytest.raises(CanonicalError):
            loads_canonical(spaced)


def test_sorting_by_utf16_code_units():
    # U+E000 sorts after U+1F600 in code points but before it in UTF-16 code units (RFC 8785 §3.2.3)
    value = {"\ue000": 1, "\U0001f600": 2}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json(value).decode() == '{"\U0001f600":2,"\ue000":1}'


@pytest.mark.parametrize("bad", [1.5, {"a": 0.0}, [2**53], {"a": -(2**53)}, {1: "x"}, float("nan"), b"x"])
def test_refused_values(bad):
    with pytest.raises(CanonicalError):
        canonical_json(bad)


@pytest.mark.parametrize("raw", [b'{"a":1.0}', b'{"a":9007199254740992}', b'{"a":1,"a":1}', b'{"b":1,"a":2}',
                                 b'{"a": 1}', b'{"a":"\\u0041"}', b'\xff', b'{"a":NaN}'])
def test_refused_bytes(raw):
    with pytest.raises(CanonicalError):
        loads_canonical(raw)


def _stmt(**kw):
    base = dict(ledger="demo/postgres", type="register", actor="alice", time="2026-01-01T00:00:00Z",
                migration={"id": "m1", "version": "1", "checksum": "sha256:" + "0" * 64, "path": "a.sql"})
    base.update(kw)
    return new_statement(**base)


def test_statement_defaults_and_types():
    s = _stmt(time=None)
    assert s["v"] == 1 and s["event_id"] and s["time"].endswith("Z")
    assert len(EVENT_TYPES) == 15 and "key_revoke" in EVENT_TYPES
    assert _stmt()["event_id"] != _stmt()["event_id"]


@pytest.mark.parametrize("change,field", [
    (dict(type="applied"), "type"),
    (dict(time="2026-01-01T00:00:00+01:00"), "time"),
    (dict(time="2026-01-01 00:00:00Z"), "time"),
    (dict(time="2026-02-30T00:00:00Z"), "time"),
    (dict(migration={"id": "m", "checksum": "md5:00"}), "migration.checksum"),
    (dict(migration={"id": "m", "checksum": "sha256:" + "0" * 64, "extra": "x"}), "migration.extra"),
    (dict(target={"engine": "postgresql"}), "target.id"),
    (dict(details={"ms": 1.5}), "details.ms"),
    (dict(details={"n": 2**60}), "details.n"),
    (dict(refs="abc"), "refs"),
])
def test_statement_refusals_name_the_field(change, field):
    with pytest.raises(StatementError) as err:
        _stmt(**change)
    assert err.value.data.get("field") == field


def test_unknown_statement_field_is_refused():
    s = _stmt()
    s["extra"] = 1
    with pytest.raises(StatementError, match="unknown statement field"):
        validate_statement(s)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_pure_python_fallback_matches_rfc8785(value):
    import ledger.canonical as canonical

    saved = canonical._orjson
    canonical._orjson = None
    try:
        assert canonical_json(value) == rfc8785.dumps(value)
    finally:
        canonical._orjson = saved
