"""The Redis mirror's bytes: keys, Lua scripts, and the stream entry codec.

See ``registry/targets/redis.py`` (and docs/tutorial-redis.md) for what each key holds.
Everything here is pure except the scripts' text, which runs inside Redis.
"""

from __future__ import annotations

import base64
import hashlib
import json

from registry.targets.base import MirrorConflict, MirrorRow

ZERO_HASH = bytes(32)
TEXT_FIELDS = ("origin", "event_type", "version", "database_type", "applied_at", "applied_by",
               "migration_id", "checksum")


# ----------------------------------------------------------------------------- Lua

# ARGV: the number of rows, then per row: stream, version hash, lock key ('' = no check),
# lock value, origin, seq, prev hash, latest JSON, field count n, then 2n field names/values.
# Every row is checked first (against the stream's tail, or the batch's previous row), then
# all are written: a refused row leaves nothing written.
APPEND_SCRIPT = r"""
local tails = {}
local rows = {}
local i = 2
for r = 1, tonumber(ARGV[1]) do
  local stream, lockkey, lockval = ARGV[i], ARGV[i+2], ARGV[i+3]
  local seqtext, prev, nf = ARGV[i+5], ARGV[i+6], tonumber(ARGV[i+8])
  local seq = tonumber(seqtext)
  if lockkey ~= '' then
    local held = redis.call('GET', lockkey)
    if held ~= lockval then
      return redis.error_reply('MREGLOCK ' .. tostring(held))
    end
  end
  local tail = tails[stream]
  if tail == nil then
    tail = {seq = -1, hash = nil}
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if #last > 0 then
      tail.seq = tonumber(string.match(last[1][1], '^(%d+)-'))
      local fl = last[1][2]
      for k = 1, #fl, 2 do
        if fl[k] == 'leaf_hash' then tail.hash = fl[k+1] end
      end
    end
  end
  if seq ~= tail.seq + 1 then
    return redis.error_reply('MREGCONFLICT ' .. tail.seq .. ' the next entry is seq ' .. (tail.seq + 1))
  end
  if tail.seq >= 0 and tail.hash ~= prev then
    return redis.error_reply('MREGCONFLICT ' .. tail.seq .. ' the leaf does not chain to the previous leaf')
  end
  local fields = {}
  local hash = nil
  for k = 1, 2 * nf do fields[k] = ARGV[i+8+k] end
  for k = 1, #fields, 2 do
    if fields[k] == 'leaf_hash' then hash = fields[k+1] end
  end
  tails[stream] = {seq = seq, hash = hash}
  rows[r] = {stream = stream, vhash = ARGV[i+1], origin = ARGV[i+4], id = seqtext .. '-1',
             latest = ARGV[i+7], fields = fields}
  i = i + 9 + 2 * nf
end
for _, row in ipairs(rows) do
  redis.call('XADD', row.stream, row.id, unpack(row.fields))
  redis.call('HSET', row.vhash, row.origin, row.latest)
end
return #rows
"""

CHECKPOINT_SCRIPT = r"""
local cur = redis.call('HGET', KEYS[1], 'size')
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return redis.error_reply('MREGREGRESS ' .. cur)
end
redis.call('HSET', KEYS[1], 'size', ARGV[1], 'note', ARGV[2])
return 1
"""

# KEYS: lock, fence. ARGV: owner, lease ms. Returns the fencing token, or false.
ACQUIRE_SCRIPT = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. token, 'NX', 'PX', ARGV[2])
return token
"""

RENEW_SCRIPT = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_SCRIPT = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# ----------------------------------------------------------------------------- helpers


def stream_key(origin: str) -> str:
    return f"mreg:ledger:{origin}"


def checkpoint_key(origin: str) -> str:
    return f"mreg:checkpoint:{origin}"


VERSION_HASH = "mreg:schema_version"


def entry_id(seq: int) -> str:
    """The stream entry ID of ``seq``: ``<seq>-1`` (``0-0`` is not a valid ID)."""
    return f"{seq}-1"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def row_fields(row: MirrorRow) -> list:
    """A mirror row as the stream entry's field/value list (``leaf`` and ``leaf_hash`` as bytes)."""
    return [
        "origin", row.origin, "seq", str(row.seq), "event_type", row.event_type,
        "leaf", bytes(row.leaf), "leaf_hash", bytes(row.leaf_hash), "version", row.version,
        "database_type", row.database_type, "applied_at", row.applied_at,
        "applied_by", row.applied_by, "migration_id", row.migration_id, "checksum", row.checksum,
        "execution_time_ms", "" if row.execution_time_ms is None else str(row.execution_time_ms),
        "rollback_available", "1" if row.rollback_available else "0",
        "metadata", json.dumps(row.metadata, sort_keys=True, separators=(",", ":")),
    ]


def row_from_entry(fields: dict) -> MirrorRow:
    """A ``MirrorRow`` from a stream entry's fields (bytes keys and values)."""
    f = {_text(k): v for k, v in fields.items()}
    ms = _text(f.get("execution_time_ms", b""))
    return MirrorRow(
        **{name: _text(f.get(name, b"")) for name in TEXT_FIELDS},
        seq=int(_text(f["seq"])),
        leaf=bytes(f["leaf"]),
        leaf_hash=bytes(f["leaf_hash"]),
        execution_time_ms=int(ms) if ms else None,
        rollback_available=_text(f.get("rollback_available", b"1")) == "1",
        metadata=json.loads(_text(f.get("metadata", b"{}"))),
    )


def latest_json(row: MirrorRow) -> str:
    """The ``mreg:schema_version`` value of an origin after ``row``."""
    return json.dumps({
        "seq": row.seq, "event_type": row.event_type, "migration_id": row.migration_id,
        "version": row.version, "database_type": row.database_type, "applied_at": row.applied_at,
        "applied_by": row.applied_by, "leaf_hash": bytes(row.leaf_hash).hex(),
    }, sort_keys=True)


def leaf_prev(row: MirrorRow) -> bytes:
    """The previous leaf hash a row's leaf names (32 zero bytes for seq 0)."""
    try:
        return base64.b64decode(json.loads(row.leaf)["prev"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise MirrorConflict(f"{row.origin} seq {row.seq}: the leaf is not an mreg leaf",
                             hint="build leaves with ledger.log.build_leaf", origin=row.origin,
                             seq=row.seq) from None


def check_row(row: MirrorRow) -> bytes:
    """Check a row agrees with its own leaf before writing; return the prev hash it names."""
    found = hashlib.sha256(b"\x00" + bytes(row.leaf)).digest()
    if found != bytes(row.leaf_hash):
        raise MirrorConflict(f"{row.origin} seq {row.seq}: leaf_hash is not SHA-256(0x00 || leaf)",
                             hint="derive rows with registry.targets.base.mirror_row_from_leaf",
                             origin=row.origin, seq=row.seq, field="leaf_hash",
                             expected=found.hex(), found=bytes(row.leaf_hash).hex())
    prev = leaf_prev(row)
    if row.seq == 0 and prev != ZERO_HASH:
        raise MirrorConflict(f"{row.origin} seq 0: the first leaf must name 32 zero bytes as prev",
                             hint="build leaves with ledger.log.build_leaf", origin=row.origin, seq=0)
    seq = json.loads(row.leaf).get("seq")
    if seq != row.seq:
        raise MirrorConflict(f"{row.origin}: row seq {row.seq} differs from its leaf's seq {seq}",
                             hint="derive rows with registry.targets.base.mirror_row_from_leaf",
                             origin=row.origin, seq=row.seq, field="seq", expected=seq, found=row.seq)
    return prev
