"""What validation returns: per-row verdicts, reasons for invalid rows, per-expectation summaries.

Both engines produce the same intermediate — per expectation the unexpected
row numbers and GX's success verdict — and `build_report` turns it into a
`ValidationReport`, so reasons and their value strings come from one function
whichever engine ran. Summaries are built on first access: the online path,
which reads only ``valid`` and ``reasons``, does not pay for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.validation._suite import Expectation, Scope

__all__ = [
    "MISSING_COLUMN",
    "ExpectationOutcome",
    "ExpectationSummary",
    "Reason",
    "ValidationReport",
    "build_report",
    "format_values",
]

MISSING_COLUMN = "<missing column>"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one row is invalid: the expectation it failed, the column and the offending value.

    ``value`` is ``repr`` of the value (``'abc'``, ``nan``, ``None``), a timestamp
    as Arrow prints it (``2024-05-01 12:00:00.000000Z``), or ``<missing column>``;
    always a JSON-safe string.
    """

    expectation: str
    column: str | None
    value: str

    def as_dict(self) -> dict[str, str | None]:
        return {"expectation": self.expectation, "column": self.column, "value": self.value}


@dataclass(frozen=True, eq=False)
class ExpectationSummary:
    """GX-style result of one expectation over the whole table.

    ``success`` follows GX, including ``mostly``. ``applicable`` is False for
    batch-scoped expectations (uniqueness, row count) on a table of fewer than
    two rows: they say nothing about a single request. ``unexpected_index``
    holds the failing row numbers (for a row-level expectation, the rows whose
    verdict is False, whatever ``mostly`` says).
    """

    index: int
    expectation: str
    column: str | None
    scope: Scope
    applicable: bool
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_index: np.ndarray
    observed_value: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "expectation": self.expectation,
            "column": self.column,
            "scope": self.scope,
            "applicable": self.applicable,
            "success": self.success,
            "element_count": self.element_count,
            "unexpected_count": self.unexpected_count,
        }


class ExpectationOutcome:
    """An engine's raw result for one expectation: GX's success and the unexpected rows.

    ``missing`` means the column is absent, so its failing rows get the value
    ``<missing column>``.
    """

    __slots__ = ("expectation", "success", "rows", "missing", "observed_value")

    def __init__(
        self,
        expectation: Expectation,
        success: bool,
        rows: Sequence[int] | np.ndarray,
        missing: bool = False,
        observed_value: Any = None,
    ) -> None:
        self.expectation = expectation
        self.success = success
        self.rows = rows
        self.missing = missing
        self.observed_value = observed_value


class ValidationReport:
    """Validation of one table.

    ``valid[i]`` is True when row i passes every row-level expectation;
    ``verdicts[:, j]`` is the verdict of row-level expectation j (the j-th of
    ``suite.row_expectations``); ``reasons`` maps each invalid row to its
    reasons, in suite order. A row's validity never depends on other rows:
    ``mostly`` and batch-level expectations only affect ``expectations`` (the one
    exception is GX's, see the package doc: typed checks on an integer column with nulls).
    """

    __slots__ = ("engine", "valid", "reasons", "verdicts", "_outcomes", "_summaries")

    def __init__(
        self,
        engine: str,
        valid: np.ndarray,
        reasons: dict[int, list[Reason]],
        verdicts: np.ndarray,
        outcomes: Sequence[ExpectationOutcome],
    ) -> None:
        self.engine = engine
        self.valid = valid
        self.reasons = reasons
        self.verdicts = verdicts
        self._outcomes = outcomes
        self._summaries: list[ExpectationSummary] | None = None

    @property
    def expectations(self) -> list[ExpectationSummary]:
        """One summary per expectation of the suite, in suite order."""
        if self._summaries is None:
            n = self.num_rows
            self._summaries = [_summary(o, n) for o in self._outcomes]
        return self._summaries

    @property
    def num_rows(self) -> int:
        return int(self.valid.shape[0])

    @property
    def invalid_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.valid)

    @property
    def success(self) -> bool:
        """GX's suite-level verdict: every applicable expectation succeeded."""
        return all(s.success for s in self.expectations if s.applicable)


def format_values(values: pa.Array | pa.ChunkedArray) -> list[str]:
    """The ``Reason.value`` strings of some cells (one Python step per invalid cell)."""
    if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
        # Arrow prints a timestamp outside Python's datetime range without raising, where
        # as_py() raises (far enough out its text is wrong: its calendar math overflows).
        text = values.cast(pa.string()).to_pylist()
        return ["None" if t is None else t for t in text]
    return [repr(v) for v in values.to_pylist()]


def build_report(
    engine: str,
    table: pa.Table,
    outcomes: Sequence[ExpectationOutcome],
    row_positions: Sequence[int] | None = None,
) -> ValidationReport:
    """``row_positions``: where the row-level outcomes are (engines may precompute it)."""
    n = table.num_rows
    if row_positions is None:
        row_outcomes = [o for o in outcomes if o.expectation.scope == "row"]
    else:
        row_outcomes = [outcomes[i] for i in row_positions]
    verdicts = np.empty((n, len(row_outcomes)), dtype=bool)
    verdicts.fill(True)
    failing = [(j, o) for j, o in enumerate(row_outcomes) if len(o.rows)]
    valid = np.empty(n, dtype=bool)
    valid.fill(True)
    if not failing:
        return ValidationReport(engine, valid, {}, verdicts, outcomes)
    reasons: dict[int, list[Reason]] = {}
    # valid is updated row by row below: cheaper than verdicts.all(axis=1) on a wide matrix
    for j, outcome in failing:
        rows = np.asarray(outcome.rows, dtype=np.int64)
        verdicts[rows, j] = False
        valid[rows] = False
        exp = outcome.expectation
        if outcome.missing or exp.column is None:
            texts = [MISSING_COLUMN] * rows.size
        else:
            texts = format_values(table.column(exp.column).take(pa.array(rows)))
        for row, text in zip(rows.tolist(), texts, strict=True):
            reasons.setdefault(row, []).append(Reason(exp.type, exp.column, text))
    # Each row's list is in suite order already (expectations were visited in order);
    # sorting the rows gives a stable dict order.
    return ValidationReport(engine, valid, dict(sorted(reasons.items())), verdicts, outcomes)


def _summary(outcome: ExpectationOutcome, n: int) -> ExpectationSummary:
    exp = outcome.expectation
    index = np.asarray(outcome.rows, dtype=np.int64)
    return ExpectationSummary(
        index=exp.index,
        expectation=exp.type,
        column=exp.column,
        scope=exp.scope,
        applicable=exp.scope == "row" or n > 1,
        success=bool(outcome.success),
        element_count=n,
        unexpected_count=int(index.size),
        unexpected_index=index,
        observed_value=outcome.observed_value,
    )
