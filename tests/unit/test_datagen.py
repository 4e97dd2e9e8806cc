"""Synthetic transactions: deterministic, learnable, and broken exactly where asked."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from sluice.datagen import (
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    DEFAULT_START,
    MALFORMED_PAYLOADS,
    TRANSACTION_SCHEMA,
    InvalidKind,
    generate_dataset,
    generate_transactions,
    to_json_messages,
    write_csv,
    write_parquet,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
REGEX = {
    "transaction_id": re.compile(r"^tx_[0-9a-f]{16}$"),
    "card_id": re.compile(r"^card_[0-9]{6}$"),
    "merchant_id": re.compile(r"^m_[0-9]{5}$"),
}
SETS = {
    "merchant_category": set(CATEGORIES),
    "country": set(COUNTRIES),
    "card_country": set(COUNTRIES),
    "currency": set(CURRENCIES),
    "channel": set(CHANNELS),
}


def broken_rows(table: pa.Table) -> set[int]:
    """The suite's rules (INTERFACES.md), checked row by row in plain Python."""
    rows = table.to_pylist()
    keys = Counter(r["transaction_id"] for r in rows)
    bad = set()
    for i, r in enumerate(rows):
        if any(r[c] is None for c in TRANSACTION_SCHEMA.names if c != "is_fraud"):
            bad.add(i)
            continue
        amount, when = r["amount"], r["event_time"]
        if (
            any(not p.match(r[c]) for c, p in REGEX.items())
            or any(r[c] not in allowed for c, allowed in SETS.items())
            or math.isnan(amount)
            or not 0 < amount <= 50_000
            or not datetime(2020, 1, 1, tzinfo=UTC) <= when <= NOW
            or keys[r["transaction_id"]] > 1
        ):
            bad.add(i)
    return bad


def same(a: pa.Table, b: pa.Table) -> bool:
    """Table equality where NaN equals NaN (Arrow's equals says NaN != NaN)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if pa.types.is_floating(x.type):
            nulls_equal = pc.is_null(x).equals(pc.is_null(y))
            values = np.array_equal(
                x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True
            )
            if not (nulls_equal and values):
                return False
        elif not x.equals(y):
            return False
    return True


def test_same_seed_same_table_other_seed_other_table():
    a = generate_transactions(5000, 42)
    assert a.equals(generate_transactions(5000, 42))
    assert not a.equals(generate_transactions(5000, 43))
    bad = generate_dataset(5000, 42, invalid_fraction=0.1)
    again = generate_dataset(5000, 42, invalid_fraction=0.1)
    assert same(bad.table, again.table)
    assert bad.invalid_rows == again.invalid_rows
    assert not same(bad.table, generate_dataset(5000, 42, invalid_fraction=0.2).table)


def test_schema_sorting_and_time_range():
    table = generate_transactions(3000, 1, duration_s=2 * 86400)
    assert table.schema == TRANSACTION_SCHEMA
    assert table.num_rows == 3000
    times = table["event_time"].to_pylist()
    assert times == sorted(times)
    assert DEFAULT_START <= times[0] and times[-1] < DEFAULT_START + timedelta(days=2)


def test_clean_data_breaks_no_rule():
    table = generate_transactions(5000, 3)
    assert broken_rows(table) == set()
    assert len(pc.unique(table["transaction_id"])) == 5000


def test_ids_are_unique_across_seeds():
    a = generate_transactions(2000, 1)["transaction_id"].to_pylist()
    b = generate_transactions(2000, 2)["transaction_id"].to_pylist()
    assert not set(a) & set(b)


def test_several_events_per_card():
    table = generate_transactions(10_000, 5)
    per_card = pc.value_counts(table["card_id"]).field("counts").to_numpy()
    assert 400 < len(per_card) <= 500  # n // 20 cards by default; a few stay idle
    assert np.median(per_card) >= 5


@pytest.mark.parametrize("n, fraction", [(3200, 0.05), (997, 0.2), (400, 1.0)])
def test_invalid_injection_breaks_exactly_the_reported_rows(n, fraction):
    data = generate_dataset(n, 8, invalid_fraction=fraction)
    assert broken_rows(data.table) == set(data.invalid_rows)
    keys = data.table["transaction_id"].to_pylist()
    assert data.invalid_keys == {keys[i] for i in data.invalid_rows}
    assert not data.valid_mask[list(data.invalid_rows)].any()
    assert data.valid_mask.sum() == n - len(data.invalid_rows)
    # Exact count; a lone duplicate-key row also breaks the row it copied.
    assert len(data.invalid_rows) - round(n * fraction) in (0, 1)


def test_every_invalid_kind_is_present():
    data = generate_dataset(2000, 4, invalid_fraction=0.05)
    assert set(data.invalid_rows.values()) == set(InvalidKind)
    table = data.table
    by_kind = {k: [i for i, v in data.invalid_rows.items() if v is k] for k in InvalidKind}
    amount = table["amount"].to_numpy(zero_copy_only=False)
    assert np.all(amount[by_kind[InvalidKind.NEGATIVE_AMOUNT]] < 0)
    assert np.all(amount[by_kind[InvalidKind.ABSURD_AMOUNT]] > 50_000)
    assert np.all(np.isnan(amount[by_kind[InvalidKind.NAN_AMOUNT]]))
    assert set(amount[by_kind[InvalidKind.INF_AMOUNT]]) == {np.inf, -np.inf}
    times = table["event_time"].to_pylist()
    assert all(times[i].year == 2099 for i in by_kind[InvalidKind.FUTURE_EVENT_TIME])
    assert all(times[i].year < 2020 for i in by_kind[InvalidKind.PRE_2020_EVENT_TIME])
    currency = table["currency"].to_pylist()
    assert all(currency[i] not in CURRENCIES for i in by_kind[InvalidKind.UNKNOWN_CURRENCY])
    cards = table["card_id"].to_pylist()
    assert all(not REGEX["card_id"].match(cards[i]) for i in by_kind[InvalidKind.MALFORMED_CARD_ID])
    null_rows = by_kind[InvalidKind.NULL]
    assert all(any(v is None for v in table.slice(i, 1).to_pylist()[0].values()) for i in null_rows)
    assert table["transaction_id"].null_count == 0  # the key is never nulled


def test_chosen_invalid_kinds_only():
    data = generate_dataset(1000, 4, invalid_fraction=0.1, invalid_kinds=["nan_amount", "null"])
    assert set(data.invalid_rows.values()) == {InvalidKind.NAN_AMOUNT, InvalidKind.NULL}
    assert broken_rows(data.table) == set(data.invalid_rows)


def test_label_has_a_learnable_signal():
    table = generate_transactions(100_000, 11)
    fraud = table["is_fraud"].to_numpy().astype(bool)
    assert 0.01 < fraud.mean() < 0.08
    mismatch = pc.not_equal(table["country"], table["card_country"]).to_numpy(zero_copy_only=False)
    assert fraud[mismatch].mean() > 5 * fraud[~mismatch].mean()
    amount = table["amount"].to_numpy()
    assert np.median(amount[fraud]) > 1.5 * np.median(amount[~fraud])
    # Velocity: fraud events follow another event of the same card within an hour
    # far more often than legitimate ones.
    order = pc.sort_indices(table, [("card_id", "ascending"), ("event_time", "ascending")])
    s = table.take(order)
    card = s["card_id"].to_numpy(zero_copy_only=False)
    t = s["event_time"].cast(pa.int64()).to_numpy()
    recent = np.zeros(len(s), dtype=bool)
    recent[1:] = (card[1:] == card[:-1]) & (t[1:] - t[:-1] < 3600 * 1_000_000)
    f = s["is_fraud"].to_numpy().astype(bool)
    assert recent[f].mean() > 4 * recent[~f].mean()


def test_amounts_are_heavy_tailed():
    amount = generate_transactions(50_000, 2)["amount"].to_numpy()
    assert np.quantile(amount, 0.99) > 10 * np.median(amount)
    assert amount.min() > 0 and amount.max() <= 50_000


def test_json_messages_round_trip_with_wrong_types_and_malformed():
    data = generate_dataset(500, 6, invalid_fraction=0.1)
    msgs = to_json_messages(data.table, wrong_type_fraction=0.04, malformed_fraction=0.1, seed=1)
    assert len(msgs.payloads) == len(msgs.partition_keys)
    assert len(msgs.malformed_positions) == round(500 * 0.1 / 0.9)
    assert len(msgs.payloads) == 500 + len(msgs.malformed_positions)
    assert len(msgs.wrong_type_keys) == 20
    decoded = []
    for j, payload in enumerate(msgs.payloads):
        if j in msgs.malformed_positions:
            assert payload in MALFORMED_PAYLOADS and msgs.partition_keys[j] is None
            try:
                obj = json.loads(payload)
            except ValueError:
                continue
            assert not isinstance(obj, dict)
            continue
        obj = json.loads(payload)
        assert msgs.partition_keys[j] == (obj["card_id"].encode() if obj["card_id"] else None)
        decoded.append(obj)
    rows = data.table.to_pylist()
    assert [d["transaction_id"] for d in decoded] == [r["transaction_id"] for r in rows]
    for d, r in zip(decoded, rows, strict=True):
        wrong = r["transaction_id"] in msgs.wrong_type_keys
        amount_ok = isinstance(d["amount"], float | int) or d["amount"] is None
        time_ok = d["event_time"] is None or (
            isinstance(d["event_time"], str) and d["event_time"].endswith("Z")
        )
        if not wrong:
            assert amount_ok and time_ok
            if r["event_time"] is not None:
                parsed = datetime.fromisoformat(d["event_time"])
                assert parsed == r["event_time"]
            assert d["amount"] == r["amount"] or (
                math.isnan(d["amount"]) and math.isnan(r["amount"])
            )
        else:
            assert not (amount_ok and time_ok)


def test_json_messages_without_corruption_are_one_per_row():
    table = generate_transactions(50, 1)
    msgs = to_json_messages(table)
    assert len(msgs.payloads) == 50 and not msgs.malformed_positions and not msgs.wrong_type_keys
    assert json.loads(msgs.payloads[0])["transaction_id"] == table["transaction_id"][0].as_py()


def test_parquet_round_trip(tmp_path):
    data = generate_dataset(300, 2, invalid_fraction=0.2)
    path = write_parquet(data.table, tmp_path / "out" / "tx.parquet")
    assert same(pq.read_table(path), data.table)


def test_csv_with_wrong_types(tmp_path):
    table = generate_transactions(400, 2)
    wrong = write_csv(table, tmp_path / "tx.csv", wrong_type_fraction=0.05, seed=3)
    assert len(wrong) == 20
    raw = pacsv.read_csv(
        tmp_path / "tx.csv",
        convert_options=pacsv.ConvertOptions(
            column_types={"amount": pa.string(), "event_time": pa.string()}
        ),
    )
    assert raw.num_rows == 400
    keys = raw["transaction_id"].to_pylist()
    for key, amount, when in zip(
        keys, raw["amount"].to_pylist(), raw["event_time"].to_pylist(), strict=True
    ):
        parses = True
        try:
            float(amount)
            datetime.fromisoformat(when)
        except ValueError:
            parses = False
        assert parses == (key not in wrong), key


def test_clean_csv_reads_back_typed(tmp_path):
    table = generate_transactions(300, 2)
    assert write_csv(table, tmp_path / "tx.csv") == frozenset()
    back = pacsv.read_csv(tmp_path / "tx.csv")
    assert pa.types.is_timestamp(back["event_time"].type)  # ISO 8601 is inferred as a time
    assert back["event_time"].cast(table["event_time"].type).equals(table["event_time"])
    assert back["amount"].equals(table["amount"])
    assert back["transaction_id"].equals(table["transaction_id"])
