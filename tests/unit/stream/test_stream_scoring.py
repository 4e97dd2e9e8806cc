"""One micro-batch through the real Scorer (in-memory feature store, fake output writer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from stream_fakes import T0_MS, TOPIC, messages

from sluice.contract import load_contract
from sluice.datagen import InvalidKind, generate_dataset, to_json_messages
from sluice.decisions import DecisionPolicy
from sluice.features import InMemoryFeatureStore
from sluice.scoring import Scorer
from sluice.stream import MicroBatchScorer
from sluice.stream._messages import POSITION_FIELD

KINDS = [k for k in InvalidKind if k is not InvalidKind.DUPLICATE_KEY]


class Outputs:
    """Keeps what would be upserted: the last row per primary key, like Cassandra."""

    def __init__(self) -> None:
        self.predictions: dict[str, dict] = {}
        self.quarantine: dict[tuple, dict] = {}
        self.alerts: dict[str, dict] = {}
        self.calls = 0

    def write(self, predictions: pa.Table, quarantine: pa.Table, alerts: pa.Table) -> None:
        self.calls += 1
        for row in alerts.to_pylist():
            self.alerts[row["key"]] = row
        for row in predictions.to_pylist():
            self.predictions[row["transaction_id"]] = row
        for row in quarantine.to_pylist():
            self.quarantine[(row["source"], row["day"], row["key"])] = row


@pytest.fixture
def batch():
    data = generate_dataset(600, seed=9, invalid_fraction=0.05, invalid_kinds=KINDS)
    msgs = to_json_messages(data.table, wrong_type_fraction=0.02, malformed_fraction=0.03, seed=9)
    keyless = [b'{"card_id": "card_000001", "amount": 5}'] * 2  # identical, no usable key
    batch = messages([*msgs.payloads, *keyless], partitions=3)
    return data, msgs, batch


def scorer_for(registry) -> Scorer:
    return Scorer(load_contract("fraud"), registry, InMemoryFeatureStore(), "compiled")


def processor(scorer: Scorer, outputs: Outputs, **limits) -> MicroBatchScorer:
    limits = {"max_message_bytes": 65_536, "max_unknown_fields": 64, **limits}
    return MicroBatchScorer(scorer, outputs, source="stream:unit", gx_min_rows=10_000, **limits)


def test_batch_rows_land_in_exactly_one_table(stream_registry, batch):
    data, msgs, batch = batch
    outputs = Outputs()
    result = processor(scorer_for(stream_registry), outputs)(batch)

    invalid = data.invalid_keys | msgs.wrong_type_keys
    valid = set(data.table["transaction_id"].to_pylist()) - invalid
    assert set(outputs.predictions) == valid
    malformed_keys = {f"{TOPIC}:{m.partition()}:{m.offset()}"
                      for i, m in enumerate(batch) if i in msgs.malformed_positions}  # fmt: skip
    keyless_keys = {f"{TOPIC}:{m.partition()}:{m.offset()}" for m in batch[-2:]}
    assert {k for _, _, k in outputs.quarantine} == invalid | malformed_keys | keyless_keys
    assert outputs.calls == 1
    assert (result.messages, result.scored) == (len(batch), len(valid))
    assert result.malformed == len(msgs.malformed_positions)
    assert result.quarantined == len(invalid) + 2 and result.engine == "compiled"
    assert sum(n for r, n in result.reasons.items() if r.startswith("malformed:")) == \
        len(malformed_keys)  # fmt: skip
    assert len(result.latencies_s) == len(batch)

    by_offset = {(m.partition(), m.offset()): m for m in batch}
    by_event = {}  # event id -> its message, for the rows keyed by their event
    for m in batch:
        try:
            event = json.loads(m.value())
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("transaction_id"), str):
            by_event.setdefault(event["transaction_id"], m)
    for (_, _day, key), row in outputs.quarantine.items():
        assert POSITION_FIELD not in row["raw"]
        # Stamped with its message's time (never the clock): a replay rewrites the same
        # (source, day, key), whether the row is keyed by its position or by its event.
        if key.startswith(TOPIC):
            _, p, o = key.split(":")
            msg = by_offset[(int(p), int(o))]
        else:
            msg = by_event[key]
        assert row["quarantined_at"] == datetime.fromtimestamp(msg.timestamp()[1] / 1000,
                                                               tz=UTC), key  # fmt: skip
    one = outputs.predictions[next(iter(valid))]
    assert one["model_version"] == "fraud/1" and len(one["features"]) == len(
        load_contract("fraud").feature_names
    )


def test_alerts_are_written_with_their_batch_one_per_alerting_row(stream_registry, batch):
    """Every scored row whose decision alerts (here: all, review from 0) gets one alert row,
    in the same write as its batch's predictions; a replay rewrites the same rows."""
    _, _, batch = batch
    fraud = load_contract("fraud")
    alert_all = DecisionPolicy.model_validate([{"label": "review", "min_score": 0.0},
                                               {"label": "block", "min_score": 0.5}])  # fmt: skip
    contract = fraud.model_copy(update={"decision": alert_all})
    scorer = Scorer(contract, stream_registry, InMemoryFeatureStore(), "compiled")
    first, again = Outputs(), Outputs()
    processor(scorer, first)(batch)
    assert first.calls == 1 and set(first.alerts) == set(first.predictions)
    for key, row in first.alerts.items():
        pred = first.predictions[key]
        assert (row["decision"], row["policy_id"], row["score"]) == \
            (pred["decision"], alert_all.policy_id, pred["score"])  # fmt: skip
        assert (row["source"], row["event_time"].date()) == ("stream:unit", row["day"])
    processor(scorer, again)(batch)

    def without_time(rows: dict) -> dict:
        return {k: {c: v for c, v in r.items() if c != "alerted_at"} for k, r in rows.items()}

    assert without_time(again.alerts) == without_time(first.alerts)


def test_a_replayed_batch_writes_the_same_rows(stream_registry, batch):
    _, _, batch = batch
    scorer = scorer_for(stream_registry)  # one feature store: the replay re-records events
    first, again = Outputs(), Outputs()
    processor(scorer, first)(batch)
    processor(scorer, again)(batch[100:])

    def without_time(rows: dict) -> dict:
        return {k: {c: v for c, v in r.items() if c != "scored_at"} for k, r in rows.items()}

    replayed = without_time(again.predictions)
    assert replayed == {k: v for k, v in without_time(first.predictions).items() if k in replayed}
    assert len(replayed) > 400
    assert again.quarantine == {k: v for k, v in first.quarantine.items() if k in again.quarantine}


def test_an_all_malformed_batch_writes_only_quarantine(stream_registry):
    outputs = Outputs()
    batch = messages([b"nope", b"[1]", None])
    result = processor(scorer_for(stream_registry), outputs)(batch)
    assert outputs.predictions == {} and len(outputs.quarantine) == 3
    assert result.malformed == 3 and result.scored == result.quarantined == 0
    assert json.loads(next(iter(outputs.quarantine.values()))["reasons"])[0]["column"] is None


def test_wide_and_oversized_messages_are_quarantined_and_never_reach_the_scorer(
    stream_registry, batch
):
    """Beside ordinary events: one message with 3000 unknown fields, one over the byte
    limit, one valid event carrying a few unknown fields (dropped, scored). The Scorer is
    handed records of the contract's fields only."""
    data, msgs, _ = batch
    invalid = data.invalid_keys | msgs.wrong_type_keys
    event = next(e for i, p in enumerate(msgs.payloads) if i not in msgs.malformed_positions
                 and (e := json.loads(p))["transaction_id"] not in invalid)  # fmt: skip
    extra = dict(event, transaction_id="tx_00000000000e0001", note="x", tag=[1])
    wide = dict(extra, transaction_id="tx_00000000000e0002", **{f"f{i}": i for i in range(3000)})
    large = dict(extra, transaction_id="tx_00000000000e0003", pad="y" * 70_000)
    payloads = [json.dumps(extra).encode(), json.dumps(wide).encode(), json.dumps(large).encode()]
    batch = messages([*payloads, *msgs.payloads], partitions=3)
    scorer = scorer_for(stream_registry)
    seen: list[set[str]] = []
    score = scorer.score

    def spy(records, *args, **kw):
        seen.extend(set(r) for r in records)
        return score(records, *args, **kw)

    scorer.score = spy
    outputs = Outputs()
    result = processor(scorer, outputs)(batch)
    allowed = set(load_contract("fraud").scoring_schema.names) | {POSITION_FIELD}
    assert seen and all(fields <= allowed for fields in seen)
    assert "tx_00000000000e0001" in outputs.predictions  # its unknown fields dropped, it is scored
    rows = {k: r for (_, _, k), r in outputs.quarantine.items()}
    wide_key, large_key = f"{TOPIC}:1:0", f"{TOPIC}:2:0"
    reason = {k: json.loads(rows[k]["reasons"])[0]["value"] for k in (wide_key, large_key)}
    assert reason[wide_key].startswith("too_wide: 3003 fields")  # 3000 + note, tag, the label
    assert reason[large_key].startswith("too_large: ")
    raw = json.loads(rows[large_key]["raw"])
    assert raw["value_truncated"] is True and raw["value_bytes"] == len(payloads[2])
    assert len(rows[large_key]["raw"]) < 3 * 65_536
    assert result.malformed == len(msgs.malformed_positions) + 2


def test_a_late_event_of_a_batch_retried_through_an_outage_is_counted_once(stream_registry):
    from sluice.errors import StoreUnavailable
    from sluice.features import KeyedFeatureStore

    contract = load_contract("fraud")
    state = KeyedFeatureStore(InMemoryFeatureStore(), contract.features.aggregates)
    rows = generate_dataset(2, seed=4).table.drop(["is_fraud"]).to_pylist()
    card, t = rows[0]["card_id"], rows[0]["event_time"]
    rows[1].update(card_id=card, event_time=t - timedelta(minutes=5))  # arrives second

    class Flaky(Outputs):
        def write(self, *tables) -> None:
            if self.calls == 1:  # the second batch's first attempt: Cassandra down
                self.calls += 1
                raise StoreUnavailable("cannot reach Cassandra")
            super().write(*tables)

    scorer = Scorer(contract, stream_registry, state, "compiled")
    process = processor(scorer, Flaky())
    payloads = [json.dumps(r, default=str).encode() for r in rows]
    assert process(messages(payloads[:1])).late == 0
    with pytest.raises(StoreUnavailable):
        process(messages(payloads[1:], start_ms=T0_MS + 1))
    assert process(messages(payloads[1:], start_ms=T0_MS + 1)).late == 1  # the retry

