"""``mreg apply --dry-run``: run the plan where it can be undone, and say plainly what was not run.

Planned under the targets' locks like a real run; nothing is ledgered (no event, no mirror row, no
checkpoint). Per target kind:

- **PostgreSQL.** Every step that can run inside a transaction runs in ONE transaction on the target
  that is rolled back at the end (it takes the same locks a real run would, until that rollback).
  A backfill runs its first batch there. When the target's plan holds a phase that a transaction
  cannot hold (``txmode: none`` statements such as ``CREATE INDEX CONCURRENTLY`` or ``VACUUM``, a
  backfill phase), the phases from the first such one on run instead on a **shadow database**: a
  throw-away database on the same server (``mreg_shadow_<tag>_<hex>``) holding a schema-only copy of
  the target made with ``pg_dump --schema-only`` and loaded with ``psql``, where the earlier phases
  are replayed first; there every statement runs as ``mreg apply`` would run it (each non-
  transactional one on its own, backfills batch by batch). The copy has the target's tables, indexes,
  functions and schemas but **no rows**: a backfill there updates nothing (the target's key range is
  reported instead) and a validation rule about data is reported, not enforced. The shadow is dropped
  at the end (and a shadow a killed dry run left behind is dropped by the next dry run on that
  target). Without a shadow (no ``CREATEDB`` right, no ``pg_dump``/``psql`` of the server's major
  version — found on ``MREG_PG_BIN``, beside pgserver, on ``PATH`` or in ``/usr/lib/postgresql``)
  those statements are listed as not run, with the reason.
- **TimescaleDB.** No shadow: the development server (PGlite) has one database, and a schema-only
  copy of a TimescaleDB database is not a working one (its hypertables live in catalog tables that a
  schema-only dump leaves empty). Everything a transaction can hold runs in the rolled-back
  transaction; the rest is listed as not run.
- **Neo4j.** Data statements run in one explicit transaction that is rolled back (other sessions never
  see them). Schema commands and ``CALL {…} IN TRANSACTIONS`` commit on their own, so they are not
  run: each is compiled with ``EXPLAIN`` (which plans a statement without running it) and listed.
- **Redis.** Nothing runs (a command cannot be undone without other clients seeing it). Each command
  is checked against the server's ``COMMAND INFO`` (known, right number of arguments) and listed with
  the keys it would touch; a ``RESHAPE`` is listed with its pattern.

A step that fails is reported, the target's dry run stops, and ``mreg apply --dry-run`` exits as
``mreg apply`` would (3).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from registry.apply.progress import Progress
from registry.apply.runner import check_rules, needs_stepwise, shares_transaction
from registry.model import Step
from registry.targets.base import StepFailed

TIMESCALE_NO_SHADOW = ("TimescaleDB targets have no shadow database: the dev server has a single database and a "
                       "schema-only copy of a TimescaleDB database is not a working one")


def dry_run(eng, entries):
    """Dry-run ``entries`` (planned under ``eng``'s locks); yields Progress; raises the first failure at the end."""
    by_target: dict[str, list] = {}
    for e in entries:
        by_target.setdefault(e.target, []).append(e)
    failures: list[StepFailed] = []
    for name, items in by_target.items():
        adapter = eng.adapters[name]
        kind = getattr(adapter, "kind", "")
        run = {"postgresql": _sql, "timescale": _sql, "neo4j": _neo4j, "redis": _redis}.get(kind, _listed)
        try:
            yield from run(name, adapter, items)
        except StepFailed as exc:
            failures.append(exc)
            where = exc.data.get("dry_run_where")
            yield Progress("phase_failed", name, exc.data.get("migration"), exc.data.get("phase"),
                           message=f"dry run on {name} stopped" + (f" (on {where})" if where else "") + f": {exc}")
    if failures:
        raise failures[0]


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.strip().startswith(("--", "//"))]
    line = lines[0] if lines else text.strip()
    return line if len(line) <= 100 else line[:97] + "..."


def _step(name: str, e, i: int, step: Step, status: str, how: str) -> Progress:
    """One step's line: ``status`` is ok, checked, not_run or failed; ``how`` says where or why."""
    words = {"ok": "ok", "checked": "checked, not run", "not_run": "not run", "failed": "FAILED"}[status]
    return Progress("dry_run_step", name, e.migration.id, e.phase, e.tenant, i + 1, len(e.steps),
                    message=f"{words} ({how}): {_first_line(step.content)}",
                    data={"status": status, "how": how, "line": step.line or None})


def _note(name: str, e, message: str, **data) -> Progress:
    return Progress("dry_run_step", name, e.migration.id if e else None, e.phase if e else None,
                    e.tenant if e else None, message=message, data=data)


def _attempt(name: str, e, i: int, step: Step, run, status: str, how: str):
    """Run ``run()`` for one step: its line with ``status``/``how``, or a failed line and the error."""
    try:
        run()
    except StepFailed as exc:
        yield _step(name, e, i, step, "failed", str(exc.data.get("server_message") or exc))
        raise _fail(e, exc) from None
    yield _step(name, e, i, step, status, how)


def _fail(e, exc: StepFailed, where: str | None = None) -> StepFailed:
    exc.data.setdefault("migration", e.migration.id)
    exc.data.setdefault("phase", e.phase)
    if where:
        exc.data["dry_run_where"] = where
    return exc


def _rules(name: str, session, e, kind: str, adapter_kind: str, *, shadow: bool = False):
    bad = check_rules(session, e, kind, adapter_kind)
    if bad is not None:
        where = " on the shadow copy, which holds no rows" if shadow else ""
        yield Progress("validation_failed", name, e.migration.id, e.phase, e.tenant,
                       message=f"rule {bad['rule']} ({kind}){where}: expected {bad['expected']!r}, "
                               f"found {bad['found']!r}", data={"rule": bad["rule"], "shadow": shadow})


# ----------------------------------------------------------------------------- PostgreSQL, TimescaleDB


def _sql(name: str, adapter, items: list):
    stepwise = [needs_stepwise(e, adapter) for e in items]
    shadow, why = None, None
    if any(stepwise):
        if adapter.kind == "timescale":
            why = TIMESCALE_NO_SHADOW
        else:
            from registry.targets.sqlcommon import ShadowUnavailable

            try:
                shadow = Shadow(adapter)
            except ShadowUnavailable as exc:
                why = f"no shadow database: {exc}; {exc.hint}" if getattr(exc, "hint", None) else f"no shadow database: {exc}"
    try:
        first = stepwise.index(True) if shadow is not None else len(items)
        if first:
            yield _note(name, None, f"{first} phase(s) in one transaction on {name} that is rolled back")
        with adapter.session(True) as s:
            for e in items[:first]:
                yield from _in_transaction(name, adapter, s, e, why)
            s.rollback()
        if shadow is not None:
            yield _note(name, None, f"{len(items) - first} phase(s) from "
                                    f"{items[first].migration.id} {items[first].phase} on the shadow database "
                                    f"{shadow.name} (a schema-only copy of {name} made with pg_dump "
                                    f"{shadow.tools_version}; it holds no rows)", shadow=shadow.name)
            shadow.replay(items[:first])
            for e in items[first:]:
                yield from _on_shadow(name, adapter, shadow, e)
    finally:
        if shadow is not None:
            shadow.drop()
    tail = f"; shadow database {shadow.name} dropped" if shadow is not None else ""
    yield Progress("finished", target=name, message=f"dry run on {name}: rolled back{tail}; nothing recorded")


def _in_transaction(name: str, adapter, s, e, why: str | None):
    """One phase inside the target's rolled-back transaction."""
    m = e.migration
    yield from _rules(name, s, e, "pre", adapter.kind)
    for i, step in enumerate(e.steps):
        if not (step.transactional or shares_transaction(adapter, step)):
            yield _step(name, e, i, step, "not_run", why or "cannot run inside a transaction")
            continue
        yield from _attempt(name, e, i, step, lambda: s.execute(step, path=m.path), "ok", "rolled back")
    if e.phase == "migrate" and m.backfill is not None:
        yield from _first_batch(name, adapter, s, e)
        return  # the rest of the walk did not run: post rules would judge a partial backfill
    if why is None or all(st.transactional or shares_transaction(adapter, st) for st in e.steps):
        yield from _rules(name, s, e, "post", adapter.kind)


def _first_batch(name: str, adapter, s, e):
    """A backfill in the rolled-back transaction: its first batch only, and the walk it would make."""
    from registry.apply.backfill import FIRST_BATCH

    m, bf = e.migration, e.migration.backfill
    rng = adapter.backfill_range(bf.table, bf.key)
    if rng is None:
        yield _note(name, e, f"backfill {bf.table} by {bf.key}: the table is empty, nothing to walk",
                    status="ok", how="rolled back")
        return
    lo, hi = int(rng[0]), int(rng[1])
    cap = max(1, int(m.settings.batch_size or 1000))
    size = min(cap, FIRST_BATCH) if m.settings.max_batch_ms else cap
    b = min(lo + size, hi + 1)
    try:
        count = s.run_batch(bf.update, lo, b, path=m.path)
    except StepFailed as exc:
        yield _note(name, e, f"FAILED (rolled back): backfill batch [{lo}, {b}): {exc}", status="failed")
        raise _fail(e, exc) from None
    yield _note(name, e, f"ok (rolled back): backfill {bf.table} first batch [{lo}, {b}) updated {max(count, 0)} "
                         f"rows; the walk would cover keys {lo}..{hi} in batches of at most {cap} (not run)",
                status="ok", how="rolled back", lo=lo, hi=hi)


def _on_shadow(name: str, adapter, shadow: "Shadow", e):
    """One phase on the shadow database, run the way ``mreg apply`` runs it (nothing ledgered)."""
    m = e.migration
    target = shadow.adapter
    opts = {"tenant": e.tenant, "settings": m.settings}
    stepwise = needs_stepwise(e, target)
    with target.session(True, **opts) as s:
        yield from _rules(name, s, e, "pre", adapter.kind, shadow=True)
    if not stepwise:  # one transaction, as a real run
        with target.session(True, **opts) as s:
            for i, step in enumerate(e.steps):
                yield _shadow_step(name, s, e, i, step, "shadow")
            yield from _rules(name, s, e, "post", adapter.kind, shadow=True)
            s.commit()
        return
    for i, step in enumerate(e.steps):  # each statement on its own, committed, as a real run
        alone = not (step.transactional or shares_transaction(target, step))
        with target.session(not alone, **opts) as s:
            yield _shadow_step(name, s, e, i, step, "shadow, on its own" if alone else "shadow")
            s.commit()
    if e.phase == "migrate" and m.backfill is not None:
        yield from _shadow_backfill(name, adapter, target, e, opts)
    with target.session(True, **opts) as s:
        yield from _rules(name, s, e, "post", adapter.kind, shadow=True)


def _shadow_step(name: str, s, e, i: int, step: Step, how: str) -> Progress:
    try:
        s.execute(step, path=e.migration.path)
    except StepFailed as exc:
        raise _fail(e, exc, "the shadow database") from None
    return _step(name, e, i, step, "ok", how)


def _shadow_backfill(name: str, adapter, target, e, opts: dict):
    from registry.targets.sqlcommon import batches

    m, bf = e.migration, e.migration.backfill
    from registry.errors import DatabaseError

    try:
        real = adapter.backfill_range(bf.table, bf.key)
        where = (f"on {name} it would walk keys {real[0]}..{real[1]}" if real is not None
                 else f"{bf.table} is empty on {name} too")
    except DatabaseError:  # made by a phase of this plan: not on the target yet
        where = f"{bf.table} is not on {name} yet: its rows are the ones the earlier phases write"
    rng = target.backfill_range(bf.table, bf.key)
    rows = 0
    if rng is not None:
        for a, b in batches(int(rng[0]), int(rng[1]), max(1, int(m.settings.batch_size or 1000))):
            with target.session(True, **opts) as s:
                try:
                    rows += max(s.run_batch(bf.update, a, b, path=m.path), 0)
                except StepFailed as exc:
                    raise _fail(e, exc, "the shadow database") from None
                s.commit()
    else:
        with target.session(True, **opts) as s:  # an empty copy: the statement is still checked once
            try:
                s.run_batch(bf.update, 0, 0, path=m.path)
            except StepFailed as exc:
                raise _fail(e, exc, "the shadow database") from None
    yield _note(name, e, f"ok (shadow): backfill {bf.table} by {bf.key} updated {rows} rows of the copy; {where} "
                         f"in batches of at most {m.settings.batch_size} (not run there)", status="ok", how="shadow")


class Shadow:
    """A throw-away database beside a PostgreSQL target holding a schema-only copy of it."""

    def __init__(self, adapter) -> None:
        from registry.targets.postgres import PostgresAdapter, dbname_of

        self.source = adapter
        major = adapter.conn.info.server_version // 10000
        self.bin, self.tools_version = pg_tools(major)
        self.tag = hashlib.sha256(dbname_of(adapter.url).encode()).hexdigest()[:8]
        self._drop_leftovers()
        self.url = adapter.create_shadow(self.tag)
        self.name = dbname_of(self.url)
        try:
            self._copy_schema()
            self.adapter = PostgresAdapter(adapter.target, self.url)
            self.adapter.connect()
        except BaseException:
            adapter.drop_shadow(self.url)
            raise

    def _drop_leftovers(self) -> None:
        """Drop shadows of this target a killed dry run left (we hold the target's lock: none is in use)."""
        from registry.targets.postgres import SHADOW_PREFIX, with_dbname

        rows = self.source.conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                        (f"{SHADOW_PREFIX}{self.tag}\\_%",)).fetchall()
        for (name,) in rows:
            self.source.drop_shadow(with_dbname(self.source.url, name))

    def _copy_schema(self) -> None:
        from registry.targets.sqlcommon import ShadowUnavailable

        src, env = _conninfo(self.source.url)
        dst, _ = _conninfo(self.url)
        dump = subprocess.run([str(self.bin / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
                               "--dbname", src], env=env, capture_output=True, timeout=600)
        if dump.returncode != 0:
            raise ShadowUnavailable(f"pg_dump of target {self.source.target.name} failed: "
                                    f"{dump.stderr.decode(errors='replace').strip()[-500:]}",
                                    hint="check the target user's rights to read every schema",
                                    target=self.source.target.name)
        load = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                               "--dbname", dst], input=dump.stdout, env=env, capture_output=True, timeout=600)
        if load.returncode != 0:
            raise ShadowUnavailable(f"loading the schema of target {self.source.target.name} into the shadow "
                                    f"database failed: {load.stderr.decode(errors='replace').strip()[-500:]}",
                                    hint="the dump needs an extension or role the server lacks; see the message",
                                    target=self.source.target.name)

    def replay(self, entries: list) -> None:
        """Run phases the rolled-back transaction already showed, so later phases find their effects."""
        for e in entries:
            with self.adapter.session(True, tenant=e.tenant, settings=e.migration.settings) as s:
                for step in e.steps:
                    if step.transactional or shares_transaction(self.adapter, step):
                        s.execute(step, path=e.migration.path)
                s.commit()

    def drop(self) -> None:
        self.adapter.close() if hasattr(self, "adapter") else None
        self.source.drop_shadow(self.url)


def _conninfo(url: str) -> tuple[str, dict]:
    """A conninfo without the password (which goes to PGPASSWORD, out of the process list)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(**{k: v for k, v in params.items() if v is not None}), env


def pg_tools(major: int) -> tuple[Path, str]:
    """A folder with ``pg_dump`` and ``psql`` of major version ``major`` or later, and that version."""
    from registry.targets.sqlcommon import ShadowUnavailable

    seen = []
    for folder in _tool_folders():
        dump = folder / "pg_dump"
        if not (dump.is_file() and (folder / "psql").is_file()):
            continue
        try:
            out = subprocess.run([str(dump), "--version"], capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        found = re.search(r"(\d+)(?:\.(\d+))?", out)
        if not found:
            continue
        seen.append(f"{folder} ({found.group(0)})")
        if int(found.group(1)) >= major:
            return folder, found.group(0)
    raise ShadowUnavailable(
        f"no pg_dump and psql of PostgreSQL {major} or later" + (f" (found: {', '.join(seen)})" if seen else ""),
        hint=f"install the PostgreSQL {major} client tools, or set MREG_PG_BIN to the folder holding them")


def _tool_folders():
    if os.environ.get("MREG_PG_BIN"):
        yield Path(os.environ["MREG_PG_BIN"])
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        yield Path(spec.origin).parent / "pginstall" / "bin"
    found = shutil.which("pg_dump")
    if found:
        yield Path(found).parent
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        yield folder


# ----------------------------------------------------------------------------- Neo4j, Redis, others


def _neo4j(name: str, adapter, items: list):
    from registry.targets.neo4j import is_batched, is_schema_command

    yield _note(name, None, "data statements in one transaction that is rolled back; "
                            "schema commands and IN TRANSACTIONS batches compiled with EXPLAIN, not run")
    with adapter.session(True) as s:
        for e in items:
            m = e.migration
            yield from _rules(name, s, e, "pre", adapter.kind)
            alone = False
            for i, step in enumerate(e.steps):
                if step.kind != "cypher":
                    yield _step(name, e, i, step, "not_run", f"a {step.kind} step")
                    continue
                if is_schema_command(step.content) or is_batched(step.content):
                    alone = True
                    what = "a schema command" if is_schema_command(step.content) else "an IN TRANSACTIONS batch"
                    explain = Step(content="EXPLAIN " + step.content, kind="cypher", name=step.name, line=step.line)
                    yield from _attempt(name, e, i, step, lambda: adapter.run_alone(explain, m.path), "checked",
                                        f"{what} commits on its own; EXPLAIN accepted it")
                    continue
                yield from _attempt(name, e, i, step, lambda: s.execute(step, path=m.path), "ok", "rolled back")
            if not alone:
                yield from _rules(name, s, e, "post", adapter.kind)
        s.rollback()
    yield Progress("finished", target=name, message=f"dry run on {name}: rolled back; nothing recorded")


def _redis(name: str, adapter, items: list):
    from registry.targets.redis import parse_reshape, step_args

    yield _note(name, None, "Redis cannot undo a command unseen by other clients, so nothing runs; each "
                            "command is checked against COMMAND INFO and listed with its keys")
    for e in items:
        for i, step in enumerate(e.steps):
            try:
                args = step_args(step)
                if args[0].upper() == "RESHAPE":
                    shape = parse_reshape(step, args)
                    yield _step(name, e, i, step, "checked", f"would SCAN MATCH {shape.pattern} COUNT {shape.count}"
                                + (f" TYPE {shape.type}" if shape.type else "") + " and run its script per batch")
                    continue
                spec = adapter.command_spec(args[0])
                if spec is None:
                    raise _refused_here(e, step, f"unknown command {args[0]!r}")
                arity = spec[0]
                if (arity > 0 and len(args) != arity) or (arity < 0 and len(args) < -arity):
                    need = f"{arity}" if arity > 0 else f"at least {-arity}"
                    raise _refused_here(e, step, f"{args[0].upper()} takes {need} words, this has {len(args)}")
                keys = adapter.command_keys(args) or []
            except StepFailed as exc:
                yield _step(name, e, i, step, "failed", str(exc))
                raise _fail(e, exc) from None
            touched = f"keys {', '.join(map(str, keys[:5]))}" + ("…" if len(keys) > 5 else "") if keys else "no key"
            yield _step(name, e, i, step, "checked", f"known command, {touched}")
    yield Progress("finished", target=name, message=f"dry run on {name}: nothing ran; nothing recorded")


def _refused_here(e, step: Step, why: str) -> StepFailed:
    """What the server would answer when the command runs (a real run fails there, exit 3)."""
    where = f"{e.migration.path}:{step.line}" if step.line else e.migration.path
    return StepFailed(f"{where}: {why}", hint=f"fix the command at {where}", path=e.migration.path,
                      line=step.line, step=step.name)


def _listed(name: str, adapter, items: list):
    for e in items:
        for i, step in enumerate(e.steps):
            yield _step(name, e, i, step, "not_run", "this target's changes cannot be rolled back")
    yield Progress("finished", target=name, message=f"dry run on {name}: nothing ran; nothing recorded")
