"""Model scoring throughput in one run: Sluice's scoring call (`LoadedModel.predict`) vs the
same runtime called standalone, for each model, export format and batch size.

    .venv/bin/python bench/model.py [--quick] [--device cpu|cuda]

Models (23 features f0..f22, random weights; what is measured is the runtime, not a fit):
- mlp64_32: the built-in MLP (64, 32) as onnx, torch-export and torchscript (torch formats
  registered as trusted: they run code when loaded);
- gbm300: LightGBM, 300 trees of depth 6 (63 leaves), fitted on 20,000 synthetic rows
  (numpy seed 0), exported by `pipelines.train_gbm.lightgbm_to_onnx`;
- mlp256x3: an MLP (256, 256, 256) as onnx and torch-export.

Each artifact is opened once by `sluice.models._runtime.open_runner`. "sluice" is
`LoadedModel(...).predict(x)` (float64 probabilities); "standalone" drives the runner's own
session or module directly: ONNX `session.run(None, {input: x})`, torch
`with torch.inference_mode(): module(torch.from_numpy(x))`. The only difference is Sluice's
wrapper (input checks, output selection, link, finite check). Ratio = sluice / standalone.

Timing: a fixed float32 input (numpy seed 1) sliced to batches of 1, 32 and 4096 rows; per
(model, batch) 3 warm-up calls each, then interleaved rounds (sluice, standalone, sluice,
...) of at least --min-s seconds and --min-iter calls each; the best round of each side
counts, so noise on a shared machine hits both alike. torch runs on 1 thread;
onnxruntime with its default session options (the runner's session).

Baseline "exact loop (old)": the old elementwise float64 scoring of the MLP (64, 32), one
column at a time per Linear layer, against Sluice's ONNX MLP at 4096 rows (vs_exact_loop).

Parity: for each model, the largest |score difference| of one row between batch-1 and
batch-4096 scoring, and for the MLPs between each format and the torch module itself.
Prints a table, then, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "platform")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipelines.train_gbm import lightgbm_to_onnx  # noqa: E402
from sluice.features import FeatureMatrix, FeatureStats, reference_statistics  # noqa: E402
from sluice.models import (  # noqa: E402
    MLP,
    LoadedModel,
    MLPConfig,
    ModelMeta,
    ModelOutput,
    export_module,
)
from sluice.models._runtime import OnnxRunner, open_runner  # noqa: E402

TARGETS = {"ratio_at_4096_min": 0.8, "ratio_at_32_min": 0.5}
N_FEATURES = 23  # the fraud contract's feature count
NAMES = tuple(f"f{i}" for i in range(N_FEATURES))
BATCHES = (1, 32, 4096)
SPEC_HASH = "bench0123456789ab"


@dataclass
class Case:
    model: str  # mlp64_32, gbm300, mlp256x3
    fmt: str  # onnx, torch-export, torchscript
    loaded: LoadedModel
    standalone: Callable[[np.ndarray], object]
    reference: Callable[[np.ndarray], np.ndarray] | None  # the model itself, float64 scores


def make_meta(fmt: str, output: ModelOutput, trusted: bool, family: str) -> ModelMeta:
    matrix = np.random.default_rng(0).normal(size=(200, N_FEATURES)).astype(np.float32)
    return ModelMeta(
        contract="fraud", format=fmt, output=output, trusted=trusted,
        architecture={"family": family}, feature_names=NAMES, feature_spec_hash=SPEC_HASH,
        feature_stats=FeatureStats(spec_hash=SPEC_HASH),
        reference=reference_statistics(FeatureMatrix(matrix, NAMES)),
        data_fingerprint="sha256:bench", train_params={"seed": 0},
    )  # fmt: skip


def make_mlp(hidden: tuple[int, ...]) -> MLP:
    torch.manual_seed(0)
    net = MLP(MLPConfig(input_dim=N_FEATURES, hidden_dims=hidden))
    rng = np.random.default_rng(0)
    train = (rng.normal(size=(5000, N_FEATURES)) * rng.uniform(0.5, 50, N_FEATURES)
             + rng.uniform(-10, 10, N_FEATURES)).astype(np.float32)  # fmt: skip
    net.fit_input_scaling(train)
    return net.eval()


def make_gbm() -> object:
    import lightgbm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES)).astype(np.float32)
    logit = (np.sin(2 * x[:, 0]) * x[:, 1] + x[:, 2] ** 2 - 1 + 0.8 * x[:, 3] * x[:, 4]
             - 0.5 * np.abs(x[:, 5]) + 0.3 * x[:, 6:12].sum(axis=1)
             + rng.normal(scale=0.5, size=len(x)))  # fmt: skip
    y = (logit > 0).astype(np.int32)
    model = lightgbm.LGBMClassifier(
        n_estimators=300, max_depth=6, num_leaves=63, learning_rate=0.05, random_state=0,
        n_jobs=1, verbose=-1, deterministic=True, force_row_wise=True,
    )  # fmt: skip
    return model.fit(x, y)


def standalone_for(runner: object, device: str) -> Callable[[np.ndarray], object]:
    """The runner's own session or module, called the way one would without Sluice."""
    if isinstance(runner, OnnxRunner):
        session, name = runner.session, runner.session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    module = runner.module  # type: ignore[attr-defined]
    if device == "cuda":

        def run_cuda(x: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(x).to("cuda")).cpu()

        return run_cuda

    def run_cpu(x: np.ndarray) -> object:
        with torch.inference_mode():
            return module(torch.from_numpy(x))

    return run_cpu


def torch_reference(net: MLP) -> Callable[[np.ndarray], np.ndarray]:
    def scores(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = net(torch.from_numpy(x)).double().numpy()
        return 1.0 / (1.0 + np.exp(-logits))

    return scores


def build_cases(device: str) -> tuple[list[Case], MLP]:
    cases = []
    logit = ModelOutput(link="logit")
    small, large = make_mlp((64, 32)), make_mlp((256, 256, 256))
    for model, net, formats in (("mlp64_32", small, ("onnx", "torch-export", "torchscript")),
                                ("mlp256x3", large, ("onnx", "torch-export"))):  # fmt: skip
        for fmt in formats:
            trusted = fmt != "onnx"  # torch formats run code when loaded
            data = export_module(net, N_FEATURES, fmt)
            runner = open_runner(data, fmt, device=device, trusted=trusted, where=model)
            loaded = LoadedModel(model, 1, make_meta(fmt, logit, trusted, "mlp"), runner)
            cases.append(Case(model, fmt, loaded, standalone_for(runner, runner.device),
                              torch_reference(net)))  # fmt: skip
    print("fitting LightGBM (300 trees, depth 6) on 20,000 rows ...", flush=True)
    gbm = make_gbm()
    runner = open_runner(lightgbm_to_onnx(gbm, N_FEATURES), "onnx", device=device, where="gbm")
    prob = ModelOutput(index=1, column=1, link="probability")
    loaded = LoadedModel("gbm300", 1, make_meta("onnx", prob, False, "lightgbm"), runner)
    cases.insert(3, Case("gbm300", "onnx", loaded, standalone_for(runner, runner.device),
                         lambda x: gbm.predict_proba(x)[:, 1].astype(np.float64)))  # fmt: skip
    return cases, small


def exact_loop(net: MLP) -> Callable[[np.ndarray], np.ndarray]:
    """The old scoring of the MLP: float64, elementwise, one input column at a time."""
    mean = net.input_mean.double().numpy()
    std = net.input_std.double().numpy()
    linears = [m for m in net.layers if isinstance(m, torch.nn.Linear)]
    params = [(m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy())
              for m in linears]  # fmt: skip

    def score(x: np.ndarray) -> np.ndarray:
        z = (x.astype(np.float64) - mean) / std
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        for i, (w, bias) in enumerate(params):
            acc = z[:, 0:1] * w[0]
            for k in range(1, w.shape[0]):
                acc = acc + z[:, k : k + 1] * w[k]
            z = acc + bias
            if i < len(params) - 1:
                z = np.maximum(z, 0.0)
        return 1.0 / (1.0 + np.exp(-z[:, 0]))

    return score


def rate_once(fn: Callable[[np.ndarray], object], x: np.ndarray, min_s: float,
              min_iter: int) -> float:  # fmt: skip
    """Rows per second of `fn(x)` over at least min_s seconds and min_iter calls."""
    clock = time.perf_counter
    n, t0 = 0, clock()
    while True:
        fn(x)
        n += 1
        elapsed = clock() - t0
        if n >= min_iter and elapsed >= min_s:
            return n * len(x) / elapsed


def interleaved(fns: list[Callable[[np.ndarray], object]], x: np.ndarray, rounds: int,
                min_s: float, min_iter: int) -> list[float]:  # fmt: skip
    """Best rows/s of each fn over `rounds` interleaved rounds, after 3 warm-up calls each."""
    for fn in fns:
        for _ in range(3):
            fn(x)
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            best[i] = max(best[i], rate_once(fn, x, min_s, min_iter))
    return best


def key(case: Case) -> str:
    return f"{case.model}_{case.fmt.replace('-', '_')}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="runner device (cuda falls back to cpu when not available)",
    )
    ap.add_argument("--min-s", type=float, default=None, help="seconds per round and side")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rounds = args.rounds or (2 if args.quick else 3)
    min_s = args.min_s if args.min_s is not None else (0.08 if args.quick else 0.3)
    min_iter = 3 if args.quick else 10
    parity_rows = 512 if args.quick else 4096
    torch.set_num_threads(1)

    cases, small_mlp = build_cases(args.device)
    device = cases[0].loaded.device
    x_full = (np.random.default_rng(1).normal(size=(max(BATCHES), N_FEATURES))
              * 2.0).astype(np.float32)  # fmt: skip
    inputs = {b: np.ascontiguousarray(x_full[:b]) for b in BATCHES}

    figures: dict[str, float | str] = {"device": device, "n_features": N_FEATURES,
                                       "rounds": rounds, "min_s_per_round": min_s}  # fmt: skip
    ratios: dict[str, float] = {}
    rows: list[tuple[str, str, int, float, float]] = []
    for case in cases:
        print(f"timing {case.model} {case.fmt} on {device} ...", flush=True)
        for b in BATCHES:
            s_rate, a_rate = interleaved([case.loaded.predict, case.standalone], inputs[b],
                                         rounds, min_s, min_iter)  # fmt: skip
            rows.append((case.model, case.fmt, b, s_rate, a_rate))
            figures[f"sluice_rows_per_s_{key(case)}_b{b}"] = round(s_rate)
            figures[f"standalone_rows_per_s_{key(case)}_b{b}"] = round(a_rate)
            if b == 1:
                figures[f"ratio_{key(case)}_b1"] = round(s_rate / a_rate, 3)
            else:
                ratios[f"{key(case)}_at_{b}"] = round(s_rate / a_rate, 3)
        # Parity: one row at a time vs one 4096-row call; and vs the model itself.
        full = case.loaded.predict(x_full)
        single = np.array([case.loaded.predict(x_full[i : i + 1])[0]
                           for i in range(parity_rows)])  # fmt: skip
        figures[f"max_abs_diff_b1_vs_b4096_{key(case)}"] = float(
            np.max(np.abs(single - full[:parity_rows])))  # fmt: skip
        if case.reference is not None:
            ref_name = "lightgbm" if case.model.startswith("gbm") else "torch_module"
            figures[f"max_abs_diff_vs_{ref_name}_{key(case)}"] = float(
                np.max(np.abs(full - case.reference(x_full))))  # fmt: skip

    print("timing the exact loop (old) at 4096 ...", flush=True)
    onnx_small = next(c for c in cases if c.model == "mlp64_32" and c.fmt == "onnx")
    loop = exact_loop(small_mlp)
    s_rate, l_rate = interleaved([onnx_small.loaded.predict, loop], inputs[4096],
                                 rounds, min_s, min(min_iter, 5))  # fmt: skip
    figures["exact_loop_rows_per_s_mlp64_32_b4096"] = round(l_rate)
    figures["sluice_rows_per_s_mlp64_32_onnx_b4096_vs_loop_round"] = round(s_rate)
    figures["max_abs_diff_vs_exact_loop_mlp64_32_onnx"] = float(
        np.max(np.abs(onnx_small.loaded.predict(x_full) - loop(x_full))))  # fmt: skip
    ratios["vs_exact_loop"] = round(s_rate / l_rate, 2)

    print(
        f"\nModel scoring on {device}, {N_FEATURES} features: Sluice's LoadedModel.predict vs "
        f"the runtime standalone (best of {rounds} interleaved rounds)"
    )
    header = (f"{'model':<10} {'format':<17} {'batch':>6} {'sluice rows/s':>15} "
              f"{'standalone rows/s':>18} {'ratio':>7}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for model, fmt, b, s, a in rows:
        target = {32: TARGETS["ratio_at_32_min"], 4096: TARGETS["ratio_at_4096_min"]}.get(b)
        flag = "  BELOW TARGET" if target is not None and s / a < target else ""
        print(f"{model:<10} {fmt:<17} {b:>6} {s:>15,.0f} {a:>18,.0f} {s / a:>7.3f}{flag}")
    print(
        f"{'mlp64_32':<10} {'exact loop (old)':<17} {4096:>6} {s_rate:>15,.0f} "
        f"{l_rate:>18,.0f} {s_rate / l_rate:>7.2f}  (sluice onnx vs the old loop)"
    )
    print("\nparity (largest |score difference| of one row):")
    for name, value in figures.items():
        if name.startswith("max_abs_diff"):
            print(f"  {name:<52} {value:.3g}")
    print(json.dumps({"bench": "model", "figures": figures, "ratios": ratios,
                      "targets": TARGETS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
