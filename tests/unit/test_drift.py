"""Drift: PSI/KS math by hand, bins, missing values, verdicts, metrics, reading, CLI, retraining.

No services: the Cassandra read runs against a small fake session behind the driver's
prepare/bind/execute calls.
"""

from __future__ import annotations

import math
import subprocess
import sys
import typing
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from cassandra import InvalidRequest, OperationTimedOut
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from sluice.cli import app
from sluice.cli.drift import SourceName, format_report
from sluice.contract import DriftSpec, load_contract
from sluice.datagen import COUNTRIES, DriftShift, generate_dataset, write_parquet
from sluice.drift import (
    PSI_EPSILON,
    Source,
    Verdict,
    bin_values,
    binned_ks,
    check_labels_file,
    drift_registry,
    drift_report,
    feature_drift,
    parse_window,
    psi,
    read_labels,
    read_recent,
    reference_counts,
    token_ranges,
    write_metrics,
)
from sluice.errors import ConfigError, StoreUnavailable, ValidationFailed
from sluice.features import FeatureMatrix, FeatureReference, ReferenceStatistics
from sluice.features import reference_statistics as fit_reference

SPEC = DriftSpec(psi_threshold=0.2, ks_threshold=0.1, min_rows=10)


def ref(edges: tuple[float, ...], counts: tuple[int, ...], missing: int = 0) -> FeatureReference:
    """A hand-made reference (only the fields the drift math reads matter)."""
    return FeatureReference(
        count=sum(counts), missing=missing, mean=None, std=None, min=None, max=None,
        quantile_levels=(), quantiles=(), bin_edges=edges, bin_counts=counts,
    )  # fmt: skip


TWO_BINS = ref((0.0, 1.0, 2.0), (50, 50))


def values(*groups: tuple[float, int]) -> np.ndarray:
    return np.concatenate([np.full(n, v, dtype=np.float64) for v, n in groups])


# --- PSI and KS over counts ---------------------------------------------------------------


def test_psi_of_identical_shares_is_zero():
    assert psi(np.array([10, 30, 60]), np.array([10, 30, 60])) == 0.0
    assert psi(np.array([10, 30, 60]), np.array([1, 3, 6])) == pytest.approx(0.0, abs=1e-15)


def test_psi_of_a_known_shift_matches_the_hand_computed_value():
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
    want = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.27465, abs=1e-5)


def test_psi_takes_an_empty_bin_as_epsilon():
    # expected 1.0/0.0, actual 0.5/0.5: the empty expected bin counts as 1e-4.
    want = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert psi(np.array([100, 0]), np.array([50, 50])) == pytest.approx(want, rel=1e-12)
    assert psi(np.array([0, 100, 0]), np.array([0, 7, 0])) == 0.0  # both empty: no term


@pytest.mark.parametrize("expected, actual", [([1, 2], [1, 2, 3]), ([0, 0], [1, 1]), ([1], [0])])
def test_psi_refuses_mismatched_or_empty_counts(expected, actual):
    with pytest.raises(ValueError):
        psi(np.array(expected), np.array(actual))


def test_binned_ks_is_the_largest_cdf_gap_at_the_edges():
    # CDFs at the two inner edges: 0.25, 0.5 vs 0.5, 0.75 -> 0.25
    assert binned_ks(np.array([1, 1, 2]), np.array([2, 1, 1])) == pytest.approx(0.25)
    assert binned_ks(np.array([5, 5]), np.array([1, 1])) == 0.0
    assert binned_ks(np.array([5]), np.array([3])) is None  # one bin: no edge to compare at
    assert binned_ks(np.array([0, 0]), np.array([1, 1])) is None


# --- bins: open ends, missing values, agreement with the reference -------------------------


def test_values_outside_the_edges_fall_in_the_open_first_and_last_bins():
    reference = ref((0.0, 1.0, 2.0, 3.0), (1, 1, 1))
    x = np.array([-5.0, 0.0, 0.5, 1.0, 2.999, 3.0, 100.0, np.nan, np.inf, -np.inf])
    counts = bin_values(x, reference)
    assert counts.finite.tolist() == [3, 1, 3]  # -5, 0, 0.5 | 1 | 2.999, 3, 100
    assert counts.missing == 3  # NaN and both infinities


def test_training_values_land_in_the_bins_the_reference_counted():
    rng = np.random.default_rng(1)
    gappy = np.where(rng.random(5000) < 0.2, np.nan, rng.normal(size=5000))
    matrix = np.column_stack([rng.lognormal(3, 1, 5000), rng.integers(0, 4, 5000), gappy,
                              np.full(5000, 2.5)])  # fmt: skip
    fm = FeatureMatrix(matrix.astype(np.float32), ("amount", "idx", "gappy", "constant"))
    reference = fit_reference(fm)
    for j, name in enumerate(fm.names):
        counts = bin_values(fm.values[:, j], reference.features[name])
        assert counts.finite.tolist() == reference_counts(reference.features[name]).finite.tolist()
        if name != "constant":  # its reference adds an empty "other" bin
            assert counts.finite.tolist() == list(reference.features[name].bin_counts), name
        assert counts.missing == reference.features[name].missing
        got = feature_drift(name, fm.values[:, j], reference.features[name], SPEC)
        assert (got.psi, got.ks, got.verdict) == (0.0, 0.0, Verdict.OK)


def test_a_feature_constant_in_training_drifts_when_other_values_arrive():
    fm = FeatureMatrix(np.zeros((2000, 1), np.float32), ("flag",))
    reference = fit_reference(fm).features["flag"]
    same = feature_drift("flag", np.zeros(500, np.float32), reference, SPEC)
    assert (same.psi, same.verdict) == (0.0, Verdict.OK)
    for value in (5.0, -3.0):
        moved = feature_drift("flag", np.full(500, value, np.float32), reference, SPEC)
        assert moved.psi > 1.0 and moved.ks == 1.0 and moved.verdict is Verdict.DRIFT, moved
    half = feature_drift("flag", np.r_[np.zeros(250), np.ones(250)].astype(np.float32),
                         reference, SPEC)  # fmt: skip
    assert half.ks == 0.5 and half.verdict is Verdict.DRIFT


def test_missing_values_are_a_bin_of_their_own():
    # Reference: no missing values; now 10% NaN -> shares 0.45/0.45/0.10 vs 0.5/0.5/0.
    got = feature_drift("x", values((0.5, 45), (1.5, 45), (np.nan, 10)), TWO_BINS, SPEC)
    want = 2 * (0.45 - 0.5) * math.log(0.45 / 0.5) + (0.1 - PSI_EPSILON) * math.log(
        0.1 / PSI_EPSILON
    )
    assert got.psi == pytest.approx(want, rel=1e-12)
    assert (got.rows, got.missing, got.ks, got.verdict) == (90, 10, 0.0, Verdict.DRIFT)


def test_a_feature_never_finite_in_training_drifts_when_values_arrive():
    empty = ref((), (), missing=100)
    assert reference_counts(empty).finite.tolist() == [0.0]
    got = feature_drift("x", values((3.0, 50), (np.nan, 50)), empty, SPEC)
    assert got.verdict is Verdict.DRIFT and got.ks is None
    same = feature_drift("x", values((np.nan, 20)), empty, SPEC)
    assert (same.psi, same.verdict) == (0.0, Verdict.OK)


# --- verdicts and the report ---------------------------------------------------------------


def test_known_shift_gives_the_known_psi_and_ks_and_a_drift_verdict():
    got = feature_drift("x", values((0.2, 25), (1.7, 75)), TWO_BINS, SPEC)
    assert got.psi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12)
    assert got.ks == pytest.approx(0.25)
    assert (got.rows, got.missing, got.verdict) == (100, 0, Verdict.DRIFT)


def test_psi_at_the_threshold_is_not_drift_above_it_is():
    x = values((0.2, 25), (1.7, 75))
    exact = psi(np.array([50, 50, 0]), np.array([25, 75, 0]))
    assert feature_drift("x", x, TWO_BINS, DriftSpec(psi_threshold=exact, ks_threshold=None)
                         ).verdict is Verdict.OK  # fmt: skip
    just_below = DriftSpec(psi_threshold=exact - 1e-9, ks_threshold=None)
    assert feature_drift("x", x, TWO_BINS, just_below).verdict is Verdict.DRIFT


def test_ks_above_its_threshold_warns_but_psi_decides():
    x = values((0.2, 40), (1.7, 60))  # PSI 0.04, KS 0.1 + a hair
    spec = DriftSpec(psi_threshold=0.2, ks_threshold=0.05)
    got = feature_drift("x", x, TWO_BINS, spec)
    assert got.psi < 0.2 and got.ks == pytest.approx(0.1)
    assert got.verdict is Verdict.WARN
    assert feature_drift("x", x, TWO_BINS, spec.model_copy(update={"ks_threshold": None})
                         ).verdict is Verdict.OK  # fmt: skip


def _reference() -> ReferenceStatistics:
    return ReferenceStatistics(rows=100, features={"a": TWO_BINS, "b": TWO_BINS})


def test_report_judges_every_reference_feature_and_names_the_drifted_ones():
    cols = {"a": values((0.5, 50), (1.5, 50)), "b": values((0.5, 10), (1.5, 90))}
    report = drift_report(cols, _reference(), SPEC, contract="fraud", model_version="fraud/1")
    assert report.enough_rows and report.rows == 100
    assert [f.feature for f in report.features] == ["a", "b"]
    assert report.drifted == ("b",) and report.warned == ()
    text = format_report(report)
    assert "drift: PSI above 0.2 on 1 of 2 features: b" in text
    assert text.splitlines()[0].split() == ["FEATURE", "ROWS", "MISSING", "PSI", "KS", "VERDICT"]


def test_a_feature_absent_from_the_rows_counts_as_missing():
    report = drift_report({"a": values((0.5, 50), (1.5, 50))}, _reference(), SPEC,
                          contract="fraud", model_version="fraud/1")  # fmt: skip
    b = report.features[1]
    assert (b.rows, b.missing, b.verdict) == (0, 100, Verdict.DRIFT)


def test_too_few_rows_give_no_verdict():
    cols = {"a": values((5.0, 9)), "b": values((5.0, 9))}  # far off, but only 9 rows
    report = drift_report(cols, _reference(), SPEC, contract="fraud", model_version="fraud/1")
    assert not report.enough_rows and report.features == () and report.drifted == ()
    nothing = drift_report({}, _reference(), SPEC, contract="fraud", model_version="fraud/1")
    assert nothing.rows == 0 and not nothing.enough_rows


def test_report_refuses_ragged_columns_and_unknown_features():
    with pytest.raises(ValueError, match="differ in length"):
        drift_report({"a": np.zeros(3), "b": np.zeros(4)}, _reference(), SPEC,
                     contract="fraud", model_version="fraud/1")  # fmt: skip
    with pytest.raises(ValueError, match="no statistics"):
        drift_report({}, _reference(), SPEC, contract="fraud", model_version="fraud/1",
                     features=["zz"])  # fmt: skip


# --- window, token ranges, metrics ----------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("1h", 3600), ("2d", 172_800), ("1h30m", 5400), (" 1H ", 3600),
])  # fmt: skip
def test_parse_window(text, seconds):
    assert parse_window(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "-1h", "0h", "1h junk", "1.5h"])
def test_parse_window_refuses_bad_text(text):
    with pytest.raises(ValueError, match="window"):
        parse_window(text)


@pytest.mark.parametrize("splits", [1, 2, 16, 7])
def test_token_ranges_cover_the_ring_without_overlap(splits):
    ranges = token_ranges(splits)
    assert len(ranges) == splits
    assert ranges[0][0] == -(2**63) and ranges[-1][1] == 2**63 - 1
    for (_, hi), (lo, _) in zip(ranges, ranges[1:], strict=False):
        assert lo == hi + 1


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_have_the_expected_names_and_labels(tmp_path):
    cols = {"a": values((0.5, 50), (1.5, 50)), "b": values((0.5, 10), (1.5, 90))}
    report = drift_report(cols, _reference(), SPEC, contract="fraud", model_version="fraud/1")
    fams = _families(generate_latest(drift_registry(report, now_s=1.0)).decode())
    psi_samples = {s.labels["feature"]: s for s in fams["sluice_drift_psi"].samples}
    assert set(psi_samples) == {"a", "b"}
    assert psi_samples["b"].labels == {"contract": "fraud", "feature": "b"}
    assert psi_samples["b"].value == pytest.approx(report.features[1].psi)
    assert {s.labels["feature"] for s in fams["sluice_drift_ks"].samples} == {"a", "b"}
    assert [(s.labels, s.value) for s in fams["sluice_drift_rows"].samples] == [
        ({"contract": "fraud"}, 100.0)
    ]
    assert fams["sluice_drift_detected"].samples[0].value == 1.0
    assert fams["sluice_drift_last_run_timestamp_seconds"].samples[0].value == 1.0
    path = write_metrics(report, tmp_path / "textfile" / "drift.prom")
    assert set(_families(path.read_text())) == set(fams)


def test_metrics_without_a_verdict_carry_only_the_row_count():
    report = drift_report({"a": np.zeros(3), "b": np.zeros(3)}, _reference(), SPEC,
                          contract="fraud", model_version="fraud/1")  # fmt: skip
    fams = _families(generate_latest(drift_registry(report)).decode())
    assert fams["sluice_drift_rows"].samples[0].value == 3
    assert not fams["sluice_drift_psi"].samples and not fams["sluice_drift_detected"].samples


# --- reading the tables (a fake session) ----------------------------------------------------


class FakeSession:
    """prepare/bind/execute as the driver has them; every row sits in the first token range."""

    def __init__(self, rows, fail_first: BaseException | None = None, missing_table=False):
        self.rows, self.fail_first, self.missing_table = rows, fail_first, missing_table
        self.cql: list[str] = []
        self.executed: list[tuple] = []

    def prepare(self, cql):
        if self.missing_table:
            raise InvalidRequest("unconfigured table predictions")
        self.cql.append(cql)
        return self

    def bind(self, params):
        return type("Bound", (), {"params": params, "fetch_size": None})()

    def execute(self, bound, timeout=None):
        self.executed.append(bound.params)
        rows = list(self.rows) if bound.params[0] == -(2**63) else []
        if self.fail_first is not None:  # fails mid-read: after a page's first rows
            exc, self.fail_first = self.fail_first, None
            return _fail_after(rows[:2], exc)
        return rows


def _fail_after(rows, exc):
    yield from rows
    raise exc


SINCE = datetime(2030, 1, 1, tzinfo=UTC)
ROWS = [
    ("fraud/1", {"a": 1.0, "b": 2.0}),
    ("fraud/1", {"a": 3.0}),  # b absent
    ("fraud/1", None),  # no features at all
    ("fraud/2", {"a": 9.0, "b": 9.0}),
]


def test_read_recent_keeps_one_version_and_fills_absent_features_with_nan():
    session = FakeSession(ROWS)
    recent = read_recent(session, "ks", load_contract("fraud"), model_version="fraud/1",
                         feature_names=["a", "b"], since=SINCE, source=Source.PREDICTIONS,
                         splits=4)  # fmt: skip
    assert recent.rows == 3 and recent.rows_by_source == {"predictions": 3}
    assert recent.other_versions == {"fraud/2": 1}
    np.testing.assert_array_equal(recent.columns["a"], [1.0, 3.0, np.nan])
    np.testing.assert_array_equal(recent.columns["b"], [2.0, np.nan, np.nan])
    (cql,) = session.cql
    assert "FROM ks.predictions WHERE token(transaction_id) >= ?" in cql
    assert "scored_at >= ?" in cql and cql.endswith("ALLOW FILTERING")
    assert len(session.executed) == 4 and all(p[2] == SINCE for p in session.executed)


def test_read_recent_both_sources_filters_the_log_by_contract():
    session = FakeSession(ROWS)
    recent = read_recent(session, "ks", load_contract("fraud"), model_version="fraud/1",
                         feature_names=["a"], since=SINCE, splits=2)  # fmt: skip
    assert recent.rows_by_source == {"predictions": 3, "prediction_log": 3}
    log_cql = session.cql[1]
    assert "FROM ks.prediction_log WHERE token(log_id)" in log_cql
    assert "logged_at >= ? AND contract = ?" in log_cql
    assert session.executed[-1][3] == "fraud"


def test_read_recent_retries_a_range_without_counting_it_twice():
    session = FakeSession(ROWS, fail_first=OperationTimedOut("slow"))
    recent = read_recent(session, "ks", load_contract("fraud"), model_version="fraud/1",
                         feature_names=["a"], since=SINCE, source=Source.PREDICTIONS,
                         splits=2)  # fmt: skip
    assert recent.rows == 3 and len(session.executed) == 3
    np.testing.assert_array_equal(recent.columns["a"], [1.0, 3.0, np.nan])  # each row once


def test_read_recent_errors_name_the_table_and_the_fix():
    contract = load_contract("fraud")
    with pytest.raises(ConfigError, match="sluice schema apply"):
        read_recent(FakeSession(ROWS, missing_table=True), "ks", contract,
                    model_version="fraud/1", feature_names=["a"], since=SINCE)  # fmt: skip
    with pytest.raises(StoreUnavailable, match="ks.predictions"):
        read_recent(FakeSession(ROWS, fail_first=ValueError("bad")), "ks", contract,
                    model_version="fraud/1", feature_names=["a"], since=SINCE)  # fmt: skip
    with pytest.raises(ValueError, match="timezone"):
        read_recent(FakeSession(ROWS), "ks", contract, model_version="fraud/1",
                    feature_names=["a"], since=datetime(2030, 1, 1))  # fmt: skip


# --- the command line ------------------------------------------------------------------------

runner = CliRunner()


def test_cli_source_choices_are_the_library_sources():
    assert typing.get_args(SourceName) == tuple(s.value for s in Source)


@pytest.mark.parametrize("args, message", [
    (["--retrain"], "--retrain needs --labels"),
    (["--labels", "x.parquet"], "only with --retrain"),
    (["--window", "soon"], "window 'soon'"),
    (["--source", "kafka"], "kafka"),
])  # fmt: skip
def test_cli_refuses_bad_arguments_before_any_io(args, message):
    result = runner.invoke(app, ["drift", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


def test_cli_runs_as_a_module_for_ray_job_entrypoints():
    done = subprocess.run([sys.executable, "-m", "sluice.cli.drift", "--retrain"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "--retrain needs --labels" in " ".join(done.stderr.replace("│", " ").split())


def test_cli_without_a_model_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["drift", "--registry", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "error: model 'fraud' is not in the registry" in result.output


# --- labels for a retrain ------------------------------------------------------------------


def test_read_labels_keeps_valid_labelled_rows(tmp_path):
    data = generate_dataset(400, seed=4, invalid_fraction=0.05)
    table = data.table
    labels = table["is_fraud"].to_pylist()
    labels[0] = None  # a row whose label has not arrived
    table = table.set_column(table.schema.get_field_index("is_fraud"), "is_fraud",
                             pa.array(labels, pa.int8()))  # fmt: skip
    path = write_parquet(table.append_column("extra", pa.array(range(400))), tmp_path / "l.pq")
    got = read_labels(path, load_contract("fraud"))
    bad = set(data.invalid_rows) | {0}  # duplicated keys among them: every copy is left out
    assert got.dropped == len(bad)
    assert got.table.num_rows == 400 - len(bad)
    assert got.table.schema == load_contract("fraud").arrow_schema
    assert got.table["is_fraud"].null_count == 0


def test_labels_file_without_the_label_or_not_parquet_is_refused(tmp_path):
    contract = load_contract("fraud")
    no_label = write_parquet(generate_dataset(10, seed=1).table.drop_columns(["is_fraud"]),
                             tmp_path / "n.pq")  # fmt: skip
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['is_fraud'\]"):
        check_labels_file(no_label, contract)
    (tmp_path / "t.pq").write_text("not parquet")
    with pytest.raises(ConfigError, match="cannot read it as Parquet"):
        read_labels(tmp_path / "t.pq", contract)


# --- the distribution shift of the generator -------------------------------------------------


def test_no_shift_is_the_training_world():
    assert generate_dataset(500, 3, shift=None).table.equals(generate_dataset(500, 3).table)
    assert generate_dataset(500, 3, shift=DriftShift()).table.equals(generate_dataset(500, 3).table)


def test_amount_scale_moves_only_amounts_and_keeps_labels():
    base = generate_dataset(2000, 3).table
    dear = generate_dataset(2000, 3, shift=DriftShift(amount_scale=3.0)).table
    want = np.round(np.clip(base["amount"].to_numpy() * 3.0, 0.5, 20_000.0), 2)
    np.testing.assert_array_equal(dear["amount"].to_numpy(), want)
    assert dear.drop_columns(["amount"]).equals(base.drop_columns(["amount"]))


def test_active_hours_and_country_weights_move_the_mix():
    shift = DriftShift(country_weights={"BR": 100}, active_hours=(1, 5))
    base, moved = generate_dataset(4000, 3).table, generate_dataset(4000, 3, shift=shift).table
    hours = pc.hour(moved["event_time"]).to_numpy()
    assert hours.min() >= 1 and hours.max() < 5
    assert pc.is_in(pc.hour(base["event_time"]), pa.array([0, 12, 23])).to_numpy().any()

    def share(t):
        return pc.mean(pc.equal(t["country"], "BR")).as_py()

    assert share(moved) > 0.5 > share(base)
    assert moved["event_time"].to_numpy().tolist() == sorted(moved["event_time"].to_numpy())


@pytest.mark.parametrize("kwargs", [
    {"amount_scale": 0}, {"amount_scale": float("nan")}, {"country_weights": {"XX": 1}},
    {"country_weights": {"US": -1}}, {"active_hours": (5, 5)}, {"active_hours": (0, 25)},
])  # fmt: skip
def test_bad_shift_is_refused(kwargs):
    with pytest.raises(ValueError):
        DriftShift(**kwargs)


def test_country_weights_of_zero_everywhere_are_refused():
    with pytest.raises(ValueError, match="weight 0"):
        DriftShift(country_weights=dict.fromkeys(COUNTRIES, 0.0)).country_p()


# --- retraining on a labelled table (pipelines.train.train_on) -------------------------------


def test_train_on_registers_behind_the_champion_gate(tmp_path):
    from pipelines.train import TrainConfig, train_on
    from sluice.models import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    # 6,000 rows: fewer leave the holdout too few cross-border rows for the gate to judge.
    table = generate_dataset(6000, seed=8).table
    first = train_on(table, TrainConfig(epochs=2, seed=1), registry, source="good.parquet")
    assert (first.version, first.alias, first.champion_auc) == (1, "champion", None)
    assert first.gate is not None and first.gate.passed, first.gate
    meta = registry.show("fraud/1").meta
    assert meta.train_params["labels"] == "good.parquet" and meta.train_params["rows"] == 6000
    assert "champion_holdout_auc" not in meta.metrics

    # Labels shuffled in the training part (the holdout keeps the true ones): noise loses.
    ordered = table.sort_by([("event_time", "ascending")])
    y = ordered["is_fraud"].to_numpy().copy()
    y[:4800] = np.random.default_rng(0).permutation(y[:4800])
    garbage = ordered.set_column(ordered.schema.get_field_index("is_fraud"), "is_fraud",
                                 pa.array(y, pa.int8()))  # fmt: skip
    second = train_on(garbage, TrainConfig(epochs=2, seed=1), registry, source="bad.parquet")
    assert (second.version, second.alias, second.previous_champion) == (2, "challenger", 1)
    assert second.holdout_auc < second.champion_auc
    assert registry.resolve("fraud@champion") == ("fraud", 1)
    metrics = registry.show("fraud/2").meta.metrics
    assert metrics["champion_holdout_auc"] == pytest.approx(second.champion_auc)


def test_train_on_refuses_tables_it_cannot_judge(tmp_path):
    from pipelines.train import TrainConfig, train_on
    from sluice.models import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    table = generate_dataset(1000, seed=8).table
    with pytest.raises(ConfigError, match="is_fraud"):
        train_on(table.drop_columns(["is_fraud"]), TrainConfig(), registry)
    with pytest.raises(ValidationFailed, match="too few"):
        train_on(table.slice(0, 100), TrainConfig(), registry)
    one_class = table.set_column(table.schema.get_field_index("is_fraud"), "is_fraud",
                                 pa.array(np.zeros(1000, np.int8)))  # fmt: skip
    with pytest.raises(ValidationFailed, match="both classes"):
        train_on(one_class, TrainConfig(), registry)
    assert not (tmp_path / "registry").exists() or not registry.list_models()


def test_labels_parquet_has_the_contract_columns(tmp_path):
    path = write_parquet(generate_dataset(20, seed=2).table, tmp_path / "ok.parquet")
    check_labels_file(path, load_contract("fraud"))
    assert pq.read_schema(path).names == load_contract("fraud").arrow_schema.names
