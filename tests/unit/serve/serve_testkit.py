"""Shared helpers of the serve tests: JSON-ready rows, a trained registry, a test contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sluice.datagen import generate_dataset


def json_rows(n: int, seed: int = 1, **kw: Any) -> list[dict[str, Any]]:
    """``n`` valid request rows (no label), times as ISO 8601 strings with a zone."""
    data = generate_dataset(n, seed=seed, **kw)
    rows = data.table.drop(["is_fraud"]).to_pylist()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, datetime):
                row[k] = v.isoformat()
    return rows
