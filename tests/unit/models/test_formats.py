"""Model artifact formats: detection by content, safety of untrusted artifacts per format,
signature checks, the trusted flag, and `sluice models register` with each format."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from model_factories import FEATURES, make_meta, make_model, make_net
from typer.testing import CliRunner

from sluice.cli import app
from sluice.errors import ModelNotFound
from sluice.models import (
    MLP,
    SCORE_TOLERANCE,
    MLPConfig,
    ModelOutput,
    ModelRegistry,
    detect_format,
    export_module,
    save_artifact,
)
from sluice.models._artifact import meta_bytes

FORMAT_NAMES = ("onnx", "torch-export", "torchscript")
KNOWN_FORMATS = "onnx, torch-export, torchscript"
SUFFIX = {"onnx": "model.onnx", "torch-export": "model.pt2", "torchscript": "model.ts"}
PT2_WEIGHTS_CONFIG = "archive/data/weights/model_weights_config.json"
PT2_CONSTANTS_CONFIG = "archive/data/constants/model_constants_config.json"
PT2_SAMPLE_INPUTS = "archive/data/sample_inputs/model.pt"

runner = CliRunner()


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)


# -- 1. detection ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_each_format_is_detected_by_content(fmt):
    data = make_model(0, fmt)
    assert detect_format(data, "where") == fmt
    assert detect_format(data, "where", declared=fmt) == fmt


@pytest.mark.parametrize(
    ("actual", "declared"),
    [(a, d) for a in FORMAT_NAMES for d in FORMAT_NAMES if a != d],
)
def test_a_declared_format_that_disagrees_with_the_content_is_refused(actual, declared):
    with pytest.raises(ModelNotFound) as info:
        detect_format(make_model(0, actual), "team/model.bin", declared=declared)
    message = str(info.value)
    assert message.startswith("team/model.bin: ")
    assert repr(declared) in message and f"a {actual} artifact" in message
    assert f"--format {actual}" in message


def test_the_file_name_does_not_decide_the_format(registry, tmp_path):
    misnamed = tmp_path / "model.pt2"  # an ONNX graph behind a torch-export name
    misnamed.write_bytes(make_model(0, "onnx"))
    assert registry.register("fraud", misnamed, make_meta(fmt="onnx")) == 1
    assert registry.show("fraud/1").meta.format == "onnx"
    with pytest.raises(ModelNotFound, match="declared format 'torch-export'"):
        registry.register("fraud", misnamed, make_meta(fmt="torch-export"))
    assert [m.latest for m in registry.list_models()] == [1]


# -- 2. malicious pickles disguised as each format ------------------------------------------


class _Evil:
    """Unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_save(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _pad4(data: bytes) -> bytes:
    """Bytes past a pickle's STOP are ignored; padded so a float32 view of it is valid."""
    return data + b"\0" * (-len(data) % 4)


def _rebuild_zip(data: bytes, edit: Callable[[dict[str, bytes]], None]) -> bytes:
    """A copy of a zip archive with its members edited (in order, uncompressed)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    edit(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return out.getvalue()


def _float_meta(members: dict[str, bytes], payload: bytes) -> dict:
    """A tensor_meta of the real archive, resized to a 1-d float32 view of `payload`."""
    config = json.loads(members[PT2_WEIGHTS_CONFIG])["config"]
    meta = dict(config["input_mean"]["tensor_meta"])
    meta.update(sizes=[{"as_int": len(payload) // 4}], strides=[{"as_int": 1}])
    return meta


def _pt2_pickled_weight(evil: _Evil, pickler: str) -> bytes:
    payload = _torch_save(evil) if pickler == "torch_save" else pickle.dumps(evil)

    def edit(members: dict[str, bytes]) -> None:
        config = json.loads(members[PT2_WEIGHTS_CONFIG])
        entry = config["config"]["layers.0.weight"]
        entry["use_pickle"] = True
        members[f"archive/data/weights/{entry['path_name']}"] = payload
        members[PT2_WEIGHTS_CONFIG] = json.dumps(config).encode()

    return _rebuild_zip(make_model(0, "torch-export"), edit)


def _pt2_unknown_custom_obj(evil: _Evil) -> bytes:
    def edit(members: dict[str, bytes]) -> None:
        members["archive/data/constants/custom_obj_0"] = pickle.dumps(evil)

    return _rebuild_zip(make_model(0, "torch-export"), edit)


def _pt2_listed_custom_obj(evil: _Evil) -> bytes:
    def edit(members: dict[str, bytes]) -> None:
        members["archive/data/constants/custom_obj_0"] = pickle.dumps(evil)
        config = json.loads(members[PT2_CONSTANTS_CONFIG])
        config["config"]["obj"] = {"path_name": "custom_obj_0", "is_param": False,
                                   "use_pickle": True, "tensor_meta": None}  # fmt: skip
        members[PT2_CONSTANTS_CONFIG] = json.dumps(config).encode()

    return _rebuild_zip(make_model(0, "torch-export"), edit)


def _pt2_evil_sample_inputs(evil: _Evil, pickler: str) -> bytes:
    payload = _torch_save(evil) if pickler == "torch_save" else pickle.dumps(evil)

    def edit(members: dict[str, bytes]) -> None:
        members[PT2_SAMPLE_INPUTS] = payload

    return _rebuild_zip(make_model(0, "torch-export"), edit)


def _pt2_opaque_obj_declared_raw(evil: _Evil) -> bytes:
    """torch.export.load unpickles every `opaque_obj_*` constant with plain `pickle.loads`,
    whatever its config entry says; here the entry claims raw tensor bytes."""
    payload = _pad4(pickle.dumps(evil))

    def edit(members: dict[str, bytes]) -> None:
        members["archive/data/constants/opaque_obj_0"] = payload
        config = json.loads(members[PT2_CONSTANTS_CONFIG])
        config["config"]["obj"] = {"path_name": "opaque_obj_0", "is_param": False,
                                   "use_pickle": False,
                                   "tensor_meta": _float_meta(members, payload)}  # fmt: skip
        members[PT2_CONSTANTS_CONFIG] = json.dumps(config).encode()

    return _rebuild_zip(make_model(0, "torch-export"), edit)


def _pt2_member_both_raw_and_pickled(evil: _Evil) -> bytes:
    """Two config entries name the same member: one as raw tensor bytes, one pickled."""
    payload = _pad4(_torch_save(evil))

    def edit(members: dict[str, bytes]) -> None:
        members["archive/data/weights/weight_99"] = payload
        config = json.loads(members[PT2_WEIGHTS_CONFIG])
        config["config"]["extra_raw"] = {"path_name": "weight_99", "is_param": False,
                                         "use_pickle": False,
                                         "tensor_meta": _float_meta(members, payload)}  # fmt: skip
        config["config"]["extra_pickled"] = {"path_name": "weight_99", "is_param": False,
                                             "use_pickle": True, "tensor_meta": None}  # fmt: skip
        members[PT2_WEIGHTS_CONFIG] = json.dumps(config).encode()

    return _rebuild_zip(make_model(0, "torch-export"), edit)


MALICIOUS: dict[str, tuple[str, Callable[[_Evil], bytes], str]] = {
    # case: (declared format, artifact builder, what the message must say)
    **{
        f"{fmt}-raw-pickle": (fmt, lambda e: pickle.dumps(e), "pickle")
        for fmt in FORMAT_NAMES
    },
    **{
        f"{fmt}-torch-save": (fmt, _torch_save, "torch.save archive")
        for fmt in FORMAT_NAMES
    },
    "pt2-pickled-weight-torch-save": (
        "torch-export", lambda e: _pt2_pickled_weight(e, "torch_save"), "--trusted"
    ),
    "pt2-pickled-weight-raw-pickle": (
        "torch-export", lambda e: _pt2_pickled_weight(e, "raw"), "--trusted"
    ),
    "pt2-unknown-custom-obj": ("torch-export", _pt2_unknown_custom_obj, "--trusted"),
    "pt2-listed-custom-obj": ("torch-export", _pt2_listed_custom_obj, "--trusted"),
    "pt2-sample-inputs-torch-save": (
        "torch-export", lambda e: _pt2_evil_sample_inputs(e, "torch_save"), "--trusted"
    ),
    "pt2-sample-inputs-raw-pickle": (
        "torch-export", lambda e: _pt2_evil_sample_inputs(e, "raw"), "--trusted"
    ),
    "pt2-opaque-obj-declared-raw": ("torch-export", _pt2_opaque_obj_declared_raw, "--trusted"),
    "pt2-member-both-raw-and-pickled": (
        "torch-export", _pt2_member_both_raw_and_pickled, "--trusted"
    ),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_malicious_pickle_disguised_as_a_format_is_refused_untrusted(registry, tmp_path, case):
    fmt, build, expected = MALICIOUS[case]
    marker = tmp_path / "pwned"
    data = build(_Evil(marker))
    assert not marker.exists()  # building the artifact ran nothing
    try:
        registry.register("fraud", data, make_meta(fmt=fmt))
    except ModelNotFound as exc:
        error: ModelNotFound | None = exc
    else:
        error = None
    assert not marker.exists(), f"{case}: registering ran code from the artifact"
    assert error is not None, f"{case}: registered an untrusted artifact that runs code"
    assert expected in str(error)
    assert registry.list_models() == []  # nothing half-registered
    # refused before anything is loaded: the safety check alone refuses it
    with pytest.raises(ModelNotFound, match=expected):
        _detect_and_check(data, fmt)
    assert not marker.exists()


def _detect_and_check(data: bytes, fmt: str) -> None:
    from sluice.models._formats import check_loadable

    check_loadable(detect_format(data, "artifact", declared=fmt), trusted=False,
                   where="artifact")  # fmt: skip


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_a_real_torch_archive_needs_trusted(registry, fmt):
    """torch.export.load and torch.jit.load both run code from the archive (README "Bring
    your own model"): a genuine archive is refused without trust, and tells the way out."""
    with pytest.raises(ModelNotFound) as info:
        registry.register("fraud", make_model(0, fmt), make_meta(fmt=fmt))
    message = str(info.value)
    assert fmt in message and "--trusted" in message and "ONNX" in message
    assert registry.list_models() == []
    assert registry.register("fraud", make_model(0, fmt), make_meta(fmt=fmt, trusted=True)) == 1


def test_an_artifact_directory_cannot_declare_itself_trusted(tmp_path):
    """Trust is the registering caller's word: a meta.json saying `trusted: true` is
    ignored by load_artifact and register_artifact."""
    from sluice.models import load_artifact

    directory = save_artifact(tmp_path / "a", make_model(0, "torchscript"),
                              make_meta(fmt="torchscript", trusted=True))  # fmt: skip
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(ModelNotFound, match="--trusted"):
        load_artifact(directory)
    with pytest.raises(ModelNotFound, match="--trusted"):
        registry.register_artifact("fraud", directory)
    assert registry.register_artifact("fraud", directory, trusted=True) == 1


# -- 3. trusted TorchScript -----------------------------------------------------------------


def test_a_trusted_torchscript_registers_and_is_shown_as_trusted(registry):
    meta = make_meta(fmt="torchscript", trusted=True)
    assert registry.register("fraud", make_model(0, "torchscript"), meta) == 1
    info = registry.show("fraud/1")
    assert info.record.trusted is True and info.meta.trusted is True
    assert info.record.format == "torchscript"
    x = _rows(5)
    expected = torch.sigmoid(make_net(0)(torch.from_numpy(x))).detach().numpy()
    scores = registry.load("fraud/1", device="cpu").predict(x)
    np.testing.assert_allclose(scores, expected, atol=SCORE_TOLERANCE)

    result = runner.invoke(app, ["models", "show", "fraud/1", "--registry", registry.root_uri])
    assert result.exit_code == 0, result.output
    format_line = next(line for line in result.output.splitlines() if line.startswith("format"))
    assert "torchscript" in format_line and "trusted" in format_line
    assert "untrusted" not in format_line

    # an untrusted version says so
    registry.register("fraud", make_model(0, "onnx"), make_meta())
    result = runner.invoke(app, ["models", "show", "fraud/2", "--registry", registry.root_uri])
    format_line = next(line for line in result.output.splitlines() if line.startswith("format"))
    assert "onnx" in format_line and "trusted source" not in format_line


# -- 4. bad input --------------------------------------------------------------------------


def _onnx_graph(inputs: list[tuple[str, int]], nodes: list, output: str) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "candidate",
        [helper.make_tensor_value_info(n, t, ["batch", len(FEATURES)]) for n, t in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def _int64_input() -> bytes:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["xf", "axes"], ["s"], keepdims=1),
        helper.make_node("Sigmoid", ["s"], ["score"]),
    ]
    return _onnx_graph([("x", TensorProto.INT64)], nodes, "score")


def _two_inputs() -> bytes:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("ReduceSum", ["ab", "axes"], ["s"], keepdims=1),
        helper.make_node("Sigmoid", ["s"], ["score"]),
    ]
    return _onnx_graph([("a", TensorProto.FLOAT), ("b", TensorProto.FLOAT)], nodes, "score")


def _torch_onnx(module: torch.nn.Module, n_features: int, dynamic: bool) -> bytes:
    buffer = io.BytesIO()
    axes = {"features": {0: "batch"}, "score": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(4, n_features),), buffer,
                          input_names=["features"], output_names=["score"],
                          dynamic_axes=axes, dynamo=False)  # fmt: skip
    return buffer.getvalue()


def _neither_format_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("weights/readme.txt", "not a model")
        archive.writestr("weights/w.bin", b"\0" * 64)
    return out.getvalue()


class _NanToNum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(x)


def _two_columns() -> bytes:
    torch.manual_seed(0)
    net = torch.nn.Sequential(_NanToNum(), torch.nn.Linear(3, 2), torch.nn.Sigmoid())
    return _torch_onnx(net, 3, True)


def _probability_mlp() -> bytes:
    # make_net(0) returns a logit of about -0.035 for an all-zero row: not a probability
    assert make_net(0)(torch.zeros(1, len(FEATURES))).item() < 0
    return make_model(0, "onnx")


BAD_INPUT: dict[str, tuple[Callable[[], bytes], ModelOutput | None, tuple[str, ...]]] = {
    # case: (artifact, score output (None: make_meta's), phrases the message must hold)
    "unknown-format": (
        lambda: np.random.default_rng(0).bytes(4096), None,
        ("not a model in any known format", KNOWN_FORMATS, "saved by torch.export"),
    ),
    "empty-file": (lambda: b"", None, ("empty", KNOWN_FORMATS)),
    "truncated-onnx": (
        lambda: make_model(0, "onnx")[: len(make_model(0, "onnx")) // 2], None,
        ("not a model in any known format", KNOWN_FORMATS, "check the file is complete"),
    ),
    "zip-of-neither-format": (
        _neither_format_zip, None,
        ("zip archive but neither a torch.export (.pt2) nor a TorchScript", KNOWN_FORMATS),
    ),
    "fixed-batch": (
        lambda: _torch_onnx(make_net(0), len(FEATURES), dynamic=False), None,
        ("batch dimension is fixed to 4", "(batch, 3) float32", "dynamic_axes on dimension 0"),
    ),
    "five-features": (
        lambda: export_module(MLP(MLPConfig(input_dim=5, hidden_dims=(4,))), 5, "onnx"), None,
        ("takes 5 features", "(batch, 3) float32"),
    ),
    "int64-input": (
        _int64_input, ModelOutput(link="probability"),
        ("input 'x' is tensor(int64)", "(batch, 3) float32"),
    ),
    "two-inputs": (
        _two_inputs, ModelOutput(link="probability"),
        ("takes 2 inputs ['a', 'b']", "(batch, 3) float32 as one input"),
    ),
    "two-columns-no-column": (
        _two_columns, ModelOutput(link="probability"),
        ("(1, 2)", "expected one float per row", "declared column"),
    ),
    "probability-outside-0-1": (
        _probability_mlp, ModelOutput(link="probability"),
        ("must lie in [0, 1]", "--link logit"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_refused_naming_the_file_the_format_and_the_fix(registry, tmp_path, case):
    build, output, phrases = BAD_INPUT[case]
    path = tmp_path / "candidate.model"
    path.write_bytes(build())
    meta = make_meta(fmt="onnx")
    if output is not None:
        meta = meta.model_copy(update={"output": output})
    with pytest.raises(ModelNotFound) as info:
        registry.register("fraud", path, meta)
    message = str(info.value)
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, f"{case}: {phrase!r} not in {message!r}"
    assert registry.list_models() == []
    assert not Path(registry.root_uri, "fraud", "versions").exists()


def test_a_two_column_output_registers_with_a_declared_column(registry):
    meta = make_meta().model_copy(update={"output": ModelOutput(column=1, link="probability")})
    assert registry.register("fraud", _two_columns(), meta) == 1
    bad = meta.model_copy(update={"output": ModelOutput(column=2, link="probability")})
    with pytest.raises(ModelNotFound, match="column 2 is outside the model's output of width 2"):
        registry.register("fraud", _two_columns(), bad)


# -- 5. LightGBM through onnxmltools ---------------------------------------------------------


def test_a_lightgbm_classifier_exported_to_onnx_registers_and_scores_like_lightgbm(registry):
    import lightgbm

    from pipelines.train_gbm import lightgbm_to_onnx

    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(np.int32)
    model = lightgbm.LGBMClassifier(n_estimators=5, n_jobs=1, verbose=-1, min_child_samples=5)
    model.fit(x, y)
    output = ModelOutput(index=1, column=1, link="probability")
    meta = make_meta().model_copy(update={"output": output})
    assert registry.register("gbm", lightgbm_to_onnx(model, len(FEATURES)), meta) == 1
    probe = _rows(300, seed=6)
    scores = registry.load("gbm/1", device="cpu").predict(probe, batch_rows=64)
    expected = model.predict_proba(probe)[:, 1]
    assert scores.shape == (300,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert 0.05 < scores.std()  # a real classifier, not a constant


# -- 6. parity across formats and batch sizes ------------------------------------------------


def test_the_same_mlp_scores_alike_in_every_format_and_batch_size(registry):
    metas = {
        "onnx": make_meta(fmt="onnx"),
        "torch-export": make_meta(fmt="torch-export", trusted=True),
        "torchscript": make_meta(fmt="torchscript", trusted=True),
    }
    x = _rows(500, seed=11)
    x[:3] *= 1e3  # far from the training scale: saturated scores too
    reference = torch.sigmoid(make_net(7)(torch.from_numpy(x))).detach().double().numpy()
    scores: dict[tuple[str, int], np.ndarray] = {}
    for fmt, meta in metas.items():
        version = registry.register(fmt.replace("-", "_"), make_model(7, fmt), meta)
        model = registry.load(f"{fmt.replace('-', '_')}/{version}", device="cpu")
        for batch in (1, 7, 4096):
            scores[fmt, batch] = model.predict(x, batch_rows=batch)
            assert scores[fmt, batch].shape == (500,)
            np.testing.assert_allclose(scores[fmt, batch], reference, atol=SCORE_TOLERANCE,
                                       rtol=0, err_msg=f"{fmt} batch {batch}")  # fmt: skip
        diff = np.abs(scores[fmt, 1] - scores[fmt, 4096]).max()
        assert diff <= SCORE_TOLERANCE, f"{fmt}: batch 1 vs 4096 differ by {diff}"
    first = scores["onnx", 4096]
    for key, values in scores.items():
        assert np.abs(values - first).max() <= SCORE_TOLERANCE, key


# -- 7. a runtime that is not installed ----------------------------------------------------


def test_a_runtime_that_is_not_installed_is_refused_at_registration(registry, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(ModelNotFound) as info:
        registry.register("fraud", make_model(0, "onnx"), make_meta(fmt="onnx"))
    message = str(info.value)
    assert "onnxruntime" in message and "not installed" in message
    assert "make install" in message and "onnx" in message
    assert registry.list_models() == []


# -- 8. the CLI ----------------------------------------------------------------------------


def _cli(*args: str):
    return runner.invoke(app, ["models", *args])


def _flat(text: str) -> str:
    """CLI output without the box drawing and line wrapping of click/rich usage errors."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def _write_model(tmp_path: Path, fmt: str, seed: int = 0, name: str | None = None) -> Path:
    path = tmp_path / (name or SUFFIX[fmt])
    path.write_bytes(make_model(seed, fmt))
    return path


def _write_meta(tmp_path: Path, fmt: str, trusted: bool = False) -> Path:
    path = tmp_path / f"meta-{fmt}.json"
    path.write_bytes(meta_bytes(make_meta(fmt=fmt, trusted=trusted)))
    return path


def test_cli_registers_an_artifact_directory_and_a_model_file_with_meta(tmp_path):
    root = str(tmp_path / "registry")
    directory = save_artifact(tmp_path / "artifact", make_model(0, "onnx"), make_meta())
    result = _cli("register", "fraud", directory, "--registry", root)
    assert result.exit_code == 0, result.output
    assert "registered fraud/1  format onnx" in result.output

    for version, fmt in enumerate(("onnx", "torch-export"), start=2):
        model = _write_model(tmp_path, fmt)
        meta = _write_meta(tmp_path, fmt)
        trust = ["--trusted"] if fmt == "torch-export" else []
        result = _cli("register", "fraud", str(model), "--meta", str(meta), *trust,
                      "--registry", root)  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"registered fraud/{version}  format {fmt}" in result.output
        assert ("trusted" in result.output) == bool(trust)
    registry = ModelRegistry(root)
    assert [registry.show(f"fraud/{v}").meta.format for v in (1, 2, 3)] == [
        "onnx", "onnx", "torch-export"
    ]  # fmt: skip
    assert [registry.show(f"fraud/{v}").record.trusted for v in (1, 2, 3)] == [False, False, True]


def test_cli_a_model_file_without_meta_is_refused(tmp_path):
    root = tmp_path / "registry"
    model = _write_model(tmp_path, "onnx")
    result = _cli("register", "fraud", str(model), "--registry", str(root))
    assert result.exit_code != 0
    assert "--meta" in _flat(result.output) and "meta.json" in _flat(result.output)
    assert ModelRegistry(root).list_models() == []


def test_cli_a_declared_format_that_disagrees_is_one_error_line_and_exit_1(tmp_path):
    root = tmp_path / "registry"
    model = _write_model(tmp_path, "torch-export")
    meta = _write_meta(tmp_path, "torch-export")
    result = _cli("register", "fraud", str(model), "--meta", str(meta), "--format", "onnx",
                  "--registry", str(root))  # fmt: skip
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert str(model) in lines[0] and "'onnx'" in lines[0] and "torch-export" in lines[0]
    assert "Traceback" not in result.output
    assert ModelRegistry(root).list_models() == []


def test_cli_trusted_torchscript_is_recorded_and_shown(tmp_path):
    root = tmp_path / "registry"
    model = _write_model(tmp_path, "torchscript")
    # a meta.json that claims trust does not make it trusted: only --trusted does
    meta = _write_meta(tmp_path, "torchscript", trusted=True)
    result = _cli("register", "fraud", str(model), "--meta", str(meta), "--registry", str(root))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "--trusted" in result.output
    assert ModelRegistry(root).list_models() == []

    result = _cli("register", "fraud", str(model), "--meta", str(meta), "--trusted",
                  "--registry", str(root))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "registered fraud/1  format torchscript  (trusted source)" in result.output
    assert ModelRegistry(root).show("fraud/1").record.trusted is True
    result = _cli("show", "fraud/1", "--registry", str(root))
    assert result.exit_code == 0, result.output
    assert "torchscript  trusted source" in result.output


def test_cli_output_options_override_the_meta(tmp_path):
    root = tmp_path / "registry"
    model = _write_model(tmp_path, "onnx")
    meta = _write_meta(tmp_path, "onnx")
    result = _cli("register", "fraud", str(model), "--meta", str(meta), "--link", "probability",
                  "--registry", str(root))  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "--link logit" in result.output
    result = _cli("register", "fraud", str(model), "--meta", str(meta), "--link", "logit",
                  "--output-index", "0", "--registry", str(root))  # fmt: skip
    assert result.exit_code == 0, result.output
    output = ModelRegistry(root).show("fraud/1").meta.output
    assert (output.index, output.column, output.link) == (0, None, "logit")


def test_cli_a_directory_with_two_model_files_is_refused(tmp_path):
    root = tmp_path / "registry"
    directory = Path(save_artifact(tmp_path / "artifact", make_model(0, "onnx"), make_meta()))
    (directory / "model.pt2").write_bytes(make_model(0, "torch-export"))
    result = _cli("register", "fraud", str(directory), "--registry", str(root))
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ")
    assert "expected exactly one model file" in result.output
    assert "model.onnx" in result.output and "model.pt2" in result.output
    assert ModelRegistry(root).list_models() == []


def test_a_model_that_scores_missing_features_as_nan_is_refused(registry):
    """A feature is NaN when its input is missing; a model without NaN handling would fail
    a whole scoring batch later, so it is refused at registration, saying how to fix it."""
    torch.manual_seed(0)
    plain = export_module(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), 3)
    with pytest.raises(ModelNotFound, match=r"missing features \(NaN\).*nan_to_num"):
        registry.register("fraud", plain, make_meta())
    assert registry.list_models() == []


def test_a_column_declared_on_a_one_value_per_row_output_is_refused(registry):
    meta = make_meta().model_copy(update={"output": ModelOutput(column=0, link="logit")})
    with pytest.raises(ModelNotFound, match="declare no column"):
        registry.register("fraud", make_model(0), meta)
