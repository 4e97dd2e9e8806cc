"""Pass 0 of the batch job: keys that carry different rows anywhere in the input.

    keys = conflicting_keys(read(), contract.key_column, rows_read,
                            columns=contract.scoring_schema.names)
    keys.conflicting       # every row of these keys is refused (by both passes)
    keys.duplicated_rows   # the uniqueness expectation's count over the whole input

Its own module, light on imports: Ray Data's tasks import the module of the function they
run (`_key_hash_bucket`), and this one needs no model library (pipelines.batch_score
imports the stages, and with them torch: a task worker that ran the key check from there
idled at ~700 MB against ~200 MB, and a fresh one spent ~1.5 s importing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["KeyCheck", "conflicting_keys"]


@dataclass(frozen=True)
class KeyCheck:
    """What the key check found over the whole input."""

    conflicting: frozenset[str]  # keys carrying different rows: every such row is refused
    duplicated_rows: int  # rows whose key appears more than once (copies included)
    keyed_rows: int  # rows with a key


def conflicting_keys(ds, key_column: str, rows: int, rows_per_bucket: int = 500_000, *,
                     columns: Sequence[str]) -> KeyCheck:  # fmt: skip
    """Keys that carry different rows anywhere in the data set (identical copies are a
    replay, scored once by the upsert), and how many rows share a key (the uniqueness
    expectation's count over the whole input). A row is its ``columns`` (the contract's
    scoring columns), in that order, as the Scorer compares the rows of one batch: files
    that order their columns differently, or carry columns the contract does not read,
    hold copies of the same row.

    Memory stays flat whatever the input size: Ray Data tasks reduce each row to (key,
    row hash, bucket of the key); the driver appends them to one spill file per bucket on
    its local disk (~`rows_per_bucket` rows; the key and 8 bytes a row), then groups one
    bucket at a time by key. A key lands in one bucket, so a bucket holds all of its rows.
    (Ray Data's groupby held every key in memory at once: its peak grew from 2.2 to 4.6
    GiB of private memory between 1M and 5M rows.)
    """
    buckets = max(1, -(-rows // rows_per_bucket))
    hashed = ds.map_batches(_key_hash_bucket, batch_format="pyarrow", batch_size=32_768,
                            fn_kwargs=dict(key_column=key_column, buckets=buckets,
                                           columns=list(columns)))  # fmt: skip
    found: set[str] = set()
    duplicated = keyed = 0
    with tempfile.TemporaryDirectory(prefix="sluice-key-check-") as tmp:
        paths = [Path(tmp) / f"bucket-{b}.arrow" for b in range(buckets)]
        writers: dict[int, pa.RecordBatchStreamWriter] = {}
        try:
            for table in hashed.iter_batches(batch_format="pyarrow", batch_size=None):
                table = table.sort_by("bucket")
                bounds = np.searchsorted(table.column("bucket").to_numpy(), np.arange(buckets + 1))
                for b in range(buckets):
                    part = table.slice(bounds[b], bounds[b + 1] - bounds[b]).drop_columns("bucket")
                    if part.num_rows:
                        if b not in writers:
                            writers[b] = pa.ipc.new_stream(str(paths[b]), part.schema)
                        writers[b].write_table(part)
        finally:
            for w in writers.values():
                w.close()
        for b in sorted(writers):
            with pa.memory_map(str(paths[b])) as source:
                grouped = pa.ipc.open_stream(source).read_all().group_by("key").aggregate(
                    [("row_hash", "count_distinct"), ("row_hash", "count")])  # fmt: skip
            differs = pc.greater(grouped.column("row_hash_count_distinct"), 1)
            found.update(grouped.column("key").filter(differs).to_pylist())
            counts = grouped.column("row_hash_count")
            keyed += pc.sum(counts).as_py() or 0
            duplicated += pc.sum(counts.filter(pc.greater(counts, 1))).as_py() or 0
    return KeyCheck(frozenset(found), duplicated, keyed)


def _key_hash_bucket(batch: pa.Table, key_column: str, buckets: int,
                     columns: Sequence[str]) -> pa.Table:  # fmt: skip
    """(key, row hash, bucket) of each row with a key. The row hash is over ``columns``, in
    that order, and each value's text, so 5 read as an integer in one file and as 5.0 in
    another are the same row."""
    import pandas as pd

    batch = batch.select([c for c in columns if c in batch.column_names])
    batch = batch.filter(pc.is_valid(batch.column(key_column)))
    text = pd.DataFrame({name: _text(batch.column(name)) for name in batch.column_names})
    row_hash = pd.util.hash_pandas_object(text, index=False).to_numpy()
    bucket = pd.util.hash_array(text[key_column].to_numpy()) % np.uint64(buckets)
    return pa.table({"key": pa.array(text[key_column].to_numpy(), pa.string()),
                     "row_hash": pa.array(row_hash, pa.uint64()),
                     "bucket": pa.array(bucket.astype(np.int64), pa.int64())})  # fmt: skip


def _text(column: pa.ChunkedArray):
    try:
        return column.cast(pa.string()).to_pandas()
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested types: Python's str
        return column.to_pandas().map(lambda v: None if v is None else str(v))
