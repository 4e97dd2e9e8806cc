"""Casting raw input (JSON messages, CSV columns, request bodies) to the contract's schema.

Rules, per target type (a cell that breaks them is rejected, never guessed):
- string: only strings; a number or bool where a string is expected is a type error.
- integer / floating: numbers, or strings that Arrow parses as numbers ("12.5",
  "1e3", "nan"); a bool is a type error, and so is a float that would be
  truncated to fit an integer column.
- timestamp with a time zone: timestamps, or ISO-8601 strings with an offset
  ("2024-05-01T12:00:00Z"); a time without a zone is ambiguous and rejected.
- bool: bools, or the strings Arrow accepts ("true", "false", "1", "0").
Strings may arrive as ``string``, ``large_string``, ``string_view`` or
dictionary-encoded (as Parquet files carry them); numbers as integers, floats
or decimals. A table with duplicate column names is refused (`ConfigError`):
which one holds the field would be a guess.
Missing fields become null (the suite then reports them); unknown fields are
dropped by default (``extra="drop"``: producers may add fields before every
consumer knows them) or rejected (``extra="reject"``).

The returned table has one row per raw row, in order, so its row numbers are
the raw ones: a rejected cell is null there and its row is listed with the
reasons (``expect_column_values_to_be_of_type``, the column, the raw value).

Each column is cast with one Arrow call; only when that call fails do we look
for the culprits, by bisecting the column's distinct values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.errors import ConfigError
from sluice.validation._columns import canonical_array, canonical_type
from sluice.validation._report import Reason

__all__ = ["TYPE_EXPECTATION", "castable", "conform"]

TYPE_EXPECTATION = "expect_column_values_to_be_of_type"
UNKNOWN_FIELD_EXPECTATION = "expect_table_columns_to_match_set"
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)

Rejections = list[tuple[int, list[Reason]]]
_NO_FIELDS: Mapping[str, Any] = {}


def conform(
    raw: pa.Table | Sequence[Mapping[str, Any]],
    schema: pa.Schema,
    *,
    extra: Literal["drop", "reject"] = "drop",
) -> tuple[pa.Table, Rejections]:
    """Cast ``raw`` to ``schema``; return the table and the rejected rows with reasons."""
    if extra not in ("drop", "reject"):
        raise ConfigError(f"conform: extra must be 'drop' or 'reject', got {extra!r}")
    if isinstance(raw, pa.Table):
        n = raw.num_rows
        _refuse_duplicates(raw.column_names)
        source = dict(zip(raw.column_names, raw.columns, strict=True))
        not_records: list[int] = []
    elif isinstance(raw, Sequence) and not isinstance(raw, str | bytes):
        n = len(raw)
        source, not_records = _columns_of_records(raw)
    else:
        raise ConfigError(
            f"conform: raw input must be a pyarrow Table or a list of objects, got "
            f"{type(raw).__name__}"
        )
    reasons: dict[int, list[Reason]] = {}
    for row in not_records:
        reasons[row] = [Reason(TYPE_EXPECTATION, None, _show(raw[row]))]  # type: ignore[index]
    arrays = []
    for field in schema:
        values = source.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n, field.type))
            continue
        cast, bad = _cast(values, field.type)
        arrays.append(cast)
        for row in np.flatnonzero(bad).tolist():
            reasons.setdefault(row, []).append(
                Reason(TYPE_EXPECTATION, field.name, _show(_raw_value(values, row)))
            )
    if extra == "reject":
        for name in sorted(set(source) - set(schema.names)):
            values = source[name]
            for row in np.flatnonzero(~_is_null(values)).tolist():
                reasons.setdefault(row, []).append(
                    Reason(UNKNOWN_FIELD_EXPECTATION, name, _show(_raw_value(values, row)))
                )
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table, sorted(reasons.items())


def _refuse_duplicates(names: list[str]) -> None:
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise ConfigError(
            f"conform: the input table has duplicate column names {duplicated}; which one "
            "holds the field is ambiguous: rename or drop the duplicates"
        )


def _columns_of_records(
    records: Sequence[Any],
) -> tuple[dict[str, list[Any]], list[int]]:
    """Column lists from JSON-like records (one Python pass over the cells: they are
    Python objects already). Rows that are not objects are reported whole."""
    keys: dict[str, None] = {}
    not_records = []
    rows: list[Mapping[str, Any]] = []  # a non-object row reads as empty: its cells null
    for i, record in enumerate(records):
        if isinstance(record, Mapping):
            keys.update(dict.fromkeys(record))
            rows.append(record)
        else:
            not_records.append(i)
            rows.append(_NO_FIELDS)
    columns = {key: [r.get(key) for r in rows] for key in keys}
    return columns, not_records


def _cast(values: list | pa.ChunkedArray, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """``values`` cast to ``target`` with rejected cells null, and the rejected-cell mask."""
    if isinstance(values, list):
        if pa.types.is_timestamp(target) and _naive_and_aware(values):
            return _cast_mixed(values, target)  # pa.array would read all as the first's
        try:
            arr = pa.array(values)
        except _CAST_ERRORS:
            return _cast_mixed(values, target)
    else:
        arr = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return _cast_array(arr, target)


def _cast_mixed(values: list, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Values of several Python types (e.g. 12.5 and "12.5"): cast each type group alone."""
    groups: dict[Any, list[int]] = {}
    for i, v in enumerate(values):
        if v is not None:  # datetimes with and without a zone cast apart
            kind = (type(v), v.tzinfo is None) if isinstance(v, datetime) else type(v)
            groups.setdefault(kind, []).append(i)
    bad = np.zeros(len(values), dtype=bool)
    out: list[Any] = [None] * len(values)
    for rows in groups.values():
        try:
            arr = pa.array([values[i] for i in rows])
        except _CAST_ERRORS:
            bad[rows] = True
            continue
        cast, group_bad = _cast_array(arr, target)
        bad[np.asarray(rows)[group_bad]] = True
        for i, v in zip(rows, cast.to_pylist(), strict=True):
            out[i] = v
    return pa.array(out, type=target), bad


def _naive_and_aware(values: list) -> bool:
    """Whether ``values`` hold datetimes both with and without a time zone."""
    kinds = {v.tzinfo is None for v in values if isinstance(v, datetime)}
    return len(kinds) == 2


def _cast_array(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    n = len(arr)
    arr = canonical_array(arr)  # dictionary-decoded, string_view as string
    if arr.type == target:
        return arr, np.zeros(n, dtype=bool)
    if pa.types.is_null(arr.type):
        return pa.nulls(n, target), np.zeros(n, dtype=bool)
    if not _allowed(arr.type, target):
        return pa.nulls(n, target), ~_is_null(arr)
    try:
        return pc.cast(arr, target), np.zeros(n, dtype=bool)
    except _CAST_ERRORS:
        pass
    uniques = pc.unique(arr.drop_null())
    bad_values = uniques.filter(pa.array(_failing(uniques, target), type=pa.bool_()))
    bad = pc.is_in(arr, value_set=bad_values).to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(bad), pa.nulls(n, arr.type), arr)
    return pc.cast(cleaned, target), bad


def _failing(values: pa.Array, target: pa.DataType) -> np.ndarray:
    """Which values fail to cast: bisect, so k bad values among n cost O(k log n) casts."""
    failing = np.zeros(len(values), dtype=bool)
    stack = [(0, len(values))]
    while stack:
        lo, hi = stack.pop()
        try:
            pc.cast(values.slice(lo, hi - lo), target)
        except _CAST_ERRORS:
            if hi - lo == 1:
                failing[lo] = True
            else:
                mid = (lo + hi) // 2
                stack += [(lo, mid), (mid, hi)]
    return failing


def _textual(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def castable(source: pa.DataType, target: pa.DataType, *, parse_text: bool = True) -> bool:
    """Whether ``conform`` takes a column of type ``source`` into a ``target`` column at
    all (its values may still fail the cast one by one): the same type, all nulls, or the
    rules above; with ``parse_text=False``, never text for a column of another type. A
    batch job checks Parquet files with it (no text parsed: a typed file's text column for
    a number is a schema mistake) before any write, so a column that would refuse every
    row (a timestamp without a zone for one with) is a job error."""
    source = canonical_type(source) or source
    if not parse_text and _textual(source) and not _textual(target):
        return False
    return source == target or pa.types.is_null(source) or _allowed(source, target)


def _allowed(source: pa.DataType, target: pa.DataType) -> bool:
    textual = _textual(source)
    if _textual(target):
        return textual
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        # a decimal is a number: cast exactly, or rejected by the cast's own check
        numeric = pa.types.is_integer(source) or pa.types.is_floating(source)
        return textual or numeric or pa.types.is_decimal(source)
    if pa.types.is_timestamp(target):
        if pa.types.is_timestamp(source):
            # a naive time is ambiguous once the target has a zone (and vice versa)
            return (source.tz is None) == (target.tz is None)
        return textual
    if pa.types.is_boolean(target):
        return textual
    return textual or source.id == target.id


def _is_null(values: pa.Array | pa.ChunkedArray | list) -> np.ndarray:
    if isinstance(values, list):
        return np.array([v is None for v in values], dtype=bool)
    return values.is_null().to_numpy(zero_copy_only=False)


def _raw_value(values: pa.Array | pa.ChunkedArray | list, row: int) -> Any:
    return values[row] if isinstance(values, list) else values[row].as_py()


def _show(value: Any) -> str:
    return repr(value)
