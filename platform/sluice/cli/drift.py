"""`sluice drift`: recent model inputs against the model's training reference; retrain on drift.

    sluice drift --contract fraud --window 1h [--source predictions|prediction_log|both]
                 [--model fraud/3] [--metrics-file PATH] [--retrain --labels PATH]

Exit status: 0 no drift, or too few rows for a verdict; 3 drift (a feature's PSI is
above the contract's ``drift.psi_threshold``), with or without a retrain; 1 an error
(store, registry, contract, or a failed retrain); 2 bad arguments.

Scheduled as a Ray job, e.g. hourly from cron (the check and the retrain run on the
cluster's head; ``python -m sluice.cli.drift`` is this command without relying on the
``sluice`` script being on the job's PATH; the labels file is any path or URI pyarrow
reads; the metrics file must be in the textfile directory of the head's node_exporter)::

    ray job submit --working-dir . -- python -m sluice.cli.drift --contract fraud \\
        --window 1h --metrics-file /var/lib/node_exporter/textfile/sluice_drift.prom \\
        --retrain --labels s3://bucket/labels/fraud-latest.parquet
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from sluice._text import figure
from sluice.cli._paths import child_env, user_path
from sluice.config import REPO_ROOT, load_platform_config
from sluice.errors import SluiceError

if TYPE_CHECKING:
    from sluice.drift import DriftReport

__all__ = ["EXIT_DRIFT", "SourceName", "drift", "format_report", "register"]

EXIT_DRIFT = 3
# The values of sluice.drift.Source, spelled out so that `sluice --help` does not import
# the Cassandra driver (a unit test keeps the two equal).
SourceName = Literal["predictions", "prediction_log", "both"]
KS_NOTE = "KS is binned: the largest CDF gap at the training bin edges (exact when discrete)."
MetricsFileOption = typer.Option(
    None, "--metrics-file",
    help="Write Prometheus gauges here (text format, for node_exporter's textfile collector).",
)  # fmt: skip
ConfigOption = typer.Option(None, "--config", help="Platform config file.")
SourceOption = typer.Option(
    "both", "--source", help="predictions (batch/stream), prediction_log (online), or both."
)


def register(app: typer.Typer) -> None:
    app.command("drift")(drift)


def _fail(exc: SluiceError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def format_report(report: DriftReport) -> str:
    """The per-feature table and the verdict line (what the command prints)."""
    headers = ("FEATURE", "ROWS", "MISSING", "PSI", "KS", "VERDICT")
    cells = [headers] + [
        (f.feature, str(f.rows), str(f.missing), figure(f.psi), figure(f.ks), f.verdict.value)
        for f in report.features
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (c.rjust(w) if i < 4 else c.ljust(w) for i, (c, w) in
                enumerate(zip(row[1:], widths[1:], strict=True), start=1))  # fmt: skip
        return "  ".join([first, *rest]).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    spec = report.spec
    if report.drifted:
        out.append(f"\ndrift: PSI above {spec.psi_threshold:g} on {len(report.drifted)} of "
                   f"{len(report.features)} features: {', '.join(report.drifted)}")  # fmt: skip
    else:
        out.append(f"\nno drift: every PSI is at most {spec.psi_threshold:g}")
    if report.warned:
        out.append(f"warn: KS above {spec.ks_threshold:g} on {', '.join(report.warned)}")
    out.append(KS_NOTE)
    return "\n".join(out)


def _retrain(contract: str, labels: str, registry_uri: str, epochs: int) -> int:
    """`python -m pipelines.train --labels ...` at the repository root, as `sluice batch`
    runs its job: the pipelines are Ray job code beside the library, not part of it."""
    from sluice.contract import contract_path

    cmd = [sys.executable, "-m", "pipelines.train",
           "--contract", user_path(contract_path(contract)), "--labels", user_path(labels),
           "--registry", user_path(registry_uri), "--epochs", str(epochs)]  # fmt: skip
    typer.echo(f"\nretrain: training on {labels} (the new version is champion only if it "
               "passes the contract's promotion gate and beats the champion on the same "
               "holdout)")  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          check=False)  # fmt: skip
    for text, err in ((done.stdout, False), (done.stderr, True)):
        if text.strip():
            typer.echo(text.rstrip(), err=err)
    return done.returncode


def drift(
    contract: str = typer.Option("fraud", "--contract", help="Contract name or YAML path."),
    window: str = typer.Option(
        "1h", "--window", help="How far back to read, by scoring time: 90s, 30m, 1h, 2d, 1h30m."
    ),
    source: SourceName = SourceOption,
    model: str | None = typer.Option(
        None,
        "--model",
        help="Version whose training reference applies; only the rows it scored are compared "
        "(default: the contract's model, e.g. fraud@champion).",
    ),  # fmt: skip
    metrics_file: Path | None = MetricsFileOption,
    retrain: bool = typer.Option(
        False, "--retrain", help="On drift, retrain on --labels and register the new version."
    ),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Parquet file of recent events with their labels (the contract's input columns "
        "and label): the predictions table has no labels, they arrive later.",
    ),  # fmt: skip
    epochs: int = typer.Option(6, "--epochs", min=1, help="Training epochs of a retrain."),
    config: Path | None = ConfigOption,
    registry: str | None = typer.Option(None, "--registry", help="Registry root URI or path."),
) -> None:
    """Compare recent inputs with the training reference: PSI and binned KS per feature.

    Exit status 3 when a feature's PSI is above the contract's drift.psi_threshold.
    """
    from sluice.drift import Source, parse_window

    try:
        span = parse_window(window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from exc
    if retrain and not labels:
        raise typer.BadParameter(
            "--retrain needs --labels PATH: the predictions table has no labels, so a retrain "
            "takes a Parquet file of recent events with their labels (the contract's input "
            "columns and label)", param_hint="--labels",
        )  # fmt: skip
    if labels and not retrain:
        raise typer.BadParameter("--labels is used only with --retrain", param_hint="--labels")
    # Imported here: the registry pulls in torch (seconds), which --help does not need.
    from sluice.contract import load_contract
    from sluice.drift import check_labels_file, drift_report, read_recent, write_metrics
    from sluice.models import ModelRegistry
    from sluice.store import session_for

    try:
        spec = load_contract(contract)
        cfg = load_platform_config(config)
        reg = ModelRegistry(registry) if registry else ModelRegistry.from_config(cfg)
        if labels:
            check_labels_file(labels, spec)  # refuse a bad file before a long scan
        name, version = reg.resolve(model or str(spec.model))
        meta = reg.show(f"{name}/{version}").meta
        since = datetime.now(UTC) - span
        recent = read_recent(
            session_for(cfg.cassandra), cfg.cassandra.keyspace, spec,
            model_version=f"{name}/{version}", feature_names=meta.feature_names,
            since=since, source=Source(source),
        )  # fmt: skip
    except SluiceError as exc:
        raise _fail(exc) from exc
    report = drift_report(
        recent.columns, meta.reference, spec.drift, contract=spec.name,
        model_version=recent.model_version, features=meta.feature_names,
    )  # fmt: skip
    per_source = ", ".join(f"{k} {v}" for k, v in recent.rows_by_source.items())
    typer.echo(f"contract {spec.name}, model {recent.model_version} ({model or spec.model}), "
               f"window {window} (scored since {since:%Y-%m-%d %H:%M:%S} UTC)")  # fmt: skip
    typer.echo(f"rows {recent.rows} ({per_source})")
    if recent.other_versions:
        others = ", ".join(f"{v}: {n}" for v, n in recent.other_versions.items())
        typer.echo(f"left out {sum(recent.other_versions.values())} rows scored by other "
                   f"versions ({others}); --model picks another version")  # fmt: skip
    if metrics_file is not None:
        typer.echo(f"metrics {write_metrics(report, metrics_file)}")
    if not report.enough_rows:
        typer.echo(f"too few rows: {report.rows} < min_rows {spec.drift.min_rows} of contract "
                   f"{spec.name}; no verdict (widen --window)")  # fmt: skip
        return
    typer.echo("")
    typer.echo(format_report(report))
    if not report.drifted:
        if retrain:
            typer.echo("no drift: no retrain")
        return
    if retrain:
        assert labels is not None
        if _retrain(contract, labels, reg.root_uri, epochs) != 0:
            typer.echo("error: the retrain failed (see above); nothing was promoted", err=True)
            raise typer.Exit(1)
    raise typer.Exit(EXIT_DRIFT)


if __name__ == "__main__":  # `python -m sluice.cli.drift ...` (a Ray job's entrypoint)
    typer.run(drift)
