"""100k rows through CassandraDatasink from a Ray Data dataset; a re-run changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from store_helpers import count_rows

from sluice.contract import load_contract
from sluice.datagen import generate_transactions
from sluice.store import CassandraDatasink, apply_schema, session_for

pytestmark = pytest.mark.integration

N = 100_000


def predictions(n: int) -> pa.Table:
    tx = generate_transactions(n, seed=7)
    rng = np.random.default_rng(7)
    score = rng.random(n)
    features = pa.array(
        [[("amount", a), ("score_x2", s * 2)] for a, s in
         zip(tx["amount"].to_numpy(), score, strict=True)],
        pa.map_(pa.string(), pa.float64()),
    )  # fmt: skip
    return pa.table({
        "transaction_id": tx["transaction_id"], "card_id": tx["card_id"],
        "event_time": tx["event_time"], "score": score,
        "model_version": pa.array(["fraud/3"] * n), "features": features,
        "scored_at": pa.array([datetime(2024, 5, 1, tzinfo=UTC)] * n, pa.timestamp("ms", tz="UTC")),
    })  # fmt: skip


@pytest.fixture(scope="module")
def fraud_tables(store_cfg):
    contract = load_contract("fraud")
    apply_schema(session_for(store_cfg), store_cfg, [contract])
    return contract


def test_100k_rows_written_once_even_when_written_twice(store_cfg, fraud_tables, ray_session):
    import ray

    contract = fraud_tables
    table = predictions(N)
    assert len(set(table["transaction_id"].to_pylist())) == N
    ks, name = store_cfg.keyspace, contract.output.predictions_table
    for attempt in (1, 2):
        ds = ray.data.from_arrow(table).repartition(8)
        sink = CassandraDatasink(
            store_cfg, name, consistency=contract.output.consistency, ttl_s=contract.output.ttl_s
        )
        ds.write_datasink(sink)
        assert sink.total_written == N, attempt
        assert sink.total_blocks >= 8
        assert count_rows(session_for(store_cfg), ks, name, "transaction_id") == N, attempt
    row = session_for(store_cfg).execute(
        f"SELECT score, features, model_version, TTL(score) FROM {ks}.{name} "
        "WHERE transaction_id = %s", (table["transaction_id"][123].as_py(),)
    ).one()  # fmt: skip
    assert row.score == table["score"][123].as_py()
    assert dict(row.features)["score_x2"] == row.score * 2
    assert row.model_version == "fraud/3"
    assert 0 < row[3] <= contract.output.ttl_s


def test_small_blocks_are_bundled_into_few_write_tasks(store_cfg, fraud_tables, ray_session):
    """40 blocks of 100 rows, at least 1,000 rows a task: at most 4 write tasks, every row
    written (as the batch job's quarantine, one small block per scored batch)."""
    import ray

    contract = fraud_tables
    table = predictions(4_000)
    ds = ray.data.from_arrow([table.slice(i, 100) for i in range(0, 4_000, 100)])
    assert ds.num_blocks() == 40
    sink = CassandraDatasink(store_cfg, contract.output.predictions_table,
                             consistency=contract.output.consistency,
                             ttl_s=contract.output.ttl_s, min_rows_per_write=1_000)  # fmt: skip
    ds.write_datasink(sink)
    assert (sink.total_input_rows, sink.total_written, sink.total_blocks) == (4_000, 4_000, 40)
    assert 1 <= sink.total_tasks <= 4, sink.total_tasks


def test_missing_table_fails_before_writing_and_names_the_fix(store_cfg, fraud_tables,
                                                              ray_session):  # fmt: skip
    import ray

    ds = ray.data.from_arrow(pa.table({"k": ["a"]}))
    with pytest.raises(Exception, match=r"no_such_table does not exist; create it with "
                       r"`sluice schema apply`") as info:  # fmt: skip
        ds.write_datasink(CassandraDatasink(store_cfg, "no_such_table"))
    assert store_cfg.keyspace in str(info.value)


def test_wrong_columns_fail_before_writing(store_cfg, fraud_tables, ray_session):
    import ray

    ds = ray.data.from_arrow(pa.table({"transaction_id": [1], "scorez": [0.5]}))
    with pytest.raises(Exception, match="sluice schema apply") as info:
        ds.write_datasink(CassandraDatasink(store_cfg, "predictions"))
    msg = str(info.value)
    assert "has no column scorez" in msg
    assert "column transaction_id: Arrow int64 is stored as bigint, the column is text" in msg
