"""The byte-level tree delta equals the set difference of fully parsed trees (property test)."""

from __future__ import annotations

import hashlib

from dulwich.objects import parse_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.discovery import treediff

names = st.text(alphabet="abcdefghij_.0123456789", min_size=1, max_size=12).filter(lambda n: n not in (".", ".."))
entry = st.tuples(names, st.sampled_from([0o100644, 0o100755, 0o040000, 0o120000]), st.integers(0, 5))


def raw_tree(entries: dict[str, tuple[int, int]]) -> bytes:
    out = []
    for name in sorted(entries):
        mode, content = entries[name]
        sha = hashlib.sha1(f"{name}:{content}".encode()).digest()
        out.append(b"%o %s\0%s" % (mode, name.encode(), sha))
    return b"".join(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, min_size=0, max_size=80), st.lists(entry, min_size=0, max_size=6),
       st.lists(names, max_size=4))
def test_delta_equals_full_parse(base, changes, removals):
    old = {n: (m, c) for n, m, c in base}
    new = dict(old)
    for n, m, c in changes:
        new[n] = (m, c)
    for n in removals:
        new.pop(n, None)
    a, b = raw_tree(old), raw_tree(new)
    only_a, only_b, starts = treediff.delta(parse_tree, a, treediff.starts_of(a), b)
    full_a, full_b = set(parse_tree(a, 20)), set(parse_tree(b, 20))
    assert set(only_a) == full_a - full_b
    assert set(only_b) == full_b - full_a
    assert starts == treediff.starts_of(b)
