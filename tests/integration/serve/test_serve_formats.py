"""Bring your own model, on the online path: each artifact format served by the live app.

A third application (`sluice-formats` at /formats, with a registry of its own) serves in
turn the built-in MLP as ONNX, the MLP as a torch.export program and a LightGBM model
(300 trees) as ONNX: each is promoted and the model deployment's generation bumped (the
documented way to swap), and rows scored over HTTP must equal the contract's Scorer
(the batch and stream logic) on the same Cassandra features, within SCORE_TOLERANCE.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from pipelines.train import TrainConfig, train
from sluice.contract import load_contract
from sluice.models import SCORE_TOLERANCE, ModelRegistry
from sluice.scoring import Scorer
from sluice.store import CassandraFeatureStore

from .serve_live import AUTH, client, deploy_config, json_rows, wait_until

pytestmark = pytest.mark.integration

APP, ROUTE = "sluice-formats", "/formats"
PREDICT = f"{ROUTE}/v1/fraud/predict"
MODELS = {
    "mlp-onnx": TrainConfig(rows=3000, epochs=1, seed=21),
    "mlp-torch-export": TrainConfig(rows=3000, epochs=1, seed=21, export_format="torch-export"),
    "lightgbm-onnx": TrainConfig(rows=3000, seed=21,
                                 trainer="pipelines.train_gbm:fit_lightgbm_candidate"),
}  # fmt: skip


@pytest.fixture(scope="module")
def formats_app(serve_world):
    world = serve_world
    cfg = world.cfg.model_copy(update={"registry": world.cfg.registry.model_copy(
        update={"root_uri": str(world.root / "reg-formats")})})  # fmt: skip
    (world.root / "platform-formats.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    registry = ModelRegistry.from_config(cfg)
    versions = {kind: train(config, registry).version for kind, config in MODELS.items()}
    registry.promote("fraud", versions["mlp-onnx"])

    app = copy.deepcopy(world.app("sluice-test"))
    app.update(name=APP, route_prefix=ROUTE)
    app["args"].update(contract="fraud", platform_config=str(world.root / "platform-formats.yaml"))
    doc = copy.deepcopy(world.doc)
    doc["applications"].append(app)
    deploy_config(doc)
    yield doc, app, cfg, registry, versions
    from ray import serve

    serve.delete(APP)


def test_each_format_is_served_and_equals_the_scorer(formats_app):
    doc, app, cfg, registry, versions = formats_app
    contract = load_contract("fraud")
    store = CassandraFeatureStore.for_contract(cfg.cassandra, contract)
    model_dep = next(d for d in app["deployments"] if d["name"] == "ScoringModel")
    rows = json_rows(48, seed=77)
    base = next(a for a in doc["applications"] if a["name"] == "sluice-test")  # untouched
    assert base["args"]["platform_config"] != app["args"]["platform_config"]
    with client(doc_base(doc)) as http:
        for i, (kind, version) in enumerate(versions.items()):
            if i > 0:  # promote, then a new generation: the documented swap
                registry.promote("fraud", version)
                model_dep["user_config"]["model_generation"] += 1  # copied: other tests bump
                deploy_config(doc)
            expected = f"fraud/{version}"
            wait_until(lambda e=expected: http.post(PREDICT, json=rows[0], headers=AUTH)
                       .json().get("model_version") == e, 60, f"{kind} served")  # fmt: skip
            served = []
            for start in range(0, len(rows), 16):
                r = http.post(PREDICT, json=rows[start : start + 16], headers=AUTH)
                assert r.status_code == 200, (kind, r.text)
                served += r.json()["predictions"]
            assert {p["model_version"] for p in served} == {expected}, kind
            local = Scorer(contract, registry, store, model_ref=expected,
                           record_events=False).score(rows).scored  # fmt: skip
            assert [p["key"] for p in served] == local["key"].to_pylist()
            worst = max(abs(p["score"] - s) for p, s in
                        zip(served, local["score"].to_pylist(), strict=True))  # fmt: skip
            assert worst <= SCORE_TOLERANCE, f"{kind}: online vs Scorer differ by {worst}"
            print(f"{kind}: {len(served)} rows online, max |online - scorer| = {worst:.3g}")


def doc_base(doc: dict) -> str:
    http = doc["http_options"]
    return f"http://{http['host']}:{http['port']}"
