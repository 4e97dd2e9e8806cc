"""Drift figures as Prometheus gauges, written for node_exporter's textfile collector.

``write_metrics(report, path)`` fills a ``CollectorRegistry`` of its own (never the
process's default one, so nothing else the process exports leaks into the file) and
writes it with ``prometheus_client.write_to_textfile``, which writes a temporary file
and renames it over ``path``: the collector never reads half a file. Each run replaces
the whole file, so a feature or a verdict from an earlier run cannot linger.

Gauges (defined in ``sluice.metrics.DRIFT_GAUGES``; ``contract`` label on all, ``feature``
on the per-feature ones)::

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
from sluice.metrics import DRIFT_GAUGES

__all__ = ["drift_registry", "write_metrics"]


def drift_registry(report: DriftReport, now_s: float | None = None) -> CollectorRegistry:
    """A fresh registry holding the report's gauges."""
    registry = CollectorRegistry()
    g = {name: Gauge(name, doc, list(labels), registry=registry)
         for name, (doc, labels) in DRIFT_GAUGES.items()}  # fmt: skip
    psi, ks, rows = g["sluice_drift_psi"], g["sluice_drift_ks"], g["sluice_drift_rows"]
    detected, last = g["sluice_drift_detected"], g["sluice_drift_last_run_timestamp_seconds"]
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
