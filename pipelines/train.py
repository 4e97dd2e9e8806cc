"""Train the contract's model and register it: `python -m pipelines.train [--rows N --seed S]`.

generate (sluice.datagen, seeded) -> features (events recorded into an
InMemoryFeatureStore, then computed point-in-time) -> the contract's trainer
(`trainer:` in the contract, or `--trainer module:function`; by default the
built-in MLP exported to ONNX, `pipelines/trainers.py`) -> holdout AUC of the
exported artifact, through the runtime that will serve it -> register a new
version -> `champion` if it beats the current champion on the same holdout,
else `challenger`.

A team brings its own model by naming its own trainer: a function
`(data: TrainingData, config: TrainConfig) -> Candidate` that fits on
`data.x_train` / `data.y_train` (the contract's features, bit-identical to what
scoring computes) and returns the model file in a registrable format
(`pipelines/trainers.py` holds the built-in one and the types;
`pipelines.train_gbm` is one for LightGBM).

`train_on(table, ...)` (`--labels PATH`: a Parquet file of the contract's input
columns and label) does the same on given labelled rows instead of generated
ones: the retraining step of `sluice drift --retrain`, with the same gate.

The holdout is the last `holdout_fraction` of the rows in event time, as in
production: the model is judged on transactions later than any it saw. Given
the same arguments the run is deterministic (seeded data, weights and batch
order; one intra-op thread by default, so float sums happen in one order).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.trainers import Candidate, TrainConfig, TrainingData, load_trainer
from sluice.contract import Contract, load_contract
from sluice.datagen import generate_dataset
from sluice.errors import ConfigError, ModelNotFound, SluiceError, ValidationFailed
from sluice.features import (
    InMemoryFeatureStore,
    compute_features,
    fit_stats,
    reference_statistics,
    to_store_events,
)
from sluice.gate import GateReport, evaluate_gate, format_report
from sluice.models import (
    LoadedModel,
    ModelMeta,
    ModelRegistry,
    check_artifact,
    roc_auc,
    save_artifact,
    select_device,
    table_fingerprint,
)
from sluice.models._lineage import training_lineage
from sluice.models._runtime import open_runner

__all__ = ["Candidate", "TrainConfig", "TrainResult", "TrainingData", "main", "train", "train_on"]


@dataclass(frozen=True)
class TrainResult:
    name: str
    version: int
    alias: str  # "champion" or "challenger"
    holdout_auc: float
    champion_auc: float | None  # the previous champion on the same holdout
    previous_champion: int | None
    train_rows: int
    holdout_rows: int
    seconds: float
    gate: GateReport | None  # None when the contract declares no gate


def _labels(table: pa.Table, contract: Contract) -> np.ndarray:
    if contract.label_column is None:
        raise ConfigError(f"contract {contract.name!r} has no label_column: cannot train")
    column = table[contract.label_column]
    if column.null_count:
        raise ValueError(f"{contract.label_column}: {column.null_count} null label(s)")
    return column.to_numpy().astype(np.float32)


def _champion_auc(
    registry: ModelRegistry,
    name: str,
    contract: Contract,
    holdout: pa.Table,
    store: InMemoryFeatureStore,
    y: np.ndarray,
) -> tuple[int | None, float | None, str]:
    """The current champion's AUC on this holdout, or why it cannot be compared."""
    try:
        champion = registry.load(f"{name}@champion", device="cpu")
    except ModelNotFound:
        return None, None, "no champion yet"
    spec = contract.features
    if champion.meta.feature_spec_hash != spec.spec_hash():
        # Features changed since the champion was trained: it cannot score this
        # holdout the same way, so a human decides (the new version waits as challenger).
        return champion.version, None, "champion was trained on another feature spec"
    matrix = compute_features(holdout, spec, champion.meta.feature_stats, store)
    return champion.version, roc_auc(y, champion.predict(matrix.values)), "compared"


def _open_candidate(model: bytes, meta: ModelMeta, contract: Contract) -> LoadedModel:
    """The candidate on the runtime and device it will be served with (the contract's)."""
    runner = check_artifact(model, meta, "candidate")  # refused here: nothing registered
    device = select_device(contract.device.value)
    if device != "cpu":
        runner = open_runner(model, meta.format, device=device, trusted=meta.trusted,
                             where="candidate")  # fmt: skip
    return LoadedModel("candidate", 0, meta, runner)


def train(config: TrainConfig, registry: ModelRegistry) -> TrainResult:
    """Train on `config.rows` generated transactions (seeded) and register the model."""
    started = time.perf_counter()
    table = generate_dataset(config.rows, config.seed).table
    source = f"generated by sluice.datagen: rows={config.rows} seed={config.seed}"
    return _fit_and_register(table, load_contract(config.contract), config, registry, started,
                             {}, source)  # fmt: skip


def train_on(
    table: pa.Table, config: TrainConfig, registry: ModelRegistry, *, source: str = "table"
) -> TrainResult:
    """Train on given labelled rows (the contract's input columns, label included).

    The rows are e.g. recent events whose labels arrived after they were scored. The
    gate is `train`'s: the holdout is the latest `holdout_fraction` of these rows in
    event time, and the new version becomes `champion` only if its AUC there beats the
    current champion's on the same rows; otherwise it waits as `challenger` for a
    human (`sluice models promote`). `config.rows` is not used; `source` (the file the
    rows came from) is kept in the version's train_params.
    """
    started = time.perf_counter()
    contract = load_contract(config.contract)
    missing = [c for c in contract.arrow_schema.names if c not in table.column_names]
    if missing:
        raise ConfigError(f"{source}: missing column(s) {missing} of contract {contract.name!r}")
    cut = int(round(table.num_rows * (1 - config.holdout_fraction)))
    if cut < 100 or table.num_rows - cut < 50:
        raise ValidationFailed(
            f"{source}: {table.num_rows} labelled rows are too few to train and judge a model "
            f"(need 100 to train and 50 to hold out at holdout_fraction "
            f"{config.holdout_fraction})"
        )
    extra = {"rows": table.num_rows, "labels": source}
    return _fit_and_register(table, contract, config, registry, started, extra, source)


def _fit_and_register(
    table: pa.Table,
    contract: Contract,
    config: TrainConfig,
    registry: ModelRegistry,
    started: float,
    extra_params: dict[str, str | int],
    source: str,
) -> TrainResult:
    spec, name = contract.features, contract.model.name
    table = table.sort_by([(contract.event_time_column, "ascending")])
    cut = int(round(table.num_rows * (1 - config.holdout_fraction)))
    train_table, holdout = table.slice(0, cut), table.slice(cut)
    y_train, y_holdout = _labels(train_table, contract), _labels(holdout, contract)
    for part, y in (("training", y_train), ("holdout", y_holdout)):
        if y.min() == y.max():
            raise ValidationFailed(
                f"the {part} rows all have label {int(y[0])}: an AUC needs both classes"
            )

    # Record every event, then compute: aggregates only look strictly back in
    # time, so holdout features never see later events (no leakage).
    store = InMemoryFeatureStore()
    store.record(to_store_events(table, spec))
    stats = fit_stats(train_table, spec)  # fitted on the training part only
    x_train = compute_features(train_table, spec, stats, store)
    x_holdout = compute_features(holdout, spec, stats, store)

    data = TrainingData(contract, x_train.names, x_train.values, y_train, stats)
    trainer_ref = config.trainer or contract.trainer
    candidate = load_trainer(trainer_ref)(data, config)
    if not isinstance(candidate, Candidate):
        raise ConfigError(f"trainer {trainer_ref!r} returned {type(candidate).__name__}, "
                          "not a pipelines.trainers.Candidate")  # fmt: skip
    meta = ModelMeta(
        contract=contract.name,
        format=candidate.format,
        output=candidate.output,
        trusted=candidate.trusted,
        architecture=candidate.architecture,
        feature_names=x_train.names,
        feature_spec_hash=spec.spec_hash(),
        feature_stats=stats,
        reference=reference_statistics(x_train),
        metrics={},
        data_fingerprint=table_fingerprint(table),
        lineage=training_lineage(table, contract, source=source),
        train_params={
            **{k: str(v) if isinstance(v, tuple) else v for k, v in config if v is not None},
            "trainer": trainer_ref,
            "train_rows": train_table.num_rows,
            "holdout_rows": holdout.num_rows,
            **extra_params,
        },
    )
    # The AUC of the artifact as it will be served: the checked file, through its runtime.
    candidate_model = _open_candidate(candidate.model, meta, contract)
    scores = candidate_model.predict(x_holdout.values)
    auc = roc_auc(y_holdout, scores)
    previous, champion_auc, why = _champion_auc(registry, name, contract, holdout, store, y_holdout)
    report = None
    if contract.gate is not None:
        report = evaluate_gate(
            contract.gate, holdout=holdout, labels=y_holdout, scores=scores,
            alert_threshold=contract.alert_threshold,
            champion=None if champion_auc is None else (previous, champion_auc),
            predict=candidate_model.predict, sample=x_holdout.values,
            runtime=f"{meta.format}/{candidate_model.device}",
        )  # fmt: skip
    meta = meta.model_copy(update={"gate": report, "metrics": {
        "holdout_auc": auc,
        **candidate.metrics,
        "holdout_fraud_rate": float(y_holdout.mean()),
        # The gate's evidence: the champion it was judged against, on the same rows.
        **({} if champion_auc is None else {"champion_holdout_auc": champion_auc}),
    }})  # fmt: skip
    version = registry.register(name, candidate.model, meta)
    # Champion by itself only when it passes every gate check and beats the champion.
    beats = previous is None or (champion_auc is not None and auc > champion_auc)
    alias = "champion" if beats and (report is None or report.passed) else "challenger"
    registry.promote(name, version, alias=alias, contract=contract)
    if alias == "challenger":
        because = ("it failed the gate" if report is not None and not report.passed
                   else why if why != "compared" else "it does not beat the champion's AUC")
        print(f"note: {because}; registered as challenger", file=sys.stderr)
    return TrainResult(
        name=name,
        version=version,
        alias=alias,
        holdout_auc=auc,
        champion_auc=champion_auc,
        previous_champion=previous,
        train_rows=train_table.num_rows,
        holdout_rows=holdout.num_rows,
        seconds=time.perf_counter() - started,
        gate=report,
    )


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__)
    parser.add_argument("--contract", default="fraud", help="contract name or YAML path")
    parser.add_argument("--rows", type=int, default=50_000, help="generated transactions")
    parser.add_argument("--seed", type=int, default=7, help="data, weights and batch order")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--registry", default=None, help="registry root URI (default: config)")
    parser.add_argument("--trainer", default=None, metavar="MODULE:FUNCTION",
                        help="trainer to run (default: the contract's `trainer`)")
    parser.add_argument("--export-format", default="onnx",
                        choices=["onnx", "torch-export", "torchscript"],
                        help="format the built-in MLP is registered in")
    parser.add_argument(
        "--labels",
        default=None,
        metavar="PATH",
        help="train on this labelled Parquet file (contract input columns + label) "
        "instead of generated data; invalid rows are left out",
    )
    parser.add_argument(
        "--save-artifact",
        default=None,
        metavar="DIR",
        help="also write the model as an artifact directory (for `sluice models register`)",
    )
    args = parser.parse_args(argv)
    config = TrainConfig(
        contract=args.contract,
        rows=args.rows,
        seed=args.seed,
        epochs=args.epochs,
        threads=args.threads,
        trainer=args.trainer,
        export_format=args.export_format,
    )
    registry = ModelRegistry(args.registry) if args.registry else ModelRegistry.from_config()
    if args.labels:
        from sluice.drift import read_labels

        try:
            labelled = read_labels(args.labels, load_contract(config.contract))
            print(f"labels         {args.labels}: {labelled.table.num_rows} rows "
                  f"({labelled.dropped} invalid left out)")  # fmt: skip
            result = train_on(labelled.table, config, registry, source=str(args.labels))
        except SluiceError as exc:  # a bad labels file is one line, not a traceback
            parser.exit(1, f"error: {exc}\n")
    else:
        result = train(config, registry)
    if args.save_artifact:
        artifact = registry.load_artifact(f"{result.name}/{result.version}")
        saved = save_artifact(args.save_artifact, artifact.data, artifact.meta)
        print(f"artifact       {saved}")
    champion = "-" if result.champion_auc is None else f"{result.champion_auc:.4f}"
    print(f"model          {result.name}/{result.version} -> {result.name}@{result.alias}")
    print(f"holdout AUC    {result.holdout_auc:.4f}  (previous champion: {champion})")
    print(f"rows           train {result.train_rows}, holdout {result.holdout_rows}")
    print(f"registry       {registry.root_uri}")
    print(f"seconds        {result.seconds:.1f}")
    if result.gate is not None:
        print(f"\n{format_report(result.gate)}")
    return result


if __name__ == "__main__":
    main()
