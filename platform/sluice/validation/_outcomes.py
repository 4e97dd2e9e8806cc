"""What every check shares: the GX success rule for map expectations and null masking."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sluice.validation._columns import ColumnView
from sluice.validation._report import ExpectationOutcome
from sluice.validation._suite import Expectation

__all__ = ["EMPTY", "Check", "Incompatible", "map_outcome", "masked"]

Check = Callable[[ColumnView | None, Mapping[str, Any], int], ExpectationOutcome]
EMPTY = np.empty(0, dtype=np.int64)
EMPTY.flags.writeable = False


class Incompatible(Exception):
    """GX raises on this column/argument combination, or the compiled engine cannot match
    GX on it exactly; the engine turns it into a ConfigError naming the expectation."""


def map_outcome(
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


def masked(view: ColumnView, condition_fails: np.ndarray) -> np.ndarray:
    """Rows failing a condition, nulls excluded (GX filters nulls before map checks)."""
    if not view.maybe_null:
        return np.flatnonzero(condition_fails)
    return np.flatnonzero(condition_fails & ~view.null)
