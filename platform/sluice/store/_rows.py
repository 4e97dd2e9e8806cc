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

from sluice.contract import Contract

__all__ = ["QUARANTINE_COLUMNS", "prediction_rows", "quarantine_rows"]

QUARANTINE_COLUMNS = ("source", "day", "key", "row_id", "contract", "raw", "reasons",
                      "quarantined_at")  # fmt: skip
"""The columns of `quarantine_rows`, in order (those of ``quarantine_table``)."""

_FIXED = ("key", "entity", "event_time", "score", "model_version")


def prediction_rows(contract: Contract, scored: pa.Table, scored_at: datetime) -> pa.Table:
    """Scorer rows -> predictions table rows: named key columns and a features map."""
    names = [n for n in scored.column_names if n not in _FIXED]
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
            features,
            pa.array(np.full(n, np.datetime64(scored_at.replace(tzinfo=None), "us")),
                     pa.timestamp("us", tz="UTC")),  # fmt: skip
        ],
        names=[
            contract.key_column, contract.entity_column, contract.event_time_column,
            "score", "model_version", "features", "scored_at",
        ],
    )  # fmt: skip


def quarantine_rows(
    contract: Contract, quarantined: pa.Table, row_ids: Sequence[str] | None = None
) -> pa.Table:
    """Scorer quarantine rows -> quarantine table rows, partitioned by (source, day).

    ``row_id`` tells refused input rows apart within a key: ``row_ids`` where the caller
    knows each row's position (a batch job: ``<file>#<row>``), else ``sha256:`` and a
    digest of the raw row. Either way a re-run or a replay rewrites the same row, and
    rows that share a key but not their contents never collapse onto one.
    """
    n = quarantined.num_rows
    if row_ids is None:
        row_ids = ["sha256:" + hashlib.sha256(raw.encode()).hexdigest()[:32]
                   for raw in quarantined.column("raw").to_pylist()]  # fmt: skip
    elif len(row_ids) != n:
        raise ValueError(f"quarantine_rows: {len(row_ids)} row ids for {n} rows")
    day = pc.cast(quarantined.column("quarantined_at"), pa.date32())
    return pa.Table.from_arrays(
        [
            quarantined.column("source"),
            day,
            quarantined.column("key"),
            pa.array(row_ids, pa.string()),
            pa.array([contract.name] * n, pa.string()),
            quarantined.column("raw"),
            quarantined.column("reasons"),
            quarantined.column("quarantined_at"),
        ],
        names=list(QUARANTINE_COLUMNS),
    )
