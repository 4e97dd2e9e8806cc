"""Model artifact formats: which file a version holds, how it is recognized, and which are safe.

    fmt = detect_format(data, "model.onnx")        # "onnx" | "torch-export" | "torchscript"
    check_loadable(data, fmt, trusted=False, where="fraud.onnx")

| format         | file      | runtime      | safe for an untrusted artifact |
|----------------|-----------|--------------|--------------------------------|
| `onnx`         | model.onnx| onnxruntime  | yes: a protobuf graph of known operators, no code |
| `torch-export` | model.pt2 | torch        | yes, once every pickled part of the archive has   |
|                |           |              | loaded with `torch.load(weights_only=True)` and   |
|                |           |              | nothing else in it is code (see `check_pt2`)      |
| `torchscript`  | model.ts  | torch        | no: the archive is a program (TorchScript code)   |
|                |           |              | the loader compiles and runs; `trusted` only      |

A format that cannot be loaded without running code from the artifact is accepted only
for a version registered with `trusted=True` (recorded with the version, shown by
`sluice models show`). A plain Python pickle is never a model here, trusted or not.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Literal, get_args

from sluice.errors import ModelNotFound

__all__ = [
    "FORMATS",
    "FormatInfo",
    "ModelFormat",
    "check_loadable",
    "check_pt2",
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
    suffixes: tuple[str, ...]


FORMATS: dict[str, FormatInfo] = {
    "onnx": FormatInfo("model.onnx", "onnxruntime", True, (".onnx",)),
    "torch-export": FormatInfo("model.pt2", "torch", True, (".pt2",)),
    "torchscript": FormatInfo("model.ts", "torch", False, (".ts", ".torchscript", ".jit")),
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


def check_loadable(data: bytes, fmt: str, *, trusted: bool, where: str) -> None:
    """Refuse what would run code from the artifact, unless it is `trusted`; check the
    runtime is installed. Called at registration and again before every load."""
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
            f"{where}: {fmt} artifacts are programs that run when loaded, so they are accepted "
            "only from a trusted source: register it with --trusted (trusted=True), or export "
            "the model with torch.export (.pt2) or as ONNX, which load without running code"
        )
    if fmt == "torch-export" and not trusted:
        check_pt2(data, where)


# The members of a torch.export archive (torch.export.pt2_archive) that are data:
# format markers, JSON, and tensor bytes named by a payload config.
_PT2_TEXT = ("archive_format", "archive_version", "byteorder", ".data/version",
             ".data/serialization_id")  # fmt: skip


def check_pt2(data: bytes, where: str) -> None:
    """Prove a torch.export archive loads without running code from it.

    `torch.export.load` unpickles some members with `weights_only=False` (pickled weights
    and constants, sample inputs) and custom-object constants with plain `pickle`. Here
    every member must be a format marker, JSON, raw tensor bytes named by a payload config
    (`use_pickle: false`), or a pickle that `torch.load(weights_only=True)` accepts, which
    builds tensors and containers only, so the full unpickler then builds the same thing.
    Anything else (a custom object, a compiled AOTInductor library, an unknown member)
    is refused.
    """
    import torch

    archive = zipfile.ZipFile(io.BytesIO(data))
    names = archive.namelist()
    raw: set[str] = set()
    pickled: set[str] = set()
    for name in names:
        if name.endswith("_config.json") and "/data/" in name:
            folder = name.rsplit("/", 1)[0]
            try:
                entries = list(json.loads(archive.read(name))["config"].values())
                for entry in entries:
                    member = _pt2_payload(entry["path_name"], folder, name, where)
                    (pickled if entry.get("use_pickle") else raw).add(member)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelNotFound(f"{where}: torch.export archive: bad {name}: {exc}") from None
    raw -= pickled  # named both ways: the loader may unpickle it, so it is checked as a pickle
    for name in names:
        if name in pickled or "/data/sample_inputs/" in name or name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError,
                    AttributeError) as exc:  # fmt: skip
                raise ModelNotFound(
                    f"{where}: torch.export archive member {name} is a pickle that "
                    f"torch.load(weights_only=True) refuses ({_first_line(exc)}); loading it "
                    "would run code from the artifact. Re-export the model so its weights are "
                    "plain tensors, or register it with --trusted if you trust its source"
                ) from None
            continue
        if name.endswith("/") or name.endswith(_PT2_TEXT) or name in raw:
            continue
        if name.endswith(".json") and ("/models/" in name or "/data/" in name):
            continue
        raise ModelNotFound(
            f"{where}: torch.export archive member {name} is neither tensor data nor JSON "
            "(a custom Python object or compiled code); loading it could run code from the "
            "artifact. Register it with --trusted if you trust its source"
        )


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _pt2_payload(path_name: object, folder: str, config: str, where: str) -> str:
    """The archive member a payload config entry names. torch's loader picks the loader by
    the name's prefix (`opaque_obj_*` goes to plain `pickle.loads`, `custom_obj_*` to
    TorchScript's), not by `use_pickle`, so a constant must be a `tensor_*`; and the name
    must be a plain file name (the loader joins it onto the folder)."""
    if not isinstance(path_name, str) or not _PLAIN_NAME.fullmatch(path_name):
        raise ModelNotFound(f"{where}: torch.export archive: {config} names payload "
                            f"{path_name!r}, which is not a plain file name")  # fmt: skip
    if folder.endswith("/data/constants") and not path_name.startswith("tensor_"):
        raise ModelNotFound(
            f"{where}: torch.export archive constant {path_name} is a Python object (not a "
            "tensor); loading it runs code from the artifact. Register it with --trusted if "
            "you trust its source, or export the model without object constants"
        )
    return f"{folder}/{path_name}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
