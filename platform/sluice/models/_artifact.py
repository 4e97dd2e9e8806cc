"""One model artifact: `model.pt` (a plain state_dict) + `meta.json`, on any pyarrow filesystem.

The same two files make a saved artifact directory (`save_artifact`, what
`sluice models register PATH` takes) and the content of a registry version.
Loading is safe by construction: metadata is JSON, and the weights go through
`torch.load(weights_only=True)`, which refuses any pickle that would build an
arbitrary object (e.g. one with a malicious `__reduce__`).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import torch
from pydantic import ValidationError

from sluice.errors import ModelNotFound
from sluice.models._meta import ModelMeta
from sluice.models._net import MLP

__all__ = [
    "META_FILE",
    "MODEL_FILE",
    "ModelArtifact",
    "load_artifact",
    "resolve_fs",
    "save_artifact",
]

MODEL_FILE = "model.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class ModelArtifact:
    """Weights and metadata of one model, already checked to fit together."""

    state_dict: dict[str, torch.Tensor]
    meta: ModelMeta

    def build(self) -> MLP:
        """A fresh module with the weights loaded (strict: every key must match)."""
        module = MLP(self.meta.architecture)
        module.load_state_dict(self.state_dict, strict=True)
        module.eval()
        return module


def resolve_fs(uri: str | Path, base: Path | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a URI or local path (relative to `base` or cwd)."""
    text = str(uri)
    if "://" not in text:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return pafs.LocalFileSystem(), str(path.resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError) as exc:
        raise ModelNotFound(f"cannot open model location {text!r}: {exc}") from exc
    return fs, path.rstrip("/")


def state_dict_bytes(model: torch.nn.Module | Mapping[str, torch.Tensor]) -> bytes:
    """Serialize weights only: tensors moved to CPU and detached, nothing else."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is {type(value).__name__}, not a Tensor")
        clean[str(key)] = value.detach().to("cpu").contiguous()
    buffer = io.BytesIO()
    torch.save(clean, buffer)
    return buffer.getvalue()


def parse_state_dict(data: bytes, where: str) -> dict[str, torch.Tensor]:
    """Safe inverse of `state_dict_bytes`; refuses anything but a str -> Tensor mapping."""
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as exc:
        raise ModelNotFound(
            f"{where}: refused to load {MODEL_FILE}: not a plain state_dict "
            f"(torch.load weights_only=True rejected it): {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelNotFound(f"{where}: {MODEL_FILE} is not a mapping of names to tensors")
    return state


def parse_meta(data: bytes, where: str) -> ModelMeta:
    try:
        return ModelMeta.model_validate_json(data)
    except ValidationError as exc:
        raise ModelNotFound(f"{where}: {META_FILE} is not valid model metadata: {exc}") from exc


def build_artifact(state: dict[str, torch.Tensor], meta: ModelMeta, where: str) -> ModelArtifact:
    artifact = ModelArtifact(state_dict=state, meta=meta)
    try:
        artifact.build()
    except RuntimeError as exc:  # missing/unexpected keys or wrong shapes
        raise ModelNotFound(
            f"{where}: weights do not fit architecture {meta.architecture.model_dump()}: {exc}"
        ) from exc
    return artifact


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.read()


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def meta_bytes(meta: ModelMeta) -> bytes:
    return json.dumps(meta.model_dump(mode="json"), indent=2, sort_keys=True).encode()


def save_artifact(
    uri: str | Path, model: torch.nn.Module | Mapping[str, torch.Tensor], meta: ModelMeta
) -> str:
    """Write an artifact directory (`model.pt` + `meta.json`); returns its path.

    Checks first that the weights fit `meta.architecture`, so a broken artifact
    is refused at save time rather than at registration or load.
    """
    weights = state_dict_bytes(model)
    build_artifact(parse_state_dict(weights, str(uri)), meta, str(uri))
    fs, path = resolve_fs(uri)
    fs.create_dir(path, recursive=True)
    write_bytes(fs, f"{path}/{MODEL_FILE}", weights)
    write_bytes(fs, f"{path}/{META_FILE}", meta_bytes(meta))
    return path


def load_artifact(uri: str | Path) -> ModelArtifact:
    """Read and check an artifact directory written by `save_artifact`."""
    fs, path = resolve_fs(uri)
    for name in (MODEL_FILE, META_FILE):
        if not exists(fs, f"{path}/{name}"):
            raise ModelNotFound(f"{uri}: no {name} in the artifact directory")
    where = str(uri)
    state = parse_state_dict(read_bytes(fs, f"{path}/{MODEL_FILE}"), where)
    meta = parse_meta(read_bytes(fs, f"{path}/{META_FILE}"), where)
    return build_artifact(state, meta, where)
