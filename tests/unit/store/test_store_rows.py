"""prediction_rows / quarantine_rows / alert_rows fit their tables column for column."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from sluice.contract import load_contract
from sluice.store import (
    ALERTS_BY_KEY_TABLE,
    ALERTS_TABLE,
    alert_rows,
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
        "decision": ["approve", "block"], "policy_id": ["dp-1", "dp-1"], "reasons": [None, "[]"],
        "amount": pa.array([1.5, 2.5], pa.float32()), "hour_of_day": [12.0, 13.0],
    })  # fmt: skip
    rows = prediction_rows(fraud, scored, WHEN)
    assert fits(rows, predictions_table(fraud)) == []
    assert rows["decision"].to_pylist() == ["approve", "block"]
    assert rows["policy_id"].to_pylist() == ["dp-1", "dp-1"]
    assert rows["features"].to_pylist()[1] == [("amount", 2.5), ("hour_of_day", 13.0)]
    assert rows["scored_at"].to_pylist() == [WHEN, WHEN]


def test_alert_rows_are_the_review_and_block_rows_and_fit_both_alert_tables() -> None:
    fraud = load_contract("fraud")
    late = datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=UTC)
    scored = pa.table({
        "key": ["tx_1", "tx_2", "tx_3", "tx_4"], "entity": ["c1", "c2", "c3", "c4"],
        "event_time": pa.array([WHEN, WHEN, late, WHEN], pa.timestamp("us", tz="UTC")),
        "score": [0.1, 0.6, 0.95, 0.2], "model_version": ["fraud/1"] * 4,
        "decision": pa.array(["approve", "review", "block", None], pa.string()),
        "policy_id": ["dp-1", "dp-1", "dp-1", None],
        "reasons": [None, '[{"feature":"amount"}]', '[{"feature":"hour_of_day"}]', None],
        "amount": pa.array([1.5, 2.5, 3.5, 4.5], pa.float32()),
    })  # fmt: skip
    rows = alert_rows(fraud, scored, "batch:j", WHEN)
    assert fits(rows, ALERTS_TABLE) == [] and fits(rows, ALERTS_BY_KEY_TABLE) == []
    got = {r["key"]: r for r in rows.to_pylist()}
    assert sorted(got) == ["tx_2", "tx_3"]  # approve and no decision raise no alert
    assert got["tx_3"]["day"] == late.date() and got["tx_3"]["event_time"] == late
    assert (got["tx_2"]["decision"], got["tx_2"]["score"], got["tx_2"]["source"]) == \
        ("review", 0.6, "batch:j")  # fmt: skip
    assert {r["contract"] for r in got.values()} == {"fraud"}
    assert got["tx_3"]["reasons"] == '[{"feature":"hour_of_day"}]'
    none = alert_rows(fraud, scored.slice(0, 1), "batch:j", WHEN)
    assert none.num_rows == 0 and none.schema == rows.schema


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


def _refused(raws: list[str], key: str = "tx_1") -> pa.Table:
    n = len(raws)
    return pa.table({
        "key": [key] * n, "raw": raws, "reasons": ['[{"expectation": "unique"}]'] * n,
        "source": ["batch:j"] * n,
        "quarantined_at": pa.array([WHEN] * n, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


def primary_keys(rows: pa.Table, spec) -> set[tuple]:
    return {tuple(r[k] for k in spec.key_columns) for r in rows.to_pylist()}


def test_refused_rows_sharing_a_key_are_rows_of_their_own() -> None:
    """Two refused rows with one key but different contents land on two table rows (each
    keeps its raw contents); the same row refused again lands on the same row."""
    fraud = load_contract("fraud")
    spec = quarantine_table(fraud.output.quarantine_table)
    rows = quarantine_rows(fraud, _refused(['{"amount": 1}', '{"amount": 2}']))
    assert len(primary_keys(rows, spec)) == 2
    again = quarantine_rows(fraud, _refused(['{"amount": 2}', '{"amount": 1}']))
    assert primary_keys(again, spec) == primary_keys(rows, spec)  # a re-run upserts the same


def test_days_given_key_the_rows_whatever_their_quarantine_clock() -> None:
    """A batch job passes each row's event day: a re-run on a later day, its clock moved,
    upserts the same rows; without days the day is quarantined_at's."""
    import datetime as dt

    fraud = load_contract("fraud")
    spec = quarantine_table(fraud.output.quarantine_table)
    days = pa.array([dt.date(2024, 5, 1), dt.date(2024, 5, 2)], pa.date32())
    first = _refused(['{"amount": 1}', '{"amount": 2}'])
    later = first.set_column(4, "quarantined_at", pa.array(
        [WHEN + dt.timedelta(days=3)] * 2, pa.timestamp("us", tz="UTC")))  # fmt: skip
    rows = quarantine_rows(fraud, first, days=days)
    assert rows["day"].to_pylist() == days.to_pylist()
    assert primary_keys(quarantine_rows(fraud, later, days=days), spec) == primary_keys(rows, spec)
    assert primary_keys(quarantine_rows(fraud, later), spec) != primary_keys(rows, spec)
    for bad in (days.slice(1), pa.array([None, dt.date(2024, 5, 1)], pa.date32())):
        with pytest.raises(ValueError, match="days must be 2 non-null date32 values"):
            quarantine_rows(fraud, first, days=bad)


def test_row_ids_given_tell_identical_refused_rows_apart() -> None:
    fraud = load_contract("fraud")
    spec = quarantine_table(fraud.output.quarantine_table)
    same = _refused(['{"amount": null}'] * 2)
    assert len(primary_keys(quarantine_rows(fraud, same), spec)) == 1  # a replay: one row
    rows = quarantine_rows(fraud, same, row_ids=["in/a.csv#4", "in/a.csv#9"])
    assert rows["row_id"].to_pylist() == ["in/a.csv#4", "in/a.csv#9"]
    assert len(primary_keys(rows, spec)) == 2
    with pytest.raises(ValueError, match="1 row ids for 2 rows"):
        quarantine_rows(fraud, same, row_ids=["x"])


def test_a_key_or_raw_row_too_large_for_cassandra_is_stored_bounded_with_its_digest() -> None:
    import hashlib
    import json

    from sluice.store._rows import MAX_QUARANTINE_KEY_BYTES, MAX_QUARANTINE_RAW_BYTES

    fraud = load_contract("fraud")
    huge_key = "k" * 70_000  # Cassandra refuses a key component over 65,535 bytes
    huge_raw = json.dumps({"transaction_id": "tx_9", "note": "é" * 700_000})  # 1.4 MB
    rows = quarantine_rows(fraud, pa.concat_tables([
        _refused(['{"amount": 1}'], key=huge_key), _refused([huge_raw], key="tx_9"),
        _refused(['{"amount": 3}'], key="tx_3"),
    ]))  # fmt: skip
    key, key9, key3 = rows["key"].to_pylist()
    assert len(key.encode()) <= MAX_QUARANTINE_KEY_BYTES
    assert key.startswith("kkkk") and key.endswith(hashlib.sha256(huge_key.encode()).hexdigest())
    assert (key9, key3) == ("tx_9", "tx_3")  # rows that fit are untouched
    raw = rows["raw"].to_pylist()[1]
    assert len(raw.encode()) <= MAX_QUARANTINE_RAW_BYTES
    head, marker = raw.rsplit("…", 1)
    digest = hashlib.sha256(huge_raw.encode()).hexdigest()
    assert marker == f"[truncated: {len(huge_raw.encode())} bytes, sha256 {digest}]"
    assert huge_raw.startswith(head) and len(head.encode()) > MAX_QUARANTINE_RAW_BYTES - 200
    # The row id still tells the whole raw row: a different huge row is another row.
    other = quarantine_rows(fraud, _refused([huge_raw + " "], key="tx_9"))
    assert other["row_id"][0] != rows["row_id"][1]
