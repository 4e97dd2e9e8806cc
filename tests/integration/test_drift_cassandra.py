"""`sluice drift` end to end on the real Cassandra: scored rows in, verdict, metrics, retrain.

The "no drift" rows come from the same generated world as the training rows, later in
time (the last week of four), scored with a feature store holding the earlier weeks, as
in production. Two independently seeded small data sets would be two different worlds:
their card populations alone move the country (currency) mix by a PSI of 0.1-0.2.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pipelines.train import TrainConfig, train_on
from sluice.cli import app
from sluice.contract import SCORED_COLUMNS, load_contract
from sluice.datagen import DEFAULT_START, DriftShift, generate_dataset, write_parquet
from sluice.drift import Source, read_recent
from sluice.features import InMemoryFeatureStore, to_store_events
from sluice.models import ModelRegistry
from sluice.scoring import Scorer
from sluice.store import (
    PREDICTION_LOG_TABLE,
    CassandraWriter,
    WriteOptions,
    apply_schema,
    prediction_rows,
    schema_change,
    session_for,
)

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_drift"
WEEK = timedelta(days=7)
SHIFT = DriftShift(amount_scale=3.0, country_weights={"BR": 30, "IN": 30}, active_hours=(0, 6))
runner = CliRunner()


@pytest.fixture(scope="module")
def env(local_services, platform_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    cfg = platform_config.model_copy(update={
        "cassandra": platform_config.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": platform_config.registry.model_copy(update={"root_uri": str(root / "reg")}),
    })  # fmt: skip
    config_file = root / "platform.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    session = session_for(cfg.cassandra)
    schema_change(session, f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    contract = load_contract("fraud")
    apply_schema(session, cfg.cassandra, [contract])

    # One world over four weeks: the champion learns the first three, the last is "now".
    world = generate_dataset(10_000, seed=5, duration_s=4 * WEEK.days * 86_400).table
    cut = pa.scalar(DEFAULT_START + 3 * WEEK, pa.timestamp("us", tz="UTC"))
    history = world.filter(pc.less(world["event_time"], cut))
    registry = ModelRegistry.from_config(cfg)
    champion = train_on(history, TrainConfig(epochs=3, seed=3), registry, source="history")
    assert (champion.version, champion.alias) == (1, "champion")
    store = InMemoryFeatureStore()
    store.record(to_store_events(history, contract.features))
    later = (
        Scorer(contract, registry, store)
        .score(world.filter(pc.greater_equal(world["event_time"], cut)))
        .scored
    )
    shifted = (
        Scorer(contract, registry, InMemoryFeatureStore())
        .score(generate_dataset(3_000, seed=6, shift=SHIFT).table)
        .scored
    )
    return {"cfg": cfg, "config_file": config_file, "session": session, "contract": contract,
            "registry": registry, "later": later, "shifted": shifted, "root": root}  # fmt: skip


def write_predictions(env, scored: pa.Table, scored_at: datetime, version: str | None = None):
    """Scorer rows into the predictions table, through the library's own row builder."""
    rows = prediction_rows(env["contract"], scored, scored_at)
    if version is not None:  # rows of another model version, e.g. a previous champion
        rows = rows.set_column(rows.schema.get_field_index("model_version"), "model_version",
                               pa.array([version] * rows.num_rows, pa.string()))  # fmt: skip
    writer = CassandraWriter(env["session"], KEYSPACE, env["contract"].output.predictions_table,
                             rows.column_names, WriteOptions(concurrency=32))  # fmt: skip
    writer.write(rows)


def write_log(env, scored: pa.Table, logged_at: datetime) -> None:
    """Scorer rows as online prediction-log rows (PREDICTION_LOG_TABLE's columns)."""
    names = [n for n in scored.column_names if n not in SCORED_COLUMNS]
    features = pa.array(
        [list(zip(names, vals, strict=True))
         for vals in zip(*(scored[n].to_pylist() for n in names), strict=True)],
        pa.map_(pa.string(), pa.float64()),
    )  # fmt: skip
    n = scored.num_rows
    rows = pa.table({
        "log_id": pa.array([f"log-{k}" for k in scored["key"].to_pylist()], pa.string()),
        "request_id": pa.array([f"req-{k}" for k in scored["key"].to_pylist()], pa.string()),
        "row_key": scored["key"],
        "api_key": pa.array(["test"] * n, pa.string()),
        "contract": pa.array(["fraud"] * n, pa.string()),
        "model_version": scored["model_version"],
        "features": features,
        "score": scored["score"],
        "latency_ms": pa.array(np.full(n, 2.5), pa.float64()),
        "logged_at": pa.array([logged_at] * n, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    CassandraWriter(env["session"], KEYSPACE, PREDICTION_LOG_TABLE.name, rows.column_names,
                    WriteOptions(concurrency=32)).write(rows)  # fmt: skip


def reset(env) -> None:
    for table in (env["contract"].output.predictions_table, PREDICTION_LOG_TABLE.name):
        env["session"].execute(f"TRUNCATE {KEYSPACE}.{table}", timeout=120)


def drift_cli(env, *args: str):
    result = runner.invoke(app, ["drift", "--config", str(env["config_file"]), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def verdicts(output: str) -> dict[str, str]:
    """FEATURE -> VERDICT from the printed table."""
    names = set(load_contract("fraud").feature_names)
    return {p[0]: p[-1] for p in (line.split() for line in output.splitlines())
            if p and p[0] in names}  # fmt: skip


def test_same_world_later_is_not_drift_and_the_window_and_version_filters_hold(env):
    reset(env)
    now = datetime.now(UTC)
    later, shifted = env["later"], env["shifted"]
    write_predictions(env, later, now)
    write_predictions(env, shifted.slice(0, 1000), now - timedelta(hours=3))  # out of window
    write_predictions(env, shifted.slice(1000, 700), now, version="fraud/99")  # another model

    result = drift_cli(env, "--window", "1h", "--source", "predictions")
    assert result.exit_code == 0, result.output
    assert f"rows {later.num_rows} (predictions {later.num_rows})" in result.output
    assert "left out 700 rows scored by other versions (fraud/99: 700)" in result.output
    got = verdicts(result.output)
    assert set(got) == set(env["contract"].feature_names)
    assert "drift" not in got.values(), result.output
    assert "no drift" in result.output

    # The same rows straight from the library: the window and version filters.
    recent = read_recent(
        env["session"], KEYSPACE, env["contract"], model_version="fraud/1",
        feature_names=env["contract"].feature_names, since=now - timedelta(hours=4),
        source=Source.PREDICTIONS,
    )  # fmt: skip
    assert recent.rows == later.num_rows + 1000
    assert recent.other_versions == {"fraud/99": 700}
    written = pa.concat_tables([later, shifted.slice(0, 1000)])["amount"].to_numpy()
    np.testing.assert_array_equal(np.sort(recent.columns["amount"]), np.sort(written))


def test_shifted_inputs_are_drift_with_metrics_for_node_exporter(env, tmp_path):
    reset(env)
    now = datetime.now(UTC)
    shifted = env["shifted"]
    write_predictions(env, shifted.slice(0, 2500), now)
    write_log(env, shifted.slice(2500, 300), now)
    metrics = tmp_path / "textfile" / "sluice_drift.prom"

    result = drift_cli(env, "--window", "1h", "--metrics-file", str(metrics))
    assert result.exit_code == 3, result.output
    assert "rows 2800 (predictions 2500, prediction_log 300)" in result.output
    got = verdicts(result.output)
    for feature in ("amount", "amount_log1p_z", "hour_of_day", "currency_idx"):
        assert got[feature] == "drift", result.output
    assert got["channel_idx"] != "drift"  # the shift leaves channels alone

    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    psi = {s.labels["feature"]: s.value for s in families["sluice_drift_psi"].samples}
    assert set(psi) == set(env["contract"].feature_names)
    assert all(s.labels["contract"] == "fraud" for s in families["sluice_drift_psi"].samples)
    assert psi["hour_of_day"] > 1.0 and psi["channel_idx"] < 0.1
    ks = {s.labels["feature"]: s.value for s in families["sluice_drift_ks"].samples}
    assert ks["hour_of_day"] > 0.5
    (rows,) = families["sluice_drift_rows"].samples
    assert (rows.labels, rows.value) == ({"contract": "fraud"}, 2800)
    assert families["sluice_drift_detected"].samples[0].value == 1

    # Online rows alone are too few for a verdict: a clear message and exit 0.
    alone = drift_cli(env, "--window", "1h", "--source", "prediction_log",
                      "--metrics-file", str(metrics))  # fmt: skip
    assert alone.exit_code == 0, alone.output
    assert "too few rows: 300 < min_rows 500" in alone.output
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["sluice_drift_rows"].samples[0].value == 300
    assert not families["sluice_drift_psi"].samples  # no stale figures from the run before
    assert not families["sluice_drift_detected"].samples


def test_retrain_needs_labels(env):
    result = drift_cli(env, "--retrain")
    assert result.exit_code == 2
    assert "--retrain needs --labels" in result.output


def _champion(registry: ModelRegistry) -> int:
    return registry.resolve("fraud@champion")[1]


def test_retrain_on_drift_registers_a_challenger_and_the_gate_decides(env):
    reset(env)
    write_predictions(env, env["shifted"], datetime.now(UTC))
    registry, root = env["registry"], env["root"]
    labelled = generate_dataset(8_000, seed=7, shift=SHIFT).table
    write_parquet(labelled, root / "labels.parquet")

    result = drift_cli(env, "--window", "1h", "--retrain", "--labels",
                       str(root / "labels.parquet"), "--epochs", "4")  # fmt: skip
    assert result.exit_code == 3, result.output
    versions = registry.manifest("fraud").versions
    new = versions[-1]
    assert new.version == 2
    auc, champion_auc = new.metrics["holdout_auc"], new.metrics["champion_holdout_auc"]
    # The gate: champion only if it passes every check of the contract's promotion gate
    # and beats the champion on the same (shifted) holdout; the report is printed.
    report = registry.show("fraud/2").meta.gate
    assert report is not None and report.champion == 1
    assert (_champion(registry) == 2) == (report.passed and auc > champion_auc), result.output
    assert f"gate {report.gate}: 1600 holdout rows, champion version 1" in result.output
    assert ("gate: passed" if report.passed else "gate: FAILED") in result.output
    assert "slices.card_country_vs_country.fpr_difference" in result.output
    events = [(e.action, e.alias, e.version) for e in registry.manifest("fraud").events]
    assert events[-1][2] == 2
    print(result.output)

    # Garbage labels (shuffled in the training part; the holdout keeps the true ones):
    # the new model learns noise, loses to the champion and must not be promoted.
    before = _champion(registry)
    labels = labelled.sort_by([("event_time", "ascending")])
    y = labels["is_fraud"].to_numpy().copy()
    cut = int(round(len(y) * 0.8))
    y[:cut] = np.random.default_rng(0).permutation(y[:cut])
    garbage = labels.set_column(labels.schema.get_field_index("is_fraud"), "is_fraud",
                                pa.array(y, pa.int8()))  # fmt: skip
    write_parquet(garbage, root / "garbage.parquet")
    # The window's rows were scored by fraud/1, which may no longer be the champion.
    result = drift_cli(env, "--window", "1h", "--model", "fraud/1", "--retrain", "--labels",
                       str(root / "garbage.parquet"), "--epochs", "4")  # fmt: skip
    assert result.exit_code == 3, result.output
    manifest = registry.manifest("fraud")
    bad = manifest.versions[-1]
    assert bad.version == 3
    assert bad.metrics["holdout_auc"] < bad.metrics["champion_holdout_auc"]
    assert _champion(registry) == before
    assert manifest.aliases["challenger"] == 3
    assert "fraud/3 -> fraud@challenger" in result.output
    (verdict,) = [line for line in result.output.splitlines() if line.startswith("gate: ")]
    assert verdict.startswith("gate: FAILED (") and "auc_vs_champion" in verdict  # noise loses
