"""The HTTP surface without Ray: routes, auth, limits and status codes over a fake model."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pytest
from serve_testkit import json_rows

from serve_apps.scoring.api import create_api, status_for
from serve_apps.scoring.auth import KeyRing, hash_key
from serve_apps.scoring.prediction_log import FunctionWriter, LogOptions, PredictionLog
from serve_apps.scoring.schemas import ErrorReply, RejectedRow, RequestParser, RowScore, ScoreReply
from serve_apps.scoring.service import FunctionModelClient, Overloaded, ScoringService
from sluice.contract import load_contract
from sluice.errors import (
    ConfigError,
    ModelNotFound,
    SluiceError,
    StoreUnavailable,
    ValidationFailed,
    WriteFailed,
)
from sluice.scoring import QUARANTINE_SCHEMA
from sluice.store import alert_rows

pytestmark = pytest.mark.anyio

KEY = "test-key-1"
AUTH = {"X-API-Key": KEY}
JSON = {**AUTH, "Content-Type": "application/json"}  # for bodies sent as raw bytes
CONTRACT = load_contract("fraud")


class FakeModel:
    """Scores every row 0.5 with fraud/7, or does what a test tells it to."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.calls = 0

    async def score(self, rows, explain=False):
        self.calls += 1
        self.explained = explain
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        if self.behaviour == "overloaded":
            raise Overloaded("queue full")
        if self.behaviour == "store-down":
            return ScoreReply(error=ErrorReply(503, "StoreUnavailable", "cannot reach Cassandra"))
        if self.behaviour == "reject-last":
            *good, last = rows
            reasons = [{"expectation": "expect_column_values_to_be_between",
                        "column": "amount", "value": "-5.0"}]  # fmt: skip
            q = pa.table({"key": [last["transaction_id"]], "raw": ["{}"],
                          "reasons": [json.dumps(reasons)], "source": ["online:fraud"],
                          "quarantined_at": pa.array([0], pa.timestamp("us", tz="UTC"))},
                         schema=QUARANTINE_SCHEMA)  # fmt: skip
            return ScoreReply(
                scores=[RowScore(r["transaction_id"], 0.5, "fraud/7", (1.0, 2.0)) for r in good],
                rejected=[RejectedRow(len(rows) - 1, last["transaction_id"], reasons)],
                feature_names=("f1", "f2"), quarantine=q,
            )  # fmt: skip
        keys = [r["transaction_id"] for r in rows]
        n = len(keys)
        scored = pa.table({
            "key": keys, "entity": [str(r.get("card_id")) for r in rows],
            "event_time": pa.array([datetime(2026, 1, 2, tzinfo=UTC)] * n,
                                   pa.timestamp("us", tz="UTC")),
            "score": [0.5] * n, "model_version": ["fraud/7"] * n, "decision": ["review"] * n,
            "policy_id": ["dp-test"] * n, "reasons": ['[{"feature":"f1"}]'] * n,
        })  # fmt: skip
        why = [{"feature": "f1", "value": 1.0, "contribution": 0.25}] if explain else None
        return ScoreReply(
            scores=[RowScore(k, 0.5, "fraud/7", (1.0, 2.0), "review", "dp-test", why)
                    for k in keys],  # fmt: skip
            feature_names=("f1", "f2"),
            alerts=alert_rows(CONTRACT, scored, "online:fraud", datetime.now(UTC)),
        )

    async def info(self):
        return {"champion": "fraud/7"}

    async def ready(self):
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        if self.behaviour == "overloaded":
            raise Overloaded("no replica")
        return {"model": "fraud/7", "cassandra": self.behaviour != "store-down"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def setup():
    written: list[tuple[str, pa.Table]] = []
    writer = FunctionWriter(lambda t, rows: written.append((t, rows)))
    plog = PredictionLog(CONTRACT, writer, LogOptions(8, 64, 0.02))
    model = FakeModel()
    service = ScoringService(
        contract=CONTRACT, keyring=KeyRing.from_digests({"test": hash_key(KEY)}),
        model=FunctionModelClient(model.score, model.info, model.ready),
        parser=RequestParser(CONTRACT, max_rows=4), max_body_bytes=4096,
        request_timeout_s=0.5, overload_status=429, retry_after_s=2, prediction_log=plog,
        ready_timeout_s=0.3,
    )  # fmt: skip
    yield service, model, written
    plog.close()


@pytest.fixture
def client(setup):
    service = setup[0]
    transport = httpx.ASGITransport(app=create_api(service))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_predict_one_row_and_many(client, setup):
    rows = json_rows(3)
    r = await client.post("/v1/fraud/predict", json=rows[0], headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key"] == rows[0]["transaction_id"] and body["score"] == 0.5
    assert body["model_version"] == "fraud/7" and body["request_id"] == r.headers["x-request-id"]
    assert (body["decision"], body["policy_id"]) == ("review", "dp-test")
    assert body["predictions"][0]["decision"] == "review"
    r = await client.post("/v1/fraud/predict", json=rows, headers={**AUTH, "X-Request-ID": "abc"})
    assert r.status_code == 200 and r.json()["request_id"] == "abc"
    assert [p["key"] for p in r.json()["predictions"]] == [x["transaction_id"] for x in rows]
    setup[0].prediction_log.close(timeout_s=5.0)  # drains the log's queue: all written
    logged = pa.concat_tables([t for name, t in setup[2] if name == "prediction_log"])
    ids = logged["request_id"].to_pylist()
    assert sorted(ids) == sorted([body["request_id"], "abc", "abc", "abc"])
    assert logged["features"][0].as_py() == [("f1", 1.0), ("f2", 2.0)]
    assert set(logged["decision"].to_pylist()) == {"review"}
    for table in ("alerts", "alerts_by_key"):  # one alert per scored row, in both tables
        alerted = pa.concat_tables([t for name, t in setup[2] if name == table])
        assert sorted(alerted["key"].to_pylist()) == sorted(
            [rows[0]["transaction_id"]] + [x["transaction_id"] for x in rows])


async def test_explain_asks_the_model_for_reasons_and_returns_them(client, setup):
    rows = json_rows(2)
    plain = await client.post("/v1/fraud/predict", json=rows, headers=AUTH)
    assert plain.status_code == 200 and setup[1].explained is False
    assert all("reasons" not in p for p in plain.json()["predictions"])
    r = await client.post("/v1/fraud/predict?explain=true", json=rows[0], headers=AUTH)
    assert r.status_code == 200 and setup[1].explained is True
    want = [{"feature": "f1", "value": 1.0, "contribution": 0.25}]
    assert r.json()["reasons"] == r.json()["predictions"][0]["reasons"] == want
    bad = await client.post("/v1/fraud/predict?explain=maybe", json=rows[0], headers=AUTH)
    assert bad.status_code == 422 and "explain" in bad.text


async def test_the_log_key_is_the_servers_and_a_reused_request_id_overwrites_nothing(
    client, setup
):
    rows = json_rows(3)
    for row in (rows[0], rows[1:]):  # one client reuses one X-Request-ID
        r = await client.post("/v1/fraud/predict", json=row, headers={**AUTH, "X-Request-ID": "r1"})
        assert r.status_code == 200 and r.json()["request_id"] == "r1"  # echoed
    setup[0].prediction_log.close(timeout_s=5.0)  # drains the log's queue: all written
    logged = pa.concat_tables([t for name, t in setup[2] if name == "prediction_log"])
    assert logged.num_rows == 3
    assert len(set(logged["log_id"].to_pylist())) == 3  # one server-made key per scored row
    assert logged["request_id"].to_pylist() == ["r1"] * 3
    assert logged["row_key"].to_pylist() == [x["transaction_id"] for x in rows]
    assert logged["api_key"].to_pylist() == ["test"] * 3  # the key's name, never the key
    assert KEY not in str(logged.to_pylist())
    assert logged["latency_ms"][0].as_py() > 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/fraud/predict"), ("GET", "/v1/models"), ("GET", "/v1/stats"),
     ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/nope")],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
     {"Authorization": f"Basic {KEY}"}, {"X-API-Key": ""}],
)
async def test_every_route_but_health_needs_the_key(client, setup, method, path, headers):
    r = await client.request(method, path, headers=headers, json=json_rows(1)[0])
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert setup[1].calls == 0


async def test_health_needs_no_key_and_both_header_styles_work(client):
    assert (await client.get("/v1/health")).status_code == 200
    for headers in (AUTH, {"Authorization": f"Bearer {KEY}"}):
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
    spec = (await client.get("/openapi.json", headers=AUTH)).json()
    assert "/v1/{contract}/predict" in spec["paths"] and "FraudRow" in spec["components"]["schemas"]
    assert (await client.get("/docs", headers=AUTH)).status_code == 200


async def test_ready_only_when_the_model_answers_and_cassandra_does(client, setup):
    r = await client.get("/v1/ready")  # no key: a probe
    assert r.status_code == 200 and r.json() == {
        "ready": True, "contract": "fraud", "checks": {"model": True, "cassandra": True}}
    for behaviour, checks in (("store-down", {"model": True, "cassandra": False}),
                              ("overloaded", {"model": False, "cassandra": False}),
                              ("slow", {"model": False, "cassandra": False})):  # fmt: skip
        setup[1].behaviour = behaviour
        t0 = time.perf_counter()
        r = await client.get("/v1/ready")
        assert r.status_code == 503 and r.json()["checks"] == checks, (behaviour, r.text)
        assert r.headers["retry-after"] == "2" and time.perf_counter() - t0 < 1.5
        assert (await client.get("/v1/health")).status_code == 200  # liveness: still alive


async def test_the_registry_read_behind_models_has_a_timeout(client, setup):
    import threading

    release = threading.Event()

    class HangingRegistry:
        def manifest(self, name):
            release.wait(30)  # a filesystem that does not answer
            raise AssertionError("released")

    setup[0].registry = HangingRegistry()
    try:
        t0 = time.perf_counter()
        r = await client.get("/v1/models", headers=AUTH)
        assert r.status_code == 504 and "registry" in r.json()["message"], r.text
        assert time.perf_counter() - t0 < 2.0
        r = await client.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
        assert r.status_code == 200  # a stuck registry read holds no scoring thread
    finally:
        release.set()


async def test_body_over_the_limit_is_413_declared_or_streamed(client, setup):
    big = json.dumps(json_rows(1)[0] | {"pad": "x" * 5000})
    r = await client.post("/v1/fraud/predict", content=big, headers=JSON)
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    async def chunks():
        for _ in range(10):
            yield b" " * 1000

    r = await client.post("/v1/fraud/predict", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert setup[1].calls == 0


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
     "application/jsonx", "text/json", ""],
)
async def test_a_body_not_declared_json_is_415(client, setup, content_type):
    body = json.dumps(json_rows(1)[0]).encode()
    headers = AUTH if content_type is None else {**AUTH, "Content-Type": content_type}
    r = await client.post("/v1/fraud/predict", content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type" and "application/json" in r.text
    assert setup[1].calls == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/problem+json"],
)
async def test_json_content_types_are_accepted(client, content_type):
    body = json.dumps(json_rows(1)[0]).encode()
    r = await client.post("/v1/fraud/predict", content=body,
                          headers={**AUTH, "Content-Type": content_type})  # fmt: skip
    assert r.status_code == 200, r.text


async def test_too_many_rows_is_413_and_shape_errors_are_422(client, setup):
    r = await client.post("/v1/fraud/predict", json=json_rows(5), headers=AUTH)
    assert r.status_code == 413
    row = json_rows(1)[0] | {"amount": "12"}
    r = await client.post("/v1/fraud/predict", json=row, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["problems"][0] | {"message": None} == {
        "loc": "row.amount", "rule": "float_type", "message": None, "value": "'12'"}  # fmt: skip
    r = await client.post("/v1/fraud/predict", content=b'{"amount": Infinity}', headers=JSON)
    assert r.status_code == 422
    assert ("row.amount", "finite_number") in {(p["loc"], p["rule"]) for p in r.json()["problems"]}
    assert setup[1].calls == 0
    r = await client.post("/v1/other/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 404 and "not served here" in r.json()["message"]


async def test_rows_failing_the_contract_are_422_and_quarantined(client, setup):
    setup[1].behaviour = "reject-last"
    rows = json_rows(3)
    r = await client.post("/v1/fraud/predict", json=rows, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "rows_rejected"
    assert body["problems"] == [{
        "loc": "rows[2].amount", "rule": "expect_column_values_to_be_between",
        "message": "failed the contract's expectation", "value": "-5.0",
        "key": rows[2]["transaction_id"]}]  # fmt: skip
    setup[0].prediction_log.close(timeout_s=5.0)  # drains the log's queue: all written
    quarantined = [t for name, t in setup[2] if name == "quarantine"]
    assert quarantined and quarantined[0]["key"].to_pylist() == [rows[2]["transaction_id"]]
    assert not [t for name, t in setup[2] if name in ("prediction_log", "alerts")]


async def test_overload_is_answered_at_once_with_retry_after(client, setup):
    setup[1].behaviour = "overloaded"
    t0 = time.perf_counter()
    r = await client.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert time.perf_counter() - t0 < 0.5


async def test_a_slow_model_never_holds_a_request_past_the_timeout(client, setup):
    setup[1].behaviour = "slow"
    t0 = time.perf_counter()
    r = await client.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 504 and r.json()["error"] == "timeout"
    assert 0.45 < time.perf_counter() - t0 < 2.0


async def test_store_outage_is_503_with_retry_after(client, setup):
    setup[1].behaviour = "store-down"
    before = (await client.get("/v1/stats", headers=AUTH)).json()
    r = await client.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    after = (await client.get("/v1/stats", headers=AUTH)).json()
    # The stats are this process's metrics: compare with what earlier tests left there.
    assert after["by_status"].get("503", 0) == before["by_status"].get("503", 0) + 1
    # Counted as what it is, not as overload (issue 13): an unreachable feature store.
    assert after["errors"].get("store_unavailable", 0) == (
        before["errors"].get("store_unavailable", 0) + 1)  # fmt: skip
    assert after["errors"].get("overload", 0) == before["errors"].get("overload", 0)
    assert after["requests"] == before["requests"] + 2  # the first /v1/stats call, the post


def test_each_sluice_error_branch_has_a_status():
    assert status_for(ValidationFailed) == 422
    assert status_for(StoreUnavailable) == 503 and status_for(WriteFailed) == 503
    assert status_for(ModelNotFound) == 503
    assert status_for(ConfigError) == 500 and status_for(SluiceError) == 500


async def test_sluice_errors_raised_in_a_route_are_mapped(setup):
    service = setup[0]

    async def broken(rows):
        raise WriteFailed("boom", 0, ["k"])

    service.model = FunctionModelClient(broken)
    transport = httpx.ASGITransport(app=create_api(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 503 and r.json()["error"] == "WriteFailed"


async def test_a_request_cancelled_before_its_answer_counts_as_499_not_as_internal(setup):
    """A client that hangs up mid-request (Serve cancels the request's task) is not a
    server failure: counted as 499, class ``cancelled``; an escaped exception stays 500."""
    from sluice import metrics

    service = setup[0]
    entered = asyncio.Event()

    async def hang(rows):
        entered.set()
        await asyncio.Event().wait()  # never answers: the client leaves first

    service.model = FunctionModelClient(hang)

    def counts() -> dict[str, float]:
        return {"499": metrics.ONLINE_REQUESTS.value(contract="fraud", code="499"),
                "500": metrics.ONLINE_REQUESTS.value(contract="fraud", code="500"),
                **{k: metrics.ONLINE_ERRORS.value(contract="fraud", error_class=k)
                   for k in ("cancelled", "internal")}}  # fmt: skip

    before = counts()
    transport = httpx.ASGITransport(app=create_api(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        call = asyncio.create_task(c.post("/v1/fraud/predict", json=json_rows(1)[0],
                                          headers=AUTH))  # fmt: skip
        await entered.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    async def broken(rows):
        raise RuntimeError("a bug, not a SluiceError")

    service.model = FunctionModelClient(broken)
    transport = httpx.ASGITransport(app=create_api(service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/v1/fraud/predict", json=json_rows(1)[0], headers=AUTH)
    assert r.status_code == 500
    after = counts()
    assert {k: after[k] - before[k] for k in before} == {
        "499": 1, "500": 1, "cancelled": 1, "internal": 1}


async def test_every_answer_is_counted_by_status_class_and_rows(client, setup):
    """sluice.metrics families of the online path (this process's copy of them)."""
    from sluice import metrics

    def snapshot() -> dict[str, float]:
        return {
            "auth": metrics.ONLINE_ERRORS.value(contract="fraud", error_class="auth"),
            "validation": metrics.ONLINE_ERRORS.value(contract="fraud", error_class="validation"),
            "overload": metrics.ONLINE_ERRORS.value(contract="fraud", error_class="overload"),
            "200": metrics.ONLINE_REQUESTS.value(contract="fraud", code="200"),
            "latency": metrics.ONLINE_REQUEST_SECONDS.value(contract="fraud"),
            "scored": metrics.ROWS_SCORED.value(source="online:fraud", model_version="fraud/7"),
            "quarantined": metrics.ROWS_QUARANTINED.value(
                source="online:fraud", reason="expect_column_values_to_be_between:amount"),
        }  # fmt: skip

    before = snapshot()
    rows = json_rows(3)
    assert (await client.post("/v1/fraud/predict", json=rows[0])).status_code == 401
    assert (await client.post("/v1/fraud/predict", json=rows, headers=AUTH)).status_code == 200
    setup[1].behaviour = "reject-last"
    r = await client.post("/v1/fraud/predict", json=rows, headers=AUTH)
    assert r.status_code == 422
    setup[1].behaviour = "overloaded"
    assert (await client.post("/v1/fraud/predict", json=rows[0], headers=AUTH)).status_code == 429
    assert (await client.get("/v1/health")).status_code == 200  # not counted
    assert (await client.get("/v2/health/live")).status_code == 200  # not counted
    assert (await client.get("/v2")).status_code == 200  # server metadata: counted
    assert (await client.get("/x/v1/health")).status_code == 401  # not a probe: counted
    after = snapshot()
    delta = {k: after[k] - before[k] for k in before}
    # A request with a rejected row is refused whole (422): its good rows are neither
    # answered nor logged, so only the 200's three rows count as scored.
    assert delta == {"auth": 2, "validation": 1, "overload": 1, "200": 2, "latency": 6,
                     "scored": 3, "quarantined": 1}, delta  # fmt: skip
