"""One model artifact: the model file (`model.onnx`, `model.pt2` or `model.ts`) + `meta.json`.

The same two files make a saved artifact directory (`save_artifact`, what
`sluice models register PATH` takes) and the content of a registry version.
Metadata is JSON; the model file is recognized by its content and checked by
`sluice.models._formats` (a pickle is never a model; a format that runs code
when loaded needs trust, which is the registering caller's word, never the
directory's). `check_artifact` also runs the model on probe batches to check
its signature against the feature names it declares (`_runtime.check_signature`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import ValidationError

from sluice.errors import ModelNotFound
from sluice.models._formats import FORMATS, model_file
from sluice.models._meta import ModelMeta
from sluice.models._runtime import Runner, check_signature, open_runner

__all__ = [
    "META_FILE",
    "ModelArtifact",
    "check_artifact",
    "load_artifact",
    "read_artifact",
    "resolve_fs",
    "save_artifact",
]

META_FILE = "meta.json"


@dataclass(frozen=True)
class ModelArtifact:
    """The model file's bytes and its metadata (checked by `check_artifact` where a caller
    needs it: `load_artifact` does, `read_artifact` leaves it to `register`)."""

    data: bytes
    meta: ModelMeta

    @property
    def file(self) -> str:
        return model_file(self.meta.format)


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


def parse_meta(data: bytes, where: str) -> ModelMeta:
    try:
        return ModelMeta.model_validate_json(data)
    except ValidationError as exc:
        raise ModelNotFound(f"{where}: {META_FILE} is not valid model metadata: {exc}") from exc


def check_artifact(data: bytes, meta: ModelMeta, where: str) -> Runner:
    """The artifact opened on the CPU, once its format matches `meta.format`, it is safe to
    load (or `meta.trusted`), its runtime is installed and its signature fits
    `meta.feature_names` and `meta.output`. Every failure raises `ModelNotFound` naming
    `where`, the format and the fix."""
    runner = open_runner(data, meta.format, device="cpu", trusted=meta.trusted, where=where)
    check_signature(runner, len(meta.feature_names), meta.output, where)
    return runner


def model_bytes(model: bytes | str | Path) -> bytes:
    """The artifact's bytes, from bytes or a local file path."""
    if isinstance(model, bytes):
        return model
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"{path}: no such model file")
    return path.read_bytes()


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


def save_artifact(uri: str | Path, model: bytes | str | Path, meta: ModelMeta) -> str:
    """Write an artifact directory (the model file + `meta.json`); returns its path.

    Checks the artifact first (`check_artifact`), so a broken one is refused at save
    time rather than at registration or load; a model file of another format already in
    the directory is removed (a directory holds one model).
    """
    data = model_bytes(model)
    check_artifact(data, meta, str(uri))
    fs, path = resolve_fs(uri)
    fs.create_dir(path, recursive=True)
    for info in FORMATS.values():
        if info.file != model_file(meta.format) and exists(fs, f"{path}/{info.file}"):
            fs.delete_file(f"{path}/{info.file}")
    write_bytes(fs, f"{path}/{model_file(meta.format)}", data)
    write_bytes(fs, f"{path}/{META_FILE}", meta_bytes(meta))
    return path


def read_artifact(uri: str | Path, *, trusted: bool = False) -> ModelArtifact:
    """An artifact directory's model file and metadata, unchecked. Trust is the caller's
    word (`trusted`), never what the directory's meta.json says."""
    fs, path = resolve_fs(uri)
    where = str(uri)
    if not exists(fs, f"{path}/{META_FILE}"):
        raise ModelNotFound(f"{where}: no {META_FILE} in the artifact directory")
    meta = parse_meta(read_bytes(fs, f"{path}/{META_FILE}"), where)
    meta = meta.model_copy(update={"trusted": trusted})
    name = model_file(meta.format)
    if not exists(fs, f"{path}/{name}"):
        others = [i.file for i in FORMATS.values() if exists(fs, f"{path}/{i.file}")]
        raise ModelNotFound(
            f"{where}: {META_FILE} says format {meta.format} but there is no {name} "
            f"(found: {', '.join(others) or 'no model file'})"
        )
    return ModelArtifact(data=read_bytes(fs, f"{path}/{name}"), meta=meta)


def load_artifact(uri: str | Path, *, trusted: bool = False) -> ModelArtifact:
    """Read and check an artifact directory written by `save_artifact` (`check_artifact`)."""
    artifact = read_artifact(uri, trusted=trusted)
    check_artifact(artifact.data, artifact.meta, f"{uri}/{artifact.file}")
    return artifact
