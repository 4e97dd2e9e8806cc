"""Helpers shared by the validation tests: run every engine path and compare reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation import Suite, ValidationReport, parse_suite, validate
from sluice.validation._compiled import validate_compiled
from sluice.validation._suite import default_params

# table rows at which the compiled engine switches from Python lists to Arrow kernels
NEVER_SMALL = -1
ALWAYS_SMALL = 10**9


def suite_of(*expectations: tuple[str, dict[str, Any]], name: str = "test") -> Suite:
    return parse_suite(
        {"name": name, "expectations": [{"type": t, "kwargs": kw} for t, kw in expectations]}
    )


def compiled(
    table: pa.Table, suite: Suite, params: Mapping[str, Any] | None = None, *, small: bool
) -> ValidationReport:
    resolved = default_params() | dict(params or {})
    return validate_compiled(
        table, suite, resolved, small_table_rows=ALWAYS_SMALL if small else NEVER_SMALL
    )


def outcome(fn) -> tuple[str, Any]:
    """("ok", report) or ("error", message) — both engines must agree on which."""
    try:
        return "ok", fn()
    except ConfigError as exc:
        return "error", str(exc)


def all_paths(
    table: pa.Table, suite: Suite, params: Mapping[str, Any] | None = None
) -> dict[str, tuple[str, Any]]:
    return {
        "gx": outcome(lambda: validate(table, suite, "gx", params)),
        "compiled-small": outcome(lambda: compiled(table, suite, params, small=True)),
        "compiled-vector": outcome(lambda: compiled(table, suite, params, small=False)),
    }


def describe(report: ValidationReport) -> dict[str, Any]:
    """Everything two engines must agree on, in comparable form."""
    return {
        "valid": report.valid.tolist(),
        "verdicts": report.verdicts.tolist(),
        "reasons": {row: [r.as_dict() for r in rs] for row, rs in report.reasons.items()},
        "expectations": [
            {
                "index": s.index,
                "success": s.success,
                "applicable": s.applicable,
                "unexpected_index": s.unexpected_index.tolist(),
            }
            for s in report.expectations
        ],
    }


def assert_paths_agree(results: dict[str, tuple[str, Any]], context: str = "") -> None:
    kinds = {path: kind for path, (kind, _) in results.items()}
    assert len(set(kinds.values())) == 1, f"{context}: engines disagree on raising: {results}"
    if kinds["gx"] == "error":
        return
    reference = describe(results["gx"][1])
    for path, (_, report) in results.items():
        got = describe(report)
        for key in reference:
            assert got[key] == reference[key], (
                f"{context}: {path} differs from gx in {key}:\n{path}: {got[key]}\n"
                f"gx: {reference[key]}"
            )


def rows_failing(report: ValidationReport, j: int = 0) -> list[int]:
    return np.flatnonzero(~report.verdicts[:, j]).tolist()
