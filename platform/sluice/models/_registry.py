"""`ModelRegistry`: immutable model versions and movable aliases on any pyarrow filesystem.

Concurrency: every change to a model (register, promote, rollback) happens
inside a per-model writer lock and ends with one whole-document replace of
`manifest.json` (write a temporary file, then move it over the old one), so
readers never see a half-written manifest and no two writers get the same
version number. On local filesystems the lock is an `flock` on
`<root>/<name>/.lock`, which serializes threads and processes alike (and is
released by the kernel if a writer dies). Object stores give pyarrow no
exclusive-create primitive, so there the lock only serializes the threads of
one process: run one registering job per model at a time (the train pipeline
is a single job). Object PUTs are atomic, so even then the manifest stays
parseable and a version directory that exists is never overwritten.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs as pafs
from pydantic import ValidationError

from sluice.config import PlatformConfig, load_platform_config
from sluice.errors import ConfigError, ModelNotFound
from sluice.models import _artifact as art
from sluice.models._formats import model_file
from sluice.models._lock import writer_lock
from sluice.models._manifest import (
    CHALLENGER,
    CHAMPION,
    AliasEvent,
    Manifest,
    ModelRef,
    VersionRecord,
    check_name,
    parse_model_ref,
)
from sluice.models._meta import ModelMeta
from sluice.models._promotion import check_feature_spec, check_gate, who
from sluice.models._runtime import LoadedModel, open_runner, select_device

if TYPE_CHECKING:
    from sluice.contract import Contract

__all__ = ["ModelRegistry", "ModelSummary", "VersionInfo"]

log = logging.getLogger(__name__)
MANIFEST_FILE = "manifest.json"
_MAX_PINS = 256  # pins kept per model; a scope older than the last 256 resolves anew
_SCOPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")
REGISTRATION_FILE = "registration.json"

# Loaded models are shared by every registry object of the process: versions
# are immutable, so (root, name, version, device) identifies the weights.
_LOADED: dict[tuple[str, str, int, str], LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


def _manifest_format(data: bytes) -> object:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc.get("format") if isinstance(doc, dict) else None


@dataclass(frozen=True)
class VersionInfo:
    name: str
    record: VersionRecord
    aliases: tuple[str, ...]
    meta: ModelMeta


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: int
    latest: int
    aliases: dict[str, int]


class ModelRegistry:
    """Versions (immutable) and aliases (movable) of named models under one root URI."""

    def __init__(self, root_uri: str | Path, *, lock_timeout_s: float = 60.0) -> None:
        self.root_uri = str(root_uri)
        self._fs, self._root = art.resolve_fs(root_uri)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._lock_timeout_s = lock_timeout_s

    @classmethod
    def from_config(cls, config: PlatformConfig | None = None) -> ModelRegistry:
        """The registry named by the platform config (local paths relative to the repo)."""
        config = config or load_platform_config()
        uri = config.registry.root_uri
        return cls(uri if "://" in uri else config.resolve(uri))

    def __repr__(self) -> str:
        return f"ModelRegistry({self.root_uri!r})"

    # -- reading -----------------------------------------------------------------

    def list_models(self) -> list[ModelSummary]:
        selector = pafs.FileSelector(self._root, allow_not_found=True)
        out = []
        for info in sorted(self._fs.get_file_info(selector), key=lambda i: i.base_name):
            if info.type != pafs.FileType.Directory:
                continue
            try:
                manifest = self._read_manifest(info.base_name, missing_ok=True)
            except ModelNotFound as exc:  # e.g. a format-1 model: listed as unreadable
                log.warning("%s", exc)
                continue
            if manifest is not None:
                out.append(
                    ModelSummary(
                        manifest.name, len(manifest.versions), manifest.latest, manifest.aliases
                    )
                )
        return out

    def manifest(self, name: str) -> Manifest:
        """Versions, aliases and alias history of one model."""
        manifest = self._read_manifest(check_name(name, "model name"), missing_ok=False)
        assert manifest is not None
        return manifest

    def resolve(self, ref: str | ModelRef) -> tuple[str, int]:
        """(name, version) that `fraud@champion` / `fraud/3` points at right now."""
        parsed = parse_model_ref(ref)
        return parsed.name, self.manifest(parsed.name).resolve(parsed)

    def pin(self, ref: str | ModelRef, scope: str) -> tuple[str, int]:
        """(name, version) that `ref` points at for `scope`, resolved once per scope.

        The first call of a scope resolves the alias and records the version in the
        manifest; every later call of that scope (another replica, one the autoscaler adds,
        a restarted one) gets the same version, whatever was promoted in between. A new
        scope (the next Serve deployment generation) resolves anew. A version reference
        (`fraud/3`) is itself.
        """
        parsed = parse_model_ref(ref)
        if parsed.version is not None:
            return self.resolve(parsed)
        if not _SCOPE_RE.match(scope):
            raise ModelNotFound(f"invalid pin scope {scope!r}: expected {_SCOPE_RE.pattern}")
        key = f"{parsed.alias or CHAMPION}@{scope}"
        pinned = self.manifest(parsed.name).pins.get(key)
        if pinned is None:
            with self._writer(parsed.name):
                manifest = self.manifest(parsed.name)
                pinned = manifest.pins.get(key)
                if pinned is None:
                    pinned = manifest.pins[key] = manifest.resolve(parsed)
                    for old in list(manifest.pins)[:-_MAX_PINS]:  # oldest first: bounded
                        del manifest.pins[old]
                    self._write_manifest(manifest)
        return parsed.name, pinned

    def show(self, ref: str | ModelRef) -> VersionInfo:
        parsed = parse_model_ref(ref)
        manifest = self.manifest(parsed.name)
        version = manifest.resolve(parsed)
        record = manifest.record(version)
        meta = art.parse_meta(self._read_checked(parsed.name, record, art.META_FILE), str(parsed))
        return VersionInfo(parsed.name, record, tuple(manifest.aliases_of(version)), meta)

    def load_artifact(self, ref: str | ModelRef) -> art.ModelArtifact:
        """The model file and metadata of a version, checksums verified (no cache)."""
        parsed = parse_model_ref(ref)
        manifest = self.manifest(parsed.name)
        record = manifest.record(manifest.resolve(parsed))
        where = f"{parsed.name}/{record.version}"
        meta = art.parse_meta(self._read_checked(parsed.name, record, art.META_FILE), where)
        data = self._read_checked(parsed.name, record, model_file(meta.format))
        return art.ModelArtifact(data=data, meta=meta)

    def load(self, ref: str | ModelRef, device: str = "auto") -> LoadedModel:
        """The model an alias or version points at, loaded once per process and device.

        Aliases are resolved on every call (cheap: one small JSON read), so a
        promotion is picked up by the next call; a version is immutable and its
        runtime session is cached. The artifact is loaded with the same safety
        checks as at registration (`sluice.models._formats.check_loadable`).
        """
        name, version = self.resolve(ref)
        dev = select_device(device)
        key = (f"{self._fs.type_name}:{self._root}", name, version, dev)
        with _LOADED_LOCK:
            cached = _LOADED.get(key)
            if cached is None:
                artifact = self.load_artifact(f"{name}/{version}")
                meta = artifact.meta
                runner = open_runner(artifact.data, meta.format, device=dev,
                                     trusted=meta.trusted, where=f"{name}/{version}")  # fmt: skip
                cached = LoadedModel(name, version, meta, runner)
                _LOADED[key] = cached
        return cached

    # -- writing -----------------------------------------------------------------

    def register(self, name: str, model: bytes | str | Path, meta: ModelMeta) -> int:
        """Store a new immutable version; returns its number (1, 2, ...). Never overwrites.

        `model` is the artifact (bytes or a file) in `meta.format`. It is checked first
        (`_artifact.check_artifact`: format, safety, runtime, signature against
        `meta.feature_names`), so a refused artifact leaves nothing behind.
        """
        check_name(name, "model name")
        data = art.model_bytes(model)
        source = str(model) if isinstance(model, (str, Path)) else f"{meta.format} artifact"
        art.check_artifact(data, meta, f"{name}: {source}")
        meta_json = art.meta_bytes(meta)
        with self._writer(name):
            manifest = self._read_manifest(name, missing_ok=True) or Manifest(name=name)
            version = manifest.latest + 1
            # A directory without a manifest entry is left by a crashed writer:
            # skip its number rather than reuse (and overwrite) it.
            while art.exists(self._fs, self._version_dir(name, version)):
                version += 1
            record = VersionRecord(
                version=version,
                registered_at=datetime.now(UTC),
                contract=meta.contract,
                format=meta.format,
                trusted=meta.trusted,
                metrics=meta.metrics,
                feature_spec_hash=meta.feature_spec_hash,
                data_fingerprint=meta.data_fingerprint,
                model_sha256=art.sha256(data),
                meta_sha256=art.sha256(meta_json),
            )
            vdir = self._version_dir(name, version)
            self._fs.create_dir(vdir, recursive=True)
            art.write_bytes(self._fs, f"{vdir}/{model_file(meta.format)}", data)
            art.write_bytes(self._fs, f"{vdir}/{art.META_FILE}", meta_json)
            art.write_bytes(
                self._fs, f"{vdir}/{REGISTRATION_FILE}", record.model_dump_json(indent=2).encode()
            )
            manifest.versions.append(record)
            self._write_manifest(manifest)
        return version

    def register_artifact(self, name: str, uri: str | Path, *, trusted: bool = False) -> int:
        """Register a directory written by `save_artifact` (any pyarrow URI). `trusted` is
        the caller's word; a `trusted` in the directory's meta.json is ignored, and so is a
        gate report (this registry's verdict only: `sluice models register --holdout`)."""
        artifact = art.read_artifact(uri, trusted=trusted)
        return self.register(name, artifact.data, artifact.meta.model_copy(update={"gate": None}))

    def promote(
        self,
        name: str,
        version: int | None = None,
        alias: str = CHAMPION,
        *,
        contract: Contract | None = None,
        force_reason: str | None = None,
        actor: str | None = None,
    ) -> int:
        """Point `alias` (default champion) at `version` (default: the challenger).

        The previous holder is pushed on the alias history for `rollback`. When
        the challenger becomes champion, the challenger alias is cleared. With a
        `contract`, a version trained on another feature spec is refused
        (``ConfigError``) before the alias moves, so no scorer fails on it later; and
        when the contract declares a gate, a version whose gate report failed, is
        missing or was made for another gate may not become champion
        (``PromotionRefused`` naming each failed check), unless `force_reason` says why:
        the event then records the reason, the `actor` (default user@host) and the
        checks overridden.
        """
        check_name(alias, "alias")
        if force_reason is not None and not force_reason.strip():
            raise ConfigError("a forced promotion needs a reason (--reason \"...\")")
        self.manifest(name)  # checks the name and that the model exists before locking
        with self._writer(name):
            manifest = self.manifest(name)
            if version is None:
                if CHALLENGER not in manifest.aliases or alias == CHALLENGER:
                    raise ModelNotFound(
                        f"{name}@{CHALLENGER}: no challenger to promote; name a version"
                    )
                version = manifest.aliases[CHALLENGER]
            record = manifest.record(version)
            overridden: list[str] = []
            if contract is not None:
                check_feature_spec(f"{name}/{version}", record.feature_spec_hash, contract)
                if alias == CHAMPION:
                    meta = art.parse_meta(self._read_checked(name, record, art.META_FILE),
                                          f"{name}/{version}")  # fmt: skip
                    overridden = check_gate(f"{name}/{version}", meta.gate, contract,
                                            force_reason, manifest.aliases.get(CHAMPION),
                                            version)  # fmt: skip
            previous = manifest.aliases.get(alias)
            if previous != version or force_reason is not None:
                if previous is not None and previous != version:
                    manifest.alias_history.setdefault(alias, []).append(previous)
                manifest.aliases[alias] = version
                event = self._event("promote", alias, version, previous)
                if force_reason is not None:
                    event = event.model_copy(update={
                        "actor": actor or who(), "reason": force_reason.strip(),
                        "overridden": tuple(overridden),
                    })  # fmt: skip
                manifest.events.append(event)
            if alias == CHAMPION and manifest.aliases.get(CHALLENGER) == version:
                del manifest.aliases[CHALLENGER]
                manifest.events.append(self._event("clear_alias", CHALLENGER, None, version))
            self._write_manifest(manifest)
        return version

    def rollback(
        self, name: str, alias: str = CHAMPION, *, contract: Contract | None = None
    ) -> int:
        """Move `alias` back to the version it held before; returns that version.

        With a `contract`, a target trained on another feature spec is refused as in
        `promote`, and the alias and its history stay as they were.
        """
        check_name(alias, "alias")
        self.manifest(name)  # checks the name and that the model exists before locking
        with self._writer(name):
            manifest = self.manifest(name)
            history = manifest.alias_history.get(alias) or []
            if not history:
                raise ModelNotFound(f"{name}@{alias}: no previous version to roll back to")
            target = history[-1]
            if contract is not None:
                record = manifest.record(target)
                check_feature_spec(f"{name}/{target}", record.feature_spec_hash, contract)
            history.pop()
            previous = manifest.aliases.get(alias)
            manifest.aliases[alias] = target
            manifest.events.append(self._event("rollback", alias, target, previous))
            self._write_manifest(manifest)
        return target

    # -- internals ---------------------------------------------------------------

    @staticmethod
    def _event(action: str, alias: str, version: int | None, previous: int | None) -> AliasEvent:
        return AliasEvent(
            at=datetime.now(UTC), action=action, alias=alias, version=version, previous=previous
        )

    def _model_dir(self, name: str) -> str:
        return f"{self._root}/{name}"

    def _version_dir(self, name: str, version: int) -> str:
        return f"{self._root}/{name}/versions/{version:06d}"

    def _read_manifest(self, name: str, missing_ok: bool) -> Manifest | None:
        path = f"{self._model_dir(name)}/{MANIFEST_FILE}"
        try:
            data = art.read_bytes(self._fs, path)
        except FileNotFoundError:
            if missing_ok:
                return None
            known = ", ".join(m.name for m in self.list_models()) or "none"
            raise ModelNotFound(
                f"model {name!r} is not in the registry at {self.root_uri} (models: {known})"
            ) from None
        if _manifest_format(data) == 1:
            raise ModelNotFound(
                f"{path}: written by an older Sluice (manifest format 1: versions are MLP "
                "state_dicts, which this version no longer loads); move "
                f"{self._model_dir(name)} aside and train again (python -m pipelines.train) "
                "or register the models as ONNX or torch.export artifacts"
            )
        try:
            return Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise ModelNotFound(f"{path}: manifest is not valid: {exc}") from exc

    def _write_manifest(self, manifest: Manifest) -> None:
        path = f"{self._model_dir(manifest.name)}/{MANIFEST_FILE}"
        tmp = f"{self._model_dir(manifest.name)}/.manifest-{uuid.uuid4().hex}.tmp"
        art.write_bytes(self._fs, tmp, manifest.model_dump_json(indent=2).encode())
        self._fs.move(tmp, path)  # rename on local filesystems: atomic replace

    def _read_checked(self, name: str, record: VersionRecord, filename: str) -> bytes:
        path = f"{self._version_dir(name, record.version)}/{filename}"
        try:
            data = art.read_bytes(self._fs, path)
        except FileNotFoundError:
            raise ModelNotFound(f"{name}/{record.version}: {filename} is missing") from None
        expected = record.meta_sha256 if filename == art.META_FILE else record.model_sha256
        if art.sha256(data) != expected:
            raise ModelNotFound(
                f"{name}/{record.version}: {filename} does not match its registered checksum "
                "(the version was modified after registration); refusing to load it"
            )
        return data

    @contextmanager
    def _writer(self, name: str) -> Iterator[None]:
        model_dir = self._model_dir(name)
        self._fs.create_dir(model_dir, recursive=True)
        with writer_lock(f"{self._fs.type_name}:{model_dir}", f"{model_dir}/.lock",
                         self._local, self._lock_timeout_s):  # fmt: skip
            yield
