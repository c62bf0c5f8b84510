"""The Redis adapter: ``.redis`` command steps, Lua, SCAN-driven reshapes, the stream mirror.

What mreg keeps in a Redis target (``<origin>`` is ``<project>/<target>``):

- ``mreg:ledger:<origin>``: a stream, one entry per leaf of the target's log, entry ID
  ``<seq>-1`` (``0-0`` is not a valid stream ID, so every seq uses sequence part 1:
  seq 0 is ``0-1``, seq 7 is ``7-1``; ``XRANGE key 7 7`` reads seq 7). Redis refuses an
  ID that is not larger than the last one, so a duplicate or a step backwards cannot be
  written; the append script refuses a gap and a leaf that does not chain.
  Fields: every ``MirrorRow`` column, ``leaf`` as its exact bytes, ``leaf_hash`` raw.
- ``mreg:schema_version``: a hash, field ``<origin>`` -> JSON of the latest entry (seq,
  event, migration id, semantic version, time, actor, leaf hash in hex).
- ``mreg:checkpoint:<origin>``: a hash ``{size, note}``, replaced only by a Lua script
  that refuses a smaller size.
- ``mreg:lock:<name>`` / ``mreg:lock:fence:<name>``: the target's lock (see below).

Redis has no way to refuse ``XDEL``/``DEL`` on these keys: tamper evidence comes from the
leaf hashes, signatures and checkpoints (``mreg verify`` compares the stream with catalog.db).

Steps (``Step.kind == "redis"``, ``Step.content`` one redis-cli command line):

- a command, split by redis-cli's rules (``registry.parse.redis.split_args``);
- ``EVAL``/``EVALSHA`` Lua scripts are ordinary commands;
- ``RESHAPE <pattern> [TYPE <type>] [COUNT <n>] <lua> [arg ...]``: walks the keyspace with
  ``SCAN <cursor> MATCH <pattern> [TYPE <type>] COUNT <n>`` and runs ``<lua>`` once per
  batch with ``KEYS`` = the batch's keys and ``ARGV`` = the extra args. SCAN may return a
  key twice and may return keys the script created: the script must be idempotent
  (check each key's shape before changing it). :meth:`RedisAdapter.reshape` yields a
  :class:`ReshapeProgress` per batch (its cursor resumes an interrupted reshape).

Transactions: Redis cannot roll a command back, and ``MULTI`` hides a command's effect from
the next one. A session with ``transactional=True`` therefore runs each step at once after
saving the keys it will touch (``DUMP``/``PTTL``), and undoes them on rollback; its mirror
rows are appended at ``commit()``, all in one atomic Lua script (gap, chain and lock
checked inside it before anything is written). See :class:`RedisSession`.

Lock: ``SET mreg:lock:<name> <owner>:<fence> NX PX <lease>`` inside a Lua script that takes
the fencing token from ``INCR mreg:lock:fence:<name>``; a background thread renews the lease
(compare-and-``PEXPIRE``) while the lock is held; release is a compare-and-delete. A crashed
holder stops renewing, so its lease expires and the next operator takes the lock. While
this adapter holds the lock, every mirror append checks it still does (fencing).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from registry.config import Target
from registry.errors import ConfigError, DatabaseError
from registry.model import Step
from registry.model import Settings
from registry.targets.base import LockTimeout, MirrorRow, StepFailed
from registry.targets.sqlcommon import CheckpointRegression, ConnectionLost, MirrorConflict, StepRefused

ZERO_HASH = bytes(32)
DEFAULT_LEASE_MS = 15_000
DEFAULT_SCAN_COUNT = 500
TEXT_FIELDS = ("origin", "event_type", "version", "database_type", "applied_at", "applied_by",
               "migration_id", "checksum")


# ----------------------------------------------------------------------------- errors


class RedisUnavailable(DatabaseError):
    """The Redis server could not be reached (connect) or went away (``data``: target, url)."""


class IrreversibleStep(DatabaseError):
    """A rolled-back session held steps whose keys could not be saved first (``RESHAPE``, ``FLUSHDB``…)."""


class LockLost(DatabaseError):
    """This operator's lease expired and another took the lock; the mirror write was refused (fencing)."""


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


def step_args(step: Step) -> list[str]:
    """The arguments of a step's command line, split by redis-cli's rules."""
    from registry.parse.redis import RedisQuoteError, split_args

    try:
        args = split_args(step.content.strip())
    except RedisQuoteError as exc:
        raise _refused(step, f"cannot split the command: {exc}") from None
    if not args:
        raise _refused(step, "the step holds no command")
    return args


@dataclass
class Reshape:
    """A parsed ``RESHAPE <pattern> [TYPE t] [COUNT n] <lua> [arg ...]`` step."""

    pattern: str
    script: str
    type: str | None = None
    count: int = DEFAULT_SCAN_COUNT
    args: list[str] = field(default_factory=list)


def parse_reshape(step: Step, args: list[str]) -> Reshape:
    """The parts of a ``RESHAPE`` step; ``StepRefused`` if it is malformed."""
    if len(args) < 3:
        raise _refused(step, "RESHAPE needs a match pattern and a Lua script")
    shape = Reshape(pattern=args[1], script="")
    rest = args[2:]
    while len(rest) >= 2 and rest[0].upper() in ("TYPE", "COUNT"):
        word, value, rest = rest[0].upper(), rest[1], rest[2:]
        if word == "TYPE":
            shape.type = value
        else:
            try:
                shape.count = int(value)
            except ValueError:
                raise _refused(step, f"RESHAPE COUNT must be an integer, not {value!r}") from None
            if shape.count <= 0:
                raise _refused(step, "RESHAPE COUNT must be positive")
    if not rest:
        raise _refused(step, "RESHAPE needs a Lua script after the pattern and options")
    shape.script, shape.args = rest[0], rest[1:]
    return shape


@dataclass
class ReshapeProgress:
    """One batch of a reshape: the SCAN cursor after it (0 = done), keys seen, the script's reply."""

    cursor: int
    keys: int
    total_keys: int
    batches: int
    reply: object = None

    @property
    def done(self) -> bool:
        return self.cursor == 0


@dataclass
class RedisLock:
    """A held lock: key, the value ``<owner>:<fence>``, and the fencing token."""

    key: str
    value: str
    owner: str
    fence: int
    lease_ms: int
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)


def _refused(step: Step, why: str) -> StepRefused:
    where = f"line {step.line}" if step.line else "a step"
    return StepRefused(f"{where}: {why}", hint="write one redis-cli command per line "
                       "(see docs/tutorial-redis.md)", line=step.line, step=step.name, content=step.content)


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
    import base64

    try:
        return base64.b64decode(json.loads(row.leaf)["prev"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise MirrorConflict(f"{row.origin} seq {row.seq}: the leaf is not an mreg leaf",
                             hint="build leaves with ledger.log.build_leaf", origin=row.origin,
                             seq=row.seq) from None


def check_row(row: MirrorRow) -> bytes:
    """Check a row agrees with its own leaf before writing; return the prev hash it names."""
    import hashlib

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


# ----------------------------------------------------------------------------- adapter


class RedisAdapter:
    """A Redis target (redis-py). The DB index comes from the URL path (``redis://host:port/N``)."""

    kind = "redis"
    transactional_ddl = False
    supports_concurrent_index = False
    supports_batches = True

    def __init__(self, target: Target, url: str) -> None:
        self.target = target
        self.url = url
        self.options = dict(target.options or {})
        self.lease_ms = int(self.options.get("lock_lease_ms", DEFAULT_LEASE_MS))
        self.lock_name = str(self.options.get("lock_name", target.name))
        self.client = None
        self._lock: RedisLock | None = None

    # -- connection

    def connect(self) -> None:
        if self.client is not None:
            return
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a declared dependency
            raise ConfigError("the redis adapter needs the redis package", hint="pip install redis") from exc
        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=5,
                                          socket_timeout=float(self.options.get("socket_timeout", 60)))
            client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise RedisUnavailable(f"target {self.target.name}: cannot reach Redis at {self.target.safe_url}: {exc}",
                                   hint="start the server (`mreg dev up` for the dev one) or fix the target's url",
                                   target=self.target.name) from None
        except ValueError as exc:
            raise ConfigError(f"target {self.target.name}: bad Redis URL: {exc}",
                              hint="use redis://[user:password@]host:port/N") from None
        self.client = client
        self._registered = {name: client.register_script(src) for name, src in (
            ("append", APPEND_SCRIPT), ("checkpoint", CHECKPOINT_SCRIPT),
            ("acquire", ACQUIRE_SCRIPT), ("renew", RENEW_SCRIPT), ("release", RELEASE_SCRIPT))}

    def close(self) -> None:
        if self._lock is not None:
            self._stop_renewal(self._lock)
        if self.client is not None:
            self.client.close()
            self.client = None

    def server_version(self) -> str:
        with self._errors("INFO"):
            return str(self._c().info("server")["redis_version"])

    @property
    def _scripts(self) -> dict:
        """The mreg Lua scripts, registered on the (lazily opened) connection."""
        self._c()
        return self._registered

    def _c(self):
        if self.client is None:
            self.connect()
        return self.client

    @contextmanager
    def _errors(self, what: str, step: Step | None = None):
        """Map redis-py errors: a lost connection to ``ConnectionLost``, a refusal to ``StepFailed``."""
        import redis

        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise ConnectionLost(
                f"target {self.target.name}: the Redis server went away during {what}: {exc}",
                hint="check the server, then run the command again (the log says what completed)",
                target=self.target.name, line=step.line if step else None,
                step=step.name if step else None, server_message=str(exc)) from None
        except redis.exceptions.ResponseError as exc:
            raise self._translate(exc, what, step) from None

    def _translate(self, exc, what: str, step: Step | None) -> DatabaseError:
        msg = str(exc)
        word, _, rest = msg.partition(" ")
        if word == "MREGCONFLICT":
            last, _, why = rest.partition(" ")
            return MirrorConflict(f"target {self.target.name}: {what} refused: {why}",
                                  hint="pull the log with `mreg sync` and append after its last entry",
                                  target=self.target.name, found=int(last))
        if word == "MREGLOCK":
            return LockLost(f"target {self.target.name}: the lock is no longer held by this operator "
                            f"(now: {rest}); {what} refused",
                            hint="the lease expired while this command ran; run it again",
                            target=self.target.name, holder=rest)
        if word == "MREGREGRESS":
            return CheckpointRegression(f"target {self.target.name}: checkpoint size may not go down "
                                        f"(stored {rest})", hint="the target holds a newer checkpoint: "
                                        "run `mreg sync` first", target=self.target.name, stored=int(rest))
        if msg.startswith("ERR The ID specified in XADD"):
            return MirrorConflict(f"target {self.target.name}: {what} refused by Redis: {msg}",
                                  hint="pull the log with `mreg sync` and append after its last entry",
                                  target=self.target.name)
        where = f"line {step.line}: " if step and step.line else ""
        return StepFailed(f"{where}step failed on target {self.target.name}: {msg}",
                          hint="fix the command and run again", target=self.target.name,
                          line=step.line if step else None, step=step.name if step else None,
                          server_message=msg)

    # -- steps

    def run_step(self, step: Step) -> object:
        """Run one step now; a ``RESHAPE`` runs to its end and returns its last progress record."""
        args = step_args(step)
        if args[0].upper() == "RESHAPE":
            last = None
            for last in self.reshape(step):
                pass
            return last
        with self._errors(args[0].upper(), step):
            return self._c().execute_command(*args)

    def reshape(self, step: Step, cursor: int = 0):
        """Run a ``RESHAPE`` step batch by batch from ``cursor``; yield a ``ReshapeProgress`` after each."""
        shape = parse_reshape(step, step_args(step))
        client = self._c()
        with self._errors("RESHAPE", step):
            script = client.register_script(shape.script)
        total = batches = 0
        while True:
            with self._errors("SCAN", step):
                cursor, keys = client.scan(cursor=cursor, match=shape.pattern, count=shape.count,
                                           _type=shape.type)
            reply = None
            if keys:
                with self._errors("RESHAPE script", step):
                    reply = script(keys=keys, args=shape.args)
            total += len(keys)
            batches += 1
            yield ReshapeProgress(cursor=int(cursor), keys=len(keys), total_keys=total,
                                  batches=batches, reply=reply)
            if int(cursor) == 0:
                return

    def command_keys(self, args: list[str]) -> list | None:
        """The keys a command touches (``COMMAND GETKEYS``); [] for a command that takes none
        but is harmless (reads of server state), None when unknown (keyless writes, errors)."""
        import redis

        try:
            return list(self._c().execute_command("COMMAND GETKEYS", *args))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            with self._errors("COMMAND GETKEYS"):
                raise
        except redis.exceptions.ResponseError:
            pass  # no key arguments (FLUSHDB, INFO, ...) or an unknown command
        with self._errors("COMMAND INFO"):
            info = self._c().execute_command("COMMAND INFO", args[0])
        if not info or not info[0]:
            return []  # unknown: the server refuses it, nothing to save
        flags = {_text(f) for f in info[0][2]}
        return None if "write" in flags else []

    def query(self, text: str) -> list[dict]:
        """Run one read command line; ``[{"result": reply}]`` with bytes decoded where they are text."""
        reply = self.run_step(Step(content=text, kind="redis"))
        return [{"result": _decode(reply)}]

    # -- mirror

    def ensure_mirror(self) -> None:
        """Check the server can hold the mirror (Redis >= 5 for streams); the keys appear on first write."""
        version = self.server_version()
        if int(version.split(".")[0]) < 5:
            raise ConfigError(f"target {self.target.name}: Redis {version} has no streams",
                              hint="use Redis 5 or newer", target=self.target.name)

    def append_args(self, row: MirrorRow) -> list:
        """The append script's arguments for ``row`` (lock fencing included while a lock is held)."""
        prev = check_row(row)
        fields = row_fields(row)
        lock = self._lock
        return [stream_key(row.origin), VERSION_HASH, lock.key if lock else "", lock.value if lock else "",
                row.origin, str(row.seq), prev, latest_json(row), str(len(fields) // 2), *fields]

    def append_mirror(self, row: MirrorRow) -> None:
        """Append one row in its own atomic script (gap, chain and fencing checked by the script)."""
        self.append_rows([row])

    def append_rows(self, rows: list[MirrorRow]) -> None:
        """Append rows in ONE atomic script: all are written, or (a row refused) none."""
        if not rows:
            return
        args: list = [str(len(rows))]
        for row in rows:
            args += self.append_args(row)
        first = rows[0]
        what = f"mirror append of {first.origin} seq {first.seq}" + (f"..{rows[-1].seq}" if len(rows) > 1 else "")
        with self._errors(what):
            self._scripts["append"](keys=[], args=args)

    def mirror_rows(self, origin: str, start: int = 0) -> list[MirrorRow]:
        rows: list[MirrorRow] = []
        low = entry_id(start)
        with self._errors("XRANGE"):
            while True:
                entries = self._c().xrange(stream_key(origin), min=low, max="+", count=1000)
                for _id, fields in entries:
                    rows.append(row_from_entry(fields))
                if len(entries) < 1000:
                    return rows
                low = "(" + _text(entries[-1][0])

    def mirror_checkpoint(self, origin: str) -> str | None:
        with self._errors("HGET"):
            note = self._c().hget(checkpoint_key(origin), "note")
        return None if note is None else _text(note)

    def write_checkpoint(self, origin: str, size: int, note: str) -> None:
        try:
            with self._errors(f"checkpoint write of {origin}"):
                self._scripts["checkpoint"](keys=[checkpoint_key(origin)], args=[size, note])
        except CheckpointRegression as exc:
            stored = exc.data["stored"]
            raise CheckpointRegression(
                f"target {self.target.name}: the checkpoint of {origin} may not go down from {stored} to {size}",
                hint="the target holds a newer checkpoint: run `mreg sync` first",
                target=self.target.name, origin=origin, stored=stored, offered=size) from None

    def mirror_origins(self) -> list[str]:
        """Every origin with a stream in this DB."""
        with self._errors("SCAN"):
            keys = list(self._c().scan_iter(match="mreg:ledger:*", count=500, _type="stream"))
        return sorted(_text(k).removeprefix("mreg:ledger:") for k in keys)

    def session(self, transactional: bool = True, *, tenant: str | None = None,
                settings: Settings | None = None, lock_timeout_ms: int | None = None,
                statement_timeout_ms: int | None = None) -> RedisSession:
        """A session (see ``RedisSession``); Redis has no tenants or statement timeouts."""
        if tenant:
            raise ConfigError(f"target {self.target.name}: Redis targets have no tenants ({tenant!r})",
                              hint="drop `tenants` from this target or the tenant scope from the migration")
        return RedisSession(self, transactional)

    # -- lock

    def _lock_keys(self) -> tuple[str, str]:
        return f"mreg:lock:{self.lock_name}", f"mreg:lock:fence:{self.lock_name}"

    def acquire_lock(self, owner: str, timeout_s: float) -> RedisLock:
        """Take the lock (fencing token from ``INCR``), waiting up to ``timeout_s``; renew it in the background."""
        key, fence_key = self._lock_keys()
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            with self._errors("lock acquire"):
                token = self._scripts["acquire"](keys=[key, fence_key], args=[owner, self.lease_ms])
            if token:
                lock = RedisLock(key=key, value=f"{owner}:{int(token)}", owner=owner, fence=int(token),
                                 lease_ms=self.lease_ms)
                self._start_renewal(lock)
                self._lock = lock
                return lock
            if time.monotonic() >= deadline:
                holder = self.lock_holder() or "an operator whose lease just ended"
                raise LockTimeout(
                    f"target {self.target.name}: the lock is held by {holder}; gave up after {timeout_s:g}s",
                    hint=f"wait for that operator to finish; a crashed holder's lease expires within "
                         f"{self.lease_ms / 1000:g}s", target=self.target.name, holder=holder)
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def renew_lock(self, lock: RedisLock) -> bool:
        """Extend the lease if this operator still holds the lock; False (and ``lock.lost``) if not."""
        with self._errors("lock renew"):
            ok = self._scripts["renew"](keys=[lock.key], args=[lock.value, lock.lease_ms])
        if not ok:
            lock.lost = True
        return bool(ok)

    def release_lock(self, handle: RedisLock) -> None:
        """Compare-and-delete: only the holder's own value is removed."""
        self._stop_renewal(handle)
        if self._lock is handle:
            self._lock = None
        with self._errors("lock release"):
            self._scripts["release"](keys=[handle.key], args=[handle.value])

    def lock_alive(self) -> bool:
        """True while this adapter holds its lock and its lease was not lost."""
        lock = self._lock
        if lock is None or lock.lost:
            return False
        try:
            with self._errors("lock check"):
                return self._c().get(lock.key) == lock.value.encode()
        except DatabaseError:
            return False

    def lock_holder(self) -> str | None:
        """``<owner> (fence N, lease ends in S s)`` of the live lock, or None."""
        key, _ = self._lock_keys()
        with self._errors("lock holder"):
            pipe = self._c().pipeline(transaction=False)
            value, ttl = pipe.get(key).pttl(key).execute()
        if value is None:
            return None
        owner, _, fence = _text(value).rpartition(":")
        return f"{owner} (fence {fence}, lease ends in {max(ttl, 0) / 1000:.1f}s)"

    def _start_renewal(self, lock: RedisLock) -> None:
        def renew() -> None:
            import redis

            while not lock._stop.wait(lock.lease_ms / 3000):
                try:
                    if not self._scripts["renew"](keys=[lock.key], args=[lock.value, lock.lease_ms]):
                        lock.lost = True
                        return
                except redis.exceptions.RedisError:
                    continue  # the server is away; the lease keeps ticking, fencing catches a loss

        lock._thread = threading.Thread(target=renew, name=f"mreg-lock-{self.lock_name}", daemon=True)
        lock._thread.start()

    def _stop_renewal(self, lock: RedisLock) -> None:
        lock._stop.set()
        if lock._thread is not None and lock._thread is not threading.current_thread():
            lock._thread.join(timeout=5)


def _decode(value):
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value
    if isinstance(value, list | tuple):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    return value




@dataclass
class Snapshot:
    """A key as it was before a session first touched it: ``DUMP`` bytes and ``PTTL`` (None: absent)."""

    key: bytes | str
    dump: bytes | None
    pttl: int


class RedisSession:
    """Steps and mirror rows on a Redis target.

    Non-transactional: each step runs as it comes and each mirror row is appended at once.
    Transactional: each step still runs at once (later steps and ``query`` see it), but
    first the keys it will touch (``COMMAND GETKEYS``; the declared ``KEYS`` of ``EVAL``)
    are saved with ``DUMP``/``PTTL``; ``rollback()`` (or leaving without ``commit()``)
    puts them back with ``RESTORE ... REPLACE`` (or ``DEL`` when they did not exist) in one
    ``MULTI``/``EXEC``. Mirror rows wait for ``commit()``, which appends them. Redis cannot
    make this atomic against a crash: a killed process leaves the steps applied and no
    mirror row, which is why the adapter declares ``transactional_ddl = False`` and the
    engine commits ``apply_started`` before running a Redis migration.
    A step whose keys cannot be known (``RESHAPE``, keyless commands such as
    ``FLUSHDB``) makes the session *irreversible*: ``rollback()`` then raises
    ``IrreversibleStep`` after restoring what it can.
    """

    def __init__(self, adapter: RedisAdapter, transactional: bool) -> None:
        self.adapter = adapter
        self.transactional = transactional
        self.path: str | None = None
        self._saved: dict = {}
        self._order: list[Snapshot] = []
        self._irreversible: list[Step] = []
        self._rows: list[MirrorRow] = []
        self.done = False

    def __enter__(self) -> RedisSession:
        self.adapter._c()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done and self.transactional:
            try:
                self.rollback()
            except IrreversibleStep:
                if exc_type is None:
                    raise

    # -- steps

    def execute(self, step: Step, *, path: str | None = None) -> object:
        """Run one step now (see the class docstring for what a transactional session saves first)."""
        if self.transactional:
            self._save_keys(step)
        try:
            return self.adapter.run_step(step)
        except StepFailed as exc:
            where = path or self.path
            if where and where not in exc.message:
                exc.message = f"{where}: {exc.message}"
                exc.args = (exc.message,)
                exc.data["path"] = where
            raise

    def reshape(self, step: Step, cursor: int = 0):
        """A ``RESHAPE`` batch by batch (see ``RedisAdapter.reshape``); irreversible in this session."""
        if self.transactional:
            self._irreversible.append(step)
        yield from self.adapter.reshape(step, cursor)

    def query(self, text: str) -> list[dict]:
        return self.adapter.query(text)

    def set_timeouts(self, lock_timeout_ms: int | None = None, statement_timeout_ms: int | None = None) -> None:
        """Redis has no per-statement timeouts; accepted for the engine's sake and ignored."""

    def _save_keys(self, step: Step) -> None:
        args = step_args(step)
        name = args[0].upper()
        if name == "RESHAPE":
            self._irreversible.append(step)
            return
        if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO") and len(args) >= 3:
            try:
                keys = args[3:3 + int(args[2])]
            except ValueError:
                keys = []
        else:
            keys = self.adapter.command_keys(args)
            if keys is None:
                self._irreversible.append(step)
                return
        client = self.adapter._c()
        fresh = [k for k in keys if k not in self._saved]
        if not fresh:
            return
        with self.adapter._errors("saving keys before a step", step):
            pipe = client.pipeline(transaction=True)
            for key in fresh:
                pipe.dump(key).pttl(key)
            replies = pipe.execute()
        for i, key in enumerate(fresh):
            snap = Snapshot(key=key, dump=replies[2 * i], pttl=int(replies[2 * i + 1]))
            self._saved[key] = snap
            self._order.append(snap)

    # -- mirror, commit, rollback

    def append_mirror(self, row: MirrorRow) -> None:
        if not self.transactional:
            self.adapter.append_mirror(row)
        else:
            check_row(row)
            self._rows.append(row)

    def commit(self) -> None:
        """Append the queued mirror rows (all in one atomic script) and forget the saved keys."""
        if self.done:
            return
        self.done = True
        rows, self._rows = self._rows, []
        self._saved, self._order, self._irreversible = {}, [], []
        self.adapter.append_rows(rows)

    def rollback(self) -> None:
        """Put every saved key back as it was; raise ``IrreversibleStep`` if some step could not be undone."""
        if self.done:
            return
        self.done = True
        self._rows = []
        if self._order:
            with self.adapter._errors("rollback"):
                pipe = self.adapter._c().pipeline(transaction=True)
                for snap in reversed(self._order):
                    if snap.dump is None:
                        pipe.delete(snap.key)
                    else:
                        pipe.restore(snap.key, max(snap.pttl, 0), snap.dump, replace=True)
                pipe.execute()
        undone, self._irreversible = self._irreversible, []
        self._saved, self._order = {}, []
        if undone:
            first = undone[0]
            raise IrreversibleStep(
                f"target {self.adapter.target.name}: rolled back what could be undone, but "
                f"{len(undone)} step(s) touched keys mreg could not save (first at line {first.line}: "
                f"{first.content[:60]!r})", hint="write a rollback section for this migration and run "
                "`mreg rollback`", target=self.adapter.target.name, line=first.line, step=first.name)
