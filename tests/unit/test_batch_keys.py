"""The key check's row hash, without Ray: what counts as the same row."""

from __future__ import annotations

import pyarrow as pa

from pipelines.batch_keys import _key_hash_bucket

COLUMNS = ["transaction_id", "card_id", "amount"]


def hashes(table: pa.Table) -> list[int]:
    return _key_hash_bucket(table, "transaction_id", 4, COLUMNS).column("row_hash").to_pylist()


def test_a_row_is_its_contract_columns_in_the_contracts_order():
    row = pa.table({"transaction_id": ["t1"], "card_id": ["c1"], "amount": [5.0]})
    reordered = row.select(["amount", "transaction_id", "card_id"])
    extra = row.append_column("note", pa.array([None], pa.string()))
    positions = row.append_column("__sluice_row", pa.array([7], pa.int64()))
    ints = row.set_column(2, "amount", pa.array([5], pa.int64()))  # 5 and 5.0: one value
    assert hashes(reordered) == hashes(extra) == hashes(positions) == hashes(ints) == hashes(row)
    other = row.set_column(2, "amount", pa.array([6.0]))
    assert hashes(other) != hashes(row)
