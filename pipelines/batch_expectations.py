"""Table-level expectation results of a batch job: the suite over the whole input.

A batch job validates its input one Ray Data batch at a time, so the per-batch reports
say nothing about the input as a table: a key repeated across two batches, the input's
row count, or a ``mostly`` threshold over all rows. Great Expectations users expect the
verdict GX would give validating the whole input as one table; this module totals the
per-batch counts (``Totals``, added up on the driver) and gives that verdict per
expectation (``table_results``), following GX's rules:

- a map expectation succeeds when ``(counted - unexpected) / counted >= mostly``, where
  ``counted`` is every row for the null checks and the column's non-null rows (NaN is
  null) for the others; with no counted row it succeeds;
- ``expect_column_values_to_be_unique`` counts every row whose non-null value appears
  more than once in the whole input (the job's key check finds them for the key column);
- ``expect_table_row_count_to_*`` compare the input's row count with the bounds.

Limits, refused before anything is read (``check_supported``): uniqueness of a column
other than the contract's key, a ``row_condition`` on a row-count or uniqueness
expectation (both are counted over the whole input), and ``mostly`` below 1 on an
expectation with a ``row_condition`` (its counted rows are the condition's, which the
batches do not keep).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from sluice.errors import ConfigError
from sluice.validation import Suite
from sluice.validation._suite import Expectation, resolve_params

if TYPE_CHECKING:  # sluice.scoring imports torch: not for the task workers that run
    from sluice.scoring import Split  # pipelines.batch_stages' small functions

__all__ = ["ExpectationResult", "Totals", "check_supported", "table_results"]

_UNIQUE = "expect_column_values_to_be_unique"
_ALL_ROWS = frozenset({"expect_column_values_to_not_be_null", "expect_column_values_to_be_null",
                       "expect_column_to_exist"})  # fmt: skip


@dataclass
class Totals:
    """Counts of the suite's row-level expectations over some batches; batches add up."""

    rows: int = 0
    unexpected: dict[int, int] = field(default_factory=dict)  # expectation index -> rows
    counted: dict[int, int] = field(default_factory=dict)  # rows its `mostly` divides by

    @classmethod
    def of(cls, suite: Suite, split: Split) -> Totals:
        """The counts of one batch, from its `Scorer.split`."""
        n = split.conformed.num_rows
        totals = cls(rows=n)
        for exp, summary in zip(suite.expectations, split.report.expectations, strict=True):
            if exp.scope != "row":
                continue
            totals.unexpected[exp.index] = summary.unexpected_count
            if exp.type in _ALL_ROWS or exp.column not in split.conformed.column_names:
                totals.counted[exp.index] = n
            else:
                column = split.conformed.column(exp.column)
                nulls = pc.sum(pc.is_null(column, nan_is_null=True)).as_py() or 0
                totals.counted[exp.index] = n - nulls
        return totals

    def __add__(self, other: Totals) -> Totals:
        def add(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}

        return Totals(self.rows + other.rows, add(self.unexpected, other.unexpected),
                      add(self.counted, other.counted))  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Totals:
        d = json.loads(text)
        ints = lambda m: {int(k): int(v) for k, v in m.items()}  # noqa: E731
        return cls(rows=d["rows"], unexpected=ints(d["unexpected"]), counted=ints(d["counted"]))


@dataclass(frozen=True)
class ExpectationResult:
    """GX's result of one expectation over the whole input."""

    expectation: str
    column: str | None
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_percent: float  # of the counted rows
    mostly: float | None = None
    observed_value: int | None = None  # the row count, for row-count expectations

    @property
    def label(self) -> str:
        return f"{self.expectation}:{self.column}" if self.column else self.expectation


def check_supported(suite: Suite, key_column: str) -> None:
    """Refuse, before any read, an expectation the job cannot total over its input."""
    for exp in suite.expectations:
        if exp.type == _UNIQUE and exp.column != key_column:
            raise ConfigError(
                f"suite {suite.source}: {exp.describe()}: a batch job checks uniqueness over "
                f"its whole input for the key column ({key_column}) only"
            )
        if exp.condition is not None and (exp.type == _UNIQUE or exp.type.startswith(
                "expect_table_row_count")):  # fmt: skip
            raise ConfigError(
                f"suite {suite.source}: {exp.describe()}: a batch job counts rows and "
                "duplicate keys over its whole input, not over a row_condition's rows; "
                "drop the row_condition"
            )
        mostly = exp.kwargs.get("mostly", 1.0)
        if exp.condition is not None and (isinstance(mostly, dict) or mostly < 1.0):
            raise ConfigError(
                f"suite {suite.source}: {exp.describe()}: a batch job cannot total `mostly` "
                "of an expectation with a row_condition over its input; drop one of the two"
            )


def table_results(suite: Suite, totals: Totals, *, duplicated_rows: int, keyed_rows: int,
                  params: Mapping[str, Any]) -> list[ExpectationResult]:  # fmt: skip
    """One result per expectation of the suite, in suite order, over the whole input.

    ``duplicated_rows``: rows whose key appears more than once in the input;
    ``keyed_rows``: rows with a key (the job's key check counts both).
    """
    out = []
    for exp in suite.expectations:
        kw = resolve_params(exp, params, suite.source)
        if exp.type.startswith("expect_table_row_count"):
            out.append(_row_count(exp, kw, totals.rows))
            continue
        if exp.type == _UNIQUE:
            unexpected, counted = duplicated_rows, keyed_rows
        else:
            # An input with no rows (empty files, a header-only CSV) has no counts at all.
            unexpected = totals.unexpected.get(exp.index, 0)
            counted = totals.counted.get(exp.index, 0)
        mostly = float(kw.get("mostly", 1.0))
        success = counted == 0 or (counted - unexpected) / counted >= mostly
        if exp.type == "expect_column_to_exist":
            success, mostly = unexpected == 0, None
        out.append(ExpectationResult(
            exp.type, exp.column, bool(success), totals.rows, unexpected,
            round(100.0 * unexpected / counted, 4) if counted else 0.0, mostly,
        ))  # fmt: skip
    return out


def _row_count(exp: Expectation, kw: Mapping[str, Any], n: int) -> ExpectationResult:
    if exp.type == "expect_table_row_count_to_equal":
        success = n == kw["value"]
    else:
        lo, hi = kw.get("min_value"), kw.get("max_value")
        success = lo is None or (n > lo if kw.get("strict_min") else n >= lo)
        success = success and (hi is None or (n < hi if kw.get("strict_max") else n <= hi))
    return ExpectationResult(exp.type, None, bool(success), n, 0, 0.0, observed_value=n)
