"""Checks on the values themselves: value sets, regexes, lengths and types (GX 1.24 semantics).

Split from `_checks` (ranges, nulls, batch-level) to keep modules small; both
share the outcome helpers of `_outcomes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.validation._bytes import short_key, short_keys
from sluice.validation._columns import ColumnView
from sluice.validation._outcomes import EMPTY as _EMPTY
from sluice.validation._outcomes import Check, Incompatible, map_outcome, masked
from sluice.validation._regex import RegexMatcher
from sluice.validation._report import ExpectationOutcome
from sluice.validation._suite import Expectation
from sluice.validation._types import NO_SAMPLE, type_verdict

__all__ = ["BUILDERS"]

Builder = Callable[[Expectation, str], Check]


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
                    return map_outcome(exp, kw, view, bad, clean)
                member = values.member(view)
            elif view.kind in ("int", "uint64", "float", "bool", "null"):
                member = _member_by_value(view, values.anything)
            else:
                raise Incompatible("value sets are supported on string, number and bool columns")
            return map_outcome(
                exp, kw, view, masked(view, member if member_is_unexpected else ~member)
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
        # patterns are checked by the suite loader (resolve_params, for a parameter)
        matcher = None if isinstance(static, dict) else RegexMatcher(static)
        clean = ExpectationOutcome(exp, True, _EMPTY)

        def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
            m = matcher or RegexMatcher(kw["regex"])
            if view.kind not in _TEXT_KINDS:
                raise Incompatible("regex checks are supported on string, number and bool columns")
            if view.kind == "string" and view.small:
                search = m.compiled.search
                bad = [
                    i
                    for i, v in enumerate(view.py)
                    if v is not None and (search(v) is not None) is matching_is_unexpected
                ]
                return map_outcome(exp, kw, view, bad, clean)
            texts = view.texts()
            hit = m.search_array(texts, view.strings if texts is view.arr else None)
            return map_outcome(exp, kw, view, masked(view, hit if matching_is_unexpected else ~hit))

        return check

    return builder


def _lengths(view: ColumnView) -> np.ndarray:
    if view.kind not in _TEXT_KINDS:
        raise Incompatible("length checks are supported on string, number and bool columns")
    return pc.utf8_length(view.texts()).fill_null(0).to_numpy(zero_copy_only=False)


def _length_equal(exp: Expectation, source: str) -> Check:
    def check(view: ColumnView, kw: Mapping[str, Any], n: int) -> ExpectationOutcome:
        return map_outcome(exp, kw, view, masked(view, _lengths(view) != kw["value"]))

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
        return map_outcome(exp, kw, view, masked(view, ~ok))

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
            outcome = map_outcome(exp, kw, view, masked(view, fails))
            outcome.observed_value = verdict.observed
            return outcome

        return check

    return builder


BUILDERS: dict[str, Builder] = {
    "expect_column_values_to_be_in_set": _sets(member_is_unexpected=False),
    "expect_column_values_to_not_be_in_set": _sets(member_is_unexpected=True),
    "expect_column_values_to_match_regex": _regex(matching_is_unexpected=False),
    "expect_column_values_to_not_match_regex": _regex(matching_is_unexpected=True),
    "expect_column_value_lengths_to_equal": _length_equal,
    "expect_column_value_lengths_to_be_between": _length_between,
    "expect_column_values_to_be_of_type": _types("type_"),
    "expect_column_values_to_be_in_type_list": _types("type_list"),
}
