"""A version's gate report: each check with its figure and threshold, and the slices table.

Plain JSON (pydantic, extra="forbid"), stored in the version's metadata at registration,
so `sluice models promote` and `sluice models show` read the same figures the training
run printed. Undefined figures (a slice without positives has no true-positive rate) are
null, never NaN.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice._text import figure, text_table

__all__ = ["CheckResult", "GateReport", "SliceRow", "format_report", "refusals"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckResult(_Frozen):
    """One check: `figure op threshold` must hold (e.g. `auc 0.81 >= 0.75`)."""

    check: str = Field(description="e.g. auc, calibration_ece, slices.channel.fpr_difference.")
    figure: float | None = Field(description="Measured value; null when it could not be.")
    op: Literal[">=", "<="]
    threshold: float
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        figure = "n/a" if self.figure is None else f"{self.figure:.4g}"
        verdict = "pass" if self.passed else "FAIL"
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.check} {figure} (must be {self.op} {self.threshold:.4g}): {verdict}{tail}"


class SliceRow(_Frozen):
    """One slice of one slicing on the holdout, at the gate's threshold."""

    slicing: str
    slice: str
    rows: int
    negatives: int
    positives: int
    judged: bool = Field(description="Enough rows of each class to be compared.")
    metrics: dict[str, float | None]


class GateReport(_Frozen):
    """What the gate found for one candidate on its holdout."""

    gate: str = Field(description="GateSpec.digest() of the gate it was judged by.")
    holdout_rows: int = Field(ge=0)
    threshold: float | None = Field(description="Score at which a row counts as flagged.")
    champion: int | None = Field(description="Version the AUC margin was measured against.")
    runtime: str = Field(description="Where latency was measured: format/device (onnx/cpu).")
    checks: tuple[CheckResult, ...]
    slices: tuple[SliceRow, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def failures(self) -> list[str]:
        return [c.describe() for c in self.checks if not c.passed]


def refusals(report: GateReport | None, gate_digest: str) -> list[str]:
    """Why a version with this report may not lead under the gate `gate_digest`; [] if it may."""
    if report is None:
        return ["no gate report: the version was registered without a labelled holdout to "
                "judge it on (train it with python -m pipelines.train)"]  # fmt: skip
    if report.gate != gate_digest:
        return [f"its gate report was made for {report.gate}, but the contract's gate is now "
                f"{gate_digest}: judge it again (retrain)"]  # fmt: skip
    return report.failures()


def format_report(report: GateReport) -> str:
    """The checks table, the verdict and the slices table, as `pipelines.train` prints it."""
    champion = "-" if report.champion is None else f"version {report.champion}"
    threshold = "-" if report.threshold is None else f"{report.threshold:g}"
    lines = [f"gate {report.gate}: {report.holdout_rows} holdout rows, champion {champion}, "
             f"flag threshold {threshold}, latency on {report.runtime}", ""]  # fmt: skip
    rows = [
        (c.check, "-" if c.figure is None else f"{c.figure:.4g}", f"{c.op} {c.threshold:.4g}",
         "pass" if c.passed else "FAIL", c.detail)
        for c in report.checks
    ]  # fmt: skip
    lines += text_table(("CHECK", "FIGURE", "THRESHOLD", "RESULT", "DETAIL"), rows).splitlines()
    failed = [c.check for c in report.checks if not c.passed]
    lines.append("")
    lines.append(f"gate: FAILED ({', '.join(failed)})" if failed else "gate: passed")
    if report.slices:
        names = sorted({m for s in report.slices for m in s.metrics})
        rows = [
            (s.slicing, s.slice, s.rows, s.negatives, s.positives, "yes" if s.judged else "no",
             *(figure(s.metrics.get(m)) for m in names))
            for s in report.slices
        ]  # fmt: skip
        lines.append("")
        headers = ("SLICING", "SLICE", "ROWS", "NEG", "POS", "JUDGED", *names)
        lines += text_table(headers, rows).splitlines()
    return "\n".join(lines)
