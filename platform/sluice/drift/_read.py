"""Recent feature values from Cassandra: the predictions table and the prediction log.

Both tables store each row's model inputs in ``features frozen<map<text, double>>``,
beside ``model_version`` (``fraud/3``) and the time the row was scored (``scored_at``)
or logged (``logged_at``). Neither table is partitioned by time (the predictions table
is keyed by the contract's key, the log by request id), so "the last hour" is a **full
table scan**: the token ring is cut into ``splits`` ranges, each read with a paged,
prepared ``SELECT ... WHERE token(key) >= ? AND token(key) <= ? AND <time> >= ? ALLOW
FILTERING`` — the filter runs on the server, the scan still touches every row. That is
fine for the volumes here (the predictions table keeps 90 days of one contract); a
busier deployment would read a time-bucketed table or the stream instead.

Only rows scored by the version under test are kept: features are computed with that
version's fitted stats (standardization, category vocabularies), so another version's
rows are counted and left out, never compared with the wrong reference.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np
from cassandra import InvalidRequest

from sluice.contract import Contract
from sluice.errors import ConfigError, StoreUnavailable
from sluice.store import PREDICTION_LOG_TABLE, is_transient

__all__ = ["RecentRows", "Source", "log_table", "parse_window", "read_recent", "scan",
           "token_ranges"]

_SCAN = (
    "SELECT {columns} FROM {keyspace}.{table} "
    "WHERE token({key}) >= ? AND token({key}) <= ? AND {time} >= ?{extra} ALLOW FILTERING"
)
_MIN_TOKEN, _MAX_TOKEN = -(2**63), 2**63 - 1  # Murmur3Partitioner, Cassandra's default
_WINDOW = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class Source(StrEnum):
    """Which table's rows are compared: batch/stream predictions, online requests, or both."""

    PREDICTIONS = "predictions"
    PREDICTION_LOG = "prediction_log"
    BOTH = "both"

    def tables(self) -> tuple[Source, ...]:
        if self is Source.BOTH:
            return (Source.PREDICTIONS, Source.PREDICTION_LOG)
        return (self,)


def parse_window(text: str) -> timedelta:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"2d"``, ``"1h30m"`` -> a positive timedelta."""
    compact = text.strip().lower()
    parts = _WINDOW.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"window {text!r}: use a number and a unit s, m, h or d, e.g. 1h or 90m")
    seconds = sum(int(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"window {text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def token_ranges(splits: int) -> list[tuple[int, int]]:
    """``splits`` closed, disjoint token ranges covering the whole Murmur3 ring."""
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    step = (_MAX_TOKEN - _MIN_TOKEN) // splits
    starts = [_MIN_TOKEN + step * i for i in range(splits)]
    return [(a, b - 1) for a, b in zip(starts, starts[1:], strict=False)] + [
        (starts[-1], _MAX_TOKEN)
    ]


@dataclass(frozen=True)
class RecentRows:
    """Feature columns of the rows one model version scored since ``since``."""

    model_version: str
    since: datetime
    columns: dict[str, np.ndarray]
    rows: int
    rows_by_source: dict[str, int]
    other_versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Table:
    name: str
    key: str
    time: str
    extra: str = ""  # more server-side filters
    extra_params: tuple[Any, ...] = ()


def log_table(contract: Contract) -> _Table:
    """The prediction log's rows of `contract`, by time logged."""
    return _table(Source.PREDICTION_LOG, contract)


def _table(source: Source, contract: Contract) -> _Table:
    if source is Source.PREDICTIONS:
        return _Table(contract.output.predictions_table, contract.key_column, "scored_at")
    return _Table(
        PREDICTION_LOG_TABLE.name, "log_id", "logged_at", " AND contract = ?", (contract.name,)
    )


def _scan_range(
    session: Any, statement: Any, params: tuple[Any, ...], fetch_size: int, timeout_s: float
) -> list[tuple[Any, Any]]:
    bound = statement.bind(params)
    bound.fetch_size = fetch_size
    return [tuple(r) for r in session.execute(bound, timeout=timeout_s)]


def scan(
    session: Any,
    keyspace: str,
    table: _Table,
    since: datetime,
    *,
    splits: int,
    fetch_size: int,
    timeout_s: float,
    retries: int,
    columns: str = "model_version, features",
) -> Iterable[tuple[Any, ...]]:
    cql = _SCAN.format(columns=columns, keyspace=keyspace, table=table.name, key=table.key,
                       time=table.time, extra=table.extra)  # fmt: skip
    try:
        statement = session.prepare(cql)
    except InvalidRequest as exc:
        raise ConfigError(
            f"cannot read {keyspace}.{table.name}: {exc}; run `sluice schema apply` "
            "(or check the keyspace in the platform config)"
        ) from exc
    except Exception as exc:  # the driver's errors: NoHostAvailable, timeouts, ...
        raise StoreUnavailable(f"cannot read {keyspace}.{table.name}: {exc}") from exc
    for low, high in token_ranges(splits):
        params = (low, high, since, *table.extra_params)
        for attempt in range(retries + 1):
            try:
                # A whole range at a time: a retry re-reads the range, never counts twice.
                yield from _scan_range(session, statement, params, fetch_size, timeout_s)
                break
            except Exception as exc:  # noqa: BLE001 - classified just below
                if attempt == retries or not is_transient(exc):
                    raise StoreUnavailable(
                        f"reading {keyspace}.{table.name} (tokens {low}..{high}) failed after "
                        f"{attempt + 1} attempt(s): {exc}"
                    ) from exc
                time.sleep(min(0.5 * 2**attempt, 5.0))


def read_recent(
    session: Any,
    keyspace: str,
    contract: Contract,
    *,
    model_version: str,
    feature_names: Sequence[str],
    since: datetime,
    source: Source = Source.BOTH,
    splits: int = 16,
    fetch_size: int = 2000,
    timeout_s: float = 60.0,
    retries: int = 2,
) -> RecentRows:
    """Feature columns (NaN where a row lacks a feature) of the rows ``model_version``
    scored at or after ``since`` (timezone-aware), from ``source``. A full scan: see
    the module docstring."""
    if since.tzinfo is None:
        raise ValueError(f"since must be timezone-aware (UTC), got {since!r}")
    names = list(feature_names)
    values: list[list[float]] = []
    by_source: dict[str, int] = {}
    others: Counter[str] = Counter()
    for table_source in source.tables():
        table = _table(table_source, contract)
        kept = 0
        rows = scan(session, keyspace, table, since, splits=splits, fetch_size=fetch_size,
                     timeout_s=timeout_s, retries=retries)  # fmt: skip
        for version, features in rows:
            if version != model_version:
                others[str(version)] += 1
                continue
            got = features or {}
            values.append([got.get(n, math.nan) for n in names])
            kept += 1
        by_source[table_source.value] = kept
    matrix = np.array(values, dtype=np.float64).reshape(len(values), len(names))
    return RecentRows(
        model_version=model_version,
        since=since,
        columns={n: matrix[:, j] for j, n in enumerate(names)},
        rows=len(values),
        rows_by_source=by_source,
        other_versions=dict(sorted(others.items())),
    )
