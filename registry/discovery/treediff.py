"""Which entries differ between two Git trees, reading only the bytes that differ.

A tree is ``<mode> <name>\\0<20-byte id>`` repeated, sorted by name. Two versions of a
large folder usually differ in one entry, so instead of parsing both trees:

1. find how many leading entries agree, by binary search over the old tree's entry
   offsets (each step compares only bytes not yet known equal, ``startswith`` at an offset);
2. likewise how many trailing entries agree (the new tree's offsets there are the old ones
   shifted by the size change);
3. scan the new tree's entries between the two (usually one), parse only that middle of
   each tree (``parse_tree`` on a slice) and compare.

The new tree's entry offsets come out of step 3 (the old list itself when only an id
changed), so the next commit can do the same. Small trees are parsed whole (no gain below
a few entries).
"""

from __future__ import annotations

SMALL = 1024  # bytes; below this, parse the whole trees


def starts_of(raw: bytes, pos: int = 0, end: int | None = None) -> list[int]:
    """Offsets of the entries of ``raw`` from ``pos`` up to ``end`` (default: the end)."""
    out = []
    stop = len(raw) if end is None else end
    find = raw.index
    while pos < stop:
        out.append(pos)
        pos = find(b"\0", pos) + 21
    return out


def delta(parse_tree, old: bytes, old_starts: list[int], new: bytes) -> tuple[list, list, list[int]]:
    """``(entries only in old, entries only in new, entry offsets of new)``; entries are
    ``(name, mode, hex id)`` tuples as ``dulwich.objects.parse_tree`` gives them."""
    la, lb = len(old), len(new)
    n = len(old_starts)
    shift = lb - la
    same = old.startswith  # old.startswith(new[x:y], x): the bytes x..y agree (no copy of old)
    # 1. How many leading entries agree (binary search over whole entries, comparing only
    #    the bytes not yet known equal).
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        a0 = old_starts[lo] if lo < n else la
        a1 = old_starts[mid] if mid < n else la
        if a1 <= lb and same(new[a0:a1], a0):
            lo = mid
        else:
            hi = mid - 1
    i = lo
    begin = old_starts[i] if i < n else la
    # 2. From which entry on the old tree's tail is also the new tree's (moved by `shift` bytes).
    lo, hi = i, n
    while lo < hi:
        mid = (lo + hi) // 2
        b0 = old_starts[mid]
        b1 = old_starts[hi] if hi < n else la
        if b0 + shift >= begin and same(new[b0 + shift:b1 + shift], b0):
            hi = mid
        else:
            lo = mid + 1
    j = lo
    # 3. Scan the new tree from `begin` until it meets a shifted old boundary inside that tail:
    #    from there on both trees hold the same entries.
    mid_starts: list[int] = []
    pos = begin
    find = new.index
    while pos < lb:
        while j < n and old_starts[j] + shift < pos:
            j += 1
        if j < n and old_starts[j] + shift == pos:
            break
        mid_starts.append(pos)
        pos = find(b"\0", pos) + 21
    end_old = old_starts[j] if j < n else la
    a = set(parse_tree(old[begin:end_old], 20)) if end_old > begin else set()
    b = set(parse_tree(new[begin:pos], 20)) if pos > begin else set()
    if shift == 0 and old_starts[i:j] == mid_starts:
        starts = old_starts  # same boundaries (an entry's id changed): share the list, never mutated
    else:
        starts = old_starts[:i] + mid_starts + [s + shift for s in old_starts[j:]]
    return list(a - b), list(b - a), starts
