"""The entry points: load a suite (checked and compiled at once) and validate a table."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation import _suite
from sluice.validation._compiled import compile_suite, validate_compiled
from sluice.validation._report import ValidationReport
from sluice.validation._suite import Suite, default_params

__all__ = ["Engine", "load_suite", "parse_suite", "validate"]

Engine = Literal["gx", "compiled"]


def load_suite(path: str | Path) -> Suite:
    """Load a GX 1.x suite file; refuse (at once) anything the compiled engine cannot run.

    Raises `UnsupportedExpectation` naming an unsupported expectation type or
    feature, `ConfigError` for bad JSON or bad arguments (naming the file, the
    expectation and the argument).
    """
    suite = _suite.load_suite(path)
    compile_suite(suite)
    return suite


def parse_suite(document: Mapping[str, Any], source: str = "<suite>") -> Suite:
    """Like `load_suite`, from an already decoded JSON document."""
    suite = _suite.parse_suite(document, source)
    compile_suite(suite)
    return suite


def validate(
    table: pa.Table,
    suite: Suite,
    engine: Engine,
    params: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Validate ``table`` against ``suite`` with either engine; both give the same report.

    ``params`` supplies suite parameters (``{"$PARAMETER": name}``); ``now``
    defaults to the current UTC time.
    """
    resolved = dict(params) if params else {}
    if "now" not in resolved:
        resolved.update(default_params())
    if engine == "compiled":
        return validate_compiled(table, suite, resolved)
    if engine == "gx":
        from sluice.validation._gx import validate_gx  # GX is heavy: import on first use

        return validate_gx(table, suite, resolved)
    raise ConfigError(f"validate: engine must be 'gx' or 'compiled', got {engine!r}")
