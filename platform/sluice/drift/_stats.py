"""Drift math: PSI and a binned KS of recent feature values against a training reference.

Pure functions over NumPy arrays and a ``ReferenceStatistics`` (what every registered
model version carries); no I/O here, so every figure is unit-tested by hand.

Bins. New values are counted on the reference's own bins (``FeatureReference.bin_edges``:
the training quantiles, or one bin per value for a discrete feature). Bin ``i`` is
``[e_i, e_i+1)`` and the last one is closed, as in ``np.histogram``, so training values
land exactly where ``reference_statistics`` counted them; the first and last bins are
open-ended, so a value below the first edge counts in the first bin and one above the
last edge in the last. NaN and ±inf count in one more bin, *missing*, beside the
reference's own missing count: a feature that starts arriving empty drifts like one
whose values move. A feature constant in training (one value, one bin) gets a second
bin, *other*, of every finite value but that one, empty in the reference: its one bin
would take any value, so it could never drift.

PSI (population stability index) = sum over bins of ``(a - e) * ln(a / e)``, where ``a``
and ``e`` are the new and the reference shares of the bin (missing bin included). A
share of 0 is taken as ``PSI_EPSILON`` (1e-4), so an empty bin adds a large but finite
term. Rule of thumb: < 0.1 stable, 0.1-0.2 moving, > 0.2 shifted.

KS (binned) = the largest gap ``|F_ref(x) - F_new(x)|`` between the two CDFs of the
finite values, taken at the reference's inner bin edges only, because the registry keeps
the training histogram, not the training values. It is the two-sample
Kolmogorov-Smirnov statistic restricted to those points: exact for a discrete feature
whose new values are training values (one bin per value), a lower bound of the exact
statistic for a continuous one. It does not fit (None) a feature with fewer than two
bins or with no finite value on one side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from sluice.contract import DriftSpec
from sluice.features import FeatureReference, ReferenceStatistics

__all__ = [
    "PSI_EPSILON",
    "BinCounts",
    "DriftReport",
    "FeatureDrift",
    "Verdict",
    "bin_values",
    "binned_ks",
    "drift_report",
    "feature_drift",
    "psi",
    "reference_counts",
]

PSI_EPSILON = 1e-4
"""A bin share of 0 counts as this much in PSI (ln(0) is undefined)."""


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"  # KS above the contract's ks_threshold, PSI not above psi_threshold
    DRIFT = "drift"  # PSI above the contract's psi_threshold


@dataclass(frozen=True)
class BinCounts:
    """Counts on a reference's bins: ``finite[i]`` per bin, plus the missing values."""

    finite: np.ndarray
    missing: int

    @property
    def all_bins(self) -> np.ndarray:
        """Finite bins then the missing bin: what PSI compares."""
        return np.append(self.finite, self.missing).astype(np.float64)


def _edges(reference: FeatureReference) -> np.ndarray:
    return np.asarray(reference.bin_edges, dtype=np.float64)


def _constant(reference: FeatureReference) -> bool:
    """One finite value in training: one bin, which the open ends make take any value."""
    return len(reference.bin_counts) == 1 and reference.min == reference.max is not None


def reference_counts(reference: FeatureReference) -> BinCounts:
    """The training counts. A feature that was never finite in training gets one empty
    finite bin, so finite values now still count against it; one constant in training an
    empty *other* bin beside its value's (module doc)."""
    if not reference.bin_counts:
        return BinCounts(np.zeros(1), reference.missing)
    counts = np.asarray(reference.bin_counts, dtype=np.float64)
    if _constant(reference):
        counts = np.append(counts, 0.0)
    return BinCounts(counts, reference.missing)


def bin_values(values: np.ndarray, reference: FeatureReference) -> BinCounts:
    """Count ``values`` on the reference's bins (open-ended ends; NaN/±inf are missing)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    if _constant(reference):  # its value's bin, and the other finite values' (module doc)
        same = float(np.count_nonzero(x[finite] == reference.min))
        return BinCounts(np.array([same, float(finite.sum()) - same]), int((~finite).sum()))
    edges = _edges(reference)
    if len(edges) < 2:
        return BinCounts(np.array([float(finite.sum())]), int((~finite).sum()))
    # searchsorted on the inner edges with side="right": e_i goes to bin i ([e_i, e_i+1)),
    # the last edge and beyond to the last bin, anything below e_1 to the first.
    idx = np.searchsorted(edges[1:-1], x[finite], side="right")
    counts = np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)
    return BinCounts(counts, int((~finite).sum()))


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI of ``actual`` counts against ``expected`` counts over the same bins."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"PSI needs counts over the same bins, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs at least one value on each side")
    e_share = np.maximum(e / e.sum(), epsilon)
    a_share = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def binned_ks(expected: np.ndarray, actual: np.ndarray) -> float | None:
    """Largest CDF gap at the bin edges between two histograms of finite values.

    None where KS does not fit: fewer than two bins, or an empty side.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"KS needs counts over the same bins, got {e.shape} and {a.shape}")
    if len(e) < 2 or e.sum() <= 0 or a.sum() <= 0:
        return None
    gaps = np.cumsum(e)[:-1] / e.sum() - np.cumsum(a)[:-1] / a.sum()
    return float(np.max(np.abs(gaps)))


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of a drift report. ``rows`` counts finite values, ``missing`` the rest."""

    feature: str
    rows: int
    missing: int
    psi: float
    ks: float | None
    verdict: Verdict


def feature_drift(
    feature: str, values: np.ndarray, reference: FeatureReference, spec: DriftSpec
) -> FeatureDrift:
    """PSI, binned KS and the verdict of one feature's recent values (at least one)."""
    ref, new = reference_counts(reference), bin_values(values, reference)
    value_psi = psi(ref.all_bins, new.all_bins)
    ks = binned_ks(ref.finite, new.finite)
    if value_psi > spec.psi_threshold:
        verdict = Verdict.DRIFT
    elif ks is not None and spec.ks_threshold is not None and ks > spec.ks_threshold:
        verdict = Verdict.WARN
    else:
        verdict = Verdict.OK
    return FeatureDrift(feature, int(new.finite.sum()), new.missing, value_psi, ks, verdict)


@dataclass(frozen=True)
class DriftReport:
    """Recent rows of one model version against its training reference.

    With fewer than ``spec.min_rows`` rows there is no verdict: ``features`` is empty
    and ``enough_rows`` is False.
    """

    contract: str
    model_version: str
    rows: int
    spec: DriftSpec
    features: tuple[FeatureDrift, ...]

    @property
    def enough_rows(self) -> bool:
        return self.rows >= self.spec.min_rows

    @property
    def drifted(self) -> tuple[str, ...]:
        """Features whose PSI is above the contract's threshold."""
        return tuple(f.feature for f in self.features if f.verdict is Verdict.DRIFT)

    @property
    def warned(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.verdict is Verdict.WARN)


def drift_report(
    columns: Mapping[str, np.ndarray],
    reference: ReferenceStatistics,
    spec: DriftSpec,
    *,
    contract: str,
    model_version: str,
    features: Sequence[str] | None = None,
) -> DriftReport:
    """Compare recent feature columns (one array per feature, equal lengths) with a reference.

    ``features`` (default: every feature of the reference, in its order) are the ones
    judged; a feature absent from ``columns`` counts as missing on every row.
    """
    names = list(features) if features is not None else list(reference.features)
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"feature columns differ in length: {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    unknown = [n for n in names if n not in reference.features]
    if unknown:
        raise ValueError(f"the reference has no statistics for feature(s) {unknown}")
    report = DriftReport(contract, model_version, rows, spec, ())
    if not report.enough_rows:
        return report
    missing = np.full(rows, np.nan)
    judged = tuple(
        feature_drift(n, columns.get(n, missing), reference.features[n], spec) for n in names
    )
    return DriftReport(contract, model_version, rows, spec, judged)
