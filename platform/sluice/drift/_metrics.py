"""Drift figures as Prometheus gauges, written for node_exporter's textfile collector.

``write_metrics(report, path)`` fills a ``CollectorRegistry`` of its own (never the
process's default one, so nothing else the process exports leaks into the file) and
writes it with ``prometheus_client.write_to_textfile``, which writes a temporary file
and renames it over ``path``: the collector never reads half a file. Each run replaces
the whole file, so a feature or a verdict from an earlier run cannot linger.

Gauges (``contract`` label on all, ``feature`` on the per-feature ones)::

    sluice_drift_psi{contract,feature}        PSI against the training reference
    sluice_drift_ks{contract,feature}         binned KS (absent where KS does not fit)
    sluice_drift_rows{contract}               recent rows compared
    sluice_drift_detected{contract}           1 drift, 0 none; absent without a verdict
    sluice_drift_last_run_timestamp_seconds{contract}   for "the check stopped" alerts
"""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from sluice.drift._stats import DriftReport

__all__ = ["drift_registry", "write_metrics"]


def drift_registry(report: DriftReport, now_s: float | None = None) -> CollectorRegistry:
    """A fresh registry holding the report's gauges."""
    registry = CollectorRegistry()
    psi = Gauge("sluice_drift_psi", "PSI of recent inputs against the training reference",
                ["contract", "feature"], registry=registry)  # fmt: skip
    ks = Gauge("sluice_drift_ks", "Binned KS statistic (largest CDF gap at the training "
               "bin edges)", ["contract", "feature"], registry=registry)  # fmt: skip
    rows = Gauge("sluice_drift_rows", "Recent rows compared with the training reference",
                 ["contract"], registry=registry)  # fmt: skip
    detected = Gauge("sluice_drift_detected", "1 when a feature's PSI is above the "
                     "contract's threshold, else 0", ["contract"], registry=registry)  # fmt: skip
    last = Gauge("sluice_drift_last_run_timestamp_seconds", "When the drift check last ran",
                 ["contract"], registry=registry)  # fmt: skip
    c = report.contract
    rows.labels(c).set(report.rows)
    last.labels(c).set(time.time() if now_s is None else now_s)
    if report.enough_rows:
        detected.labels(c).set(1 if report.drifted else 0)
    for f in report.features:
        psi.labels(c, f.feature).set(f.psi)
        if f.ks is not None:
            ks.labels(c, f.feature).set(f.ks)
    return registry


def write_metrics(report: DriftReport, path: str | Path) -> Path:
    """Write the report's gauges to ``path`` (text exposition format, atomic replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), drift_registry(report))
    return path
