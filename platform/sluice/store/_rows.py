"""The Scorer's output shaped into the rows of the predictions and quarantine tables.

Every path (batch, stream, online) writes through these two functions, so a row scored
anywhere lands in the same columns (see `predictions_table` / `quarantine_table`).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.contract import Contract

__all__ = ["prediction_rows", "quarantine_rows"]

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


def quarantine_rows(contract: Contract, quarantined: pa.Table) -> pa.Table:
    """Scorer quarantine rows -> quarantine table rows, partitioned by (source, day)."""
    day = pc.cast(quarantined.column("quarantined_at"), pa.date32())
    return pa.Table.from_arrays(
        [
            quarantined.column("source"),
            day,
            quarantined.column("key"),
            pa.array([contract.name] * quarantined.num_rows, pa.string()),
            quarantined.column("raw"),
            quarantined.column("reasons"),
            quarantined.column("quarantined_at"),
        ],
        names=["source", "day", "key", "contract", "raw", "reasons", "quarantined_at"],
    )
