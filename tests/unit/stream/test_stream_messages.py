"""Decoding and malformed-message classification, micro-batch assembly, commit points."""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError
from stream_fakes import T0_MS, TOPIC, ErrorEvent, FakeConsumer, FakeMessage, messages

from sluice.contract import load_contract
from sluice.datagen import MALFORMED_PAYLOADS
from sluice.errors import StreamError
from sluice.scoring import QUARANTINE_SCHEMA
from sluice.stream import (
    MALFORMED_EXPECTATION,
    MalformedKind,
    MessageLimits,
    collect_batch,
    decode_messages,
    malformed_quarantine,
    next_offsets,
    pick_engine,
)
from sluice.stream._messages import POSITION_FIELD, classify

NOW = datetime(2026, 6, 1, tzinfo=UTC)
FIELDS = frozenset(load_contract("fraud").scoring_schema.names)
LIMITS = MessageLimits(FIELDS, max_bytes=1_048_576, max_unknown_fields=64)

EXPECTED_KIND = {
    b"not json at all": MalformedKind.NOT_JSON,
    b'{"transaction_id": "tx_00': MalformedKind.NOT_JSON,
    b"\xff\xfe\x00\x01": MalformedKind.NOT_UTF8,
    b"[1, 2, 3]": MalformedKind.NOT_AN_OBJECT,
    b'"a string"': MalformedKind.NOT_AN_OBJECT,
    b"42": MalformedKind.NOT_AN_OBJECT,
    b"null": MalformedKind.NOT_AN_OBJECT,
    b"": MalformedKind.EMPTY,
}


def test_every_generated_malformed_payload_has_an_expected_kind():
    assert set(EXPECTED_KIND) == set(MALFORMED_PAYLOADS)


@pytest.mark.parametrize("payload", sorted(EXPECTED_KIND, key=repr))
def test_malformed_payloads_are_classified(payload):
    got = classify(payload, LIMITS)
    assert isinstance(got, tuple), f"{payload!r} was taken for an event"
    assert got[0] is EXPECTED_KIND[payload]
    assert got[1]  # a detail for the reason


@pytest.mark.parametrize("payload, kind", [
    (None, MalformedKind.EMPTY),                       # a tombstone
    (b"true", MalformedKind.NOT_AN_OBJECT),
    (b"3.5e2", MalformedKind.NOT_AN_OBJECT),
    (b"[" * 100_000, MalformedKind.NOT_JSON),          # nesting too deep for the parser
    (b'{"a": 1} trailing', MalformedKind.NOT_JSON),
    ('{"a": "caf\u00e9"}'.encode("utf-16"), MalformedKind.NOT_UTF8),  # JSON, wrong encoding
    (rb'{"card_id": "card_\udc80", "amount": 3.5}', MalformedKind.NOT_UTF8),  # a lone half
    (rb'{"x\uD800": 1}', MalformedKind.NOT_UTF8),  # in a key outside the contract too
])  # fmt: skip
def test_other_bad_values_are_classified(payload, kind):
    got = classify(payload, LIMITS)
    assert isinstance(got, tuple) and got[0] is kind


def test_json_objects_are_records_of_the_contracts_fields_only():
    got = classify(b'{"amount": "NaN?", "x": [1], "card_id": 7}', LIMITS)
    assert got == {"amount": "NaN?", "card_id": 7}  # values are the Scorer's job; x is dropped
    assert classify('{"merchant_id": "caf\u00e9"}'.encode(), LIMITS) == {"merchant_id": "caf\u00e9"}
    assert classify(b"{}", LIMITS) == {}
    # A surrogate pair is one character (an emoji), not a lone half.
    assert classify(rb'{"merchant_id": "m\ud83d\ude00"}', LIMITS) == {"merchant_id": "m\U0001F600"}


def test_decode_splits_records_and_malformed_and_tags_positions():
    batch = messages([b'{"amount": 1}', b"oops", b'{"amount": 2}', b"[]", None])
    decoded = decode_messages(batch, LIMITS)
    assert [r["amount"] for r in decoded.records] == [1, 2]
    assert [r[POSITION_FIELD] for r in decoded.records] == [0, 2]
    assert [(i, kind) for i, kind, _ in decoded.malformed] == [
        (1, MalformedKind.NOT_JSON), (3, MalformedKind.NOT_AN_OBJECT), (4, MalformedKind.EMPTY),
    ]  # fmt: skip


def test_malformed_quarantine_rows_keep_raw_bytes_position_and_reason():
    raw = b"\xff\xfe\x00\x01"
    batch = [FakeMessage(3, 41, raw, _key=b"card_000001", _timestamp_ms=T0_MS),
             FakeMessage(1, 7, b"not json at all", _timestamp_ms=None)]  # fmt: skip
    rows = malformed_quarantine(decode_messages(batch, LIMITS), "stream:job", NOW, 4096)
    assert rows.schema == QUARANTINE_SCHEMA
    assert rows["key"].to_pylist() == [f"{TOPIC}:3:41", f"{TOPIC}:1:7"]
    first, second = (json.loads(t) for t in rows["raw"].to_pylist())
    assert base64.b64decode(first["value_base64"]) == raw and first["value"] is None
    assert (first["topic"], first["partition"], first["offset"]) == (TOPIC, 3, 41)
    assert first["key"] == "card_000001" and first["timestamp_ms"] == T0_MS
    assert second["value"] == "not json at all"
    assert first["value_bytes"] == 4 and first["value_truncated"] is False
    reasons = [json.loads(t) for t in rows["reasons"].to_pylist()]
    assert reasons[0] == [{"expectation": MALFORMED_EXPECTATION, "column": None,
                           "value": reasons[0][0]["value"]}]  # fmt: skip
    assert reasons[0][0]["value"].startswith("not_utf8: ")
    assert reasons[1][0]["value"].startswith("not_json: ")
    # The message's own time (stable across replays), else the batch's clock.
    when = rows["quarantined_at"].to_pylist()
    assert when[0] == datetime.fromtimestamp(T0_MS / 1000, tz=UTC) and when[1] == NOW
    assert set(rows["source"].to_pylist()) == {"stream:job"}


def test_a_timestamp_past_year_9999_is_no_time_not_a_crash():
    far = FakeMessage(0, 9, b"not json", _timestamp_ms=253_402_300_800_000)  # year 10000
    rows = malformed_quarantine(decode_messages([far], LIMITS), "stream:job", NOW, 4096)
    assert rows["quarantined_at"].to_pylist() == [NOW]  # the batch's clock, as without one
    assert json.loads(rows["raw"][0].as_py())["timestamp_ms"] == 253_402_300_800_000


def wide(unknown: int, event_id: str = "tx_1") -> bytes:
    """An event object with ``unknown`` fields outside the contract."""
    obj = {"transaction_id": event_id, "card_id": "card_000001", "amount": 12.5}
    obj.update({f"extra_{i:05d}": i for i in range(unknown)})
    return json.dumps(obj).encode()


def test_a_message_wider_than_the_contract_is_quarantined_as_too_wide():
    limits = MessageLimits(FIELDS, max_bytes=200_000, max_unknown_fields=64)
    assert classify(wide(64), limits) == {"transaction_id": "tx_1", "card_id": "card_000001",
                                          "amount": 12.5}  # unknown fields dropped  # fmt: skip
    kind, detail = classify(wide(5000), limits)
    assert kind is MalformedKind.TOO_WIDE
    assert detail == "5000 fields outside the contract, over max_unknown_fields (64)"


def test_a_message_over_the_byte_limit_is_quarantined_unparsed():
    limits = MessageLimits(FIELDS, max_bytes=1000, max_unknown_fields=64)
    value = b'{"transaction_id": "tx_1", "pad": "' + b"x" * 2000 + b'"}'
    assert classify(value, limits) == (
        MalformedKind.TOO_LARGE,
        f"{len(value)} bytes, over max_message_bytes (1000)",
    )
    assert classify(value[:1000], limits)[0] is MalformedKind.NOT_JSON  # at the limit: parsed


def test_quarantined_raw_bytes_are_truncated_with_length_and_hash():
    limits = MessageLimits(FIELDS, max_bytes=1000, max_unknown_fields=64)
    big = ("\u00e9" * 5000).encode()  # 10,000 bytes of 2-byte characters
    key = b"k" * 3000
    batch = [FakeMessage(0, 1, big, _key=key), FakeMessage(0, 2, wide(2000))]
    decoded = decode_messages(batch, limits)
    assert [kind for _, kind, _ in decoded.malformed] == [MalformedKind.TOO_LARGE,
                                                          MalformedKind.TOO_LARGE]  # fmt: skip
    rows = malformed_quarantine(decoded, "stream:job", NOW, limits.max_bytes)
    first = json.loads(rows["raw"][0].as_py())
    assert base64.b64decode(first["value_base64"]) == big[:1000]
    assert first["value"] == "\u00e9" * 500  # cut on a character boundary
    assert first["value_bytes"] == 10_000 and first["value_truncated"] is True
    assert first["value_sha256"] == hashlib.sha256(big).hexdigest()
    assert first["key"] == "k" * 1000 and first["key_bytes"] == 3000
    assert first["key_sha256"] == hashlib.sha256(key).hexdigest()
    # Key and value: at most max_bytes each, as JSON-escaped text (<= 6 chars a byte) and base64.
    assert all(len(raw) < 2 * 7.4 * limits.max_bytes + 500 for raw in rows["raw"].to_pylist())
    reasons = [json.loads(r)[0]["value"] for r in rows["reasons"].to_pylist()]
    assert reasons[0] == "too_large: 10000 bytes, over max_message_bytes (1000)"


def test_at_the_largest_limit_a_quarantine_row_stays_whole_under_1_mib():
    # Control bytes are valid UTF-8 that JSON escapes as 6 characters each: the worst case.
    from sluice.jobs import StreamJob
    from sluice.store._rows import MAX_QUARANTINE_RAW_BYTES

    most = StreamJob.model_fields["max_message_bytes"].metadata[-1].le
    limits = MessageLimits(FIELDS, max_bytes=most, max_unknown_fields=64)
    worst = b"\x01" * (most + 1)
    rows = malformed_quarantine(decode_messages([FakeMessage(0, 1, worst, _key=worst)], limits),
                                "stream:job", NOW, limits.max_bytes)  # fmt: skip
    raw = rows["raw"][0].as_py()
    assert len(raw.encode()) <= MAX_QUARANTINE_RAW_BYTES
    stored = json.loads(raw)  # whole: never cut by the store's bound
    assert base64.b64decode(stored["value_base64"]) == worst[:most]
    assert base64.b64decode(stored["key_base64"]) == worst[:most]


def test_decoding_wide_messages_keeps_memory_bounded():
    """40 messages of 4000 unknown fields each (~70 kB apiece): records keep only the
    contract's fields, so decoding holds one parsed message at a time, not 160k fields."""
    limits = MessageLimits(FIELDS, max_bytes=200_000, max_unknown_fields=64)
    batch = messages([wide(4000, f"tx_{i}") for i in range(40)])
    payload = sum(len(m.value()) for m in batch)
    tracemalloc.start()
    try:
        decoded = decode_messages(batch, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(decoded.malformed) == 40 and decoded.records == []
    assert peak < payload / 2, f"decoding {payload} bytes peaked at {peak} bytes"


def test_next_offsets_is_last_offset_plus_one_per_partition():
    batch = [FakeMessage(0, 5, b""), FakeMessage(1, 9, b""), FakeMessage(0, 7, b""),
             FakeMessage(0, 6, b""), FakeMessage(2, 0, b"", _topic="other")]  # fmt: skip
    assert next_offsets(batch) == {(TOPIC, 0): 8, (TOPIC, 1): 10, ("other", 2): 1}
    assert next_offsets([]) == {}


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_batch_takes_what_has_arrived_up_to_max_messages():
    consumer = FakeConsumer(batches=[messages([b"{}"] * 9), messages([b"{}"] * 5)])
    batch = collect_batch(consumer, max_messages=6, max_wait_s=10)
    assert len(batch) == 6
    # Waits for one message, then takes what is already fetched, asking only for the rest.
    assert consumer.log == [("consume", 1)] and consumer.drains == [5]
    assert len(collect_batch(consumer, max_messages=6, max_wait_s=10)) == 3  # the rest of it
    assert len(collect_batch(consumer, max_messages=6, max_wait_s=10)) == 5  # the next arrival


def test_batch_never_waits_for_more_once_a_message_is_here():
    clock = FakeClock()
    consumer = FakeConsumer(batches=[messages([b"{}"] * 2), messages([b"{}"] * 3)],
                            on_consume=lambda call: setattr(clock, "t", clock.t + 0.3))
    batch = collect_batch(consumer, max_messages=100, max_wait_s=1.0, clock=clock)
    assert len(batch) == 2  # the second arrival is the next batch, not this one
    assert consumer.consumed_calls == 1 and consumer.drains == [99, 98]


def test_an_idle_consumer_returns_empty_after_max_wait():
    clock = FakeClock()

    def tick(call: int) -> None:
        clock.t += 0.3  # each blocking consume call waits 0.3 s

    consumer = FakeConsumer(batches=[], on_consume=tick)
    assert collect_batch(consumer, max_messages=100, max_wait_s=1.0, clock=clock) == []
    assert consumer.consumed_calls == 4 and consumer.drains == []  # 0.3 s each to 1 s


def test_batch_skips_partition_eof_and_logs_transient_errors(caplog):
    batch = [*messages([b"{}"]), ErrorEvent(KafkaError._PARTITION_EOF),
             ErrorEvent(KafkaError._TRANSPORT), *messages([b"{}"], start_ms=T0_MS + 5)]  # fmt: skip
    consumer = FakeConsumer(batches=[batch])
    clock = FakeClock()
    consumer.on_consume = lambda call: setattr(clock, "t", clock.t + 1)
    got = collect_batch(consumer, max_messages=10, max_wait_s=1.0, clock=clock)
    assert len(got) == 2 and all(m.error() is None for m in got)
    assert "error" in caplog.text


def test_fatal_consumer_error_raises():
    consumer = FakeConsumer(batches=[[ErrorEvent(KafkaError._FATAL, fatal=True)]])
    with pytest.raises(StreamError, match="Kafka consumer failed"):
        collect_batch(consumer, max_messages=10, max_wait_s=1.0)


@pytest.mark.parametrize("rows, engine", [(1, "compiled"), (4999, "compiled"), (5000, "gx"),
                                          (20000, "gx")])  # fmt: skip
def test_engine_is_picked_by_batch_size(rows, engine):
    assert pick_engine(rows, gx_min_rows=5000) == engine
