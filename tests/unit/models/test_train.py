from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from model_factories import SMALL_TRAIN

from pipelines.train import TrainConfig, train, train_on
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.errors import ConfigError
from sluice.features import InMemoryFeatureStore
from sluice.models import MLP, MLPConfig, ModelRegistry, export_module, load_artifact, roc_auc
from sluice.scoring import Scorer


def test_train_registers_a_champion_that_learned_the_signal(trained):
    registry, result = trained
    assert (result.version, result.alias, result.previous_champion) == (1, "champion", None)
    assert result.holdout_auc > 0.75
    assert result.train_rows + result.holdout_rows == SMALL_TRAIN["rows"]
    info = registry.show("fraud@champion")
    contract = load_contract("fraud")
    meta = info.meta
    assert meta.metrics["holdout_auc"] == pytest.approx(result.holdout_auc)
    assert meta.feature_spec_hash == contract.features.spec_hash()
    assert meta.feature_names == contract.feature_names
    assert set(meta.reference.features) == set(contract.feature_names)
    assert meta.reference.rows == result.train_rows
    assert meta.feature_stats.vocabularies["channel_idx"] == ("atm", "moto", "online", "pos")
    assert meta.data_fingerprint.startswith("sha256:")
    assert meta.train_params["seed"] == SMALL_TRAIN["seed"]


def test_same_seed_in_another_process_gives_identical_weights_and_scores(trained, tmp_path):
    """Golden test: a second run (a separate process, via the CLI) reproduces run one."""
    registry, _ = trained
    root = tmp_path / "registry"
    shutil.copytree(registry.root_uri, root)
    args = [f"--{k}={v}" for k, v in SMALL_TRAIN.items()]
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.train", *args, f"--registry={root}",
         f"--save-artifact={tmp_path / 'artifact'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "fraud/2 -> fraud@challenger" in out.stdout  # equal AUC does not beat the champion
    copy = ModelRegistry(root)
    one, two = copy.manifest("fraud").versions
    assert two.model_sha256 == one.model_sha256
    assert two.data_fingerprint == one.data_fingerprint
    assert two.metrics["holdout_auc"] == one.metrics["holdout_auc"]
    # Lineage too: the same rows, contract, code and libraries, the same training config.
    first, second = copy.show("fraud/1").meta, copy.show("fraud/2").meta
    assert first.lineage is not None and first.lineage == second.lineage
    assert first.train_params == second.train_params
    assert copy.resolve("fraud@champion") == ("fraud", 1)
    assert load_artifact(tmp_path / "artifact").meta == copy.show("fraud/2").meta

    contract = load_contract("fraud")
    table = generate_dataset(800, seed=99).table
    runs = [
        Scorer(contract, copy, InMemoryFeatureStore(), model_ref=ref).score(table).scored
        for ref in ("fraud/1", "fraud/2", "fraud/1")
    ]
    assert runs[0].num_rows == 800
    assert np.array_equal(runs[0]["score"].to_numpy(), runs[1]["score"].to_numpy())
    assert runs[0].drop_columns(["model_version"]).equals(runs[2].drop_columns(["model_version"]))


def _registry_with_champion(trained, tmp_path, **meta_update) -> ModelRegistry:
    """A registry whose champion is an untrained (random-weight) copy of the trained model."""
    source, _ = trained
    artifact = source.load_artifact("fraud/1")
    torch.manual_seed(123)
    n_features = len(artifact.meta.feature_names)
    weak = export_module(MLP(MLPConfig(input_dim=n_features, hidden_dims=(8,))), n_features)
    registry = ModelRegistry(tmp_path / "registry")
    registry.register("fraud", weak, artifact.meta.model_copy(update=meta_update))
    registry.promote("fraud", 1)
    return registry


def test_a_better_model_replaces_the_champion(trained, tmp_path):
    registry = _registry_with_champion(trained, tmp_path)
    result = train(TrainConfig(**SMALL_TRAIN), registry)
    assert result.alias == "champion" and result.previous_champion == 1
    assert result.champion_auc is not None and result.champion_auc < result.holdout_auc
    assert registry.resolve("fraud@champion") == ("fraud", 2)
    assert registry.rollback("fraud") == 1


def test_a_champion_on_another_feature_spec_is_not_replaced(trained, tmp_path):
    source, _ = trained
    meta = source.show("fraud/1").meta
    other_stats = meta.feature_stats.model_copy(update={"spec_hash": "0" * 16})
    registry = _registry_with_champion(
        trained, tmp_path, feature_spec_hash="0" * 16, feature_stats=other_stats
    )
    result = train(TrainConfig(**SMALL_TRAIN), registry)
    assert (result.alias, result.champion_auc) == ("challenger", None)
    # The gate cannot compare it with the champion: its margin check fails, a human decides.
    margin = next(c for c in result.gate.checks if c.check == "auc_vs_champion")
    assert not margin.passed and "cannot score these rows" in margin.detail
    assert registry.resolve("fraud@champion") == ("fraud", 1)
    assert registry.resolve("fraud@challenger") == ("fraud", 2)


def test_auc_is_rank_based_and_handles_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(y, s) == pytest.approx(pairs)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([1, 1], [0.1, 0.2])


def test_the_contracts_trainer_is_what_training_and_retraining_run(tmp_path):
    """`trainer:` in the contract names a team's own training function: `train_on` (what
    `sluice drift --retrain` runs through `python -m pipelines.train --labels`) calls it,
    and the version it registers is that model (LightGBM, exported to ONNX)."""
    doc = yaml.safe_load((REPO_ROOT / "configs/contracts/fraud.yaml").read_text())
    doc["trainer"] = "pipelines.train_gbm:fit_lightgbm_candidate"
    doc["suite_path"] = str(REPO_ROOT / doc["suite_path"])
    path = tmp_path / "fraud_gbm.yaml"
    path.write_text(yaml.safe_dump(doc))
    registry = ModelRegistry(tmp_path / "registry")
    labelled = generate_dataset(3000, seed=8).table
    result = train_on(labelled, TrainConfig(contract=str(path)), registry, source="labels")
    meta = registry.show(f"fraud/{result.version}").meta
    assert meta.format == "onnx" and meta.architecture["family"] == "lightgbm"
    assert meta.train_params["trainer"] == "pipelines.train_gbm:fit_lightgbm_candidate"
    assert result.holdout_auc > 0.7  # it learned: scored through onnxruntime on the holdout
    bad = TrainConfig(contract=str(path), trainer="pipelines.train:no_such_function")
    with pytest.raises(ConfigError, match="no_such_function"):
        train_on(labelled, bad, registry, source="labels")
