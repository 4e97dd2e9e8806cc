"""One check per supported expectation type, with GX 1.24's pandas semantics.

A check gets the column (a `ColumnView`, or None when the table lacks it), the
expectation's resolved arguments and the row count, and returns an
`ExpectationOutcome`: the unexpected rows and GX's success verdict. The checks
of the suite's hot types (nulls, regex, string sets, numeric and time ranges)
have a Python path for small tables next to the vectorized one; tests run
both against GX.
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
from sluice.validation._bytes import StringBuffers, short_key, short_keys, word_hashes
from sluice.validation._columns import ColumnView
from sluice.validation._regex import RegexMatcher, portability_problem
from sluice.validation._report import ExpectationOutcome
from sluice.validation._suite import Expectation
from sluice.validation._types import NO_SAMPLE, type_verdict

__all__ = ["Incompatible", "build"]

Check = Callable[[ColumnView | None, Mapping[str, Any], int], ExpectationOutcome]
Builder = Callable[[Expectation, str], Check]
_EMPTY = np.empty(0, dtype=np.int64)
_EMPTY.flags.writeable = False
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


class Incompatible(Exception):
    """GX raises on this column/argument combination, or the compiled engine cannot match
    GX on it exactly; the engine turns it into a ConfigError naming the expectation."""


def build(exp: Expectation, source: str) -> Check:
    """The check for one expectation (the engine handles missing columns); argument
    errors surface here, at load time."""
    return _BUILDERS[exp.type](exp, source)


def _map_outcome(
    exp: Expectation,
    kw: Mapping[str, Any],
    view: ColumnView,
    bad: list[int] | np.ndarray,
    clean: ExpectationOutcome | None = None,
) -> ExpectationOutcome:
    """GX's ColumnMapExpectation verdict: ``mostly`` over non-null rows, vacuous without.

    ``clean`` is the expectation's shared outcome for "no unexpected rows".
    """
    if clean is not None and not len(bad):
        return clean
    nonnull = view.nonnull_count
    if view.n == 0 or nonnull == 0:
        success = True
    else:
        success = (float(nonnull) - float(len(bad))) / float(nonnull) >= kw["mostly"]
    return ExpectationOutcome(exp, success, bad)


def _masked(view: ColumnView, condition_fails: np.ndarray) -> np.ndarray:
    """Rows failing a condition, nulls excluded (GX filters nulls before map checks)."""
    if not view.maybe_null:
        return np.flatnonzero(condition_fails)
    return np.flatnonzero(condition_fails & ~view.null)


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
    """Whether GX compares this column vectorized (and so raises on bad bounds even when
    every value is null) or value by value (and raises only on a value)."""
    kind, t = view.kind, view.arr.type
    if kind == "float":
        return True
    if kind in ("int", "uint64"):
        return t == pa.int64() or view.has_arrow_nulls
    if kind == "timestamp":
        return t.tz is not None or t.unit == "ns"
    return False


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
                _refuse(view, "date bounds on a numeric column", _pandas_vectorized(view))
                return _map_outcome(exp, kw, view, _EMPTY)
            if view.kind == "uint64":
                _refuse(view, "uint64 values beyond 2**53 would compare inexactly")
            if view.small:
                # float(v): pandas compares int64 columns as float64 too
                bad = _outside(view.py, lo, hi, strict_lo, strict_hi, float)
                return _map_outcome(exp, kw, view, bad, clean)
            values = view.floats
            ok = np.ones(n, dtype=bool)
            with np.errstate(invalid="ignore"):
                if lo is not None:
                    ok &= values > lo if strict_lo else values >= lo
                if hi is not None:
                    ok &= values < hi if strict_hi else values <= hi
            return _map_outcome(exp, kw, view, _masked(view, ~ok))
        if view.kind == "timestamp":
            tz = view.arr.type.tz is not None
            for b in bounds:
                if not isinstance(b, datetime) or (b.tzinfo is not None) != tz:
                    awareness = "tz-aware" if tz else "tz-naive"
                    _refuse(
                        view, f"bound {b!r} is not a {awareness} datetime", _pandas_vectorized(view)
                    )
                    return _map_outcome(exp, kw, view, _EMPTY)
            unit = view.arr.type.unit
            # integers in the column's unit: v >= lo  <=>  v >= ceil(lo), and so on
            ilo = None if lo is None else (_ts_floor(lo, unit) if strict_lo else _ts_ceil(lo, unit))
            ihi = None if hi is None else (_ts_ceil(hi, unit) if strict_hi else _ts_floor(hi, unit))
            if view.small:
                bad = _outside(view.py, ilo, ihi, strict_lo, strict_hi, int)
                return _map_outcome(exp, kw, view, bad, clean)
            values = view.timestamps()
            ok = np.ones(n, dtype=bool)
            if ilo is not None:
                ok &= values > ilo if strict_lo else values >= ilo
            if ihi is not None:
                ok &= values < ihi if strict_hi else values <= ihi
            return _map_outcome(exp, kw, view, _masked(view, ~ok))
        if view.kind != "null":
            _refuse(view, "values and bounds must be of comparable types")
        return _map_outcome(exp, kw, view, _EMPTY)

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


# --- sets -------------------------------------------------------------------------------


def _sets(member_is_unexpected: bool) -> Builder:
    def builder(exp: Expectation, source: str) -> Check:
        static = exp.kwargs["value_set"]
        prepared = None if isinstance(static, dict) else _PreparedSet(static)
        clean = ExpectationOutcome(exp, True, _EMPTY)

        def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            values = prepared or _PreparedSet(kw["value_set"])
            if view.kind == "string":
                if view.small:
                    strings = values.strings
                    bad = [
                        i
                        for i, v in enumerate(view.py)
                        if v is not None and (v in strings) is member_is_unexpected
                    ]
                    return _map_outcome(exp, kw, view, bad, clean)
                member = values.member(view)
            elif view.kind in ("int", "uint64", "float", "bool", "null"):
                member = _member_by_value(view, values.anything)
            else:
                raise Incompatible("value sets are supported on string, number and bool columns")
            return _map_outcome(
                exp, kw, view, _masked(view, member if member_is_unexpected else ~member)
            )

        return check

    return builder


class _PreparedSet:
    """pandas ``isin`` on a string column only ever matches str items; on other columns
    it matches with Python equality (1 == 1.0 == True)."""

    def __init__(self, value_set: list) -> None:
        self.strings = frozenset(v for v in value_set if isinstance(v, str))
        self.anything = frozenset(value_set)
        self._arrow: dict[pa.DataType, pa.Array] = {}
        keys = {short_key(s) for s in self.strings} - {None}
        self._short_keys = np.array(sorted(keys), dtype=np.uint64)

    def member(self, view: ColumnView) -> np.ndarray:
        """Membership of a string column's rows (nulls: False)."""
        strings = view.strings
        if strings is not None:
            # short codes (country, currency, channel): compare packed integers
            keys = short_keys(strings)
            if keys is not None:
                return np.isin(keys, self._short_keys)
        t = view.arr.type
        if t not in self._arrow:
            self._arrow[t] = pa.array(sorted(self.strings), type=t)
        return pc.is_in(view.arr, value_set=self._arrow[t]).to_numpy(zero_copy_only=False)


def _member_by_value(view: ColumnView, items: frozenset) -> np.ndarray:
    uniques = pc.unique(view.arr.drop_null())
    hits = [view.held_value(v) in items for v in uniques.to_pylist()]
    matched = uniques.filter(pa.array(hits, type=pa.bool_()))
    return pc.is_in(view.arr, value_set=matched).to_numpy(zero_copy_only=False)


# --- text: regex and lengths ------------------------------------------------------------

_TEXT_KINDS = ("string", "int", "uint64", "float", "bool", "null")


def _regex(matching_is_unexpected: bool) -> Builder:
    def builder(exp: Expectation, source: str) -> Check:
        static = exp.kwargs["regex"]
        matcher = None if isinstance(static, dict) else _matcher(static, exp, source)
        clean = ExpectationOutcome(exp, True, _EMPTY)

        def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            m = matcher or _matcher(kw["regex"], exp, source)
            if view.kind not in _TEXT_KINDS:
                raise Incompatible("regex checks are supported on string, number and bool columns")
            if view.kind == "string" and view.small:
                search = m.compiled.search
                bad = [
                    i
                    for i, v in enumerate(view.py)
                    if v is not None and (search(v) is not None) is matching_is_unexpected
                ]
                return _map_outcome(exp, kw, view, bad, clean)
            texts = view.texts()
            hit = m.search_array(texts, view.strings if texts is view.arr else None)
            return _map_outcome(
                exp, kw, view, _masked(view, hit if matching_is_unexpected else ~hit)
            )

        return check

    return builder


def _matcher(pattern: str, exp: Expectation, source: str) -> RegexMatcher:
    problem = portability_problem(pattern)
    if problem:
        raise ConfigError(f"suite {source}: {exp.describe()}: regex {pattern!r}: {problem}")
    return RegexMatcher(pattern)


def _lengths(view: ColumnView) -> np.ndarray:
    if view.kind not in _TEXT_KINDS:
        raise Incompatible("length checks are supported on string, number and bool columns")
    return pc.utf8_length(view.texts()).fill_null(0).to_numpy(zero_copy_only=False)


def _length_equal(exp: Expectation, source: str) -> Check:
    def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        return _map_outcome(exp, kw, view, _masked(view, _lengths(view) != kw["value"]))

    return check


def _length_between(exp: Expectation, source: str) -> Check:
    def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        lengths = _lengths(view)
        ok = np.ones(n, dtype=bool)
        if lo is not None:
            ok &= lengths > lo if kw.get("strict_min") else lengths >= lo
        if hi is not None:
            ok &= lengths < hi if kw.get("strict_max") else lengths <= hi
        return _map_outcome(exp, kw, view, _masked(view, ~ok))

    return check


# --- types ------------------------------------------------------------------------------


def _types(argument_key: str) -> Builder:
    def builder(exp: Expectation, source: str) -> Check:
        def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            argument = kw.get(argument_key)
            if isinstance(argument, list):
                argument = tuple(argument)
            t = view.arr.type
            if pa.types.is_nested(t) or pa.types.is_dictionary(t) or pa.types.is_union(t):
                raise Incompatible("type checks are supported on flat Arrow types")
            sample = view.sample()
            verdict = type_verdict(
                exp.type, t, view.has_arrow_nulls, NO_SAMPLE if sample is None else sample, argument
            )
            if verdict.error:
                raise Incompatible(verdict.error)
            if verdict.mode == "aggregate":
                # GX judged the column's dtype as a whole: every row shares the verdict
                rows = _EMPTY if verdict.success else np.arange(n)
                return ExpectationOutcome(
                    exp, verdict.success, rows, observed_value=verdict.observed
                )
            fails = np.full(n, not verdict.value_passes)
            outcome = _map_outcome(exp, kw, view, _masked(view, fails))
            outcome.observed_value = verdict.observed
            return outcome

        return check

    return builder


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
                return _map_outcome(exp, kw, view, _EMPTY)
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
        return _map_outcome(exp, kw, view, rows)

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
    "expect_column_values_to_be_in_set": _sets(member_is_unexpected=False),
    "expect_column_values_to_not_be_in_set": _sets(member_is_unexpected=True),
    "expect_column_values_to_match_regex": _regex(matching_is_unexpected=False),
    "expect_column_values_to_not_match_regex": _regex(matching_is_unexpected=True),
    "expect_column_value_lengths_to_equal": _length_equal,
    "expect_column_value_lengths_to_be_between": _length_between,
    "expect_column_values_to_be_of_type": _types("type_"),
    "expect_column_values_to_be_in_type_list": _types("type_list"),
    "expect_column_values_to_be_unique": _unique,
    "expect_table_row_count_to_be_between": _row_count(equal=False),
    "expect_table_row_count_to_equal": _row_count(equal=True),
}
