"""The compiled engine: a suite turned into vectorized Arrow/NumPy checks.

Every check answers with GX's semantics on ``table.to_pandas()`` (see
``_columns``): map expectations ignore null rows (except the null checks
themselves), ``mostly`` is GX's ratio over non-null rows, uniqueness is
pandas ``duplicated(keep=False)``. Where GX would raise for a column/argument
combination (numeric bounds on a string column, tz-naive bounds on a tz-aware
column) we raise `ConfigError` too; where GX would answer but this engine has
no exact equivalent (regex on timestamps, sets of timestamps) `_schema` refuses
the column type for both engines, before either runs. The per-suite plan (compiled regexes, value
sets) is built once and cached on the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation import _checks
from sluice.validation._columns import ColumnLayout, ColumnView, canonical_table
from sluice.validation._conditions import ConditionError
from sluice.validation._report import ExpectationOutcome, ValidationReport, build_report
from sluice.validation._schema import check_fit
from sluice.validation._suite import Expectation, Suite, resolve_params

__all__ = ["SMALL_TABLE_ROWS", "compile_suite", "validate_compiled"]

# Up to this many rows, checks run on Python lists instead of Arrow kernels: with the
# transactions suite, ~2 µs per row against ~500 µs of per-call kernel overhead
# (measured crossover about 250 rows; bench/validation.py).
SMALL_TABLE_ROWS = 192


_EXIST, _NOT_NULL, _OTHER = 0, 1, 2
_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False


class _Plan:
    """A suite's checks, built once: one callable per expectation.

    The two commonest expectations (a column exists, a column has no nulls) are
    answered inline by the engine loop: the online path validates one row, and
    there a function call per expectation is a large share of the time.
    """

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.steps: list[tuple[Expectation, Callable, str | None, int, ExpectationOutcome]] = []
        for exp in suite.expectations:
            kind = _OTHER
            if exp.type == "expect_column_to_exist" and not exp.kwargs.get("column_index"):
                kind = _EXIST
            elif (
                exp.type == "expect_column_values_to_not_be_null"
                and not exp.parameters
                and exp.condition is None
            ):
                kind = _NOT_NULL
            # the outcome of a clean column, shared by every call (outcomes are read-only)
            clean = ExpectationOutcome(exp, True, _NO_ROWS)
            self.steps.append((exp, _checks.build(exp, suite.source), exp.column, kind, clean))
        columns = {e.column for e in suite.expectations if e.column is not None}
        for exp in suite.expectations:
            if exp.condition is not None:
                columns |= exp.condition.columns
        self.columns = sorted(columns)
        self.row_positions = [i for i, e in enumerate(suite.expectations) if e.scope == "row"]
        self._layout: ColumnLayout | None = None

    def layout(self, schema: pa.Schema) -> ColumnLayout:
        layout = self._layout
        if layout is None or not layout.schema.equals(schema):
            check_fit(self.suite, schema)
            layout = self._layout = ColumnLayout(schema, self.columns)
        return layout


def _plan(suite: Suite) -> _Plan:
    plan = suite._cache.get("compiled")
    if plan is None:
        plan = suite._cache["compiled"] = _Plan(suite)
    return plan


def compile_suite(suite: Suite) -> None:
    """Build (and cache) the plan now, so argument errors surface at load time."""
    _plan(suite)


def validate_compiled(
    table: pa.Table,
    suite: Suite,
    params: Mapping[str, Any],
    small_table_rows: int = SMALL_TABLE_ROWS,
) -> ValidationReport:
    plan = _plan(suite)
    n = table.num_rows
    layout = plan.layout(table.schema)
    if layout.recast:
        table = canonical_table(table)
    views = layout.views(table, n <= small_table_rows)
    outcomes: list[ExpectationOutcome] = []
    append = outcomes.append
    for exp, check, column, kind, clean in plan.steps:
        view = None if column is None else views[column]
        if view is None and column is not None:
            # GX cannot resolve any metric on a missing column: the expectation fails,
            # and so does every row (none of them has the field).
            rows = np.arange(n) if exp.scope == "row" else _NO_ROWS
            append(ExpectationOutcome(exp, False, rows, missing=True))
        elif kind == _EXIST:
            append(clean)
        elif kind == _NOT_NULL:
            rows = view.null_rows
            if not len(rows):
                append(clean)
            else:
                success = (n - len(rows)) / n >= exp.kwargs["mostly"]
                append(ExpectationOutcome(exp, success, rows))
        else:
            kwargs = resolve_params(exp, params, suite.source)
            if exp.type == "expect_column_to_exist":
                kwargs = {**kwargs, "_columns": table.schema.names}
            try:
                if exp.condition is None:
                    append(check(view, kwargs, n))
                else:
                    append(_conditioned(exp, check, view, kwargs, views, n))
            except _checks.Incompatible as exc:
                raise ConfigError(
                    f"suite {suite.source}: {exp.describe()} cannot be evaluated on a column "
                    f"of Arrow type {view.arr.type if view else '?'}: {exc}"
                ) from None
            except ConditionError as exc:
                raise ConfigError(f"suite {suite.source}: {exp.describe()}: {exc}") from None
    return build_report("compiled", table, outcomes, plan.row_positions)


def _conditioned(
    exp: Expectation,
    check: Callable,
    view: ColumnView | None,
    kwargs: Mapping[str, Any],
    views: Mapping[str, ColumnView | None],
    n: int,
) -> ExpectationOutcome:
    """Run a check on the rows its row_condition selects, as GX does (df.query first);
    unexpected rows are reported by their position in the whole table."""
    rows = np.flatnonzero(exp.condition.mask(views, n))
    sub = None
    if view is not None:
        sub = ColumnView(view.arr.take(pa.array(rows, pa.int64())), view.kind, view.small)
    outcome = check(sub, kwargs, rows.size)
    return ExpectationOutcome(
        exp,
        outcome.success,
        rows[np.asarray(outcome.rows, dtype=np.int64)],
        outcome.missing,
        outcome.observed_value,
    )
