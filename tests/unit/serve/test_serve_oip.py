"""The Open Inference Protocol routes, driven by a client nobody here wrote: tritonclient's
HTTP client against the ingress app served by uvicorn on a real socket (a fake model
behind it, so no Ray); the same rows through /v1 give the same scores."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from serve_testkit import json_rows
from tritonclient.utils import InferenceServerException

from serve_apps.scoring.api import create_api
from serve_apps.scoring.auth import KeyRing, hash_key
from serve_apps.scoring.oip import input_datatype
from serve_apps.scoring.schemas import RejectedRow, RequestParser, RowScore, ScoreReply
from serve_apps.scoring.service import FunctionModelClient, Overloaded, ScoringService
from sluice.contract import load_contract

KEY = "oip-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Pass tritonclient a copy each call: infer() adds its binary-body header to the dict given.
CONTRACT = load_contract("fraud")


class RowModel:
    """Scores each row by its amount (deterministic, so both protocols can be compared)."""

    mode = "ok"

    async def score(self, rows: list[dict[str, Any]], explain: bool = False) -> ScoreReply:
        if self.mode == "overloaded":
            raise Overloaded("queue full")
        bad = [i for i, r in enumerate(rows) if r["amount"] <= 0]
        if bad:
            reasons = [{"expectation": "expect_column_values_to_be_between", "column": "amount",
                        "value": str(rows[bad[0]]["amount"])}]  # fmt: skip
            return ScoreReply(rejected=[RejectedRow(bad[0], rows[bad[0]]["transaction_id"],
                                                    reasons)])  # fmt: skip
        return ScoreReply(
            scores=[RowScore(r["transaction_id"], min(r["amount"] / 1000.0, 1.0), "fraud/7",
                             (r["amount"],), "review" if r["amount"] >= 500 else "approve",
                             "dp-test") for r in rows],
            feature_names=("amount",),
        )  # fmt: skip

    async def info(self) -> dict[str, Any]:
        return {"champion": "fraud/7", "challenger": "fraud/8" if self.mode == "canary" else None}

    async def ready(self) -> dict[str, Any]:
        return {"model": "fraud/7", "cassandra": self.mode != "store-down"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, RowModel]]:
    model = RowModel()
    service = ScoringService(
        contract=CONTRACT, keyring=KeyRing.from_digests({"test": hash_key(KEY)}),
        model=FunctionModelClient(model.score, model.info, model.ready),
        parser=RequestParser(CONTRACT, max_rows=64), max_body_bytes=65536,
        request_timeout_s=5.0, overload_status=503, retry_after_s=2,
    )  # fmt: skip
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    ready = threading.Event()
    while not ready.wait(0.05):  # until uvicorn has bound its socket (or died trying)
        assert thread.is_alive(), "uvicorn did not start"
        if server.started:
            ready.set()
    yield f"127.0.0.1:{port}", model
    server.should_exit = True
    thread.join(10)


def _inputs(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[triton.InferInput]:
    out = []
    for field in CONTRACT.scoring_schema:
        if field.name in skip:
            continue
        datatype = input_datatype(field.type)
        values = [r[field.name] for r in rows]
        array = np.array(values, dtype=object if datatype == "BYTES" else np.float64)
        tensor = triton.InferInput(field.name, [len(rows)], datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        out.append(tensor)
    return out


def _outputs(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(n, binary_data=False) for n in names]


def test_health_and_metadata_through_tritonclient(served):
    url, _ = served
    client = triton.InferenceServerClient(url=url)
    assert client.is_server_live() and client.is_server_ready()  # probes need no key
    assert client.is_model_ready("fraud", headers=AUTH)
    assert client.is_model_ready("fraud", "7", headers=AUTH)
    assert not client.is_model_ready("fraud", "6", headers=AUTH)
    meta = client.get_model_metadata("fraud", headers=AUTH)
    assert meta["name"] == "fraud" and meta["versions"] == ["7"]
    inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
    assert inputs == {f.name: (input_datatype(f.type), [-1]) for f in CONTRACT.scoring_schema}
    assert inputs["amount"][0] == "FP64" and inputs["event_time"][0] == "BYTES"
    assert [o["name"] for o in meta["outputs"]] == ["score", "decision", "model_version"]
    assert client.get_server_metadata()["name"] == "sluice"
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("fraud")  # no key
    assert err.value.status() == "401"
    lost = httpx.get(f"http://{url}/v2/models/fraud/nothing", headers=AUTH)
    assert lost.status_code == 404 and lost.json() == {
        "error": "GET /v2/models/fraud/nothing: Not Found"}  # the protocol's body, not FastAPI's
    assert httpx.get(f"http://{url}/v1/nothing", headers=AUTH).json() == {"detail": "Not Found"}


def test_infer_gives_the_scores_of_v1_for_the_same_rows(served):
    url, _ = served
    rows = json_rows(10, seed=4)
    client = triton.InferenceServerClient(url=url)
    result = client.infer("fraud", _inputs(rows), headers=dict(AUTH), request_id="r-1",
                          outputs=_outputs("score", "decision", "model_version"))  # fmt: skip
    v1 = httpx.post(f"http://{url}/v1/fraud/predict", json=rows, headers=AUTH).json()
    assert result.as_numpy("score").tolist() == [p["score"] for p in v1["predictions"]]
    assert [d.decode() if isinstance(d, bytes) else d for d in result.as_numpy("decision")] \
        == [p["decision"] for p in v1["predictions"]]  # fmt: skip
    assert set(result.as_numpy("model_version").tolist()) == {"fraud/7"}
    response = result.get_response()
    assert response["model_name"] == "fraud" and response["model_version"] == "7"
    assert response["id"] == "r-1"
    only = client.infer("fraud", _inputs(rows[:2]), headers=dict(AUTH),
                        outputs=_outputs("score"))
    assert [o["name"] for o in only.get_response()["outputs"]] == ["score"]
    # Nested data of shape [n, 1] is the same tensor.
    body = {"inputs": [{"name": t.name(), "shape": [2, 1], "datatype": t.datatype(),
                        "data": [[v] for v in t._get_tensor()["data"]]}
                       for t in _inputs(rows[:2])]}  # fmt: skip
    nested = httpx.post(f"http://{url}/v2/models/fraud/versions/7/infer", json=body,
                        headers=AUTH)  # fmt: skip
    assert nested.status_code == 200, nested.text
    assert nested.json()["outputs"][0]["data"] == result.as_numpy("score")[:2].tolist()


@pytest.mark.parametrize("data", [[[5.0], 7.0], [[5.0, 7.0]], [5.0, [7.0]], [[5.0], [7.0, 1.0]]],
                         ids=["list then value", "one row of two", "value then list",
                              "a row of two"])  # fmt: skip
def test_a_tensor_nested_other_than_n_by_1_is_a_400_naming_it(served, data):
    url, _ = served
    body = {"inputs": [{"name": t.name(), "shape": [2], "datatype": t.datatype(),
                        "data": t._get_tensor()["data"]}
                       for t in _inputs(json_rows(2, seed=6))]}  # fmt: skip
    amount = next(i for i, t in enumerate(body["inputs"]) if t["name"] == "amount")
    body["inputs"][amount]["data"] = data
    got = httpx.post(f"http://{url}/v2/models/fraud/infer", json=body, headers=AUTH)
    assert got.status_code == 400, got.text
    assert f"inputs[{amount}] (amount)" in got.text and "[n] values" in got.text, got.text


@pytest.mark.parametrize(("case", "status", "says"), [
    ("unknown model", "404", "model 'other' is not served here"),
    ("unknown version", "404", "version '3' of 'fraud' is not served here; served: 7"),
    ("wrong datatype", "400", "inputs[7] (amount): must be FP64"),
    ("missing column", "400", "transaction_id"),
    ("unknown output", "400", "unknown output(s) ['probability']"),
    ("refused row", "400", "quarantined"),
    ("binary data", "400", "binary tensor data is not supported"),
    ("overloaded", "503", "queue full"),
    ("pinned under a canary", "400", "version-pinned inference is not available while the "
                                     "canary splits rows between fraud/7 and fraud/8"),
])  # fmt: skip
def test_errors_are_the_protocols_with_the_field_named(served, case, status, says):
    url, model = served
    client = triton.InferenceServerClient(url=url)
    rows = json_rows(3, seed=5)
    name, version, outputs = "fraud", "", _outputs("score")
    inputs = _inputs(rows)
    if case == "unknown model":
        name = "other"
    elif case == "unknown version":
        version = "3"
    elif case == "pinned under a canary":
        version = "7"
    elif case == "wrong datatype":
        inputs[7] = triton.InferInput("amount", [3], "FP32")
        inputs[7].set_data_from_numpy(np.ones(3, np.float32), binary_data=False)
    elif case == "missing column":
        inputs = _inputs(rows, skip=("transaction_id",))
    elif case == "unknown output":
        outputs = _outputs("probability")
    elif case == "refused row":
        rows[1]["amount"] = -5.0
        inputs = _inputs(rows)
    elif case == "binary data":
        outputs = [triton.InferRequestedOutput("score")]  # binary by default
        inputs[0].set_data_from_numpy(np.array([r["transaction_id"] for r in rows],
                                               dtype=object))  # fmt: skip
    model.mode = {"overloaded": "overloaded", "pinned under a canary": "canary"}.get(case, "ok")
    try:
        with pytest.raises(InferenceServerException) as err:
            client.infer(name, inputs, model_version=version, outputs=outputs,
                         headers=dict(AUTH))
    finally:
        model.mode = "ok"
    assert err.value.status() == status, err.value.message()
    assert says in err.value.message()
