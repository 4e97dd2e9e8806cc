"""The promotion gate end to end: a biased candidate is judged, refused, and forced with a
recorded reason; its model card shows the report and its lineage."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.train import TrainConfig, train_on
from sluice.cli import app
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.errors import ConfigError, PromotionRefused
from sluice.models import ModelRegistry
from sluice.models._lineage import contract_digest

ROWS = 8000
runner = CliRunner()


def _biased_labels(rows: int, channel: str, share: float) -> pa.Table:
    """Transactions whose *training* part (the earliest 80%) has `share` of the legitimate
    `channel` payments labelled fraud: a careless relabelling a model will learn. The
    holdout (the latest 20%) keeps the true labels, so the gate sees the harm."""
    table = generate_dataset(rows, seed=11).table.sort_by([("event_time", "ascending")])
    y = table["is_fraud"].to_numpy().copy()
    in_training = np.arange(rows) < int(round(rows * 0.8))
    legit_here = (table["channel"].to_numpy(zero_copy_only=False) == channel) & (y == 0)
    flip = in_training & legit_here & (np.random.default_rng(5).random(rows) < share)
    y[flip] = 1
    return table.set_column(table.schema.get_field_index("is_fraud"), "is_fraud",
                            pa.array(y, pa.int8()))  # fmt: skip


@pytest.fixture(scope="module")
def judged(trained, tmp_path_factory):
    """fraud/1: the good `trained` champion; fraud/2: trained on ATM-biased labels."""
    source, _ = trained
    root = tmp_path_factory.mktemp("gate") / "registry"
    shutil.copytree(source.root_uri, root)
    registry = ModelRegistry(root)
    result = train_on(_biased_labels(ROWS, "atm", 0.7), TrainConfig(seed=3, epochs=4),
                      registry, source="atm-biased.parquet")  # fmt: skip
    return registry, result


def test_a_biased_candidate_fails_on_slice_disparity_though_its_auc_passes(judged):
    registry, result = judged
    assert (result.version, result.alias) == (2, "challenger")
    report = registry.show("fraud/2").meta.gate
    assert report is not None and report == result.gate and not report.passed
    checks = {c.check: c for c in report.checks}
    assert checks["auc"].passed  # accuracy alone would have let it through
    channel = checks["slices.channel.fpr_difference"]
    assert not channel.passed and channel.figure > 0.5 and channel.threshold == 0.06
    atm = [r for r in report.slices if (r.slicing, r.slice) == ("channel", "atm")]
    assert atm[0].judged and atm[0].metrics["fpr"] > 0.5  # most legitimate ATM use flagged
    assert report.champion == 1 and report.threshold == 0.5
    assert {c.check for c in report.checks} >= {
        "auc_vs_champion", "calibration_ece", "slices.country.fpr_difference",
        "slices.card_country_vs_country.fpr_difference", "latency_p99_ms.batch_1",
        "latency_p99_ms.batch_8192",
    }  # fmt: skip
    assert registry.resolve("fraud@champion") == ("fraud", 1)


def test_promote_refuses_it_naming_each_failed_check_then_forced_records_why(judged, tmp_path):
    source, _ = judged
    root = tmp_path / "registry"
    shutil.copytree(source.root_uri, root)
    registry, contract = ModelRegistry(root), load_contract("fraud")
    report = registry.show("fraud/2").meta.gate
    with pytest.raises(PromotionRefused) as refused:
        registry.promote("fraud", 2, contract=contract)
    assert refused.value.failures == report.failures()
    assert "slices.channel.fpr_difference" in str(refused.value)
    assert registry.resolve("fraud@champion") == ("fraud", 1)
    with pytest.raises(ConfigError, match="needs a reason"):
        registry.promote("fraud", 2, contract=contract, force_reason="  ")

    # The CLI says the same, one line per failed check, and exits 1.
    opts = ["--registry", str(root)]
    result = runner.invoke(app, ["models", "promote", "fraud", "2", *opts])
    assert result.exit_code == 1
    channel = next(c for c in report.checks if c.check == "slices.channel.fpr_difference")
    assert f"  - {channel.describe()}" in result.output
    assert runner.invoke(app, ["models", "promote", "fraud", "2", "--force", *opts]).exit_code == 2

    why = "ATM relabelling is intended for this quarter's cash-out ring"
    result = runner.invoke(app, ["models", "promote", "fraud", "2", "--force", "--reason", why,
                                 *opts])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert registry.resolve("fraud@champion") == ("fraud", 2)
    forced = [e for e in registry.manifest("fraud").events if e.reason is not None]
    assert len(forced) == 1 and forced[0].reason == why and forced[0].previous == 1
    assert forced[0].actor and "@" in forced[0].actor
    assert list(forced[0].overridden) == report.failures()
    shown = runner.invoke(app, ["models", "show", "fraud", *opts]).output
    assert f"forced: {why}" in shown and "overrode: slices.channel.fpr_difference" in shown
    assert registry.rollback("fraud") == 1  # the history kept the champion it replaced


def test_a_report_judged_against_a_champion_since_replaced_is_stale(judged, tmp_path):
    """A version judged within max_drop of champion 1 says nothing about its margin to a
    champion promoted since: its promotion is refused until it is judged again."""
    from sluice.datagen import write_parquet
    from sluice.models import save_artifact

    source, _ = judged
    root = tmp_path / "registry"
    shutil.copytree(source.root_uri, root)
    opts = ["--registry", str(root)]
    holdout = write_parquet(generate_dataset(4000, seed=22).table, tmp_path / "holdout.parquet")
    artifact = source.load_artifact("fraud/1")
    path = save_artifact(tmp_path / "brought", artifact.data, artifact.meta)
    out = runner.invoke(app, ["models", "register", "fraud", str(path), "--holdout",
                              str(holdout), *opts])  # fmt: skip
    assert out.exit_code == 0 and "gate: passed" in out.output, out.output
    new = ModelRegistry(root).manifest("fraud").latest
    assert ModelRegistry(root).show(f"fraud/{new}").meta.gate.champion == 1
    forced = runner.invoke(app, ["models", "promote", "fraud", "2", "--force", "--reason",
                                 "a retrain led for a while", *opts])  # fmt: skip
    assert forced.exit_code == 0, forced.output
    refused = runner.invoke(app, ["models", "promote", "fraud", str(new), *opts])
    assert refused.exit_code == 1, refused.output
    assert "measured against version 1, but version 2 leads now" in refused.output
    assert ModelRegistry(root).resolve("fraud@champion") == ("fraud", 2)


def test_a_report_made_for_another_gate_is_stale(judged, tmp_path):
    registry, _ = judged
    doc = yaml.safe_load((REPO_ROOT / "configs/contracts/fraud.yaml").read_text())
    doc["suite_path"] = str(REPO_ROOT / doc["suite_path"])
    doc["gate"]["auc"]["min"] = 0.7  # looser, yet a different gate: judge again
    path = tmp_path / "fraud.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(PromotionRefused, match="its gate report was made for gate-"):
        registry.promote("fraud", 1, contract=load_contract(path))


def test_the_model_card_shows_metrics_gate_slices_and_lineage(judged):
    registry, _ = judged
    out = runner.invoke(app, ["models", "show", "fraud/2", "--registry", registry.root_uri])
    assert out.exit_code == 0, out.output
    head = "\n".join(out.output.splitlines()[:20])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    assert f"code          {commit}" in head
    assert "data source   atm-biased.parquet" in head
    assert f"data rows     {ROWS}  event time 2024-01-01" in head
    assert f"contract sha  {contract_digest(load_contract('fraud'))}" in head
    assert "libraries     python=" in head and "torch=" in head and "fairlearn=" in head
    assert "holdout_auc=" in head
    assert "gate: FAILED (" in out.output
    assert "SLICING" in out.output and "card_country_vs_country  different" in out.output


def test_lineage_records_the_rows_the_contract_and_the_code(trained):
    registry, result = trained
    meta = registry.show(f"fraud/{result.version}").meta
    lineage = meta.lineage
    assert lineage is not None
    table = generate_dataset(6000, seed=3).table
    assert lineage.data_rows == table.num_rows
    assert lineage.data_start == min(table["event_time"].to_pylist())
    assert lineage.data_end == max(table["event_time"].to_pylist())
    assert lineage.data_source == "generated by sluice.datagen: rows=6000 seed=3"
    assert lineage.contract_digest == contract_digest(load_contract("fraud"))
    assert lineage.code_commit is not None and len(lineage.code_commit) == 40
    import torch

    assert lineage.libraries["torch"] == torch.__version__.split("+")[0]
    assert meta.train_params["seed"] == 3 and meta.train_params["epochs"] == 4


def test_a_gate_report_a_brought_artifact_carries_is_not_this_registrys_verdict(judged,
                                                                                 tmp_path):
    """An artifact's meta.json may carry a passed report (pipelines.train --save-artifact
    writes one; anyone can write one): registered without --holdout, the version has no
    verdict here and cannot lead."""
    from sluice.models import save_artifact

    source, _ = judged
    root = tmp_path / "registry"
    shutil.copytree(source.root_uri, root)
    artifact = source.load_artifact("fraud/1")
    assert artifact.meta.gate is not None and artifact.meta.gate.passed
    path = save_artifact(tmp_path / "brought", artifact.data, artifact.meta)
    opts = ["--registry", str(root)]
    out = runner.invoke(app, ["models", "register", "fraud", str(path), *opts])
    assert out.exit_code == 0, out.output
    new = ModelRegistry(root).manifest("fraud").latest
    assert ModelRegistry(root).show(f"fraud/{new}").meta.gate is None
    result = runner.invoke(app, ["models", "promote", "fraud", str(new), *opts])
    assert result.exit_code != 0 and "no gate report" in result.output, result.output
    again = ModelRegistry(root).register_artifact("fraud", path)  # the Python API too
    assert ModelRegistry(root).show(f"fraud/{again}").meta.gate is None


def test_a_model_brought_as_a_file_is_judged_on_the_holdout_it_comes_with(judged, tmp_path):
    """`sluice models register --holdout`: the gate for a model trained elsewhere."""
    from sluice.datagen import write_parquet
    from sluice.models import save_artifact

    source, _ = judged
    root = tmp_path / "registry"
    shutil.copytree(source.root_uri, root)
    holdout = write_parquet(generate_dataset(8000, seed=21).table, tmp_path / "holdout.parquet")
    opts = ["--registry", str(root)]
    for version, passes in ((1, True), (2, False)):  # the good model, then the ATM-biased one
        artifact = source.load_artifact(f"fraud/{version}")
        meta = artifact.meta.model_copy(update={"gate": None, "lineage": None})  # as if brought
        path = save_artifact(tmp_path / f"brought{version}", artifact.data, meta)
        champion = ModelRegistry(root).resolve("fraud@champion")[1]
        out = runner.invoke(app, ["models", "register", "fraud", str(path), "--holdout",
                                  str(holdout), *opts])  # fmt: skip
        assert out.exit_code == 0, out.output
        new = ModelRegistry(root).manifest("fraud").latest
        report = ModelRegistry(root).show(f"fraud/{new}").meta.gate
        assert report is not None and report.holdout_rows == 8000
        assert report.champion == champion
        assert report.passed == passes, out.output
        assert ("gate: passed" if passes else "gate: FAILED") in out.output
        result = runner.invoke(app, ["models", "promote", "fraud", str(new), *opts])
        assert (result.exit_code == 0) == passes, result.output
    bad = next(c for c in report.checks if c.check == "slices.channel.fpr_difference")
    assert not bad.passed  # the bias shows on the team's holdout as on training's
