"""Run a model artifact with its own runtime, and check its signature against a feature spec.

    runner = open_runner(data, "onnx", device="auto", where="fraud/3")
    outputs = runner.run(matrix)             # float32 (rows, n_features) -> every output
    model = LoadedModel("fraud", 3, meta, runner)
    scores = model.predict(matrix)           # one float64 probability per row (to_scores)

ONNX runs in an `onnxruntime.InferenceSession` (the CUDA provider when a GPU is asked for
and the installed onnxruntime has it, otherwise the CPU provider); torch-export and
TorchScript programs run as torch modules under `inference_mode` on CPU or CUDA. Every
runner takes a float32 matrix and returns the model's outputs as NumPy arrays; which
output, which column and which link make the score is the version's `ModelOutput`.

Parity: the runtimes use real batched kernels (GEMM, tree ensembles), whose float
summation order may depend on the batch shape. A row's score is therefore equal across
batch sizes, paths and devices within `SCORE_TOLERANCE`, not bit-identical; the features
it was computed from are bit-identical on every path.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sluice.errors import ModelNotFound
from sluice.models._formats import check_loadable, detect_format

if TYPE_CHECKING:
    from sluice.models._meta import ModelMeta, ModelOutput

__all__ = [
    "SCORE_TOLERANCE",
    "LoadedModel",
    "Runner",
    "check_signature",
    "open_runner",
    "select_device",
    "to_scores",
]

log = logging.getLogger(__name__)

SCORE_TOLERANCE = 1e-6
"""Largest |score difference| of one row across batch sizes, paths and devices (tested)."""


def select_device(preference: str = "auto") -> str:
    """`cuda` when present and allowed (`auto` or `cuda`), otherwise the CPU fallback.

    A contract asking for `cuda` on a host without a GPU still scores (on CPU):
    every GPU path has a CPU fallback.
    """
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")
    if preference == "cpu" or not _gpu_device_present():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
"""What a Linux host with a GPU torch can use shows: NVIDIA's driver, ROCm's, WSL's."""


def _gpu_device_present() -> bool:
    """False only where torch could not see a GPU either (a Linux host with none of
    ``_GPU_DEVICE_FILES``), so the CPU fallback is chosen without importing torch (~0.9 s
    and ~200 MB in every process that loads an ONNX model)."""
    return not sys.platform.startswith("linux") or any(map(os.path.exists, _GPU_DEVICE_FILES))


def set_thread_budget(threads: int) -> None:
    """Give this process's model runtimes ``threads`` threads each (a Serve model replica's
    `torch_threads`), before its models load (an onnxruntime session takes its count when
    it is made): ``OMP_NUM_THREADS``, which torch reads when it is imported and
    `_thread_budget` gives onnxruntime, and torch's own count where torch is already
    loaded. Never imports torch (a replica serving an ONNX model: 1 s to start, ~470 MB)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _thread_budget() -> int:
    """The process's thread budget, not onnxruntime's default of every core: torch's where
    torch is loaded, else ``OMP_NUM_THREADS`` (Ray sets it to an actor's CPUs, a Serve
    model replica to its `torch_threads`: `set_thread_budget`; torch would read the
    same), else 0: onnxruntime's default, one thread per physical core, which is torch's
    default too."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() else 0


class Runner(Protocol):
    device: str

    def run(self, matrix: np.ndarray) -> list[np.ndarray]:
        """Every output of the model for a float32 (rows, n_features) matrix."""
        ...


class OnnxRunner:
    def __init__(self, data: bytes, device: str, where: str) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("%s: this onnxruntime has no CUDA provider; scoring on CPU", where)
                device = "cpu"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = _thread_budget()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph
            raise ModelNotFound(
                f"{where}: onnxruntime cannot load this ONNX model: {_short(exc)}; check the "
                "opset and operators are supported by onnxruntime"
            ) from None
        self.device = device
        self.inputs = self.session.get_inputs()
        self._input = self.inputs[0].name if self.inputs else ""

    def run(self, matrix: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(None, {self._input: matrix})
        return [np.asarray(o) if not isinstance(o, list) else _zipmap(o) for o in outputs]


class TorchRunner:
    def __init__(self, data: bytes, fmt: str, device: str, where: str) -> None:
        import torch

        self._torch = torch
        try:
            if fmt == "torch-export":
                self.program = torch.export.load(io.BytesIO(data))
                module = self.program.module()
            else:
                self.program = None
                module = torch.jit.load(io.BytesIO(data), map_location=device)
            self.module = module.to(device)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a bad archive
            raise ModelNotFound(
                f"{where}: torch cannot load this {fmt} artifact: {_short(exc)}"
            ) from None
        if hasattr(self.module, "eval") and fmt == "torchscript":
            self.module.eval()
        self.device = device

    def run(self, matrix: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(matrix)
            out = self.module(x if self.device == "cpu" else x.to(self.device))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [(o if o.device.type == "cpu" else o.cpu()).numpy() for o in outs]


@dataclass(frozen=True)
class LoadedModel:
    """A version ready to predict: its runtime session on its device, plus its metadata."""

    name: str
    version: int
    meta: ModelMeta
    runner: Runner

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def device(self) -> str:
        return self.runner.device

    def predict(self, matrix: np.ndarray, batch_rows: int = 4096) -> np.ndarray:
        """Fraud probabilities (float64) for a float32 matrix in `meta.feature_names` order,
        run in batches of at most `batch_rows` rows (bounds device memory)."""
        width = len(self.meta.feature_names)
        if matrix.ndim != 2 or matrix.shape[1] != width:
            raise ValueError(
                f"{self.ref}: expected a (rows, {width}) matrix, got shape {matrix.shape}"
            )
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be > 0, got {batch_rows}")
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        rows = matrix.shape[0]
        if rows <= batch_rows:
            return self._scores(matrix)
        out = np.empty(rows, dtype=np.float64)
        for start in range(0, rows, batch_rows):
            out[start : start + batch_rows] = self._scores(matrix[start : start + batch_rows])
        return out

    def _scores(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        scores = to_scores(self.runner.run(matrix), self.meta.output, self.ref)
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores)).sum())
            raise ValueError(f"{self.ref}: the model returned {bad} non-finite score(s)")
        return scores


def open_runner(
    data: bytes, fmt: str, *, device: str = "auto", trusted: bool = False, where: str
) -> Runner:
    """Load an artifact for scoring, once its content is recognized as `fmt` and it passed
    the safety checks of `check_loadable` (at registration and at every load alike)."""
    detect_format(data, where, declared=fmt)
    check_loadable(fmt, trusted=trusted, where=where)
    dev = select_device(device)
    if fmt == "onnx":
        return OnnxRunner(data, dev, where)
    return TorchRunner(data, fmt, dev, where)


def to_scores(outputs: list[np.ndarray], output: ModelOutput, where: str) -> np.ndarray:
    """One float64 probability per row from a model's outputs, by its `ModelOutput`."""
    raw = outputs[output.index] if output.index < len(outputs) else None
    if raw is None:
        raise ModelNotFound(f"{where}: the model has {len(outputs)} outputs, no #{output.index}")
    if raw.ndim == 2 and output.column is not None:
        raw = raw[:, output.column]
    elif raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    values = raw.astype(np.float64, copy=False)
    if output.link == "logit":
        with np.errstate(over="ignore"):  # exp(-z) = inf for z << 0 gives 1 / inf = 0
            return 1.0 / (1.0 + np.exp(-values))
    return values


def check_signature(runner: Runner, n_features: int, output: ModelOutput, where: str) -> None:
    """The model takes a (batch, n_features) float32 matrix with a dynamic batch dimension
    and returns one score per row; refused otherwise, naming the model's side and the
    contract's. Checked from the declared input (ONNX, torch-export) and by running a
    probe of 1 and 3 all-zero rows and of one all-NaN row (a missing input) (every format)."""
    expected = f"the contract's feature spec gives (batch, {n_features}) float32"
    if isinstance(runner, OnnxRunner):
        inputs = runner.inputs
        if len(inputs) != 1:
            names = [i.name for i in inputs]
            raise ModelNotFound(f"{where}: the model takes {len(inputs)} inputs {names}; "
                                f"{expected} as one input")  # fmt: skip
        shape, dtype = list(inputs[0].shape), inputs[0].type
        if dtype != "tensor(float)":
            raise ModelNotFound(f"{where}: input {inputs[0].name!r} is {dtype}; {expected}")
        _check_shape(shape, n_features, expected, where)
    elif isinstance(runner, TorchRunner) and runner.program is not None:
        program = runner.program
        user_inputs = set(program.graph_signature.user_inputs)
        vals = [n.meta.get("val") for n in program.graph.nodes
                if n.op == "placeholder" and n.name in user_inputs]  # fmt: skip
        if len(vals) != 1:
            raise ModelNotFound(f"{where}: the program takes {len(vals)} inputs; {expected}")
        val = vals[0]
        dims = [d if isinstance(d, int) else None for d in val.shape]
        if str(val.dtype) != "torch.float32":
            raise ModelNotFound(f"{where}: the program's input is {val.dtype}; {expected}")
        _check_shape(dims, n_features, expected, where)
    nan_row = np.full((1, n_features), np.nan, dtype=np.float32)
    for probe in (np.zeros((1, n_features), np.float32), np.zeros((3, n_features), np.float32),
                  nan_row):  # fmt: skip
        rows = probe.shape[0]
        try:
            outputs = runner.run(probe)
        except Exception as exc:  # noqa: BLE001 - a runtime error is the model's answer
            raise ModelNotFound(
                f"{where}: the model fails on a ({rows}, {n_features}) float32 batch "
                f"({_short(exc)}); {expected}"
            ) from None
        if output.index >= len(outputs):
            raise ModelNotFound(f"{where}: the model has {len(outputs)} outputs; the declared "
                                f"score output is #{output.index}")  # fmt: skip
        raw = outputs[output.index]
        if raw.ndim == 1 and output.column is not None:
            raise ModelNotFound(f"{where}: column {output.column} is declared but the score "
                                f"output is one value per row {tuple(raw.shape)}; declare no "
                                "column")  # fmt: skip
        width_ok = raw.ndim == 2 and (raw.shape[1] == 1 or output.column is not None)
        per_row = raw.ndim == 1 or width_ok
        if raw.shape[:1] != (rows,) or not per_row or raw.dtype.kind != "f":
            raise ModelNotFound(
                f"{where}: for {rows} rows the score output is {raw.dtype} {tuple(raw.shape)}; "
                f"expected one float per row ({rows},) or ({rows}, 1), or ({rows}, k) with a "
                "declared column (the positive class of a classifier: --output-column 1, "
                "ModelOutput(column=1))"
            )
        if raw.ndim == 2 and output.column is not None and output.column >= raw.shape[1]:
            raise ModelNotFound(f"{where}: column {output.column} is outside the model's "
                                f"output of width {raw.shape[1]}")  # fmt: skip
        scores = to_scores(outputs, output, where)
        if probe is nan_row and not np.isfinite(scores).all():
            raise ModelNotFound(
                f"{where}: the model scores a row of missing features (NaN) as {scores[0]}; a "
                "feature is NaN when its input is missing, and every row needs a finite score. "
                "Handle NaN in the model (e.g. torch.nan_to_num; tree models do natively)"
            )
        if output.link == "probability" and not np.all((scores >= 0) & (scores <= 1)):
            raise ModelNotFound(
                f"{where}: the score output gives {scores.tolist()} for a probe row; a "
                "probability must lie in [0, 1]. If the model returns logits, register it "
                "with --link logit"
            )


def _check_shape(shape: list[Any], n_features: int, expected: str, where: str) -> None:
    if len(shape) != 2:
        raise ModelNotFound(f"{where}: the model's input has shape {shape}; {expected}")
    if isinstance(shape[0], int) and shape[0] > 0:
        raise ModelNotFound(
            f"{where}: the model's batch dimension is fixed to {shape[0]}; {expected} with a "
            "dynamic batch (export with dynamic_shapes / dynamic_axes on dimension 0)"
        )
    if isinstance(shape[1], int) and shape[1] != n_features:
        raise ModelNotFound(f"{where}: the model takes {shape[1]} features; {expected}")


def _zipmap(rows: list[dict[Any, float]]) -> np.ndarray:
    """A ZipMap output (one {class: probability} per row) as a (rows, classes) array."""
    if not rows:
        return np.empty((0, 0), dtype=np.float32)
    keys = sorted(rows[0])
    return np.array([[r[k] for k in keys] for r in rows], dtype=np.float32)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
