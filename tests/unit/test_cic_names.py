"""The index names PostgreSQL chooses, reproduced by ``registry.apply.cic`` (no server).

Every expected name below is one a PostgreSQL 16 server chose for the same statement
(``tests/targets/test_interrupted_cic.py::test_chosen_names_match_the_server`` checks the same
computation against the live server)."""

from __future__ import annotations

import pytest

from registry.apply.cic import ConcurrentIndex, concurrent_index, index_name, make_object_name
from registry.model import Step

T = "t" * 63
C = "c" * 63


def _chosen(sql: str, number: int = 0) -> str:
    ci = concurrent_index(Step("CREATE INDEX CONCURRENTLY " + sql, transactional=False))
    assert ci is not None and ci.chosen is not None
    return make_object_name(*ci.chosen, "idx" + (str(number) if number else ""))


@pytest.mark.parametrize(("sql", "number", "name"), [
    ("ON big (s)", 0, "big_s_idx"),
    ("ON big (s)", 1, "big_s_idx1"),
    ("ON big (s)", 2, "big_s_idx2"),
    ("ON big (a, b)", 0, "big_a_b_idx"),
    ("ON big (a, a)", 0, "big_a_a1_idx"),
    ("ON big (md5(s))", 0, "big_md5_idx"),
    ("ON big ((s::int))", 3, "big_s_idx3"),
    ("ON big (('1'::int))", 0, "big_int4_idx"),
    ('ON big ((s collate "C"))', 4, "big_s_idx4"),
    ("ON big ((a + b))", 0, "big_expr_idx"),
    ("ON big ((a))", 0, "big_a_idx"),
    ("ON big ((big.a))", 1, "big_a_idx1"),
    ("ON big (coalesce(a, b))", 0, "big_coalesce_idx"),
    ("ON big (greatest(a, b))", 0, "big_greatest_idx"),
    ("ON big (least(a, b))", 0, "big_least_idx"),
    ("ON big ((nullif(a, b)))", 0, "big_nullif_idx"),
    ("ON big ((case when a > 0 then s end))", 0, "big_case_idx"),
    ("ON big ((case when a > 0 then s else q end))", 0, "big_q_idx"),
    ("ON big ((array[a, b]))", 0, "big_array_idx"),
    ("ON big ((a is null))", 1, "big_expr_idx1"),
    ("ON big ((a > 0 and b > 0))", 2, "big_expr_idx2"),
    ("ON big ((a > 0 is true))", 3, "big_expr_idx3"),
    ("ON big ((s like 'a%'))", 4, "big_expr_idx4"),
    ("ON big (a) INCLUDE (b, s)", 0, "big_a_b_s_idx"),
    ("ON big (lower(s), lower(s))", 0, "big_lower_lower1_idx"),
    ("ON big ((a+b), (a-b))", 0, "big_expr_expr1_idx"),
    ("ON public.big USING hash (s) WHERE s IS NOT NULL", 0, "big_s_idx"),
    (f"ON big ({C})", 0, "big_" + "c" * 55 + "_idx"),
    (f"ON big ({C})", 1, "big_" + "c" * 54 + "_idx1"),
    (f"ON big (a, {C})", 0, "big_a_" + "c" * 53 + "_idx"),
    (f"ON {T} (a)", 0, "t" * 57 + "_a_idx"),
    (f"ON {T} (a)", 1, "t" * 56 + "_a_idx1"),
    (f"ON {T} ({C})", 0, "t" * 29 + "_" + "c" * 29 + "_idx"),
    (f"ON {T} ({C}, {C})", 1, "t" * 29 + "_" + "c" * 28 + "_idx1"),
    (f"ON {T + 'ignored_past_63_bytes'} (a)", 0, "t" * 57 + "_a_idx"),
    ("ON big (a, b, s, q, id, a, b, s, q, id, a, b, s, q, id, a, b, s, q, id)", 0,
     "big_a_b_s_q_id_a1_b1_s1_q1_id1_a2_b2_s2_q2_id2_a3_b3_s3_q3__idx"),
])
def test_the_name_postgresql_chose(sql, number, name):
    assert _chosen(sql, number) == name
    assert len(name.encode()) <= 63


def test_index_name():
    assert index_name("big", ["s"]) == "big_s_idx"
    assert index_name("big", ["s"], 7) == "big_s_idx7"


def test_a_leftover_of_an_unnamed_create_index_is_the_chosen_name_or_a_numbered_one():
    ci = concurrent_index(Step("CREATE UNIQUE INDEX CONCURRENTLY ON big (s)", transactional=False))
    assert ci == ConcurrentIndex(None, "big", chosen=("big", "s"))
    assert ci.statement == "CREATE INDEX CONCURRENTLY"
    for name in ("big_s_idx", "big_s_idx1", "big_s_idx12"):
        assert ci.left(name, [])
    for name in ("big_s_idx01", "big_s_idxa", "big_s", "big_s_a_idx", "big_s_idx_ccnew", "other_s_idx"):
        assert not ci.left(name, [])
    long = concurrent_index(Step(f"CREATE INDEX CONCURRENTLY ON {T} ({C})", transactional=False))
    assert long.left("t" * 29 + "_" + "c" * 28 + "_idx1", [])  # numbered names are cut afresh
    assert not long.left("t" * 29 + "_" + "c" * 29 + "_idx1", [])


def test_a_named_create_index_leaves_its_name():
    ci = concurrent_index(Step("CREATE INDEX CONCURRENTLY IF NOT EXISTS big_s ON s1.big (md5(s))",
                               transactional=False))
    assert ci == ConcurrentIndex("s1", "big", name="big_s")
    assert ci.left("big_s", []) and not ci.left("big_s1", [])


def test_reindex_leaves_ccnew_and_ccold_copies():
    ci = concurrent_index(Step("REINDEX INDEX CONCURRENTLY big_s", transactional=False))
    assert ci == ConcurrentIndex(None, None, index="big_s", reindex=True)
    assert ci.statement == "REINDEX CONCURRENTLY"
    for name in ("big_s_ccnew", "big_s_ccnew1", "big_s_ccold", "big_s_ccold3"):
        assert ci.left(name, ["big_s", name])
    for name in ("big_s", "big_s_idx", "other_ccnew", "big_s_ccnew_x", "big_s_ccnew01"):
        assert not ci.left(name, ["big_s", name, "other"])
    long = concurrent_index(Step(f"REINDEX (VERBOSE) INDEX CONCURRENTLY s1.{T}", transactional=False))
    assert long.schema == "s1" and long.left("t" * 57 + "_ccnew", []) and long.left("t" * 56 + "_ccnew1", [])
    table = concurrent_index(Step("REINDEX (CONCURRENTLY) TABLE big", transactional=False))
    assert table == ConcurrentIndex(None, "big", reindex=True)
    assert table.left("big_pkey_ccnew", ["big_pkey", "big_s", "big_pkey_ccnew"])
    assert table.left("big_s_ccold", ["big_pkey", "big_s", "big_s_ccold"])
    assert not table.left("big_x_ccnew", ["big_pkey", "big_s", "big_x_ccnew"])  # no index big_x


@pytest.mark.parametrize("sql", [
    "REINDEX INDEX big_s",                              # not concurrent: runs in a transaction
    "REINDEX (CONCURRENTLY false) INDEX big_s",
    "REINDEX SCHEMA CONCURRENTLY public",               # not covered
    "REINDEX DATABASE CONCURRENTLY",
    "CREATE INDEX ON big (s)",
    "CREATE INDEX CONCURRENTLY ON big ((s || 'x'), (row(a, b)))",  # forms not reproduced (not checked
    "CREATE INDEX CONCURRENTLY ON big ((xmlelement(name a)))",      # against a server): run as written
    'CREATE INDEX CONCURRENTLY ON "bïg" (s)',           # not ASCII: the cut depends on the encoding
    "CREATE INDEX CONCURRENTLY ON big (s); SELECT 1",   # two statements
])
def test_statements_left_as_they_are(sql):
    assert concurrent_index(Step(sql, transactional=False)) is None
