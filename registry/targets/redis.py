"""The Redis adapter: ``.redis`` command steps, Lua, SCAN-driven reshapes, the stream mirror.

Split in three: this module (the adapter, steps, the lock), ``redis_mirror.py`` (keys, Lua
scripts, the stream entry codec) and ``redis_session.py`` (sessions with their undo log).

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

from contextlib import contextmanager
from dataclasses import dataclass, field

from registry.config import Target
from registry.errors import ConfigError, DatabaseError
from registry.model import Settings, Step
from registry.targets.base import (  # noqa: F401  (LockLost re-exported: its old home)
    CheckpointRegression,
    ConnectionLost,
    LockLost,
    MirrorConflict,
    MirrorRow,
    StepFailed,
    StepRefused,
)
from registry.targets.lease import DEFAULT_LEASE_MS, Lease, lease_options, wait_for_lease  # noqa: F401
from registry.targets.redis_mirror import (  # noqa: F401  (re-exported: the mirror's names)
    ACQUIRE_SCRIPT,
    APPEND_SCRIPT,
    CHECKPOINT_SCRIPT,
    RELEASE_SCRIPT,
    RENEW_SCRIPT,
    VERSION_HASH,
    _text,
    check_row,
    checkpoint_key,
    entry_id,
    latest_json,
    row_fields,
    row_from_entry,
    stream_key,
)
from registry.targets.redis_session import IrreversibleStep, RedisSession  # noqa: F401

DEFAULT_SCAN_COUNT = 500


# ----------------------------------------------------------------------------- errors


class RedisUnavailable(DatabaseError):
    """The Redis server could not be reached (connect) or went away (``data``: target, url)."""


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
class RedisLock(Lease):
    """A held lock: key, the value ``<owner>:<fence>``, and the fencing token (the lease: ``Lease``)."""

    key: str
    value: str
    owner: str
    fence: int


def _refused(step: Step, why: str) -> StepRefused:
    where = f"line {step.line}" if step.line else "a step"
    return StepRefused(f"{where}: {why}", hint="write one redis-cli command per line "
                       "(see docs/tutorial-redis.md)", line=step.line, step=step.name, content=step.content)


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
        self.lease_ms, self.lock_name = lease_options(self.options, target.name)
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

    def command_spec(self, name: str) -> tuple[int, set[str]] | None:
        """``(arity, flags)`` of a command as ``COMMAND INFO`` gives them, or None for an unknown command.

        Arity counts the command's name: ``n`` exactly ``n`` words, ``-n`` at least ``n``. (Dry runs.)
        """
        with self._errors("COMMAND INFO"):
            info = self._c().execute_command("COMMAND INFO", name)
        if not info or not info[0]:
            return None
        return int(info[0][1]), {_text(f) for f in info[0][2]}

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
        import redis

        key, fence_key = self._lock_keys()

        def take() -> RedisLock | None:
            with self._errors("lock acquire"):
                token = self._scripts["acquire"](keys=[key, fence_key], args=[owner, self.lease_ms])
            return RedisLock(key=key, value=f"{owner}:{int(token)}", owner=owner, fence=int(token),
                             lease_ms=self.lease_ms) if token else None

        lock = wait_for_lease(take, target=self.target.name, lease_ms=self.lease_ms, timeout_s=timeout_s,
                              holder=self.lock_holder)
        # renewed by the script itself, not through _errors: a lost connection is transient here
        lock.start_renewal(lambda: bool(self._scripts["renew"](keys=[lock.key], args=[lock.value, lock.lease_ms])),
                           (redis.exceptions.RedisError,), f"mreg-lock-{self.lock_name}")
        self._lock = lock
        return lock

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

    def _stop_renewal(self, lock: RedisLock) -> None:
        lock.stop_renewal()


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
