"""The promotion gate: what a model version must show before it may become champion.

    spec = contract.gate                      # the contract's `gate` section (GateSpec)
    verdict = judge_candidate(contract, registry, candidate, holdout, store)
    report = verdict.report                   # or evaluate_gate(spec, holdout=..., ...)
    print(format_report(report))              # checks, figures, thresholds, slices
    report.passed, report.failures()

`pipelines.train` (and so `sluice drift --retrain`) and `sluice models register
--holdout` judge every candidate and store the report in the version's metadata;
`ModelRegistry.promote` refuses a champion whose report failed, is missing or was made for
another gate, unless forced with a reason.
"""

from sluice.gate._evaluate import calibration_error, evaluate_gate
from sluice.gate._judge import Verdict, judge_candidate, labels_of, open_candidate
from sluice.gate._report import CheckResult, GateReport, SliceRow, format_report, refusals
from sluice.gate._spec import (
    SLICE_METRICS,
    AucCheck,
    CalibrationCheck,
    GateSpec,
    LatencyBudget,
    SliceLimit,
    SliceSpec,
)

__all__ = [
    "SLICE_METRICS",
    "AucCheck",
    "CalibrationCheck",
    "CheckResult",
    "GateReport",
    "GateSpec",
    "LatencyBudget",
    "SliceLimit",
    "SliceRow",
    "SliceSpec",
    "Verdict",
    "calibration_error",
    "evaluate_gate",
    "format_report",
    "labels_of",
    "open_candidate",
    "judge_candidate",
    "refusals",
]
