"""The Scorer's output shaped into the rows of the predictions and quarantine tables.

Every path (batch, stream, online) writes through these two functions, so a row scored
anywhere lands in the same columns (see `predictions_table` / `quarantine_table`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.contract import SCORED_COLUMNS, Contract
from sluice.decisions import is_alerting

__all__ = [
    "ALERT_COLUMNS",
    "MAX_QUARANTINE_KEY_BYTES",
    "MAX_QUARANTINE_RAW_BYTES",
    "QUARANTINE_COLUMNS",
    "alert_rows",
    "prediction_columns",
    "prediction_rows",
    "quarantine_rows",
    "storable_key",
    "storable_keys",
    "storable_raw",
]

ALERT_COLUMNS = ("contract", "day", "event_time", "key", "entity", "score", "decision",
                 "policy_id", "model_version", "source", "reasons", "alerted_at")  # fmt: skip
"""The columns of `alert_rows`: those of ``alerts`` and of ``alerts_by_key``."""

_UTC_US = pa.timestamp("us", tz="UTC")
_ALERT_SCHEMA = pa.schema(
    [(c, pa.date32() if c == "day" else _UTC_US if c in ("event_time", "alerted_at")
      else pa.float64() if c == "score" else pa.string()) for c in ALERT_COLUMNS]
)  # fmt: skip
_NO_ALERTS = _ALERT_SCHEMA.empty_table()  # Arrow tables are immutable: one serves every call

QUARANTINE_COLUMNS = ("source", "day", "key", "row_id", "contract", "raw", "reasons",
                      "quarantined_at")  # fmt: skip
"""The columns of `quarantine_rows`, in order (those of ``quarantine_table``)."""


MAX_QUARANTINE_KEY_BYTES = 1024
"""A refused row's key as stored: Cassandra refuses a key component over 64 KiB, and a key
is for finding the row, so a longer one keeps its start and a digest of the whole."""
MAX_QUARANTINE_RAW_BYTES = 1 << 20
"""A refused row's raw contents as stored (1 MiB): past it, its start with its length and
digest, so one huge row can never make the write, and the rows beside it, fail."""


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _head(text: str, max_bytes: int) -> str:
    """The longest start of ``text`` within ``max_bytes`` of UTF-8 (whole characters)."""
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def storable_key(key: str | None) -> str | None:
    """``key`` if it fits ``MAX_QUARANTINE_KEY_BYTES``, else its start + ``…sha256:<whole>``."""
    if key is None or len(key) * 4 <= MAX_QUARANTINE_KEY_BYTES:
        return key
    if len(key.encode("utf-8", "surrogatepass")) <= MAX_QUARANTINE_KEY_BYTES:
        return key
    suffix = f"…sha256:{_sha256(key)}"
    return _head(key, MAX_QUARANTINE_KEY_BYTES - len(suffix.encode())) + suffix


def storable_keys(keys: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``storable_key`` over a column: the keys as the quarantine table holds them."""
    return _bounded(keys, MAX_QUARANTINE_KEY_BYTES, storable_key)


def storable_raw(raw: str | None) -> str | None:
    """``raw`` if it fits ``MAX_QUARANTINE_RAW_BYTES``, else its start followed by
    ``…[truncated: <bytes> bytes, sha256 <digest>]`` (length and digest of the whole)."""
    if raw is None or len(raw) * 4 <= MAX_QUARANTINE_RAW_BYTES:
        return raw
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size <= MAX_QUARANTINE_RAW_BYTES:
        return raw
    marker = f"…[truncated: {size} bytes, sha256 {_sha256(raw)}]"
    return _head(raw, MAX_QUARANTINE_RAW_BYTES - len(marker.encode())) + marker


def prediction_columns(contract: Contract) -> list[str]:
    """The columns of `prediction_rows`, in order (those of ``predictions_table``)."""
    return [contract.key_column, contract.entity_column, contract.event_time_column,
            "score", "model_version", "decision", "policy_id", "features", "scored_at"]  # fmt: skip


def prediction_rows(contract: Contract, scored: pa.Table, scored_at: datetime) -> pa.Table:
    """Scorer rows -> predictions table rows: named key columns and a features map."""
    names = [n for n in scored.column_names if n not in SCORED_COLUMNS]
    n = scored.num_rows
    if names:
        values = np.column_stack([scored.column(f).to_numpy() for f in names]).astype(np.float64)
    else:
        values = np.empty((n, 0))
    # One map per row, built column-wise: offsets, repeated names, row-major values.
    features = pa.MapArray.from_arrays(
        pa.array(np.arange(0, n * len(names) + 1, len(names), dtype=np.int32)),
        pa.array(np.tile(np.array(names, dtype=object), n), pa.string()),
        pa.array(values.ravel(), pa.float64()),
    )
    return pa.Table.from_arrays(
        [
            scored.column("key"),
            scored.column("entity"),
            scored.column("event_time"),
            scored.column("score"),
            scored.column("model_version"),
            scored.column("decision"),
            scored.column("policy_id"),
            features,
            pa.array(np.full(n, np.datetime64(scored_at.replace(tzinfo=None), "us")),
                     pa.timestamp("us", tz="UTC")),  # fmt: skip
        ],
        names=prediction_columns(contract),
    )


def alert_rows(contract: Contract, scored: pa.Table, source: str,
               alerted_at: datetime) -> pa.Table:  # fmt: skip
    """The alerts of scored rows (``sluice.scoring.scored_schema``): one per row whose
    decision is ``review`` or ``block``, its day the UTC date of its event (stable across
    re-runs and replays, so each rewrites the same row)."""
    alerting = is_alerting(scored.column("decision"))
    if not pc.any(alerting).as_py():  # most rows raise none: no table building
        return _NO_ALERTS
    rows = scored.filter(alerting)
    n = rows.num_rows
    times = rows.column("event_time").cast(_UTC_US)
    return pa.Table.from_arrays(
        [
            pa.array([contract.name] * n, pa.string()),
            pc.cast(times, pa.date32()),
            times,
            rows.column("key"),
            rows.column("entity"),
            rows.column("score"),
            rows.column("decision"),
            rows.column("policy_id"),
            rows.column("model_version"),
            pa.array([source] * n, pa.string()),
            rows.column("reasons"),
            pa.array(np.full(n, np.datetime64(alerted_at.replace(tzinfo=None), "us")),
                     _UTC_US),  # fmt: skip
        ],
        schema=_ALERT_SCHEMA,
    )


def quarantine_rows(
    contract: Contract,
    quarantined: pa.Table,
    row_ids: Sequence[str] | None = None,
    days: pa.Array | None = None,
) -> pa.Table:
    """Scorer quarantine rows -> quarantine table rows, partitioned by (source, day).

    ``day`` must come from a time that a re-run or replay gives the row again: ``days``
    (date32, one a row) where the caller has one (a batch job: the event's day, see
    pipelines/batch_stages.py), else the day of ``quarantined_at`` (the stream restamps it
    with the message's time; an online request is never replayed).

    ``row_id`` tells refused input rows apart within a key: ``row_ids`` where the caller
    knows each row's position (a batch job: ``<file>#<row>``), else ``sha256:`` and a
    digest of the raw row. Either way a re-run or a replay rewrites the same row, and
    rows that share a key but not their contents never collapse onto one. A key or raw
    contents too large for Cassandra are stored in a storable form (``storable_key``,
    ``storable_raw``); the row id is still the digest of the whole raw row.
    """
    n = quarantined.num_rows
    if row_ids is None:
        row_ids = ["sha256:" + _sha256(raw)[:32] for raw in quarantined.column("raw").to_pylist()]
    elif len(row_ids) != n:
        raise ValueError(f"quarantine_rows: {len(row_ids)} row ids for {n} rows")
    if days is None:
        day = pc.cast(quarantined.column("quarantined_at"), pa.date32())
    elif len(days) != n or days.type != pa.date32() or days.null_count:
        raise ValueError(f"quarantine_rows: days must be {n} non-null date32 values")
    else:
        day = days
    return pa.Table.from_arrays(
        [
            quarantined.column("source"),
            day,
            storable_keys(quarantined.column("key")),
            pa.array(row_ids, pa.string()),
            pa.array([contract.name] * n, pa.string()),
            _bounded(quarantined.column("raw"), MAX_QUARANTINE_RAW_BYTES, storable_raw),
            quarantined.column("reasons"),
            quarantined.column("quarantined_at"),
        ],
        names=list(QUARANTINE_COLUMNS),
    )


def _bounded(column: pa.ChunkedArray, max_bytes: int, fit) -> pa.ChunkedArray | pa.Array:
    """``column`` as is when every value fits ``max_bytes`` (one vectorized check), else
    with ``fit`` applied to each value."""
    longest = pc.max(pc.binary_length(column)).as_py() if len(column) else None
    if longest is None or longest <= max_bytes:
        return column
    return pa.array([fit(v) for v in column.to_pylist()], pa.string())
