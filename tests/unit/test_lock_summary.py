"""Which statements take no lock a concurrent session could wait for (registry.parse.sql.lock_summary),
and how registry.apply.group chains them (fits): pure, on PostgreSQL's own parser."""

from __future__ import annotations

import pytest

from registry.apply.group import fits, step_locks
from registry.model import Step
from registry.parse.sql import split

A = (None, "a")


def summary(text: str):
    (st,), _ = split("m.sql", text)
    return st.locks


@pytest.mark.parametrize("text, expected", [
    ("CREATE TABLE a (id int PRIMARY KEY)", ((A,), ())),
    ("CREATE TABLE a (id int, b_id int REFERENCES b (id))", ((A,), ((None, "b"),))),
    ("CREATE TABLE a (id int, CONSTRAINT f FOREIGN KEY (id) REFERENCES s.b (id))", ((A,), (("s", "b"),))),
    ("CREATE TABLE a (LIKE c)", ((A,), ((None, "c"),))),
    ("CREATE INDEX i ON a (id)", ((), (A,))),
    ("INSERT INTO a VALUES (1)", ((), (A,))),
    ("INSERT INTO a SELECT * FROM b", ((), ((None, "b"), A))),
    ("COMMENT ON TABLE s.a IS 'x'", ((), (("s", "a"),))),
    ("COMMENT ON COLUMN a.c IS 'x'", ((), (A,))),
    ("CREATE SEQUENCE q OWNED BY a.id", (((None, "q"),), (A,))),
    ("CREATE SEQUENCE q", (((None, "q"),), ())),
    ("CREATE TABLE IF NOT EXISTS a (id int)", ((), ())),          # a may exist already, and be in use
    ("CREATE SEQUENCE IF NOT EXISTS q", ((), ())),
    ("CREATE TYPE mood AS ENUM ('ok')", ((), ())),
    ("CREATE SCHEMA s", ((), ())),
    ("SET lock_timeout = '5s'", ((), ())),
    ("SET LOCAL statement_timeout = 1000", ((), ())),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$", ((), ())),
])
def test_lock_free_statements_and_what_they_name(text, expected):
    assert summary(text) == expected


@pytest.mark.parametrize("text", [
    "ALTER TABLE a ADD COLUMN x int",
    "UPDATE a SET x = 1",
    "DELETE FROM a",
    "DROP TABLE a",
    "CREATE INDEX CONCURRENTLY i ON a (id)",
    "CREATE TABLE p PARTITION OF a FOR VALUES IN (1)",
    "CREATE TABLE c () INHERITS (a)",
    "CREATE TABLE a (id int DEFAULT nextval('s'))",
    "CREATE TABLE a (id oid DEFAULT 'b'::regclass)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT count(*) FROM t'",
    "CREATE SCHEMA s CREATE TABLE t (id int)",
    "SELECT create_hypertable('a', 'ts')",
    "GRANT SELECT ON a TO public",
    "COMMENT ON INDEX i IS 'x'",
    "SET search_path = other, public",
    "SET ROLE admin",
])
def test_statements_that_may_lock_what_others_use(text):
    assert summary(text) is False


def test_fits_needs_every_named_relation_to_be_new():
    created: set = set()
    assert fits(summary("CREATE TABLE a (id int PRIMARY KEY)") and (summary("CREATE TABLE a (id int PRIMARY KEY)"),),
                created)
    assert created == {A}
    assert fits((summary("CREATE INDEX i ON a (id)"),), created)
    assert not fits((summary("CREATE INDEX j ON b (id)"),), created)  # b may be in use
    assert not fits((summary("CREATE TABLE c (a_id int REFERENCES b (id))"),), created)
    assert fits((summary("CREATE TABLE c (a_id int REFERENCES a (id))"),), created)
    assert created == {A, (None, "c")}
    assert not fits(False, created) and not fits((), created)


def test_a_step_without_a_recorded_summary_is_worked_out_from_its_text():
    assert step_locks(Step("CREATE TABLE a (id int); CREATE INDEX i ON a (id)")) == (((A,), ()), ((), (A,)))
    assert step_locks(Step("CREATE TABLE a (id int); UPDATE b SET x = 1")) is False
    assert step_locks(Step("not sql at all")) is False
    assert step_locks(Step("x", locks=((((None, "t"),), ()),))) == ((((None, "t"),), ()),)


def test_parsed_steps_carry_their_summary():
    from registry.parse import parse_migration

    m = parse_migration("migrations/20250101_000000_schema_a.sql",
                        b"-- Phase 1: EXPAND\nCREATE TABLE a (id int);\nALTER TABLE b ADD COLUMN x int;\n")
    first, second = m.phases["expand"]
    assert first.locks == (((A,), ()),) and second.locks is False
