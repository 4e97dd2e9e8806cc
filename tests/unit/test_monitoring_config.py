"""configs/monitoring: the Grafana dashboard's queries name real metrics; Prometheus' config
passes promtool."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from sluice.config import REPO_ROOT
from sluice.metrics import COMPARE_GAUGES, DRIFT_GAUGES, FAMILIES

MONITORING = REPO_ROOT / "configs" / "monitoring"
DASHBOARD = json.loads((MONITORING / "sluice-dashboard.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
METRIC = re.compile(r"\b(?:ray_)?sluice_[a-z_]+\b")


def exported_names() -> set[str]:
    """Every series name Sluice exports: Ray's ``ray_`` names (histograms as their
    _bucket/_sum/_count series) and the drift gauges."""
    names = set(DRIFT_GAUGES) | set(COMPARE_GAUGES)
    for fam in FAMILIES:
        if fam.kind == "histogram":
            names |= {fam.exported_name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(fam.exported_name)
    return names


def names_in(panel: dict) -> set[str]:
    return {m for t in panel["targets"] for m in METRIC.findall(t["expr"])}


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_every_panel_queries_metrics_that_exist(panel):
    assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    names = names_in(panel)
    assert names, f"panel {panel['title']!r} names no Sluice metric"
    unknown = names - exported_names()
    assert not unknown, f"panel {panel['title']!r} queries unknown metric(s) {sorted(unknown)}"
    for target in panel["targets"]:
        assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_a_panel_per_metric_family():
    queried = set().union(*(names_in(p) for p in PANELS))
    families = {f.exported_name for f in FAMILIES} | set(DRIFT_GAUGES) | set(COMPARE_GAUGES)
    bare = {re.sub(r"_(bucket|sum|count)$", "", n) for n in queried}
    assert families <= bare, f"no panel for {sorted(families - bare)}"


def test_panel_ids_and_positions_are_distinct():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    spots = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in DASHBOARD["panels"]]
    assert len(spots) == len(set(spots))


def test_the_checker_catches_an_unknown_metric():
    broken = {"title": "typo", "targets": [{"expr": "rate(ray_sluice_rows_scord_total[5m])"}]}
    with pytest.raises(AssertionError, match="unknown metric"):
        test_every_panel_queries_metrics_that_exist(broken)


def test_prometheus_config_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    ok = subprocess.run([promtool, "check", "config", str(MONITORING / "prometheus.yml")],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "prometheus.yml"
    broken.write_text((MONITORING / "prometheus.yml").read_text()
                      .replace("file_sd_configs", "file_sd_config"))  # fmt: skip
    bad = subprocess.run([promtool, "check", "config", str(broken)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert bad.returncode != 0
