"""A lean reader of Git pack files for the history walk (dulwich's index, zlib and delta code).

dulwich's object store is general (locks, LRU bookkeeping, multi-pack index checks per
read); a scan reads ~100,000 objects in commit order, so this reader keeps only what
that needs:

- dulwich's pack index: its ``object_offset`` for the first :data:`TABLE_AFTER` lookups (a
  re-scan reads few objects), then turned once into a dict ``hex id -> offset`` (its name
  and offset tables read in bulk; a lookup is then one dict probe instead of a bisection
  through Python callbacks). Packs with more than :data:`TABLE_LIMIT` objects, or
  index versions this does not know, keep dulwich's own ``object_offset``;
- the pack mapped in memory; each object's compressed bytes end where the next object
  (by offset) starts, so one ``zlib.decompress`` call inflates it;
- dulwich's C ``apply_delta`` for deltas, and a bounded cache of resolved objects by
  offset (reading oldest commits first makes a delta's base an object read just before).
"""

from __future__ import annotations

import binascii
import mmap
import struct
import zlib

from dulwich.pack import apply_delta

OFS_DELTA = 6
REF_DELTA = 7
CACHE_BYTES = 48 * 1024 * 1024
TABLE_LIMIT = 4_000_000  # objects; above this the dict would cost more memory than it saves time
TABLE_AFTER = 2_000  # lookups through dulwich's index before the dict is built


def offset_table(index) -> dict[bytes, int] | None:
    """``{hex id: offset}`` for every object of a version-2 pack index (dulwich's ``PackIndex2``
    layout: name table, CRC table, 32-bit offsets, 64-bit offsets), or None for other indexes."""
    from dulwich.pack import PackIndex2

    n = len(index)
    if not isinstance(index, PackIndex2) or n > TABLE_LIMIT or getattr(index, "hash_size", 20) != 20:
        return None
    data = index._contents
    start = index._name_table_offset
    hexes = binascii.hexlify(data[start:start + 20 * n])
    names = [hexes[i:i + 40] for i in range(0, 40 * n, 40)]
    at = index._pack_offset_table_offset
    offsets = list(struct.unpack_from(f">{n}L", data, at))
    large = index._pack_offset_largetable_offset
    for i, value in enumerate(offsets):
        if value & 0x80000000:  # a pack over 2 GiB: the offset is in the 64-bit table
            offsets[i] = struct.unpack_from(">Q", data, large + (value & 0x7FFFFFFF) * 8)[0]
    return dict(zip(names, offsets))


class PackReader:
    """Objects of one pack by hex id; :meth:`get` returns None when the pack lacks one."""

    def __init__(self, pack, resolve_external) -> None:
        self.index = pack.index
        self._file = open(pack.data.path, "rb")
        self.map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        # Built once this many objects were looked up (a re-scan reads few: dulwich's index is enough).
        self.table: dict[bytes, int] | None = None
        self._lookups = 0
        self._ends: dict[int, int] = {}  # entry offset -> where it ends (the next entry's offset)
        self._cache: dict[int, tuple[int, bytes]] = {}
        self._cached = 0
        self._external = resolve_external

    def close(self) -> None:
        self.map.close()
        self._file.close()

    def offset(self, hexsha: bytes) -> int | None:
        """Where the object is in this pack, or None."""
        if self.table is not None:
            return self.table.get(hexsha)
        self._lookups += 1
        if self._lookups == TABLE_AFTER:
            self._build_table()
            return self.table.get(hexsha) if self.table is not None else self.offset(hexsha)
        try:
            return self.index.object_offset(binascii.unhexlify(hexsha))
        except KeyError:
            return None

    def _build_table(self) -> None:
        self.table = offset_table(self.index)
        if self.table is not None:  # the pack ends with a 20-byte checksum
            starts = sorted(self.table.values())
            self._ends = dict(zip(starts, starts[1:] + [len(self.map) - 20]))
        else:
            self._lookups = TABLE_AFTER + 1  # an index this cannot read in bulk: dulwich's lookups

    def get(self, hexsha: bytes) -> tuple[int, bytes] | None:
        at = self.table.get(hexsha) if self.table is not None else self.offset(hexsha)
        return None if at is None else self.at(at)

    def at(self, offset: int) -> tuple[int, bytes]:
        """The object whose entry starts at ``offset``: ``(type number, bytes)``, deltas resolved."""
        hit = self._cache.get(offset)
        if hit is not None:
            return hit
        m = self.map
        b = m[offset]
        kind = (b >> 4) & 7
        size = b & 15
        pos = offset + 1
        shift = 4
        while b & 0x80:
            b = m[pos]
            pos += 1
            size |= (b & 0x7F) << shift
            shift += 7
        base = None
        base_sha = None
        if kind == OFS_DELTA:
            b = m[pos]
            pos += 1
            rel = b & 0x7F
            while b & 0x80:
                b = m[pos]
                pos += 1
                rel = ((rel + 1) << 7) | (b & 0x7F)
            base = offset - rel
        elif kind == REF_DELTA:
            base_sha = binascii.hexlify(m[pos:pos + 20])
            pos += 20
        end = self._ends.get(offset)
        data = zlib.decompress(m[pos:end], bufsize=size or 1) if end is not None else self._inflate(pos, size)
        if base is not None or base_sha is not None:
            if base is not None:
                kind, source = self.at(base)
            elif (where := self.offset(base_sha)) is not None:
                kind, source = self.at(where)
            else:
                kind, source = self._external(base_sha)
            out = apply_delta(source, data)
            data = out if isinstance(out, bytes) else b"".join(out)
        result = (kind, data)
        if self._cached > CACHE_BYTES:
            self._cache.clear()
            self._cached = 0
        self._cache[offset] = result
        self._cached += len(data)
        return result

    def _inflate(self, pos: int, size: int) -> bytes:
        d = zlib.decompressobj()
        step = size + 512
        out = d.decompress(self.map[pos:pos + step])
        while not d.eof:
            pos += step
            chunk = self.map[pos:pos + step]
            if not chunk:
                break
            out += d.decompress(chunk)
        return out
