"""sluice.metrics: the one definition of every family, its labels and its local copy."""

from __future__ import annotations

import re

import pytest

from sluice import metrics
from sluice.metrics import FAMILIES, Family, error_class, models_in_use, record_rows


def test_family_names_labels_and_kinds_follow_prometheus_conventions():
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    for f in FAMILIES:
        assert re.fullmatch(r"sluice_[a-z_]+", f.name), f.name
        assert f.name.endswith("_total") == (f.kind == "counter"), f.name
        assert f.doc and all(re.fullmatch(r"[a-z_]+", t) for t in f.tags), f.name
        assert "le" not in f.tags and "quantile" not in f.tags


def test_labels_must_be_exactly_the_familys():
    fam = Family("counter", "sluice_unit_total", "unit", ["path", "contract"])
    with pytest.raises(ValueError, match="sluice_unit_total takes labels"):
        fam.inc(path="batch")
    with pytest.raises(ValueError, match="has no label"):
        fam.value(nope="x")
    fam.inc(2, path="batch", contract="fraud")
    fam.inc(3, path="stream", contract="fraud")
    fam.inc(0, path="stream", contract="fraud")  # a no-op, as in Ray (which refuses <= 0)
    assert fam.value(contract="fraud") == 5 and fam.value(path="stream") == 3
    assert fam.series() == {("batch", "fraud"): 2, ("stream", "fraud"): 3}


def test_histogram_counts_observations_into_buckets():
    fam = Family("histogram", "sluice_unit_seconds", "unit", ["path"], buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 7.0):
        fam.observe(v, path="batch")
    slot = fam._values[("batch",)]
    assert slot[:2] == [4, pytest.approx(7.65)] and slot[2:] == [2, 1, 1]  # le 0.1, 1, +Inf
    assert fam.value(path="batch") == 4


def test_observe_many_counts_as_one_observe_a_value():
    one = Family("histogram", "sluice_unit_one_seconds", "unit", ["job"], buckets=(0.1, 1.0))
    many = Family("histogram", "sluice_unit_many_seconds", "unit", ["job"], buckets=(0.1, 1.0))
    values = [0.05, 0.1, 0.5, 7.0, 1.0, 0.1000001]
    for v in values:
        one.observe(v, job="j")
    many.observe_many(values, job="j")
    many.observe_many([], job="j")
    assert many._values == one._values
    assert many._values[("j",)][2:] == [2, 3, 1]


class _Gauge:
    """What Ray's ``Gauge`` keeps of ``set``: the last value of each tag set."""

    def __init__(self) -> None:
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values[tuple(sorted(tags.items()))] = value


def test_histogram_reaches_ray_as_cumulative_bucket_count_and_sum_gauges():
    fam = Family("histogram", "sluice_unit_push_seconds", "unit", ["job"], buckets=(0.1, 1.0))
    bucket, count, total = fam._ray = (_Gauge(), _Gauge(), _Gauge())
    fam.observe(0.5, job="j")  # a new series: every bucket is set, 0.1's to 0
    assert bucket.values == {(("job", "j"), ("le", "0.1")): 0, (("job", "j"), ("le", "1.0")): 1,
                             (("job", "j"), ("le", "+Inf")): 1}  # fmt: skip
    fam.observe_many([0.05, 0.05, 3.0], job="j")
    fam.observe(2.0, job="j")  # sets +Inf only; the others keep their totals
    assert bucket.values == {(("job", "j"), ("le", "0.1")): 2, (("job", "j"), ("le", "1.0")): 3,
                             (("job", "j"), ("le", "+Inf")): 5}  # fmt: skip
    assert count.values == {(("job", "j"),): 5}
    assert total.values == {(("job", "j"),): pytest.approx(5.6)}


def test_record_rows_labels_by_path_and_source():
    before = metrics.ROWS_SCORED.value(source="batch:unit_metrics")
    record_rows("batch:unit_metrics", "fraud", "fraud/9", 10, {"expect_x:amount": 2})
    record_rows("batch:unit_metrics", "fraud", "fraud/9", 0, {"expect_x:amount": 1})
    assert metrics.ROWS_SCORED.value(path="batch", source="batch:unit_metrics",
                                     model_version="fraud/9") == before + 10  # fmt: skip
    assert metrics.ROWS_QUARANTINED.value(source="batch:unit_metrics",
                                          reason="expect_x:amount") == 3  # fmt: skip


@pytest.mark.parametrize(("status", "kind"), [
    (200, None), (304, None), (400, "validation"), (401, "auth"), (403, "auth"),
    (404, "validation"), (413, "validation"), (422, "validation"), (429, "overload"),
    (503, "overload"), (504, "timeout"), (499, "cancelled"), (500, "internal"),
    (502, "internal"),
])  # fmt: skip
def test_error_class_of_each_status(status, kind):
    assert error_class(status) == kind


def test_refresh_sets_every_series_again_with_its_totals():
    """Ray drops a gauge series not set for ~20 s: ``refresh`` (every REFRESH_S) sets all of
    a histogram's series again, every bucket, unchanged."""
    fam = Family("histogram", "sluice_unit_refresh_seconds", "unit", ["job"], buckets=(0.1, 1.0))
    bucket, count, total = fam._ray = (_Gauge(), _Gauge(), _Gauge())
    fam.observe(0.5, job="a")
    fam.observe_many([0.05, 3.0], job="b")
    for gauge in (bucket, count, total):
        gauge.values.clear()  # what Ray keeps once the series went stale
    fam.refresh()
    assert bucket.values == {
        (("job", "a"), ("le", "0.1")): 0, (("job", "a"), ("le", "1.0")): 1,
        (("job", "a"), ("le", "+Inf")): 1, (("job", "b"), ("le", "0.1")): 1,
        (("job", "b"), ("le", "1.0")): 1, (("job", "b"), ("le", "+Inf")): 2,
    }  # fmt: skip
    assert count.values == {(("job", "a"),): 1, (("job", "b"),): 2}
    assert total.values == {(("job", "a"),): 0.5, (("job", "b"),): pytest.approx(3.05)}


def test_refresh_sets_a_gauge_again_until_it_is_retired():
    """A plain gauge is refreshed like a histogram; ``retire`` sets it to 0 once and stops
    refreshing it, so Ray drops it."""
    fam = Family("gauge", "sluice_unit_refresh_gauge", "unit", ["job"])
    gauge = fam._ray = _Gauge()
    fam.set(7, job="a")
    fam.set(3, job="b")
    gauge.values.clear()
    fam.refresh()
    assert gauge.values == {(("job", "a"),): 7.0, (("job", "b"),): 3.0}
    fam.retire(job="a")
    assert gauge.values[(("job", "a"),)] == 0.0
    gauge.values.clear()
    fam.refresh()
    assert gauge.values == {(("job", "b"),): 3.0}
    assert fam.value(job="a") == 0 and fam.series() == {("b",): 3.0}


def test_models_in_use_retires_the_versions_a_worker_no_longer_holds():
    gauge = _Gauge()
    saved, metrics.MODEL_IN_USE._ray = metrics.MODEL_IN_USE._ray, gauge
    try:
        models_in_use("online", "swap", ["swap/1"])
        models_in_use("batch", "swap", ["swap/1"])
        models_in_use("online", "swap", ["swap/1", "swap/2"])  # a canary
        models_in_use("online", "swap", ["swap/2"])  # promoted, the canary turned off
    finally:
        metrics.MODEL_IN_USE._ray = saved
    assert {k: v for k, v in metrics.MODEL_IN_USE.series().items() if k[1] == "swap"} == {
        ("batch", "swap", "swap/1"): 1.0, ("online", "swap", "swap/2"): 1.0}

    def tags(path: str, version: str) -> tuple[tuple[str, str], ...]:
        return ("contract", "swap"), ("model_version", version), ("path", path)

    assert gauge.values == {tags("online", "swap/1"): 0.0,  # retired
                            tags("batch", "swap/1"): 1.0, tags("online", "swap/2"): 1.0}
