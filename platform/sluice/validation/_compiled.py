"""The compiled engine: a suite turned into vectorized Arrow/NumPy checks.

Every check answers with GX's semantics on ``table.to_pandas()`` (see
``_columns``): map expectations ignore null rows (except the null checks
themselves), ``mostly`` is GX's ratio over non-null rows, uniqueness is
pandas ``duplicated(keep=False)``. Where GX would raise for a column/argument
combination (numeric bounds on a string column, tz-naive bounds on a tz-aware
column) we raise `ConfigError` too; where GX would answer but this engine has
no exact equivalent (regex on timestamps, sets of timestamps) we refuse with
`ConfigError` rather than guess. The per-suite plan (compiled regexes, value
sets) is built once and cached on the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation import _checks
from sluice.validation._columns import ColumnLayout
from sluice.validation._report import ValidationReport, build_report
from sluice.validation._suite import Expectation, Suite, resolve_params

__all__ = ["SMALL_TABLE_ROWS", "compile_suite", "validate_compiled"]

# Below this many rows checks run on Python lists instead of Arrow kernels.
SMALL_TABLE_ROWS = 64


class _Plan:
    """A suite's checks, built once: one callable per expectation."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.steps: list[tuple[Expectation, Callable]] = [
            (exp, _checks.build(exp, suite.source)) for exp in suite.expectations
        ]
        self.columns = sorted({e.column for e in suite.expectations if e.column is not None})
        self._layout: ColumnLayout | None = None

    def layout(self, schema: pa.Schema) -> ColumnLayout:
        layout = self._layout
        if layout is None or not layout.schema.equals(schema):
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
    small = n <= small_table_rows
    views = plan.layout(table.schema).views(table, small)
    outcomes = []
    for exp, check in plan.steps:
        kwargs = resolve_params(exp, params, suite.source) if exp.parameters else exp.kwargs
        view = views[exp.column] if exp.column is not None else None
        if exp.type == "expect_column_to_exist" and kwargs.get("column_index"):
            kwargs = {**kwargs, "_columns": table.schema.names}
        try:
            outcomes.append(check(view, kwargs, n))
        except _checks.Incompatible as exc:
            raise ConfigError(
                f"suite {suite.source}: {exp.describe()} cannot be evaluated on a column of "
                f"Arrow type {view.arr.type if view else '?'}: {exc}"
            ) from None
    return build_report("compiled", table, outcomes)
