"""A lean reader of Git pack files for the history walk (dulwich's index, zlib and delta code).

dulwich's object store is general (locks, LRU bookkeeping, multi-pack index checks per
read); a scan reads ~100,000 objects in commit order, so this reader keeps only what
that needs: dulwich's pack index to find an object's offset,
the pack mapped in memory, ``zlib`` to inflate, dulwich's C ``apply_delta`` for deltas,
and a bounded cache of resolved objects by offset (reading oldest commits first makes
each delta's base the object read just before it).
"""

from __future__ import annotations

import mmap
import zlib

from dulwich.pack import apply_delta

OFS_DELTA = 6
REF_DELTA = 7
CACHE_BYTES = 48 * 1024 * 1024


class PackReader:
    """Objects of one pack by binary id; ``get`` raises KeyError when the pack lacks one."""

    def __init__(self, pack, resolve_external) -> None:
        self.index = pack.index
        self._file = open(pack.data.path, "rb")
        self.map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        self._cache: dict[int, tuple[int, bytes]] = {}
        self._cached = 0
        self._external = resolve_external

    def close(self) -> None:
        self.map.close()
        self._file.close()

    def offset(self, binsha: bytes) -> int | None:
        """Where the object is in this pack (dulwich's index: fan-out table and C bisection), or None."""
        try:
            return self.index.object_offset(binsha)
        except KeyError:
            return None

    def get_at(self, offset: int) -> tuple[int, bytes]:
        return self._at(offset)

    def _at(self, offset: int) -> tuple[int, bytes]:
        hit = self._cache.get(offset)
        if hit is not None:
            return hit
        m = self.map
        b = m[offset]
        kind = (b >> 4) & 7
        size = b & 15
        shift = 4
        pos = offset + 1
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
            base_sha = bytes(m[pos:pos + 20])
            pos += 20
        data = self._inflate(pos, size)
        if base is not None or base_sha is not None:
            if base is not None:
                kind, source = self._at(base)
            elif (at := self.offset(base_sha)) is not None:
                kind, source = self._at(at)
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
