"""Fixture models: trained by the real pipeline, made champion whatever the gate says.

Fixtures train small models in a second or two (1-2 epochs on 2-5k rows) because the
tests they serve need *a* champion to score with, not a good one. The fraud contract's
promotion gate rightly refuses such a model (AUC floor, calibration, too few cross-border
rows to judge), so the fixture overrides it the way a person would, with a recorded
reason (`ModelRegistry.promote(..., force_reason=...)`). The gate itself is tested in
tests/unit/models/test_gate_training.py.
"""

from __future__ import annotations

import dataclasses

from pipelines.train import TrainConfig, TrainResult, train
from sluice.contract import load_contract
from sluice.models import ModelRegistry


def train_champion(config: TrainConfig, registry: ModelRegistry) -> TrainResult:
    """`train(config, registry)`, then its version is champion (forced past the gate)."""
    result = train(config, registry)
    if result.alias != "champion":
        registry.promote(
            result.name, result.version, contract=load_contract(config.contract),
            force_reason=f"test fixture: {config.rows} rows, {config.epochs} epoch(s); the "
            "tests need a champion to score with, not a good model",
        )  # fmt: skip
    return dataclasses.replace(result, alias="champion")
