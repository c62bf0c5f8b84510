"""What every engine command opens first: the migrations, the ledger, the targets and their locks.

A target whose server is not available (``registry.dev.resolve_url`` raises
``TargetUnavailable``) is reported once and skipped, unless the command names it,
in which case the error goes up (exit 2, with the hint saying how to provide one).
Locks are taken in the order of the targets' names, so two operators needing the
same targets never wait on each other in a circle.
"""

from __future__ import annotations

import subprocess
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from registry.apply.logio import TargetLog, origin_of
from registry.apply.progress import Progress
from registry.errors import DatabaseError, TargetUnavailable

def load_migrations(cfg, emit=None) -> list:
    """The registered migrations (the registry's view), else the canonical files under ``migrations/``.

    ``emit(part, last)``, when given, receives the migrations in order, a part at a time, as
    they are parsed (the parse worker streams them; see ``Loading``), ``last`` true for the final
    part; the whole list is returned as well, once the parse cache is written.
    """
    if _registered_count(Path(cfg.catalog.value)):
        from registry.registration import registered_migrations

        found = list(registered_migrations(cfg))
        if found:
            if emit is not None:
                emit(found, True)
            return found
    return parse_folder(cfg, emit)


def _registered_count(catalog: Path) -> int:
    """How many active migrations catalog.db's registry holds (read without creating its tables)."""
    import sqlite3

    if not catalog.is_file():
        return 0
    try:
        conn = sqlite3.connect(str(catalog), timeout=60)
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'").fetchone()
            return conn.execute("SELECT count(*) FROM migrations WHERE status = 'active'").fetchone()[0] if found else 0
        finally:
            conn.close()
    except sqlite3.Error:
        return 1  # let the registry report what is wrong with it


def parse_folder(cfg, emit=None) -> list:
    """Parse every migration file under ``cfg.migrations.value`` (a flat folder or one per database).

    Unchanged files come from catalog.db's parse cache (``registry.apply.parsecache``).
    ``emit`` as for ``load_migrations``.
    """
    return _parse_cached(cfg, _folder_files(cfg), emit)


def _folder_files(cfg) -> list[tuple[str, bytes, str | None]]:
    """(path shown, bytes, database hint) of every migration file under ``cfg.migrations.value``.

    The files ``sorted(root.rglob("*"))`` lists (symlinked folders not entered), in that order,
    walked with ``os.walk`` and plain strings (pathlib costs more than the parsing of small files).
    """
    import os

    from registry.discovery.rules import database_from_path  # the scan's folder -> database rule
    from registry.parse import EXTENSIONS

    root = Path(cfg.migrations.value)
    if not root.is_dir():
        return []
    base = str(root)
    found = []
    for dirpath, _dirs, names in os.walk(base):
        rel = os.path.relpath(dirpath, base)
        parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        for name in names:
            stem, dot, ext = name.rpartition(".")
            if not dot or not stem or ext not in EXTENSIONS or name.startswith((".", "_")):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                found.append((parts + (name,), full))
    found.sort()
    top = str(cfg.root).rstrip(os.sep) + os.sep
    files = []
    for parts, full in found:
        shown = full[len(top):] if full.startswith(top) else full
        with open(full, "rb") as fh:
            files.append((shown, fh.read(), database_from_path("/".join(parts))))
    return files


PARALLEL_MIN_FILES = 100  # below this, parsing in a worker process gains less than it costs


class Loading:
    """The migrations of an engine command, parsed in a worker process while the engine connects.

    ``start_loading`` forks one worker (only where ``fork`` is safe: ``ledger.workers.context``,
    a single-threaded process) that runs ``load_migrations`` (the registry's files, or the folder
    with its parse cache) and sends the ``Migration`` objects back through a pipe, while this
    process imports the driver, connects, takes the locks and pulls the mirrors. ``result()`` waits for them; if the worker failed
    or died, they are loaded here, so a bad file raises its usual ``ParseError``.
    ``cancel()`` stops a worker whose result is no longer wanted. See docs/performance.md.

    The worker sends the migrations in parts of ``EMIT_EVERY`` as it parses them (each a pickled
    list), then an empty ``b""`` once all are sent, before it writes the parse cache; ``None``
    pickled means it failed. This process unpickles each part as it comes, so only the last part
    is left when the worker is done, and the worker's cache write is not waited for before the
    engine goes on (it is joined at exit).
    """

    def __init__(self, cfg, ready: list | None = None) -> None:
        self.cfg, self.ready = cfg, ready
        self.proc = self.conn = None
        if ready is None:
            self._start()

    def _start(self) -> None:
        from ledger.workers import context

        ctx = context()
        if ctx.get_start_method() != "fork":
            return
        reader, writer = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_parse_worker, args=(self.cfg, reader, writer), daemon=True,
                                name="mreg-parse")
        self.proc.start()
        writer.close()
        self.conn = reader

    def result(self) -> list:
        if self.ready is not None:
            return self.ready
        found = None
        if self.conn is not None:
            import pickle

            parts: list | None = []
            try:
                while (data := self.conn.recv_bytes()) != b"":
                    part = pickle.loads(data)
                    if part is None:  # the worker failed
                        parts = None
                        break
                    parts.extend(part)
            except (EOFError, OSError, pickle.UnpicklingError):
                parts = None
            if parts is None:
                self._stop()
            else:  # all received: the worker writes the parse cache meanwhile
                found = parts
                self._detach()
        if found is None:  # no worker, or it failed: load here (a bad file raises its ParseError)
            found = load_migrations(self.cfg)
        self.ready = found
        return found

    def cancel(self) -> None:
        if self.proc is not None and self.ready is None:
            self.proc.terminate()
        self._stop()

    def _detach(self) -> None:
        """Leave the worker to finish its cache write; it is joined at exit (before multiprocessing
        would terminate it as a daemon) or by whoever calls ``_stop`` on this object."""
        import atexit

        self.conn.close()
        self.conn = None
        proc, self.proc = self.proc, None
        atexit.register(proc.join)

    def _stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            self.proc.join()
            self.proc = None


def _parse_worker(cfg, reader, writer) -> None:
    import pickle
    import queue
    import threading

    from ledger.workers import worker_signals

    worker_signals()
    reader.close()  # so that the pipe breaks (and this worker ends) if the engine's process dies
    # A thread writes to the pipe, so parsing goes on while the engine is not reading yet
    # (a pipe holds 64 KB; one part is about 60 KB).
    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def send() -> None:
        try:
            while (data := outbox.get()) is not None:
                writer.send_bytes(data)
        except OSError:  # the engine's process is gone, or the pipe broke: nobody is listening
            pass

    sender = threading.Thread(target=send, name="mreg-parse-send", daemon=True)
    sender.start()

    def emit(part: list, last: bool) -> None:
        outbox.put(pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL))
        if last:  # all sent: the engine goes on while the parse cache is written
            outbox.put(b"")

    try:
        load_migrations(cfg, emit)
    except BaseException:  # the engine parses again and reports the error itself
        outbox.put(pickle.dumps(None))
    finally:
        outbox.put(None)
        sender.join()
        writer.close()


_PREFETCHED: dict = {}  # the Loading started by prefetch_loading, by _loading_key


def _loading_key(cfg) -> tuple:
    return (str(cfg.root), str(cfg.migrations.value), str(cfg.catalog.value))


def prefetch_loading(cfg) -> None:
    """Start ``start_loading(cfg)`` early (the CLI calls it before Typer parses ``apply``'s options);
    the engine's ``start_loading`` takes it over when its configuration names the same folders."""
    discard_prefetched()
    _PREFETCHED[_loading_key(cfg)] = start_loading(cfg)


def discard_prefetched() -> None:
    """Stop a prefetched load nobody took over (the command failed before it needed it)."""
    for old in _PREFETCHED.values():
        old.cancel()
    _PREFETCHED.clear()


def start_loading(cfg) -> Loading:
    """Begin loading the migrations (``load_migrations``); 100 or more load in a worker process."""
    early = _PREFETCHED.pop(_loading_key(cfg), None)
    discard_prefetched()
    if early is not None:
        return early
    if (_registered_count(Path(cfg.catalog.value)) < PARALLEL_MIN_FILES
            and _count_files(Path(cfg.migrations.value), PARALLEL_MIN_FILES) < PARALLEL_MIN_FILES):
        return Loading(cfg, ready=load_migrations(cfg))
    return Loading(cfg)  # the worker reads the registry or lists, reads and parses the folder


def _count_files(root: Path, enough: int) -> int:
    """How many entries the folder tree holds, counting up to ``enough``."""
    import os

    n = 0
    stack = [root]
    while stack and n < enough:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        n += 1
        except OSError:
            continue
    return n


EMIT_EVERY = 100  # migrations per part handed to ``emit`` (the worker's pickled messages)


def _parse_cached(cfg, files: list[tuple[str, bytes, str | None]], emit=None) -> list:
    """Every file's ``Migration`` (from the parse cache, else parsed), in order; ``emit`` gets them
    part by part as they are ready, the last part before the new cache entries are written."""
    import sqlite3

    from registry.apply.parsecache import ParseCache, cache_key
    from registry.parse import parse_migration

    try:
        cfg.catalog.value.parent.mkdir(parents=True, exist_ok=True)
        cache = ParseCache(cfg.catalog.value)
    except (OSError, sqlite3.Error):  # no writable catalog: parse everything
        out = [parse_migration(shown, data, database=db) for shown, data, db in files]
        if emit is not None:
            emit(out, True)
        return out
    try:
        keys = [cache_key(shown, db, data) for shown, data, db in files]
        known = cache.get_many(keys)
        out = []
        sent = 0
        for key, (shown, data, db) in zip(keys, files):
            m = known.get(key)
            if m is None:
                m = parse_migration(shown, data, database=db)
                cache.put(key, m)
            out.append(m)
            if emit is not None and len(out) - sent >= EMIT_EVERY:
                emit(out[sent:], False)
                sent = len(out)
        if emit is not None:
            emit(out[sent:], True)
        return out
    finally:
        cache.close()


def open_adapter(cfg, target):
    """A connected adapter for ``target``; ``TargetUnavailable`` when it has no server."""
    from registry.targets import adapter_class

    if target.is_dev:
        from registry.dev import resolve_url

        url = resolve_url(cfg, target)
    else:
        url = target.url
    adapter = adapter_class(target.type)(target, url)
    adapter.connect()
    return adapter


@dataclass
class Engine:
    """The open state of one engine command: ledger store, signer, adapters, logs, held locks."""

    cfg: object
    store: object
    signer: object | None
    adapters: dict = field(default_factory=dict)
    logs: dict = field(default_factory=dict)
    unavailable: dict = field(default_factory=dict)  # name -> message
    notices: list = field(default_factory=list)      # Progress records to report
    locks: dict = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def log(self, name: str) -> TargetLog:
        return self.logs[name]

    def close(self) -> None:
        """Release the locks, close the adapters and catalog.db (in reverse order of opening)."""
        self.stack.close()


def open_engine(cfg, names: list[str], *, required: str | None = None, sign: bool = True) -> Engine:
    """Open catalog.db, the signing key and an adapter per target in ``names`` (skipping unavailable ones)."""
    from ledger.store import LedgerStore

    cfg.catalog.value.parent.mkdir(parents=True, exist_ok=True)
    store = LedgerStore(cfg.catalog.value)
    signer = None
    if sign:
        from ledger.keys import load_signer

        signer = load_signer(cfg.key.value)
    eng = Engine(cfg, store, signer)
    eng.stack.callback(store.close)
    for name in sorted(set(names)):
        target = cfg.target(name)
        try:
            adapter = open_adapter(cfg, target)
        except (TargetUnavailable, DatabaseError) as exc:
            if name == required:
                eng.close()
                raise
            eng.unavailable[name] = exc.message + (f" ({exc.hint})" if exc.hint else "")
            eng.notices.append(Progress("target_unavailable", target=name,
                                        message=f"target {name} not available: {eng.unavailable[name]}"))
            continue
        eng.adapters[name] = adapter
        eng.stack.callback(adapter.close)
        eng.logs[name] = TargetLog(store, origin_of(cfg, name), adapter, signer, target)
    if eng.logs:
        found = registrations(cfg, store)
        for log in eng.logs.values():
            log.registrations = found
    return eng


def registrations(cfg, store) -> dict[str, str]:
    """Migration id -> event id of its latest ``register`` statement in the registry log."""
    from ledger.log import parse_leaf

    origin = f"{cfg.project.value}/registry"
    out: dict[str, str] = {}
    if origin not in store.origins():
        return out
    for leaf in store.leaves(origin):
        stmt = parse_leaf(leaf).statement
        mid = (stmt.get("migration") or {}).get("id")
        if stmt.get("type") == "register" and mid:
            out[mid] = stmt["event_id"]
    return out


def lock_all(eng: Engine, owner: str, timeout_s: float) -> None:
    """Take every open target's lock (in name order); released by ``eng.close()``."""
    for name in sorted(eng.adapters):
        adapter = eng.adapters[name]
        adapter.ensure_mirror()  # before the lock: its objects exist before anyone records a lock owner
        handle = adapter.acquire_lock(owner, timeout_s)
        eng.locks[name] = handle
        eng.stack.callback(adapter.release_lock, handle)


def sync_all(eng: Engine) -> dict[str, int]:
    return {name: log.sync() for name, log in sorted(eng.logs.items())}


def engine_targets(cfg, target: str | None, migrations: list | None = None) -> list[str]:
    """The targets a command works on: the one named, else every configured target."""
    if target is not None:
        cfg.target(target)  # raises ConfigError for an unknown name
        return [target]
    return sorted(cfg.targets)


def write_checkpoints(eng: Engine) -> list[Progress]:
    """Checkpoint every log that grew, in catalog.db, in its target and in Git ``refs/notes/mreg``."""
    out = []
    notes = []
    for name, log in sorted(eng.logs.items()):
        if not log.appended:
            log.flush()
            continue
        try:
            note = log.checkpoint()
        except DatabaseError as exc:
            out.append(Progress("warning", target=name, message=f"checkpoint not written to {name}: {exc}"))
            continue
        if note:
            notes.append(note)
            out.append(Progress("checkpoint_written", target=name, done=log.size,
                                message=f"checkpoint {log.origin} size {log.size}"))
    if notes:
        git_note(eng.cfg, eng.store)
    return out


def git_note(cfg, store) -> bool:
    """Store the latest checkpoint of every log as the note of HEAD under ``refs/notes/mreg``."""
    root = Path(cfg.root)
    if not (root / ".git").exists():
        return False
    texts = []
    for origin in sorted(store.origins()):
        cp = store.latest_checkpoint(origin)
        if cp:
            texts.append(cp.rstrip("\n"))
    if not texts:
        return False
    try:
        head = subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return False
        who = subprocess.run(["git", "config", "user.email"], cwd=root, capture_output=True, text=True, timeout=10)
        ident = [] if who.stdout.strip() else ["-c", "user.name=mreg", "-c", "user.email=mreg@localhost"]
        done = subprocess.run(["git", *ident, "notes", "--ref=mreg", "add", "-f", "-F", "-", "HEAD"], cwd=root,
                              input="\n\n".join(texts) + "\n", capture_output=True, text=True, timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False

