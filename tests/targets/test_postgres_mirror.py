"""The PostgreSQL mirror: linear history kept by the database, the seed's columns, foreign tables."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from registry.config import Target
from registry.errors import DatabaseError
from registry.model import Step
from registry.targets.base import mirror_row_from_leaf
from registry.targets.postgres import PostgresAdapter
from registry.targets.sqlcommon import ForeignVersionTable, MirrorConflict

from tests.targets.leaves import ORIGIN, make_log


@pytest.fixture
def pg(pg_dsn):
    a = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
    a.connect()
    a.ensure_mirror()
    yield a
    a.close()


def test_gap_is_refused(pg):
    leaves = make_log(3)
    pg.append_mirror(mirror_row_from_leaf(leaves[0]))
    with pytest.raises(MirrorConflict) as err:
        pg.append_mirror(mirror_row_from_leaf(leaves[2]))
    assert err.value.data["seq"] == 2
    assert "not the next entry" in str(err.value)


def test_a_leaf_that_does_not_chain_is_refused(pg):
    first = make_log(1)
    pg.append_mirror(mirror_row_from_leaf(first[0]))
    stranger = make_log(1, start=1, prev=b"\x01" * 32)[0]
    with pytest.raises(MirrorConflict, match="does not chain"):
        pg.append_mirror(mirror_row_from_leaf(stranger))


def test_first_leaf_must_start_from_zero_hash(pg):
    stranger = make_log(1, prev=b"\x07" * 32)[0]
    with pytest.raises(MirrorConflict, match="does not chain"):
        pg.append_mirror(mirror_row_from_leaf(stranger))


def test_row_disagreeing_with_its_leaf_is_refused(pg):
    leaf = make_log(1)[0]
    row = mirror_row_from_leaf(leaf)
    with pytest.raises(MirrorConflict, match="leaf_hash"):
        pg.append_mirror(dataclasses.replace(row, leaf_hash=hashlib.sha256(leaf).digest()))
    with pytest.raises(MirrorConflict, match="seq"):
        pg.append_mirror(dataclasses.replace(row, seq=0, leaf=make_log(2)[1],
                                             leaf_hash=hashlib.sha256(b"\x00" + make_log(2)[1]).digest()))


def test_two_origins_share_the_table_and_versions_repeat(pg):
    a = make_log(3, origin="proj/postgres")
    b = make_log(2, origin="proj/tenant-b")
    for leaf in (a[0], b[0], a[1], b[1], a[2]):
        pg.append_mirror(mirror_row_from_leaf(leaf))
    assert [r.leaf for r in pg.mirror_rows("proj/postgres")] == a
    assert [r.leaf for r in pg.mirror_rows("proj/tenant-b")] == b
    assert pg.mirror_origins() == ["proj/postgres", "proj/tenant-b"]
    versions = pg.conn.execute("SELECT version, count(*) FROM schema_versions GROUP BY 1 ORDER BY 1").fetchall()
    assert versions == [("2.0.0", 2), ("2.1.0", 2), ("2.2.0", 1)]  # version is no longer unique


def test_seed_columns_keep_their_meaning(pg):
    leaf, second = make_log(2)
    pg.append_mirror(mirror_row_from_leaf(leaf))
    row = pg.conn.execute(
        "SELECT id, version, database_type, applied_by, migration_id, checksum, execution_time_ms, "
        "rollback_available, metadata, leaf_hash = sha256('\\x00'::bytea || leaf) FROM schema_versions").fetchone()
    assert row[0] == 1
    assert row[1] == "2.0.0" and row[2] == "postgresql" and row[3] == "tester-0@example.org"
    assert row[4] == "20251120_150000_schema_m0"
    assert row[5] == hashlib.sha256(b"0").hexdigest()
    assert row[6] == 10 and row[7] is True
    assert row[8]["note"] == "ünïcode 0"
    assert row[9] is True
    with pytest.raises(DatabaseError, match="valid_semver"):
        pg.append_mirror(dataclasses.replace(mirror_row_from_leaf(second), version="v2"))


def test_applied_at_is_read_from_the_column(pg):
    leaf = make_log(1)[0]
    pg.append_mirror(mirror_row_from_leaf(leaf))
    pg.conn.execute("ALTER TABLE schema_versions DISABLE TRIGGER schema_versions_append_only")
    pg.conn.execute("UPDATE schema_versions SET applied_at = applied_at + interval '1 second'")
    pg.conn.execute("ALTER TABLE schema_versions ENABLE TRIGGER schema_versions_append_only")
    got = pg.mirror_rows(ORIGIN)[0]
    assert got.applied_at != mirror_row_from_leaf(leaf).applied_at
    assert got != mirror_row_from_leaf(leaf)


def test_mirror_schema_option(pg_dsn):
    a = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test", {"mirror_schema": "mreg"}), pg_dsn)
    a.connect()
    try:
        a.ensure_mirror()
        leaf = make_log(1)[0]
        with a.session(transactional=True, tenant="mreg") as s:
            s.append_mirror(mirror_row_from_leaf(leaf))
            s.commit()
        assert a.conn.execute("SELECT count(*) FROM mreg.schema_versions").fetchone()[0] == 1
        assert a.conn.execute("SELECT to_regclass('public.schema_versions')").fetchone()[0] is None
        assert a.mirror_rows(ORIGIN)[0].leaf == leaf
    finally:
        a.close()


def test_a_legacy_schema_versions_table_is_not_taken_over(pg_dsn):
    a = PostgresAdapter(Target("legacy", "postgresql", pg_dsn, "test"), pg_dsn)
    a.connect()
    try:
        with a.session(transactional=False) as s:
            s.execute(Step("CREATE TABLE schema_versions (id SERIAL PRIMARY KEY, version VARCHAR(20) NOT NULL UNIQUE,"
                           " migration_id VARCHAR(255) NOT NULL)"))
        with pytest.raises(ForeignVersionTable) as err:
            a.ensure_mirror()
        assert "legacy" in str(err.value) and "baseline" in err.value.hint
    finally:
        a.close()


def test_ensure_mirror_twice_from_two_adapters_at_once(pg_dsn):
    import threading

    errors = []

    def go():
        a = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
        try:
            a.connect()
            a.ensure_mirror()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            a.close()

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_lost_connection_while_appending_is_connection_lost_then_reconnects(pg, pg_dsn):
    import psycopg

    from registry.targets.sqlcommon import ConnectionLost

    leaves = make_log(2)
    pg.append_mirror(mirror_row_from_leaf(leaves[0]))
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pg.conn.info.backend_pid,))
    with pytest.raises(ConnectionLost) as err:
        pg.append_mirror(mirror_row_from_leaf(leaves[1]))
    assert "appending to the mirror" in str(err.value) and "main" in str(err.value)
    assert [r.leaf for r in pg.mirror_rows(ORIGIN)] == leaves[:1]  # reconnected; nothing half-written
    pg.append_mirror(mirror_row_from_leaf(leaves[1]))
    assert [r.leaf for r in pg.mirror_rows(ORIGIN)] == leaves


def test_ensure_mirror_upgrades_a_mirror_made_by_an_older_format(pg_dsn):
    a = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
    a.connect()
    try:
        a.ensure_mirror()
        a.conn.execute("COMMENT ON TABLE schema_versions IS 'mreg mirror v0: old'")
        a.conn.execute("CREATE OR REPLACE FUNCTION mreg_check_append() RETURNS trigger LANGUAGE plpgsql "
                       "AS $$ BEGIN RETURN NEW; END $$")  # an older, laxer guard
        b = PostgresAdapter(Target("main", "postgresql", pg_dsn, "test"), pg_dsn)
        b.connect()
        b.ensure_mirror()
        leaves = make_log(3)
        b.append_mirror(mirror_row_from_leaf(leaves[0]))
        with pytest.raises(MirrorConflict):  # the current guard is back
            b.append_mirror(mirror_row_from_leaf(leaves[2]))
        comment = b.conn.execute("SELECT obj_description('schema_versions'::regclass, 'pg_class')").fetchone()[0]
        assert comment.startswith("mreg mirror v1:")
        b.close()
    finally:
        a.close()


def test_rows_in_flight_are_refused_at_commit_and_the_phase_rolls_back(pg):
    """A transactional session sends mirror rows at once (libpq pipeline); a refused row raises
    MirrorConflict when the results are read (at COMMIT) and nothing of the session stays."""
    leaves = make_log(3)
    pg.append_mirror(mirror_row_from_leaf(leaves[0]))
    with pytest.raises(MirrorConflict) as err:
        with pg.session(True) as s:
            s.execute(Step("CREATE TABLE in_flight_t (id int)"))
            s.append_mirrors([mirror_row_from_leaf(leaves[2])])  # a gap: refused by the trigger
            s.commit()
    assert err.value.data["seq"] == 2
    assert pg.conn.execute("SELECT to_regclass('in_flight_t')").fetchone() == (None,)
    assert [r.seq for r in pg.mirror_rows(ORIGIN)] == [0]


def test_a_statement_after_rows_in_flight_sees_them_in_order(pg):
    leaves = make_log(3)
    with pg.session(True) as s:
        s.append_mirrors([mirror_row_from_leaf(leaves[0])])
        assert s.query("SELECT count(*) AS n FROM schema_versions") == [{"n": 1}]  # read after the INSERT
        s.append_mirrors([mirror_row_from_leaf(leaf) for leaf in leaves[1:]])
        s.commit()
    assert [r.seq for r in pg.mirror_rows(ORIGIN)] == [0, 1, 2]
    with pytest.raises(MirrorConflict):  # refused while in flight: raised before the next statement runs
        with pg.session(True) as s:
            s.append_mirrors([mirror_row_from_leaf(leaves[0])])
            s.execute(Step("CREATE TABLE never_made (id int)"))
    assert pg.conn.execute("SELECT to_regclass('never_made')").fetchone() == (None,)
