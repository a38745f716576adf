"""Bulk inserts through the store's cursor (``copy_in``: COPY on PostgreSQL, a few multi-row
INSERTs on SQLite) on both backends: every row stored once, values intact, whatever the
number of rows."""

from __future__ import annotations

import pytest

from ledger.application import Ledger


@pytest.mark.parametrize("count", [0, 1, 700])
def test_copy_in_stores_every_row_once_with_its_values(ledger: Ledger, count: int) -> None:
    rows = [(n, f"row {n} \u2603", bytes([n % 256])) for n in range(count)]
    with ledger.database.transaction() as cur:
        cur.execute("CREATE TEMPORARY TABLE bulk_rows (n INTEGER, note TEXT, raw BYTEA)")
        cur.copy_in("bulk_rows", ("n", "note", "raw"), rows)
        cur.execute("SELECT n, note, raw FROM bulk_rows ORDER BY n")
        stored = [(row["n"], row["note"], bytes(row["raw"])) for row in cur.fetchall()]
        cur.execute("DROP TABLE bulk_rows")
    assert stored == rows
