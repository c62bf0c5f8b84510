"""Neo4j adapter specifics beyond the conformance suite: schema commands beside data writes,
``CALL {…} IN TRANSACTIONS`` batches, the ``(:SchemaVersion)`` chain, lease takeover and
fencing, the connection dying mid-run. A real Neo4j 5 server throughout."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from registry.config import Target
from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import LockTimeout, StepFailed, mirror_row_from_leaf
from registry.targets.neo4j import LockLost, Neo4jAdapter, is_batched, is_schema_command
from registry.targets.sqlcommon import CheckpointRegression, ConnectionLost, MirrorConflict, StepRefused
from tests.targets.leaves import make_log

ORIGIN = "acme/graph"
REPO = Path(__file__).resolve().parents[2]


make_leaves = partial(make_log, origin=ORIGIN, engine="neo4j")  # chained, signed leaves


def adapter_for(url: str, **options) -> Neo4jAdapter:
    a = Neo4jAdapter(Target(name="graph", type="neo4j", url=url, source="test", options=options), url)
    a.connect()
    return a


def cy(text: str, line: int = 1) -> Step:
    return Step(content=text, kind="cypher", line=line, name=f"line {line}")


@pytest.fixture
def adapter(neo4j_uri):
    a = adapter_for(neo4j_uri, lock_lease_ms=900)
    yield a
    a.close()


# ----------------------------------------------------------------------------- step kinds


def test_step_classification():
    assert is_schema_command("CREATE INDEX entity_canonical_id IF NOT EXISTS FOR (e:Entity) ON (e.canonical_id)")
    assert is_schema_command("// note\n  drop constraint c IF EXISTS")
    assert is_schema_command("CREATE TEXT INDEX t FOR (n:N) ON (n.p)")
    assert not is_schema_command("CREATE (:Index {name: 'constraint'})")
    assert not is_schema_command("MATCH (e:Entity) SET e.x = 1")
    assert is_batched("MATCH (e:Entity) CALL { WITH e SET e.x = 1 } IN TRANSACTIONS OF 100 ROWS")
    assert is_batched("CALL { MATCH (n) DETACH DELETE n } IN 4 CONCURRENT TRANSACTIONS")
    assert not is_batched("MATCH (n) RETURN n")


def test_schema_command_runs_on_its_own_and_survives_a_rollback(adapter):
    with adapter.session(transactional=True) as s:
        s.execute(cy("CREATE INDEX entity_x IF NOT EXISTS FOR (e:Entity) ON (e.x)"))
        s.execute(cy("CREATE (:Entity {id: 'e1', x: 1})"))
        assert s.query("MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 1}]
        assert [st.content[:12] for st in s.autocommitted] == ["CREATE INDEX"]
        # left without commit: the data write is rolled back, the index is not (schema never rolls back)
    assert adapter.run("MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]
    assert adapter.run("SHOW INDEXES YIELD name WHERE name = 'entity_x' RETURN count(*) AS n") == [{"n": 1}]


def test_schema_command_after_data_writes_in_one_transaction_is_refused(adapter):
    """Neo4j would make the index wait for the open transaction that wrote the label: never send it."""
    with pytest.raises(StepRefused, match="after data writes") as err:
        with adapter.session(transactional=True) as s:
            s.execute(cy("CREATE (:Entity {id: 'e1'})", line=3))
            s.execute(cy("CREATE INDEX entity_y IF NOT EXISTS FOR (e:Entity) ON (e.y)", line=5), path="m.cypher")
    assert err.value.data["line"] == 5 and err.value.exit_code == 2
    assert adapter.run("SHOW INDEXES YIELD name WHERE name = 'entity_y' RETURN count(*) AS n") == [{"n": 0}]
    assert adapter.run("MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]


def test_call_in_transactions_batch_runs_in_an_implicit_transaction(adapter):
    adapter.run("UNWIND range(1, 1000) AS i CREATE (:Entity {id: 'e' + i, legacy: i})")
    batch = cy("MATCH (e:Entity) WHERE e.canonical_id IS NULL "
               "CALL (e) { SET e.canonical_id = e.id } IN TRANSACTIONS OF 100 ROWS")
    with adapter.session(transactional=True) as s:
        done = s.execute(batch)
        s.commit()
    assert done.get("properties_set") == 1000
    assert adapter.run("MATCH (e:Entity) WHERE e.canonical_id IS NULL RETURN count(e) AS n") == [{"n": 0}]
    # the same statement sent into an explicit transaction is what Neo4j refuses; mreg never does that
    adapter.run("CREATE (:Entity {id: 'late'})")
    with pytest.raises(StepFailed, match="implicit transaction"):
        with adapter._session() as raw, adapter.errors("probe"):
            with raw.begin_transaction() as tx:
                tx.run(batch.content).consume()


def test_example_migration_expand_migrate_contract(adapter):
    """The repository's Neo4j examples (the seed's canonical_id), parsed and run phase by phase."""
    from registry.parse import parse_migration

    files = sorted((REPO / "migrations" / "neo4j").glob("*.cypher"))
    assert files
    for path in files:
        m = parse_migration(str(path.relative_to(REPO)), path.read_bytes())
        for phase in m.phase_names:
            with adapter.session(transactional=m.txmode != "none") as s:
                for step in m.phases[phase]:
                    s.execute(step, path=m.path)
                s.commit()
        for rule in m.validation:
            if rule.check.startswith("cypher:"):
                assert adapter.run(rule.check.removeprefix("cypher:")) == [rule.expected], rule.name
    assert adapter.run("MATCH (e:Entity) WHERE e.canonical_id IS NULL RETURN count(e) AS n") == [{"n": 0}]


# ----------------------------------------------------------------------------- the mirror


def test_schema_version_nodes_are_linked_by_next_with_unique_uid(adapter):
    adapter.ensure_mirror()
    leaves = make_leaves(3)
    with adapter.session(transactional=True) as s:
        s.execute(cy("CREATE (:Entity {id: 'with-row'})"))
        s.append_mirror(mirror_row_from_leaf(leaves[0]))
        s.commit()
    for leaf in leaves[1:]:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    chain = adapter.run("MATCH p = (a:SchemaVersion {uid: $a})-[:NEXT*]->(b:SchemaVersion {uid: $b}) "
                        "RETURN length(p) AS hops, b.leaf AS leaf", a=f"{ORIGIN}:0", b=f"{ORIGIN}:2")
    assert chain[0]["hops"] == 2 and bytes(chain[0]["leaf"]) == leaves[2]
    assert adapter.run("MATCH (v:SchemaVersion) WHERE NOT ()-[:NEXT]->(v) RETURN v.seq AS s") == [{"s": 0}]
    with pytest.raises(StepFailed, match="already exists"):  # the uid constraint holds even against raw writes
        adapter.run("CREATE (:SchemaVersion {uid: $uid})", uid=f"{ORIGIN}:1")
    assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == leaves


def test_append_refuses_gap_duplicate_and_broken_chain(adapter):
    adapter.ensure_mirror()
    leaves = make_leaves(3)
    for leaf in leaves[:2]:
        adapter.append_mirror(mirror_row_from_leaf(leaf))
    with pytest.raises(MirrorConflict, match="seq 1"):
        adapter.append_mirror(mirror_row_from_leaf(leaves[1]))
    gap = make_leaves(1, start=4, prev=hashlib.sha256(b"\x00" + leaves[1]).digest())[0]
    with pytest.raises(MirrorConflict, match="next entry is seq 2"):
        adapter.append_mirror(mirror_row_from_leaf(gap))
    fork = make_leaves(1, start=2, prev=b"\x05" * 32)[0]
    with pytest.raises(MirrorConflict, match="does not chain"):
        adapter.append_mirror(mirror_row_from_leaf(fork))
    adapter.append_mirror(mirror_row_from_leaf(leaves[2]))
    assert adapter.mirror_rows(ORIGIN) == [mirror_row_from_leaf(x) for x in leaves]


def test_checkpoint_node_only_grows(adapter):
    adapter.ensure_mirror()
    adapter.write_checkpoint(ORIGIN, 2, "two")
    adapter.write_checkpoint(ORIGIN, 7, "seven")
    with pytest.raises(CheckpointRegression) as err:
        adapter.write_checkpoint(ORIGIN, 6, "six")
    assert err.value.data == {"target": "graph", "origin": ORIGIN, "stored": 7, "offered": 6}
    assert adapter.run("MATCH (c:SchemaCheckpoint) RETURN c.origin AS o, c.size AS s, c.note AS n") == [
        {"o": ORIGIN, "s": 7, "n": "seven"}]


# ----------------------------------------------------------------------------- the lock


def test_lock_takeover_after_the_lease_expires_and_fencing(neo4j_uri, adapter):
    adapter.ensure_mirror()
    old = adapter.acquire_lock("frozen@host", 5)
    adapter._stop_renewal(old)  # the holder stops renewing (a crash, a frozen process)
    other = adapter_for(neo4j_uri, lock_lease_ms=900)
    try:
        with pytest.raises(LockTimeout, match="frozen@host"):
            other.acquire_lock("next@host", 0.2)
        started = time.monotonic()
        new = other.acquire_lock("next@host", 10)
        assert time.monotonic() - started < 3
        with pytest.raises(LockLost):
            adapter.append_mirror(mirror_row_from_leaf(make_leaves(1)[0]))
        adapter.release_lock(old)  # compare-and-delete: the new holder's node stays
        assert "next@host" in other.lock_holder()
        other.append_mirror(mirror_row_from_leaf(make_leaves(1)[0]))
        other.release_lock(new)
        assert other.lock_holder() is None
    finally:
        other.close()


def test_renewal_keeps_the_lock_past_its_lease(adapter):
    lock = adapter.acquire_lock("busy@host", 5)
    time.sleep(2.2)  # more than two leases of 900 ms
    assert adapter.lock_alive()
    assert "busy@host" in adapter.lock_holder()
    adapter.release_lock(lock)
    assert not adapter.lock_alive()


def test_concurrent_acquirers_get_the_lock_one_at_a_time(neo4j_uri):
    adapters = [adapter_for(neo4j_uri, lock_lease_ms=5000) for _ in range(4)]
    inside, overlaps, errors = [], [], []

    def work(a: Neo4jAdapter, i: int) -> None:
        try:
            lock = a.acquire_lock(f"op{i}@host", 30)
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(list(inside))
            time.sleep(0.2)
            inside.remove(i)
            a.release_lock(lock)
        except DatabaseError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a, i)) for i, a in enumerate(adapters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for a in adapters:
        a.close()
    assert not errors and not overlaps


# ----------------------------------------------------------------------------- the connection dies


class Proxy:
    """A TCP forwarder in front of the real server, so a test can cut the line mid-run."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_connection_lost_mid_run_rolls_back_and_the_next_run_proceeds(neo4j_uri, adapter):
    from urllib.parse import urlsplit

    adapter.ensure_mirror()
    parts = urlsplit(neo4j_uri)
    proxy = Proxy((parts.hostname, parts.port))
    url = f"bolt://127.0.0.1:{proxy.port}"
    a = adapter_for(url)
    leaves = make_leaves(2)
    try:
        with pytest.raises(ConnectionLost) as err:
            with a.session(transactional=True) as s:
                s.execute(cy("CREATE (:Entity {id: 'half-done'})", line=2), path="m.cypher")
                s.append_mirror(mirror_row_from_leaf(leaves[0]))
                proxy.cut()
                s.execute(cy("CREATE (:Entity {id: 'never'})", line=3), path="m.cypher")
                s.commit()
        assert err.value.exit_code == 3 and "graph" in str(err.value)
        # the server rolled the transaction back: neither the data nor the mirror row exist
        assert adapter.run("MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]
        assert adapter.mirror_rows(ORIGIN) == []
        proxy = Proxy((parts.hostname, parts.port), port=proxy.port)  # the line is back
        with a.session(transactional=True) as s:
            s.execute(cy("CREATE (:Entity {id: 'second-run'})"))
            s.append_mirror(mirror_row_from_leaf(leaves[0]))
            s.commit()
        assert [r.leaf for r in adapter.mirror_rows(ORIGIN)] == leaves[:1]
    finally:
        a.close()
        proxy.cut()


def test_unreachable_server_is_a_database_error_without_the_password():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"bolt://neo4j:s3cret@127.0.0.1:{port}"
    a = Neo4jAdapter(Target(name="graph", type="neo4j", url=url, source="test"), url)
    with pytest.raises(DatabaseError, match="cannot reach Neo4j") as err:
        a.connect()
    assert "s3cret" not in str(err.value) and err.value.hint


# ----------------------------------------------------------------------------- the server dies
# A private server started with the dev launcher (registry.dev) in tmp_path, so killing it
# disturbs no other test; it is stopped by its pid at the end.


@pytest.fixture
def private_neo4j(tmp_path):
    """Start a private dev Neo4j under tmp_path; yield (state_dir, status); stop it by pid after."""
    from registry.dev import manager
    from registry.dev.neo4j import Neo4jServer

    reason = Neo4jServer().unavailable()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"target neo4j: {reason} (CI=true: every target must run)")
        pytest.skip(f"target neo4j: {reason}")
    state_dir = tmp_path / ".mreg"
    status = manager.up(state_dir, ["neo4j"])[0]
    try:
        assert status.running, status.reason
        yield state_dir, status
    finally:
        manager.down(state_dir, ["neo4j"])


@pytest.mark.slow
def test_server_killed_mid_migration(private_neo4j):
    from registry.dev import manager

    state_dir, status = private_neo4j
    target = Target(name="graph", type="neo4j", url=status.url, source="test")
    a = Neo4jAdapter(target, status.url)
    a.connect()
    a.ensure_mirror()
    leaves = make_leaves(2)
    a.append_mirror(mirror_row_from_leaf(leaves[0]))
    with pytest.raises(DatabaseError) as err:
        with a.session(transactional=True) as s:
            s.execute(Step(content="CREATE (:Entity {id: 'half-done'})", kind="cypher", line=2), path="m.cypher")
            s.append_mirror(mirror_row_from_leaf(leaves[1]))
            os.killpg(status.pid, signal.SIGKILL)  # the server dies with the transaction open
            time.sleep(0.5)
            s.execute(Step(content="CREATE (:Entity {id: 'never'})", kind="cypher", line=3), path="m.cypher")
            s.commit()
    assert isinstance(err.value, ConnectionLost) and err.value.exit_code == 3
    assert "graph" in str(err.value) and err.value.hint
    a.close()

    manager.down(state_dir, ["neo4j"])  # forget the dead process
    again = manager.up(state_dir, ["neo4j"])[0]  # same data directory, a new process
    assert again.running, again.reason
    b = Neo4jAdapter(Target(name="graph", type="neo4j", url=again.url, source="test"), again.url)
    b.connect()
    try:
        assert b.run("MATCH (e:Entity) RETURN count(e) AS n") == [{"n": 0}]  # the open transaction is gone
        assert [r.leaf for r in b.mirror_rows(ORIGIN)] == leaves[:1]  # what was committed survived
        with b.session(transactional=True) as s:  # the next run proceeds
            s.execute(Step(content="CREATE (:Entity {id: 'second-run'})", kind="cypher"))
            s.append_mirror(mirror_row_from_leaf(leaves[1]))
            s.commit()
        assert [r.leaf for r in b.mirror_rows(ORIGIN)] == leaves
    finally:
        b.close()


def test_url_credentials_and_database_path():
    from registry.targets.neo4j import split_url

    assert split_url("bolt://neo4j:p%40ss@graph:7687/sales") == ("bolt://graph:7687", ("neo4j", "p@ss"))
    assert split_url("neo4j+s://graph.example.org") == ("neo4j+s://graph.example.org", None)
    a = Neo4jAdapter(Target(name="g", type="neo4j", url="bolt://h:7687/sales", source="t"), "bolt://h:7687/sales")
    assert a.database == "sales"
    with pytest.raises(Exception, match="not a Neo4j URL"):
        split_url("http://graph:7474")
