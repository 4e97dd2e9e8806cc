"""The Open Inference Protocol on the live Serve endpoint, through tritonclient: the same
scores as /v1 for the same rows, and the rows in the prediction log under the client's id."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from serve_apps.scoring.oip import input_datatype
from sluice.contract import load_contract

from .serve_live import AUTH, json_rows, wait_until

pytestmark = pytest.mark.integration
CONTRACT = load_contract("fraud")


@pytest.fixture(scope="module")
def world(serve_world):
    return serve_world


def _inputs(rows):
    out = []
    for field in CONTRACT.scoring_schema:
        datatype = input_datatype(field.type)
        array = np.array([r[field.name] for r in rows],
                         dtype=object if datatype == "BYTES" else np.float64)  # fmt: skip
        tensor = triton.InferInput(field.name, [len(rows)], datatype)
        tensor.set_data_from_numpy(array, binary_data=False)
        out.append(tensor)
    return out


def test_tritonclient_gets_the_scores_of_v1_and_the_rows_are_logged(world):
    import httpx

    client = triton.InferenceServerClient(url=world.base.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("fraud", headers=dict(AUTH))
    meta = client.get_model_metadata("fraud", headers=dict(AUTH))
    # In the served contract's column order (this app's copy of the contract has its own).
    assert sorted(i["name"] for i in meta["inputs"]) == sorted(CONTRACT.scoring_schema.names)

    rows = json_rows(16, seed=818)  # the world's max_rows: /v2 has /v1's limits
    outputs = [triton.InferRequestedOutput(n, binary_data=False)
               for n in ("score", "decision", "model_version")]  # fmt: skip
    result = client.infer("fraud", _inputs(rows), outputs=outputs, request_id="oip-live-1",
                          headers=dict(AUTH))  # fmt: skip
    v1 = httpx.post(f"{world.base}/v1/fraud/predict", json=rows, headers=AUTH, timeout=30)
    assert v1.status_code == 200, v1.text
    predictions = v1.json()["predictions"]
    assert result.as_numpy("score").tolist() == [p["score"] for p in predictions]
    assert [str(v) for v in result.as_numpy("model_version")] \
        == [p["model_version"] for p in predictions]  # fmt: skip
    assert [str(d) for d in result.as_numpy("decision")] == [p["decision"] for p in predictions]

    select = world.session.prepare(
        "SELECT row_key, score FROM sluice_test_serve.prediction_log WHERE request_id = ? "
        "ALLOW FILTERING"  # request_id is a column; the partition key is the server's
    )

    def logged() -> dict[str, float]:
        return {r.row_key: r.score for r in world.session.execute(select, ["oip-live-1"])}

    wait_until(lambda: len(logged()) == len(rows), timeout_s=30,
               what="the v2 request's rows in the prediction log")  # fmt: skip
    assert logged() == {p["key"]: p["score"] for p in predictions}
