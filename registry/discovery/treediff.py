"""Which entries differ between two Git trees, reading only the bytes that differ.

A tree is ``<mode> <name>\\0<20-byte id>`` repeated, sorted by name. Two versions of a
large folder usually differ in one entry, so instead of parsing both trees:

1. find the common prefix and suffix of the raw bytes by binary search (``startswith``/``endswith``);
2. map them to entry boundaries with the old tree's entry offsets (the prefix's
   boundaries are shared; the suffix's are the old ones shifted by the size change);
3. parse only the middle of each (``parse_tree`` on a slice) and compare.

The new tree's entry offsets come out of step 2, so the next commit can do the same.
Small trees are parsed whole (no gain below a few entries).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

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


def _prefix(a: bytes, b: bytes, n: int) -> int:
    """Length of the common prefix of ``a`` and ``b`` (at most ``n``): a binary search that compares
    only the bytes not yet known equal (``startswith`` at an offset)."""
    lo, hi = 0, n
    starts = a.startswith
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts(b[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _suffix(a: bytes, b: bytes, n: int) -> int:
    """Length of the common suffix of ``a`` and ``b`` (at most ``n``), the same way from the end."""
    la, lb = len(a), len(b)
    lo, hi = 0, n
    ends = a.endswith
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ends(b[lb - mid:lb - lo], 0, la - lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def delta(parse_tree, old: bytes, old_starts: list[int], new: bytes) -> tuple[list, list, list[int]]:
    """``(entries only in old, entries only in new, entry offsets of new)``; entries are
    ``(name, mode, hex id)`` tuples as ``dulwich.objects.parse_tree`` gives them."""
    la, lb = len(old), len(new)
    p = _prefix(old, new, min(la, lb))
    q = _suffix(old, new, min(la, lb) - p)
    i = bisect_right(old_starts, p) - 1
    begin = old_starts[i] if i >= 0 else 0
    j = bisect_left(old_starts, la - q)
    shift = lb - la
    # Scan the new tree from `begin` until it meets a shifted old boundary inside the common suffix.
    mid: list[int] = []
    pos = begin
    find = new.index
    n_old = len(old_starts)
    while pos < lb:
        while j < n_old and old_starts[j] + shift < pos:
            j += 1
        if j < n_old and old_starts[j] + shift == pos:
            break
        mid.append(pos)
        pos = find(b"\0", pos) + 21
    end_old = old_starts[j] if j < n_old else la
    end_new = pos
    a = set(parse_tree(old[begin:end_old], 20)) if end_old > begin else set()
    b = set(parse_tree(new[begin:end_new], 20)) if end_new > begin else set()
    lo = max(i, 0)
    if shift == 0 and old_starts[lo:j] == mid:
        starts = old_starts  # same boundaries (an entry's id changed): share the list, never mutated
    else:
        starts = old_starts[:lo] + mid + [s + shift for s in old_starts[j:]]
    return list(a - b), list(b - a), starts
