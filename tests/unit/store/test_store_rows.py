"""prediction_rows / quarantine_rows fit the predictions and quarantine tables column for column."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from sluice.contract import load_contract
from sluice.store import (
    check_compatible,
    prediction_rows,
    predictions_table,
    quarantine_rows,
    quarantine_table,
)

WHEN = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def fits(table: pa.Table, spec) -> list[str]:
    want = spec.all_columns
    assert sorted(table.column_names) == sorted(want)
    return [f"{n}: {why}" for n in want
            if (why := check_compatible(table.schema.field(n).type, want[n]))]  # fmt: skip


def test_prediction_rows_fit_the_predictions_table() -> None:
    fraud = load_contract("fraud")
    scored = pa.table({
        "key": ["tx_1", "tx_2"], "entity": ["card_000001", "card_000002"],
        "event_time": pa.array([WHEN, WHEN], pa.timestamp("us", tz="UTC")),
        "score": [0.1, 0.9], "model_version": ["fraud/1", "fraud/1"],
        "amount": pa.array([1.5, 2.5], pa.float32()), "hour_of_day": [12.0, 13.0],
    })  # fmt: skip
    rows = prediction_rows(fraud, scored, WHEN)
    assert fits(rows, predictions_table(fraud)) == []
    assert rows["features"].to_pylist()[1] == [("amount", 2.5), ("hour_of_day", 13.0)]
    assert rows["scored_at"].to_pylist() == [WHEN, WHEN]


def test_quarantine_rows_fit_the_quarantine_table() -> None:
    fraud = load_contract("fraud")
    quarantined = pa.table({
        "source": ["batch:fraud"], "key": ["tx_1"], "raw": ['{"amount": -1}'],
        "reasons": ['[{"expectation": "between"}]'],
        "quarantined_at": pa.array([WHEN], pa.timestamp("ms", tz="UTC")),
    })  # fmt: skip
    rows = quarantine_rows(fraud, quarantined)
    assert fits(rows, quarantine_table(fraud.output.quarantine_table)) == []
    assert rows["day"].to_pylist() == [WHEN.date()]
    assert rows["contract"].to_pylist() == ["fraud"]
