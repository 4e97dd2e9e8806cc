"""The gx engine: the suite run by Great Expectations itself, on a pandas frame.

One ephemeral GX context per process, built on first use (importing GX and
building a context costs seconds; a validation call about 45 ms). Each suite
is turned into a GX ``ExpectationSuite`` from the arguments the suite loader
parsed — and suite parameters from `resolve_params`, the compiled engine's
parse — so GX never parses the file or a parameter on its own: both engines
compare with the same values. It is cached on the `Suite` when it has no
parameters. Every expectation carries ``meta.sluice_index`` so results map back
to the suite whatever order GX returns them in. Row verdicts come from
``unexpected_index_list`` (``result_format="COMPLETE"``).

GX answers some expectations for the column as a whole (a type check on a
non-object dtype): then every row gets that answer. An expectation GX could
not evaluate is an error (the suite does not fit the table), except on a
column the table lacks, where every row fails, as in the compiled engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation._columns import canonical_table
from sluice.validation._report import ExpectationOutcome, ValidationReport, build_report
from sluice.validation._schema import check_fit
from sluice.validation._suite import Suite, resolve_params

__all__ = ["validate_gx"]

_INDEX_KEY = "sluice_index"
_lock = threading.Lock()  # a GX context is not safe to share between threads
_runtime: _GXRuntime | None = None


class _GXRuntime:
    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation_configuration import (
            ExpectationConfiguration,
        )

        self._gx = gx
        self._configuration = ExpectationConfiguration
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas("sluice").add_dataframe_asset("table")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole_table")

    def suite_for(self, suite: Suite, params: Mapping[str, Any]) -> Any:
        """The GX suite, built from the arguments the suite loader parsed (never from the
        file's raw text): both engines see the same values. A suite without parameters
        is built once; one with parameters rebuilds, per call, the expectations that use
        them, from `resolve_params` (the compiled engine's parse)."""
        cached = suite._cache.get("gx")
        if cached is not None:
            return cached
        expectations = []
        for exp in suite.expectations:
            kwargs = resolve_params(exp, params, suite.source)
            config = self._configuration(
                type=exp.type, kwargs=dict(kwargs), meta={**exp.meta, _INDEX_KEY: exp.index}
            )
            expectations.append(config.to_domain_obj())
        built = self._gx.ExpectationSuite(name=suite.name, expectations=expectations)
        if not suite.parameters:
            suite._cache["gx"] = built
        return built


def _get_runtime() -> _GXRuntime:
    global _runtime
    if _runtime is None:
        _runtime = _GXRuntime()
    return _runtime


def validate_gx(table: pa.Table, suite: Suite, params: Mapping[str, Any]) -> ValidationReport:
    check_fit(suite, table.schema)
    table = canonical_table(table)
    frame = table.to_pandas()
    with _lock:
        runtime = _get_runtime()
        gx_suite = runtime.suite_for(suite, params)
        batch = runtime.batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format={"result_format": "COMPLETE"})
    by_index = {r.expectation_config.meta[_INDEX_KEY]: r for r in result.results}
    n = table.num_rows
    present = set(table.schema.names)
    outcomes = []
    for exp in suite.expectations:
        r = by_index[exp.index]
        success = bool(r.success)
        observed = r.result.get("observed_value") if r.result else None
        if exp.type == "expect_column_to_exist":
            rows = np.empty(0, np.int64) if success else np.arange(n)
            outcomes.append(ExpectationOutcome(exp, success, rows, missing=not success))
            continue
        if exp.column is not None and exp.column not in present:
            rows = np.arange(n) if exp.scope == "row" else np.empty(0, np.int64)
            outcomes.append(ExpectationOutcome(exp, False, rows, missing=True))
            continue
        error = _error_message(r.exception_info)
        if error is not None:
            raise ConfigError(
                f"suite {suite.source}: {exp.describe()} could not be evaluated by Great "
                f"Expectations on a column of Arrow type "
                f"{table.schema.field(exp.column).type if exp.column else '?'}: {error}"
            )
        listed = (r.result or {}).get("unexpected_index_list")
        if listed is not None:
            rows = np.unique(np.asarray(listed, dtype=np.int64))
        elif exp.scope == "row" and not success:
            # answered for the column as a whole (e.g. its dtype): every row shares it
            rows = np.arange(n)
        else:
            rows = np.empty(0, np.int64)
        outcomes.append(ExpectationOutcome(exp, success, rows, observed_value=observed))
    return build_report("gx", table, outcomes)


def _error_message(info: Mapping[str, Any] | None) -> str | None:
    """GX reports an error either flat or keyed by the metric that raised it."""
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, Mapping) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None
