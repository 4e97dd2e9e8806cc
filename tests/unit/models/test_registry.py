from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from model_factories import FEATURES, make_meta, make_model, make_net

from sluice.config import PlatformConfig
from sluice.errors import ModelNotFound
from sluice.models import (
    MLP,
    SCORE_TOLERANCE,
    MLPConfig,
    ModelRegistry,
    export_module,
    load_artifact,
    parse_model_ref,
    save_artifact,
)


def _manifest_path(registry: ModelRegistry, name: str = "fraud") -> Path:
    return Path(registry.root_uri) / name / "manifest.json"


def test_register_show_load_round_trip(registry):
    version = registry.register("fraud", make_model(1), make_meta(auc=0.81))
    assert version == 1
    info = registry.show("fraud/1")
    assert info.record.metrics == {"holdout_auc": 0.81}
    assert info.meta.feature_names == FEATURES
    assert info.meta.reference.features["foreign"].count == 200
    assert info.aliases == ()

    registry.promote("fraud", 1)
    loaded = registry.load("fraud@champion", device="cpu")
    assert (loaded.name, loaded.version) == ("fraud", 1)
    x = np.random.default_rng(1).normal(size=(10, len(FEATURES))).astype(np.float32)
    expected = torch.sigmoid(make_net(1)(torch.from_numpy(x))).detach().numpy()
    np.testing.assert_allclose(loaded.predict(x, batch_rows=3), expected, atol=SCORE_TOLERANCE)
    # Cached per process: the same object, not a second load.
    assert registry.load("fraud/1", device="cpu") is loaded
    assert ModelRegistry(registry.root_uri).load("fraud", device="cpu") is loaded


def test_a_pin_resolves_an_alias_once_per_scope(registry):
    for i in range(3):
        registry.register("fraud", make_model(i), make_meta())
    registry.promote("fraud", 1)
    registry.promote("fraud", 3, alias="challenger")
    assert registry.pin("fraud@champion", "serve:app:g1") == ("fraud", 1)
    registry.promote("fraud", 2)  # a promotion without a new scope ...
    # ... changes nothing for the scope, in this process or any other registry object
    assert registry.pin("fraud", "serve:app:g1") == ("fraud", 1)
    assert ModelRegistry(registry.root_uri).pin("fraud@champion", "serve:app:g1") == ("fraud", 1)
    assert registry.pin("fraud@champion", "serve:app:g2") == ("fraud", 2)  # a new scope
    assert registry.pin("fraud@challenger", "serve:app:g1") == ("fraud", 3)  # per alias
    assert registry.pin("fraud/3", "serve:app:g1") == ("fraud", 3)  # a version is itself
    with pytest.raises(ModelNotFound, match="invalid pin scope"):
        registry.pin("fraud", "no spaces")
    for g in range(300):  # pins are bounded: the oldest go first
        registry.pin("fraud", f"serve:many:g{g}")
    pins = registry.manifest("fraud").pins
    assert len(pins) == 256 and "champion@serve:many:g299" in pins
    assert "champion@serve:app:g1" not in pins


def test_versions_are_immutable_and_numbered(registry):
    versions = [
        registry.register("fraud", make_model(i), make_meta(auc=0.7 + i / 100)) for i in range(3)
    ]
    assert versions == [1, 2, 3]
    # v1's files are untouched by later registrations.
    assert registry.show("fraud/1").record.metrics["holdout_auc"] == pytest.approx(0.70)
    # A leftover directory from a crashed writer is skipped, never overwritten.
    stray = Path(registry.root_uri) / "fraud" / "versions" / "000004"
    stray.mkdir()
    (stray / "model.pt").write_bytes(b"partial")
    assert registry.register("fraud", make_model(9), make_meta()) == 5
    assert (stray / "model.pt").read_bytes() == b"partial"
    assert [m.latest for m in registry.list_models()] == [5]


def test_promote_and_rollback(registry):
    for i in range(3):
        registry.register("fraud", make_model(i), make_meta())
    registry.promote("fraud", 1)
    registry.promote("fraud", 2, alias="challenger")
    assert registry.promote("fraud") == 2  # the challenger becomes champion
    manifest = registry.manifest("fraud")
    assert manifest.aliases == {"champion": 2}
    registry.promote("fraud", 3)
    assert registry.resolve("fraud@champion") == ("fraud", 3)
    assert registry.rollback("fraud") == 2
    assert registry.rollback("fraud") == 1
    assert registry.resolve("fraud") == ("fraud", 1)
    with pytest.raises(ModelNotFound, match="no previous version"):
        registry.rollback("fraud")
    actions = [e.action for e in registry.manifest("fraud").events]
    assert actions.count("rollback") == 2


def test_model_not_found_names_what_is_missing(registry):
    with pytest.raises(ModelNotFound, match="'fraud' is not in the registry"):
        registry.load("fraud@champion")
    registry.register("fraud", make_model(), make_meta())
    with pytest.raises(ModelNotFound, match="fraud@champion: alias is not set"):
        registry.load("fraud@champion")
    with pytest.raises(ModelNotFound, match="fraud/7: no such version"):
        registry.show("fraud/7")
    with pytest.raises(ModelNotFound, match="fraud/7: no such version"):
        registry.promote("fraud", 7)
    with pytest.raises(ModelNotFound, match="no challenger"):
        registry.promote("fraud")
    with pytest.raises(ModelNotFound, match="invalid model name"):
        parse_model_ref("Fraud!@champion")
    with pytest.raises(ModelNotFound, match="invalid model name"):
        registry.promote("../escape", 1)
    with pytest.raises(ModelNotFound, match="'other' is not in the registry"):
        registry.rollback("other")
    assert sorted(p.name for p in Path(registry.root_uri).iterdir()) == ["fraud"]


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("container", ["raw_pickle", "torch_zip"])
def test_a_malicious_pickle_swapped_into_a_version_is_refused(registry, tmp_path, container):
    registry.register("fraud", make_model(), make_meta())
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = str(marker)
    model_file = Path(registry.root_uri) / "fraud" / "versions" / "000001" / "model.onnx"
    if container == "raw_pickle":
        model_file.write_bytes(pickle.dumps({"layers.0.weight": evil}))
    else:
        torch.save({"layers.0.weight": evil}, model_file)
    # Without touching the manifest, the checksum check refuses it first.
    with pytest.raises(ModelNotFound, match="checksum"):
        registry.load("fraud/1", device="cpu")
    # An attacker who can also rewrite the manifest still cannot run code: the
    # file is recognized by its content, and a pickle is never loaded.
    manifest = json.loads(_manifest_path(registry).read_text())
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    manifest["versions"][0]["model_sha256"] = f"sha256:{digest}"
    _manifest_path(registry).write_text(json.dumps(manifest))
    with pytest.raises(ModelNotFound, match="pickle"):
        registry.load("fraud/1", device="cpu")
    assert not marker.exists()


def test_save_and_register_artifact_directory(registry, tmp_path):
    path = save_artifact(tmp_path / "artifact", make_model(3), make_meta(auc=0.9))
    assert sorted(p.name for p in Path(path).iterdir()) == ["meta.json", "model.onnx"]
    assert load_artifact(path).meta.metrics["holdout_auc"] == 0.9
    assert registry.register_artifact("fraud", path) == 1
    with pytest.raises(ModelNotFound, match="no meta.json"):
        load_artifact(tmp_path / "empty")


def test_a_model_whose_input_does_not_fit_the_features_is_refused(registry):
    other = export_module(MLP(MLPConfig(input_dim=5, hidden_dims=(4,))), 5, "onnx")
    with pytest.raises(ModelNotFound, match=r"takes 5 features; the contract's feature spec "
                       r"gives \(batch, 3\) float32"):  # fmt: skip
        registry.register("fraud", other, make_meta())
    assert registry.list_models() == []


def test_registry_from_config_resolves_against_repo(tmp_path):
    cfg = PlatformConfig.model_validate({"registry": {"root_uri": str(tmp_path / "r")}})
    assert ModelRegistry.from_config(cfg).root_uri == str(tmp_path / "r")
    relative = ModelRegistry.from_config(PlatformConfig())
    assert relative.root_uri == str(PlatformConfig().resolve(".state/registry"))


def test_works_on_a_non_local_filesystem(tmp_path):
    # Any pyarrow filesystem: a SubTreeFileSystem stands in for an object store here.
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    registry = ModelRegistry.__new__(ModelRegistry)
    registry.root_uri, registry._fs, registry._root = "subtree://", fs, "reg"
    registry._local, registry._lock_timeout_s = False, 5.0
    assert registry.register("fraud", make_model(), make_meta()) == 1
    registry.promote("fraud", 1)
    assert registry.load_artifact("fraud@champion").meta.contract == "fraud"


def _register_and_promote(args: tuple[str, int]) -> int:
    root, seed = args
    registry = ModelRegistry(root)
    version = registry.register("fraud", make_model(seed), make_meta(auc=seed / 100))
    registry.promote("fraud", version, alias="champion" if seed % 2 else "challenger")
    return version


def test_concurrent_writers_processes_and_threads(tmp_path):
    root = str(tmp_path / "registry")
    manifest = Path(root) / "fraud" / "manifest.json"
    for seed in range(20):  # exported up front: torch's exporters are not thread-safe
        make_model(seed)
    stop = threading.Event()
    reads: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            if manifest.exists():
                reads.append(len(json.loads(manifest.read_text())["versions"]))

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(4) as pool:
            proc_versions = pool.map(_register_and_promote, [(root, s) for s in range(12)])
        threads_versions: list[int] = []
        workers = [
            threading.Thread(
                target=lambda s=s: threads_versions.append(_register_and_promote((root, s)))
            )
            for s in range(12, 20)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        stop.set()
        watcher.join()
    versions = proc_versions + threads_versions
    assert sorted(versions) == list(range(1, 21))
    final = ModelRegistry(root).manifest("fraud")
    assert [r.version for r in final.versions] == list(range(1, 21))
    assert reads and reads == sorted(reads)  # every read parsed; never went backwards
    assert final.aliases["champion"] in versions
    # Every promotion was recorded: each moved the alias or was a no-op.
    assert len([e for e in final.events if e.action == "promote"]) == 20
