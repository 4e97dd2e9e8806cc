"""One check per supported expectation type, with GX 1.24's pandas semantics.

Presence, nulls, ranges and the batch-level checks live here; value sets,
regexes, lengths and types in `_checks_values`. A check gets the column (a
`ColumnView`, or None when the table lacks it), the resolved arguments and the
row count, and returns an `ExpectationOutcome`: the unexpected rows and GX's
success verdict. The checks of the suite's hot types (nulls, regex, string
sets, numeric and time ranges) have a Python path for small tables next to the
vectorized one; tests run both against GX.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.errors import ConfigError
from sluice.validation import _checks_values
from sluice.validation._bytes import StringBuffers, word_hashes
from sluice.validation._columns import ColumnView
from sluice.validation._outcomes import EMPTY as _EMPTY
from sluice.validation._outcomes import Check, Incompatible, map_outcome, masked
from sluice.validation._report import ExpectationOutcome
from sluice.validation._suite import Expectation

__all__ = ["Incompatible", "build"]

Builder = Callable[[Expectation, str], Check]
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


def build(exp: Expectation, source: str) -> Check:
    """The check for one expectation (the engine handles missing columns); argument
    errors surface here, at load time."""
    return _BUILDERS[exp.type](exp, source)


# --- presence and nulls -----------------------------------------------------------------


def _exist(exp: Expectation, source: str) -> Check:
    def check(view: ColumnView | None, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        index = kw.get("column_index")
        if index:  # GX tests truthiness: index 0 means "anywhere"
            names = kw["_columns"]  # passed by the engine for this case only
            success = -len(names) <= index < len(names) and names[index] == exp.column
        else:
            success = view is not None
        return ExpectationOutcome(exp, success, _EMPTY if success else np.arange(n), not success)

    return check


def _nulls(expect_null: bool) -> Builder:
    def builder(exp: Expectation, source: str) -> Check:
        def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            if expect_null:
                rows = np.flatnonzero(~view.null)
            else:
                rows = view.null_rows
            # not_be_null / be_null count over all rows, not over non-null ones
            success = n == 0 or (n - len(rows)) / n >= kw["mostly"]
            return ExpectationOutcome(exp, success, rows)

        return check

    return builder


# --- ranges -----------------------------------------------------------------------------

_NUMERIC = ("int", "uint64", "float", "float32", "bool")


def _pandas_vectorized(view: ColumnView) -> bool:
    """Whether GX compares this timestamp column vectorized (and so raises on bounds of
    the wrong awareness even when every value is null: pandas checks the dtype) or value
    by value (and raises only on a value). Numeric columns raise only on a value: an
    empty float64 series compares with a datetime without error."""
    t = view.arr.type
    return t.tz is not None or t.unit == "ns"


def _refuse(view: ColumnView, message: str, always: bool = False) -> None:
    if always or view.nonnull_count:
        raise Incompatible(message)


def _between(exp: Expectation, source: str) -> Check:
    clean = ExpectationOutcome(exp, True, _EMPTY)

    def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        strict_lo, strict_hi = bool(kw.get("strict_min")), bool(kw.get("strict_max"))
        bounds = [b for b in (lo, hi) if b is not None]
        if view.kind in _NUMERIC:
            if any(not isinstance(b, float) for b in bounds):
                _refuse(view, "date bounds on a numeric column")
                return map_outcome(exp, kw, view, _EMPTY)
            if view.kind == "uint64":
                _refuse(view, "uint64 values beyond 2**53 would compare inexactly")
            if view.small:
                # float(v): pandas compares int64 columns as float64 too
                bad = _outside(view.py, lo, hi, strict_lo, strict_hi, float)
                return map_outcome(exp, kw, view, bad, clean)
            values = view.floats
            ok = np.ones(n, dtype=bool)
            with np.errstate(invalid="ignore"):
                if lo is not None:
                    ok &= values > lo if strict_lo else values >= lo
                if hi is not None:
                    ok &= values < hi if strict_hi else values <= hi
            return map_outcome(exp, kw, view, masked(view, ~ok))
        if view.kind == "timestamp":
            tz = view.arr.type.tz is not None
            for b in bounds:
                if not isinstance(b, datetime) or (b.tzinfo is not None) != tz:
                    awareness = "tz-aware" if tz else "tz-naive"
                    _refuse(
                        view, f"bound {b!r} is not a {awareness} datetime", _pandas_vectorized(view)
                    )
                    return map_outcome(exp, kw, view, _EMPTY)
            unit = view.arr.type.unit
            # integers in the column's unit: v >= lo  <=>  v >= ceil(lo), and so on
            ilo = None if lo is None else (_ts_floor(lo, unit) if strict_lo else _ts_ceil(lo, unit))
            ihi = None if hi is None else (_ts_ceil(hi, unit) if strict_hi else _ts_floor(hi, unit))
            if view.small:
                bad = _outside(view.py, ilo, ihi, strict_lo, strict_hi, int)
                return map_outcome(exp, kw, view, bad, clean)
            values = view.timestamps()
            ok = np.ones(n, dtype=bool)
            if ilo is not None:
                ok &= values > ilo if strict_lo else values >= ilo
            if ihi is not None:
                ok &= values < ihi if strict_hi else values <= ihi
            return map_outcome(exp, kw, view, masked(view, ~ok))
        if view.kind != "null":
            _refuse(view, "values and bounds must be of comparable types")
        return map_outcome(exp, kw, view, _EMPTY)

    return check


def _outside(
    values: list, lo: Any, hi: Any, strict_lo: bool, strict_hi: bool, conv: type
) -> list[int]:
    bad = []
    for i, v in enumerate(values):
        if v is None or v != v:  # null or NaN: not checked
            continue
        v = conv(v)
        if lo is not None and (v <= lo if strict_lo else v < lo):
            bad.append(i)
        elif hi is not None and (v >= hi if strict_hi else v > hi):
            bad.append(i)
    return bad


def _micros(b: datetime) -> int:
    delta = b - (_EPOCH_UTC if b.tzinfo is not None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _ts_floor(b: datetime, unit: str) -> int:
    """Largest column-unit integer <= b."""
    us = _micros(b)
    return us * 1000 if unit == "ns" else us // _US_PER_UNIT[unit]


def _ts_ceil(b: datetime, unit: str) -> int:
    """Smallest column-unit integer >= b."""
    us = _micros(b)
    return us * 1000 if unit == "ns" else -((-us) // _US_PER_UNIT[unit])


# --- batch-level ------------------------------------------------------------------------


def _unique(exp: Expectation, source: str) -> Check:
    def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        if n <= 1 or view.kind == "null":
            rows = _EMPTY
        elif view.small and view.kind != "timestamp":
            null = set(view.null_rows)
            values = [view.held_value(v) for v in view.py]
            counts = Counter(v for i, v in enumerate(values) if i not in null)
            rows = [i for i, v in enumerate(values) if i not in null and counts[v] > 1]
        elif view.kind in ("string", "int", "uint64", "float", "float32", "bool", "timestamp"):
            arr = view.arr
            floats = view.kind in ("float", "float32")
            if floats:
                arr = pc.add(arr, pa.scalar(0.0, arr.type))  # -0.0 and 0.0 are one value to pandas
            if view.kind == "string" and _distinct_by_hash(view.strings):
                return map_outcome(exp, kw, view, _EMPTY)
            encoded = pc.dictionary_encode(arr)
            distinct = len(encoded.dictionary)
            if not floats and distinct == view.nonnull_count:
                rows = _EMPTY  # the usual case for keys: no duplicates, nothing more to do
            else:
                codes = encoded.indices.fill_null(-1)
                codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
                if view.maybe_null:
                    codes[view.null] = -1
                counts = np.bincount(codes[codes >= 0], minlength=1)
                rows = np.flatnonzero((codes >= 0) & (counts[np.maximum(codes, 0)] > 1))
        else:
            raise Incompatible("uniqueness is supported on flat Arrow types")
        return map_outcome(exp, kw, view, rows)

    return check


def _distinct_by_hash(strings: StringBuffers | None) -> bool:
    """True when the rows provably hold distinct strings (fixed-width ids: sort 64-bit
    hashes, ~4x cheaper than hashing the strings in Arrow); False means "not proven"."""
    hashes = None if strings is None else word_hashes(strings)
    if hashes is None:
        return False
    hashes.sort()
    return not bool(np.any(hashes[1:] == hashes[:-1]))


def _row_count(equal: bool) -> Builder:
    def builder(exp: Expectation, source: str) -> Check:
        for key in ("min_value", "max_value"):
            if isinstance(exp.kwargs.get(key), datetime):
                raise ConfigError(f"suite {source}: {exp.describe()}: {key} must be an integer")

        def check(view: ColumnView | None, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            if equal:
                success = n == kw["value"]
            else:
                lo, hi = kw.get("min_value"), kw.get("max_value")
                success = lo is None or (n > lo if kw.get("strict_min") else n >= lo)
                success = success and (hi is None or (n < hi if kw.get("strict_max") else n <= hi))
            return ExpectationOutcome(exp, success, _EMPTY, observed_value=n)

        return check

    return builder


_BUILDERS: dict[str, Builder] = {
    "expect_column_to_exist": _exist,
    "expect_column_values_to_not_be_null": _nulls(expect_null=False),
    "expect_column_values_to_be_null": _nulls(expect_null=True),
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_unique": _unique,
    "expect_table_row_count_to_be_between": _row_count(equal=False),
    "expect_table_row_count_to_equal": _row_count(equal=True),
    **_checks_values.BUILDERS,
}
