"""The ledger made readable in `mreg serve` (a Datasette plugin, loaded with ``--plugins-dir``).

A leaf is stored as its exact bytes: canonical JSON around a DSSE envelope whose payload, the signed
statement, is base64. SQLite cannot open it, so every connection Datasette makes gets three SQL
functions, the ``leaf`` column is shown as the statement it carries and hashes as hex:

- ``mreg_statement(leaf)``: the statement as JSON text (the payload's bytes: RFC 8785 canonical JSON),
  for ``json_extract(mreg_statement(leaf), '$.migration.id')``; NULL for bytes that are not a leaf;
- ``mreg_leaf_hash(leaf)``: the leaf's RFC 9162 hash, SHA-256(0x00 || leaf), to compare with the
  stored ``leaf_hash``;
- ``mreg_leaf_prev(leaf)``: the hash the leaf names as its predecessor's (the chain link).

The canned queries of ``registry.catalog.CANNED`` use them. Nothing here writes.
"""

from __future__ import annotations

from datasette import hookimpl

from ledger.errors import LedgerError
from ledger.log import parse_leaf
from ledger.merkle import leaf_hash


def _leaf(value):
    if not isinstance(value, bytes):
        return None
    try:
        return parse_leaf(value)
    except (LedgerError, ValueError):
        return None


def statement(value) -> str | None:
    leaf = _leaf(value)
    return leaf.payload.decode("utf-8") if leaf is not None else None


def hash_of(value) -> bytes | None:
    return leaf_hash(value) if isinstance(value, bytes) else None


def prev_of(value) -> bytes | None:
    leaf = _leaf(value)
    return leaf.prev if leaf is not None else None


@hookimpl
def prepare_connection(conn):
    conn.create_function("mreg_statement", 1, statement, deterministic=True)
    conn.create_function("mreg_leaf_hash", 1, hash_of, deterministic=True)
    conn.create_function("mreg_leaf_prev", 1, prev_of, deterministic=True)


HASH_COLUMNS = {("ledger_leaves", "leaf_hash"), ("ledger_nodes", "hash"), ("ledger_checkpoints", "root"),
                ("ledger_witness_state", "root")}


@hookimpl
def render_cell(value, column, table):
    """A ``ledger_leaves.leaf`` cell shows the statement it carries, a hash its hex digits, instead of
    "<Binary: n bytes>"; Datasette escapes the text."""
    if column == "leaf" and table == "ledger_leaves":
        return statement(value)
    if (table, column) in HASH_COLUMNS and isinstance(value, bytes):
        return value.hex()
    return None
