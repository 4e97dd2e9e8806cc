"""Drift detection: recent model inputs against the training reference of the model.

Public surface::

    recent = read_recent(session, keyspace, contract, model_version="fraud/3",
                         feature_names=meta.feature_names, since=now - parse_window("1h"))
    report = drift_report(recent.columns, meta.reference, contract.drift,
                          contract="fraud", model_version="fraud/3")
    report.drifted                       # features whose PSI is above the threshold
    write_metrics(report, "/var/lib/node_exporter/textfile/sluice_drift.prom")
    read_labels("recent_labelled.parquet", contract)     # rows for a retrain

The math (``psi``, ``binned_ks``, ``bin_values``: see ``_stats`` for the bins, the
missing-value bin and why the KS is a binned one) is pure and separate from the I/O
(``read_recent``: a token-range full scan with a time filter, see ``_read``). The
command is ``sluice drift`` (``sluice.cli.drift``); retraining on labelled recent rows
is ``pipelines.train.train_on``, behind the same champion gate as every training run.
``compare_versions`` (``_compare``) puts model versions side by side on the live rows of
the prediction log: ``sluice models compare``.
"""

from sluice.drift._compare import (
    LoggedScore,
    VersionPair,
    compare_versions,
    format_pairs,
    read_key_labels,
    read_log_scores,
    write_compare_metrics,
)
from sluice.drift._labels import LabelledRows, check_labels_file, read_labels
from sluice.drift._metrics import drift_registry, write_metrics
from sluice.drift._read import RecentRows, Source, parse_window, read_recent, token_ranges
from sluice.drift._stats import (
    PSI_EPSILON,
    BinCounts,
    DriftReport,
    FeatureDrift,
    Verdict,
    bin_values,
    binned_ks,
    drift_report,
    feature_drift,
    psi,
    reference_counts,
)

__all__ = [
    "PSI_EPSILON",
    "BinCounts",
    "DriftReport",
    "FeatureDrift",
    "LabelledRows",
    "LoggedScore",
    "RecentRows",
    "Source",
    "Verdict",
    "VersionPair",
    "bin_values",
    "binned_ks",
    "check_labels_file",
    "compare_versions",
    "drift_registry",
    "drift_report",
    "feature_drift",
    "format_pairs",
    "parse_window",
    "psi",
    "read_key_labels",
    "read_labels",
    "read_log_scores",
    "read_recent",
    "reference_counts",
    "token_ranges",
    "write_compare_metrics",
    "write_metrics",
]
