"""Kafka messages -> micro-batches -> event records, and the quarantine rows of malformed ones.

A micro-batch is what has arrived when the consumer is ready for it: the first message
(waited for up to ``max_wait_s``) and every message already fetched behind it, up to
``max_messages`` (``collect_batch``). Its commit point is, per
partition, the last offset it holds plus one (``next_offsets``).

Decoding (``decode_messages``) splits a batch into event records, handed to the Scorer,
and malformed messages, which never stop the stream: an empty value, a value over the
job's ``max_message_bytes`` (never parsed), bytes that are not UTF-8, text that is not
JSON, JSON that is not an object (a list, a number, a string, null), or an object with
more than ``max_unknown_fields`` fields outside the contract. A record keeps only the
contract's input fields (``MessageLimits.fields``): unknown fields are dropped as each
message is parsed, so a wide message never becomes columns and a batch's memory is
bounded by its bytes. Each malformed message becomes one quarantine row keyed by its
position ``topic:partition:offset`` and carrying the raw bytes (as text when they are
UTF-8, always as base64; at most ``max_message_bytes`` of them, with the original length
and SHA-256 beside), the Kafka key, the position and the reason.

Quarantine rows of a stream are stamped with the *message's* timestamp, not the wall
clock, so a replay after a crash rewrites the same row in the same ``(source, day)``
partition (see ``sluice.store.quarantine_table``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import pyarrow as pa

from sluice.errors import StreamError
from sluice.scoring import MALFORMED_EXPECTATION, QUARANTINE_SCHEMA

__all__ = [
    "MALFORMED_EXPECTATION",
    "POSITION_FIELD",
    "Decoded",
    "MalformedKind",
    "Message",
    "MessageLimits",
    "collect_batch",
    "decode_messages",
    "malformed_quarantine",
    "message_time",
    "next_offsets",
    "position_key",
]

log = logging.getLogger(__name__)

POSITION_FIELD = "__sluice_message__"
"""Field added to each record before scoring: its message's index in the batch. The
Scorer drops unknown fields when it conforms a row but keeps them in a quarantined row's
raw JSON, which is how a quarantine row finds its message (then the field is removed)."""


class Message(Protocol):
    """The part of ``confluent_kafka.Message`` the stream reads."""

    def error(self) -> Any: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class BatchSource(Protocol):
    """The part of ``confluent_kafka.Consumer`` that ``collect_batch`` uses."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]: ...


class MalformedKind(StrEnum):
    """Why a message is not an event record."""

    EMPTY = "empty"  # no value (a tombstone) or zero bytes
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"  # valid JSON, but a list, number, string, bool or null
    TOO_LARGE = "too_large"  # over max_message_bytes: not parsed at all
    TOO_WIDE = "too_wide"  # more fields outside the contract than max_unknown_fields


@dataclass(frozen=True)
class MessageLimits:
    """What decoding keeps of a message, and how big or wide a message may be.

    ``fields``: the contract's input fields, the only ones a record keeps;
    ``max_bytes`` / ``max_unknown_fields``: the job's ``max_message_bytes`` and
    ``max_unknown_fields`` (a message over either is quarantined). ``max_bytes`` also
    bounds the raw bytes a quarantine row stores.
    """

    fields: frozenset[str]
    max_bytes: int
    max_unknown_fields: int


def position_key(msg: Message) -> str:
    return f"{msg.topic()}:{msg.partition()}:{msg.offset()}"


def message_time(msg: Message) -> datetime | None:
    """The message's timestamp (producer create time or log append time), if it has one."""
    kind, ms = msg.timestamp()
    if kind == 0 or ms is None or ms < 0:  # TIMESTAMP_NOT_AVAILABLE
        return None
    try:  # a producer sets CreateTime freely: past year 9999 is no time Python has
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def next_offsets(messages: Sequence[Message]) -> dict[tuple[str, int], int]:
    """The commit point of a batch: per (topic, partition), its last offset + 1."""
    out: dict[tuple[str, int], int] = {}
    for msg in messages:
        tp = (msg.topic(), msg.partition())
        nxt = msg.offset() + 1
        if nxt > out.get(tp, -1):
            out[tp] = nxt
    return out


def collect_batch(
    source: BatchSource,
    max_messages: int,
    max_wait_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> list[Message]:
    """One micro-batch: what has arrived, up to ``max_messages`` messages.

    It waits at most ``max_wait_s`` for a first message, then takes the messages already
    fetched (``consume`` with timeout 0) and returns without waiting for more: a message
    never waits for a batch to fill. Under load batches grow by themselves (what arrives
    while one batch is scored is the next one), as in Kafka Streams; an idle consumer
    returns an empty list every ``max_wait_s``, so its loop can commit and report lag.

    Error events are not messages: end-of-partition events are skipped, a fatal client
    error raises ``StreamError``, other errors (broker down, the client retries) are
    logged.
    """
    deadline = clock() + max_wait_s
    batch: list[Message] = []
    while len(batch) < max_messages:
        if batch:  # drain what is already here, without waiting
            got = source.consume(num_messages=max_messages - len(batch), timeout=0)
            if not got:
                break
        else:
            remaining = deadline - clock()
            if remaining <= 0:
                break
            got = source.consume(num_messages=1, timeout=remaining)
        for msg in got:
            err = msg.error()
            if err is None:
                batch.append(msg)
            elif _is_partition_eof(err):
                continue
            elif getattr(err, "fatal", lambda: False)():
                raise StreamError(f"Kafka consumer failed: {err}")
            else:
                log.warning("Kafka consumer error (the client retries): %s", err)
    return batch


def _is_partition_eof(err: Any) -> bool:
    from confluent_kafka import KafkaError

    return err.code() == KafkaError._PARTITION_EOF


# -- decoding -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoded:
    """A batch split into event records (tagged with ``POSITION_FIELD``) and malformed
    messages; ``records[i][POSITION_FIELD]`` indexes ``messages``."""

    messages: Sequence[Message]
    records: list[dict[str, Any]]
    malformed: list[tuple[int, MalformedKind, str]]  # (index in messages, kind, detail)


_JSON_TYPES = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}  # fmt: skip


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A JSON escape of a UTF-16 surrogate: fine in a pair, which json.loads joins into one
character; alone it leaves a str no UTF-8 encoder (Arrow's, Cassandra's) takes."""


def classify(
    value: bytes | None, limits: MessageLimits
) -> dict[str, Any] | tuple[MalformedKind, str]:
    """A message value as an event record (the contract's fields of a JSON object), or why
    it is not one. The full object lives only inside this call (at most ``max_bytes``)."""
    if not value:
        return MalformedKind.EMPTY, "the message has no value"
    if len(value) > limits.max_bytes:
        return MalformedKind.TOO_LARGE, (
            f"{len(value)} bytes, over max_message_bytes ({limits.max_bytes})"
        )
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        return MalformedKind.NOT_UTF8, str(exc)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return MalformedKind.NOT_JSON, str(exc)[:200]
    if not isinstance(obj, dict):
        return MalformedKind.NOT_AN_OBJECT, f"JSON {_JSON_TYPES.get(type(obj), 'value')}"
    if _SURROGATE_ESCAPE.search(text):  # rare: checked only when the text has one
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            return MalformedKind.NOT_UTF8, f"a lone surrogate escape is no character: {exc}"
    record = {name: obj[name] for name in limits.fields if name in obj}
    unknown = len(obj) - len(record)
    if unknown > limits.max_unknown_fields:
        return MalformedKind.TOO_WIDE, (
            f"{unknown} fields outside the contract, over max_unknown_fields "
            f"({limits.max_unknown_fields})"
        )
    return record


def decode_messages(messages: Sequence[Message], limits: MessageLimits) -> Decoded:
    records: list[dict[str, Any]] = []
    malformed: list[tuple[int, MalformedKind, str]] = []
    for i, msg in enumerate(messages):
        got = classify(msg.value(), limits)
        if isinstance(got, dict):
            got[POSITION_FIELD] = i
            records.append(got)
        else:
            malformed.append((i, *got))
    return Decoded(messages=messages, records=records, malformed=malformed)


def _bounded(name: str, raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    """``raw`` as JSON-safe fields: its first ``max_bytes`` bytes as text (when UTF-8) and
    base64, its length, SHA-256 and whether it was truncated (None: no such part)."""
    if raw is None:
        return {name: None, f"{name}_base64": None}
    raw = bytes(raw)
    kept = raw[:max_bytes]
    try:
        text: str | None = kept.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A cut through the last character of a longer UTF-8 value: keep the whole ones.
        cut = len(kept) < len(raw) and exc.reason == "unexpected end of data"
        text = kept[: exc.start].decode("utf-8") if cut else None
    return {
        name: text, f"{name}_base64": base64.b64encode(kept).decode(),
        f"{name}_bytes": len(raw), f"{name}_sha256": hashlib.sha256(raw).hexdigest(),
        f"{name}_truncated": len(kept) < len(raw),
    }  # fmt: skip


def raw_message(msg: Message, max_bytes: int) -> dict[str, Any]:
    """A message as JSON-safe fields: position, timestamp, key and value (each bounded by
    ``_bounded``), so a quarantine row stays storable whatever arrived."""
    return {
        "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
        "timestamp_ms": msg.timestamp()[1] if msg.timestamp()[0] else None,
        **_bounded("key", msg.key(), max_bytes), **_bounded("value", msg.value(), max_bytes),
    }  # fmt: skip


def malformed_quarantine(decoded: Decoded, source: str, now: datetime, max_bytes: int) -> pa.Table:
    """Quarantine rows (``QUARANTINE_SCHEMA``) of the batch's malformed messages; each keeps
    at most ``max_bytes`` of the message's key and value."""
    keys, raws, reasons, times = [], [], [], []
    for i, kind, detail in decoded.malformed:
        msg = decoded.messages[i]
        keys.append(position_key(msg))
        raws.append(json.dumps(raw_message(msg, max_bytes), sort_keys=True))
        reasons.append(json.dumps([{"expectation": MALFORMED_EXPECTATION, "column": None,
                                    "value": f"{kind.value}: {detail}"}]))  # fmt: skip
        times.append(message_time(msg) or now)
    n = len(keys)
    return pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.array(raws, pa.string()),
         pa.array(reasons, pa.string()), pa.array([source] * n, pa.string()),
         pa.array(times, pa.timestamp("us", tz="UTC"))],
        schema=QUARANTINE_SCHEMA,
    )  # fmt: skip


def restamp_quarantine(
    quarantined: pa.Table, decoded: Decoded, key_column: str, now: datetime
) -> pa.Table:
    """The Scorer's quarantine rows for this batch, tied back to their messages.

    Each row's raw JSON carries ``POSITION_FIELD`` (removed here); from it the row gets
    its message's timestamp as ``quarantined_at`` and, when the event has no usable key
    (missing or empty), the key ``topic:partition:offset`` instead of a digest of the
    raw row (two identical keyless payloads are still two quarantined messages).
    """
    if quarantined.num_rows == 0:
        return quarantined
    keys = quarantined.column("key").to_pylist()
    raws, times = [], []
    for i, text in enumerate(quarantined.column("raw").to_pylist()):
        raw = json.loads(text)
        pos = raw.pop(POSITION_FIELD, None) if isinstance(raw, dict) else None
        raws.append(json.dumps(raw, sort_keys=True))
        msg = decoded.messages[pos] if isinstance(pos, int) else None
        times.append((message_time(msg) if msg is not None else None) or now)
        if msg is not None and _no_usable_key(raw, key_column):
            keys[i] = position_key(msg)
    return pa.Table.from_arrays(
        [pa.array(keys, pa.string()), pa.array(raws, pa.string()), quarantined.column("reasons"),
         quarantined.column("source"), pa.array(times, pa.timestamp("us", tz="UTC"))],
        schema=QUARANTINE_SCHEMA,
    )  # fmt: skip


def _no_usable_key(raw: Any, key_column: str) -> bool:
    return not isinstance(raw, Mapping) or raw.get(key_column) in (None, "")
