"""Model artifact formats: which file a version holds, how it is recognized, and which are safe.

    fmt = detect_format(data, "model.onnx")        # "onnx" | "torch-export" | "torchscript"
    check_loadable(fmt, trusted=False, where="fraud.onnx")

| format         | file       | runtime     | safe for an untrusted artifact                    |
|----------------|------------|-------------|---------------------------------------------------|
| `onnx`         | model.onnx | onnxruntime | yes: a protobuf graph of known operators, no code |
| `torch-export` | model.pt2  | torch       | no: `torch.export.load` runs code from the archive |
| `torchscript`  | model.ts   | torch       | no: the archive is a program the loader compiles  |

Why a `.pt2` is not safe, read in torch 2.13's loader (`torch/export/pt2_archive/_package.py`,
`torch/_export/serde/serialize.py`, `torch/utils/_pytree.py`): it unpickles pickled weights,
constants and sample inputs with `weights_only=False` and object constants with plain
`pickle.loads`; it parses the graph's symbolic shapes with `sympy.sympify`, which evaluates
Python; its pytree specs name types it imports (`importlib.import_module`); and it loads an
AOTInductor shared library found in the archive. No check of the archive from outside closes
all of these, so, like TorchScript, a `.pt2` is accepted only for a version registered with
`trusted=True` (recorded with the version, shown by `sluice models show`). An untrusted
model is registered as ONNX. A plain Python pickle is never a model here, trusted or not.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Literal, get_args

from sluice.errors import ModelNotFound

__all__ = [
    "FORMATS",
    "FormatInfo",
    "ModelFormat",
    "check_loadable",
    "detect_format",
    "model_file",
]

ModelFormat = Literal["onnx", "torch-export", "torchscript"]


@dataclass(frozen=True)
class FormatInfo:
    file: str
    """The file name of the artifact inside a registry version or an artifact directory."""
    runtime: str
    """The Python package that runs it (checked to be importable at registration)."""
    safe: bool
    """Loadable without running code from the artifact."""


FORMATS: dict[str, FormatInfo] = {
    "onnx": FormatInfo("model.onnx", "onnxruntime", True),
    "torch-export": FormatInfo("model.pt2", "torch", False),
    "torchscript": FormatInfo("model.ts", "torch", False),
}
assert set(FORMATS) == set(get_args(ModelFormat))

_PICKLE_FIX = (
    "pickled Python objects are never loaded as models; save the model with torch.export "
    "(.pt2), torch.onnx / skl2onnx / onnxmltools (.onnx), or TorchScript (--trusted)"
)


def model_file(fmt: str) -> str:
    return _info(fmt, "").file


def _info(fmt: str, where: str) -> FormatInfo:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ModelNotFound(
            f"{where}: unknown model format {fmt!r}; expected one of {', '.join(FORMATS)}"
        ) from None


def _zip_names(data: bytes) -> list[str] | None:
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        return zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile:
        return None


def detect_format(data: bytes, where: str, declared: str | None = None) -> ModelFormat:
    """The format of an artifact's bytes; `declared` (from `--format`) must agree with them.

    Recognized by content, not by name: a torch-export archive has `archive_format` and
    `models/*.json`, a TorchScript archive has `code/` and `constants.pkl`, anything else
    must parse as an ONNX ModelProto with a graph. A pickle is refused outright.
    """
    if declared is not None:
        _info(declared, where)
    found = _detect(data, where)
    if declared is not None and declared != found:
        raise ModelNotFound(
            f"{where}: declared format {declared!r} but the file is a {found} artifact; "
            f"register it with --format {found} (or export the model as {declared})"
        )
    return found


def _detect(data: bytes, where: str) -> ModelFormat:
    if not data:
        raise ModelNotFound(
            f"{where}: the model file is empty; expected a model in one of the formats "
            f"{', '.join(FORMATS)} (check the export finished writing the file)"
        )
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ModelNotFound(f"{where}: is a Python pickle, not a model artifact; {_PICKLE_FIX}")
    names = _zip_names(data)
    if names is not None:
        if any(n.endswith("/archive_format") for n in names) and any(
            "/models/" in n and n.endswith(".json") for n in names
        ):
            return "torch-export"
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            raise ModelNotFound(f"{where}: is a torch.save archive (a pickle); {_PICKLE_FIX}")
        raise ModelNotFound(
            f"{where}: is a zip archive but neither a torch.export (.pt2) nor a TorchScript "
            f"archive; expected one of the formats {', '.join(FORMATS)}"
        )
    try:
        import onnx
    except ImportError:
        raise ModelNotFound(
            f"{where}: not a torch archive, and the onnx package is not installed to check "
            "whether it is ONNX; install sluice's dependencies (make install)"
        ) from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError and others
        raise ModelNotFound(
            f"{where}: not a model in any known format ({', '.join(FORMATS)}): it is not a "
            f"torch archive and does not parse as ONNX ({type(exc).__name__}); check the file "
            "is complete and was saved by torch.export, torch.onnx, skl2onnx or onnxmltools"
        ) from None
    if not proto.graph.node or not proto.graph.output:
        raise ModelNotFound(
            f"{where}: not a model in any known format ({', '.join(FORMATS)}): it parses as "
            "ONNX but has no graph (a corrupt or truncated file?)"
        )
    return "onnx"


_WHY_UNSAFE = {
    "torch-export": "torch.export.load runs code from a .pt2 (it unpickles parts of it with "
    "weights_only=False, evaluates its shape expressions with sympy and imports the types it "
    "names)",
    "torchscript": "a TorchScript archive is a program that torch.jit.load compiles and runs",
}


def check_loadable(fmt: str, *, trusted: bool, where: str) -> None:
    """Refuse a format that runs code from the artifact when loaded, unless it is `trusted`;
    check the runtime is installed. Called at registration and again before every load."""
    info = _info(fmt, where)
    try:
        __import__(info.runtime)
    except ImportError:
        raise ModelNotFound(
            f"{where}: format {fmt} needs the {info.runtime} package, which is not installed; "
            f"install it (make install) or export the model as ONNX"
        ) from None
    if not info.safe and not trusted:
        raise ModelNotFound(
            f"{where}: {fmt} artifacts are accepted only from a trusted source: "
            f"{_WHY_UNSAFE[fmt]}. Register it with --trusted (trusted=True) if you trust "
            "where it came from, or export the model as ONNX (torch.onnx.export, skl2onnx, "
            "onnxmltools), which loads without running code"
        )
