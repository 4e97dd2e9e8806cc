"""Shadow traffic at the ingress, without Ray: the answer is always the champion's and never
waits for the shadow; the shadow's scores reach the prediction log with role shadow; a
failing shadow and one with too many calls in flight are only counted."""

from __future__ import annotations

import asyncio

import httpx
import pyarrow as pa
import pytest
from serve_testkit import json_rows

from serve_apps.scoring.api import create_api
from serve_apps.scoring.auth import KeyRing, hash_key
from serve_apps.scoring.prediction_log import FunctionWriter, LogOptions, PredictionLog
from serve_apps.scoring.schemas import RequestParser, RowScore, ScoreReply
from serve_apps.scoring.service import FunctionModelClient, ScoringService
from sluice import metrics
from sluice.contract import load_contract

pytestmark = pytest.mark.anyio
KEY = "shadow-key"
AUTH = {"X-API-Key": KEY}
CONTRACT = load_contract("fraud")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Models:
    """The champion scores 0.25 with fraud/1 and asks for every even row to be shadowed;
    the shadow scores 0.75 with fraud/9 once `release` is set (or fails, if told to)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fail = False
        self.shadowed: list[list[str]] = []

    async def score(self, rows):
        keys = [r["transaction_id"] for r in rows]
        return ScoreReply(scores=[RowScore(k, 0.25, "fraud/1", (1.0,), "approve", "dp-x")
                                  for k in keys], feature_names=("f1",),
                          shadow_rows=tuple(range(0, len(rows), 2)))  # fmt: skip

    async def shadow(self, rows):
        await self.release.wait()
        self.shadowed.append([r["transaction_id"] for r in rows])
        if self.fail:
            raise RuntimeError("shadow model crashed")
        return ScoreReply(scores=[RowScore(r["transaction_id"], 0.75, "fraud/9", (2.0,),
                                           "review", "dp-x", None, "shadow") for r in rows],
                          feature_names=("f1",))  # fmt: skip


@pytest.fixture
def world():
    written: list[tuple[str, pa.Table]] = []
    plog = PredictionLog(CONTRACT, FunctionWriter(lambda t, rows: written.append((t, rows))),
                         LogOptions(8, 64, 0.02))  # fmt: skip
    models = Models()
    service = ScoringService(
        contract=CONTRACT, keyring=KeyRing.from_digests({"app": hash_key(KEY)}),
        model=FunctionModelClient(models.score, shadow=models.shadow),
        parser=RequestParser(CONTRACT, max_rows=8), max_body_bytes=65536, request_timeout_s=2.0,
        prediction_log=plog, max_shadow_requests=2,
    )  # fmt: skip
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_api(service)),
                               base_url="http://test")  # fmt: skip
    yield client, models, service, plog, written
    plog.close()


def _logged(plog: PredictionLog, written) -> pa.Table:
    plog.close(timeout_s=5.0)  # drains what is queued, then stops the writer thread
    return pa.concat_tables([t for name, t in written if name == "prediction_log"])


def _count(outcome: str) -> float:
    return metrics.SHADOW_ROWS.value(contract="fraud", outcome=outcome)


async def test_the_answer_is_the_champions_and_does_not_wait_for_the_shadow(world):
    client, models, service, plog, written = world
    rows = json_rows(5, seed=3)
    scored_before = _count("scored")
    r = await client.post("/v1/fraud/predict", json=rows, headers={**AUTH, "X-Request-ID": "q1"})
    # Answered while the shadow is still blocked on `release`: it did not wait for it.
    assert r.status_code == 200 and not models.shadowed
    assert {p["score"] for p in r.json()["predictions"]} == {0.25}
    assert {p["model_version"] for p in r.json()["predictions"]} == {"fraud/1"}
    models.release.set()
    await asyncio.gather(*service._shadows)
    assert models.shadowed == [[rows[i]["transaction_id"] for i in (0, 2, 4)]]
    log = _logged(plog, written).to_pylist()
    served = [x for x in log if x["role"] == "champion"]
    shadow = [x for x in log if x["role"] == "shadow"]
    assert len(served) == 5 and {x["score"] for x in served} == {0.25}
    assert sorted(x["row_key"] for x in shadow) == sorted(models.shadowed[0])
    assert {(x["model_version"], x["score"], x["request_id"], x["decision"]) for x in shadow} \
        == {("fraud/9", 0.75, "q1", "review")}  # fmt: skip
    assert _count("scored") - scored_before == 3


async def test_a_failing_shadow_is_counted_and_the_answer_unchanged(world):
    client, models, service, plog, written = world
    models.fail = True
    models.release.set()
    failed_before = _count("failed")
    r = await client.post("/v1/fraud/predict", json=json_rows(4, seed=4), headers=AUTH)
    assert r.status_code == 200 and {p["score"] for p in r.json()["predictions"]} == {0.25}
    await asyncio.gather(*service._shadows)
    assert _count("failed") - failed_before == 2
    assert {x["role"] for x in _logged(plog, written).to_pylist()} == {"champion"}


async def test_shadow_calls_beyond_the_bound_are_dropped_not_queued(world):
    client, models, service, plog, written = world
    dropped_before = _count("dropped")
    for seed in range(4):  # the shadow is held: two calls in flight, then drops
        r = await client.post("/v1/fraud/predict", json=json_rows(2, seed=10 + seed),
                              headers=AUTH)  # fmt: skip
        assert r.status_code == 200
    assert len(service._shadows) == 2
    assert _count("dropped") - dropped_before == 2  # one shadowed row in each dropped call
    models.release.set()
    await asyncio.gather(*service._shadows)
    assert len(models.shadowed) == 2
