"""Judge a candidate model on labelled holdout rows: its AUC, the champion's, the gate.

    verdict = judge_candidate(contract, registry, candidate, holdout, store)
    verdict.report            # GateReport (None when the contract declares no gate)
    verdict.leads             # passes every check and beats the champion's AUC

The one place a candidate is judged: `pipelines.train` (and so `sluice drift --retrain`)
calls it with the holdout it split off, `sluice models register --holdout` with the
labelled file a team brings beside a model trained elsewhere. The candidate is scored as
it will be served (its runtime, on the contract's device); the champion is scored on the
same rows with its own feature statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from sluice.errors import ConfigError, ModelNotFound, ValidationFailed
from sluice.gate._evaluate import evaluate_gate
from sluice.gate._report import GateReport

if TYPE_CHECKING:
    from sluice.contract import Contract
    from sluice.features import FeatureMatrix, FeatureStore
    from sluice.models import LoadedModel, ModelMeta, ModelRegistry

__all__ = ["Verdict", "judge_candidate", "labels_of", "open_candidate"]


@dataclass(frozen=True)
class Verdict:
    auc: float
    champion: int | None  # the version leading when the candidate was judged
    champion_auc: float | None  # its AUC on the same rows; None: not comparable
    why: str  # "compared", "no champion yet" or why the champion could not be compared
    report: GateReport | None

    @property
    def beats_champion(self) -> bool:
        return self.champion is None or (self.champion_auc is not None
                                         and self.auc > self.champion_auc)  # fmt: skip

    @property
    def leads(self) -> bool:
        """Champion by itself: passes every gate check and beats the champion's AUC."""
        return self.beats_champion and (self.report is None or self.report.passed)

    def metrics(self, holdout_labels: np.ndarray) -> dict[str, float]:
        """What the version's metadata records of this judgement."""
        return {
            "holdout_auc": self.auc,
            "holdout_fraud_rate": float(np.mean(holdout_labels)),
            **({} if self.champion_auc is None else {"champion_holdout_auc": self.champion_auc}),
        }


def open_candidate(model: bytes, meta: ModelMeta, contract: Contract) -> LoadedModel:
    """A candidate's model file, checked (`check_artifact`: refused before anything is
    registered) and opened on the runtime and device it will be served with."""
    from sluice.models import LoadedModel, check_artifact, select_device
    from sluice.models._runtime import open_runner

    runner = check_artifact(model, meta, "candidate")
    device = select_device(contract.device.value)
    if device != "cpu":
        runner = open_runner(model, meta.format, device=device, trusted=meta.trusted,
                             where="candidate")  # fmt: skip
    return LoadedModel("candidate", 0, meta, runner)


def labels_of(table: pa.Table, contract: Contract, part: str = "holdout") -> np.ndarray:
    """The label column as float32; refused when missing, null, or of one class only."""
    if contract.label_column is None:
        raise ConfigError(f"contract {contract.name!r} has no label_column: cannot judge a model")
    column = table[contract.label_column]
    if column.null_count:
        raise ValidationFailed(f"{contract.label_column}: {column.null_count} null label(s)")
    y = column.to_numpy().astype(np.float32)
    if y.size == 0 or y.min() == y.max():
        only = "no rows" if y.size == 0 else f"label {int(y[0])} only"
        raise ValidationFailed(f"the {part} rows have {only}: an AUC needs both classes")
    return y


def _champion_auc(
    registry: ModelRegistry, name: str, contract: Contract, holdout: pa.Table,
    store: FeatureStore, y: np.ndarray,
) -> tuple[int | None, float | None, str]:  # fmt: skip
    from sluice.features import compute_features
    from sluice.models._meta import roc_auc

    try:
        champion = registry.load(f"{name}@champion", device="cpu")
    except ModelNotFound:
        return None, None, "no champion yet"
    spec = contract.features
    if champion.meta.feature_spec_hash != spec.spec_hash():
        # It cannot score these rows the same way: a human decides.
        return champion.version, None, "champion was trained on another feature spec"
    matrix = compute_features(holdout, spec, champion.meta.feature_stats, store)
    return champion.version, roc_auc(y, champion.predict(matrix.values)), "compared"


def judge_candidate(
    contract: Contract,
    registry: ModelRegistry,
    candidate: LoadedModel,
    holdout: pa.Table,
    store: FeatureStore,
    *,
    features: FeatureMatrix | None = None,
    name: str | None = None,
) -> Verdict:
    """Score `candidate` on the labelled `holdout` rows (their aggregates from `store`,
    which holds every event up to them), compare with the champion, run the gate.

    `features`: the holdout's matrix when the caller computed it already (training did);
    `name`: the registry model it joins (default: the contract's model).
    """
    from sluice.features import compute_features
    from sluice.models._meta import roc_auc

    y = labels_of(holdout, contract)
    if features is None:
        features = compute_features(holdout, contract.features, candidate.meta.feature_stats,
                                    store)  # fmt: skip
    scores = candidate.predict(features.values)
    auc = roc_auc(y, scores)
    version, champion_auc, why = _champion_auc(registry, name or contract.model.name, contract,
                                               holdout, store, y)  # fmt: skip
    report = None
    if contract.gate is not None:
        report = evaluate_gate(
            contract.gate, holdout=holdout, labels=y, scores=scores,
            alert_threshold=contract.alert_threshold,
            # A champion that could not score these rows fails the margin: a human decides.
            champion=None if version is None else (version, champion_auc),
            predict=candidate.predict, sample=features.values,
            runtime=f"{candidate.meta.format}/{candidate.device}",
        )  # fmt: skip
    return Verdict(auc=auc, champion=version, champion_auc=champion_auc, why=why, report=report)
