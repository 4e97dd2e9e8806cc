"""Labelled recent rows for retraining: a Parquet file of the contract's input columns.

The predictions table holds no labels: fraud labels arrive days later (chargebacks,
investigations). Retraining therefore takes a file of recent events *with* their
labels, in the contract's input schema (``is_fraud`` included). Its rows are cast to
the schema and checked with the contract's expectation suite (the compiled engine);
rows that fail, or carry no label, are left out and counted — training on rows the
scoring path would have quarantined would teach the model inputs it never scores.
Rows sharing a key are all left out: different rows under one key are a conflict (the
scoring path refuses them too), and identical copies would weigh one event twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sluice.contract import Contract
from sluice.errors import ConfigError

__all__ = ["LabelledRows", "check_labels_file", "read_labels"]


@dataclass(frozen=True)
class LabelledRows:
    table: pa.Table  # valid rows in the contract's arrow_schema, label included
    dropped: int  # rows left out: wrong type, failed the suite, or no label


def _required(contract: Contract) -> list[str]:
    if contract.label_column is None:
        raise ConfigError(f"contract {contract.name!r} has no label_column: it cannot retrain")
    return contract.arrow_schema.names


def check_labels_file(path: str | Path, contract: Contract, option: str = "--labels") -> None:
    """Cheap up-front check (the Parquet footer only): readable, with every column.
    Errors name the file as the command-line `option` that gave it."""
    required = _required(contract)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{option} {path}: cannot read it as Parquet: {exc}") from exc
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise ConfigError(
            f"{option} {path}: missing column(s) {missing}; a labels file holds the input "
            f"columns of contract {contract.name!r} and its label {contract.label_column!r}"
        )


def read_labels(path: str | Path, contract: Contract, option: str = "--labels") -> LabelledRows:
    """The file's valid, labelled rows in the contract's schema (see the module docstring)."""
    from sluice.validation import conform, load_suite, validate

    check_labels_file(path, contract, option)
    try:
        raw = pq.read_table(path, columns=_required(contract))
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{option} {path}: cannot read it: {exc}") from exc
    table, rejected = conform(raw, contract.arrow_schema)
    report = validate(table, load_suite(contract.resolved_suite_path), "compiled")
    keep = np.asarray(report.valid, dtype=bool).copy()
    keep[[row for row, _ in rejected]] = False
    labels = table.column(contract.label_column)
    keep &= ~pc.is_null(labels).to_numpy(zero_copy_only=False)
    keys = table.column(contract.key_column)
    counts = pc.value_counts(keys)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    keep &= ~pc.is_in(keys, value_set=repeated).to_numpy(zero_copy_only=False)
    return LabelledRows(table=table.filter(pa.array(keep)), dropped=int((~keep).sum()))
