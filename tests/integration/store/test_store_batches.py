"""The writer's unlogged batches stay inside Cassandra's warning thresholds: predictions,
alerts and many cards' feature events are written without one server warning (the driver
logs each warning once per request, so a batch over a threshold costs a log line a request).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from sluice.contract import load_contract
from sluice.datagen import generate_transactions
from sluice.features import to_store_events
from sluice.scoring import scored_schema
from sluice.store import (
    AlertWriter,
    CassandraFeatureStore,
    CassandraWriter,
    WriteOptions,
    alert_rows,
    apply_schema,
    prediction_columns,
    prediction_rows,
    session_for,
)

pytestmark = pytest.mark.integration

ROWS = 2_000


def scored_rows(contract, n: int) -> pa.Table:
    """Scorer-shaped rows with every feature of the contract, half of them alerting."""
    names = list(contract.features.feature_names)
    rng = np.random.default_rng(5)
    fixed = {
        "key": pa.array([f"txn-{i:08d}-{'x' * 24}" for i in range(n)]),
        "entity": pa.array([f"card_{i % 700:06d}" for i in range(n)]),
        "event_time": pa.array(np.full(n, np.datetime64("2026-12-01T10:00:00", "us"))
                               + np.arange(n).astype("timedelta64[ms]"),
                               pa.timestamp("us", tz="UTC")),  # fmt: skip
        "score": pa.array(rng.random(n)),
        "model_version": pa.array(["fraud/12"] * n),
        "decision": pa.array(["review" if i % 2 else "approve" for i in range(n)]),
        "policy_id": pa.array(["fraud-default@3"] * n),
        "reasons": pa.array([json.dumps([{"feature": f, "weight": 0.123456} for f in names[:3]])
                             if i % 2 else None for i in range(n)]),  # fmt: skip
    }
    schema = scored_schema(names)
    columns = [fixed[f.name] if f.name in fixed else pa.array(rng.random(n), pa.float32())
               for f in schema]  # fmt: skip
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(columns, schema, strict=True)],
                                schema=schema)  # fmt: skip


@pytest.fixture(scope="module")
def contract(store_cfg):
    contract = load_contract("fraud")
    apply_schema(session_for(store_cfg), store_cfg, [contract])
    return contract


def server_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Server warning" in r.getMessage()]


def test_predictions_and_alerts_draw_no_server_warning(store_cfg, contract, caplog) -> None:
    scored = scored_rows(contract, ROWS)
    now = datetime.now(UTC)
    out = contract.output
    opts = WriteOptions.from_config(store_cfg, out.consistency, 86_400)
    assert opts.replica_batch_rows == 10  # the default: replica batches
    session = session_for(store_cfg)
    writer = CassandraWriter(session, store_cfg.keyspace, out.predictions_table,
                             prediction_columns(contract), opts)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert writer.write(prediction_rows(contract, scored, scored_at=now)) == ROWS
        alerts = alert_rows(contract, scored, "test", alerted_at=now)
        assert AlertWriter(store_cfg, contract).write(alerts) == ROWS // 2
    assert server_warnings(caplog) == []
    count = session.execute(f"SELECT count(*) FROM {store_cfg.keyspace}.{out.predictions_table}")
    assert count.one()[0] == ROWS


def test_feature_events_of_many_cards_draw_no_server_warning(store_cfg, contract,
                                                             caplog) -> None:  # fmt: skip
    table = generate_transactions(3_000, seed=17, n_cards=1_000, duration_s=86_400)
    events = to_store_events(table, contract.features)
    store = CassandraFeatureStore.for_contract(store_cfg, contract)
    with caplog.at_level(logging.WARNING):
        store.record(events)
    assert server_warnings(caplog) == []
