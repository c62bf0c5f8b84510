"""Neo4j sessions: one explicit transaction for data steps and mirror nodes; schema commands
and ``IN TRANSACTIONS`` batches on their own. Split from ``registry/targets/neo4j.py``."""

from __future__ import annotations

from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import MirrorRow, StepRefused


class Neo4jSession:
    """Steps and mirror rows on a Neo4j target (see the module docstring for how each step runs).

    Transactional: one explicit transaction holds the data steps and the mirror nodes;
    ``commit()`` commits both, leaving without it rolls both back. Schema commands and
    ``IN TRANSACTIONS`` batches run on their own and are NOT undone by a rollback
    (``autocommitted`` lists them). Non-transactional: each step and row commits on its own.
    """

    def __init__(self, adapter, transactional: bool, timeout_ms: int | None) -> None:
        self.adapter = adapter
        self.transactional = transactional
        self.timeout_s = timeout_ms / 1000 if timeout_ms else None
        self.path: str | None = None
        self.autocommitted: list[Step] = []
        self.done = False
        self._session = None
        self._tx = None
        self._wrote = False  # a data step ran in the open transaction

    def __enter__(self) -> Neo4jSession:
        with self.adapter.errors("opening a session"):
            self._session = self.adapter._session()
            if self.transactional:
                self._tx = self._session.begin_transaction(timeout=self.timeout_s)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.done:
                self.rollback()
        except DatabaseError:
            if exc_type is None:
                raise  # else the step's own error says more; the server drops the transaction anyway
        finally:
            self._session.close()

    def execute(self, step: Step, *, path: str | None = None, params: dict | None = None) -> dict:
        """Run one step; returns the server's counters (nodes created, properties set, …)."""
        from registry.targets.neo4j import counters, is_batched, is_schema_command

        path = path or self.path
        if is_schema_command(step.content) or is_batched(step.content):
            if self._wrote:
                what = "a schema command" if is_schema_command(step.content) else "an IN TRANSACTIONS batch"
                where = f"{path or '<step>'}:{step.line}"
                raise StepRefused(
                    f"{where}: {what} after data writes in the same transaction on target "
                    f"{self.adapter.target.name}: it would wait for that transaction forever",
                    hint="move it to its own phase or file, before the data writes, or mark the file "
                         "`txmode: none`", target=self.adapter.target.name, path=path, line=step.line,
                    step=step.name)
            done = self.adapter.run_alone(step, path, params, timeout_s=self.timeout_s)
            self.autocommitted.append(step)
            return done
        with self.adapter.errors("step", step, path):
            if self._tx is not None:
                self._wrote = True
                return counters(self._tx.run(step.content, params or {}).consume())
            return self._session.execute_write(
                lambda tx: counters(tx.run(step.content, params or {}).consume()))

    def query(self, text: str, params: dict | None = None) -> list[dict]:
        """Records of a read (validation rules, checks), inside the session's transaction if any."""
        with self.adapter.errors("query", Step(content=text, kind="cypher", name="query"), self.path):
            if self._tx is not None:
                return self._tx.run(text, params or {}).data()
            return self._session.run(text, params or {}).data()

    def set_timeouts(self, lock_timeout_ms: int | None = None, statement_timeout_ms: int | None = None) -> None:
        """Neo4j sets a transaction's timeout when it begins; later changes apply to the next session."""

    def append_mirror(self, row: MirrorRow) -> None:
        if self._tx is None:
            self.adapter.append_mirror(row)
            return
        with self.adapter.errors(f"mirror append of {row.origin} seq {row.seq}"):
            self.adapter._append_tx(self._tx, row)

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        if self._tx is not None:
            with self.adapter.errors("commit"):
                self._tx.commit()

    def rollback(self) -> None:
        if self.done:
            return
        self.done = True
        if self._tx is not None and not self._tx.closed():
            with self.adapter.errors("rollback"):
                self._tx.rollback()
