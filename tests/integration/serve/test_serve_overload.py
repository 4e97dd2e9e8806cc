"""Overload: full queues answer 429 (configured) with Retry-After at once; nothing hangs.

The real ingress (build_app's, via assemble_app) is bound to a deliberately slow model
with room for one request in flight and one queued; the ingress itself takes four and
queues two at the proxy. Twenty concurrent requests must all be answered: rejections at
once (by the ingress for the model's queue, by Serve's proxy for the ingress's), the
admitted ones with 504 at the request timeout — none later.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray.cloudpickle
from ray import serve

from serve_apps.scoring.app import ScoringAppArgs, assemble_app
from serve_apps.scoring.auth import hash_key
from serve_apps.scoring.schemas import RowScore, ScoreReply

from .serve_live import AUTH, TEST_KEY, client, json_rows, wait_running

pytestmark = pytest.mark.integration

TIMEOUT_S = 4.0
APP = "sluice-overload"
ARRIVED = Path(tempfile.gettempdir()) / "sluice-overload-arrived"  # one file per row the model got

# The slow model below lives in this test file: ship it to the replica by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1, graceful_shutdown_timeout_s=1,
                  graceful_shutdown_wait_loop_s=0.5, ray_actor_options={"num_cpus": 0})  # fmt: skip
class SlowModel:
    async def score(self, requests, explains):  # one call: a group of requests
        ARRIVED.mkdir(exist_ok=True)
        me = ray.get_runtime_context().get_actor_name()  # this replica, for the test to kill
        for rows in requests:
            for r in rows:
                (ARRIVED / r["transaction_id"]).write_text(me)
        await asyncio.sleep(30)  # far past the request timeout
        return [ScoreReply(scores=[RowScore(r["transaction_id"], 0.5, "slow/1", ()) for r in rows])
                for rows in requests]  # fmt: skip

    async def info(self):
        return {"champion": "slow/1"}


@pytest.fixture(scope="module")
def base(serve_world):
    args = ScoringAppArgs.model_validate({
        "platform_config": str(serve_world.root / "platform.yaml"),
        "api_keys": {"sha256": {"test": hash_key(TEST_KEY)}},
        "limits": {"request_timeout_s": TIMEOUT_S},
        "overload": {"status_code": 429, "retry_after_s": 3},
        "resources": {"ingress_num_cpus": 0, "model_num_cpus": 0},
        "prediction_log": {"enabled": False},
    })  # fmt: skip
    app = assemble_app(args, SlowModel.bind(),
                       ingress_options={"max_ongoing_requests": 4, "max_queued_requests": 2})
    serve.run(app, name=APP, route_prefix="/overload")
    wait_running([APP])
    yield f"{serve_world.base}/overload"
    serve.delete(APP)


def post(url: str, row: int = 0) -> tuple[int, float, dict, dict]:
    t0 = time.perf_counter()
    with client(url, timeout_s=60) as c:
        r = c.post("/v1/fraud/predict", json=json_rows(1, seed=row)[0], headers=AUTH)
    json_body = r.headers.get("content-type", "").startswith("application/json")
    return r.status_code, time.perf_counter() - t0, dict(r.headers), (
        r.json() if json_body else {"text": r.text})  # Serve's proxy answers in plain text


def stats(url: str) -> dict:
    with client(url) as c:
        return c.get("/v1/stats", headers=AUTH).json()


def test_a_full_model_queue_is_refused_by_the_ingress_at_once(base):
    # Request 1 runs in the model (max_ongoing_requests 1; waited for by its file); of
    # requests 2 and 3, one takes the queue's one slot and the other is refused at once.
    # Which one is Serve's router's race (ray/serve/_private/router.py: it may refuse more
    # than needed, never fewer), so the test asks for one of each, not for an order.
    arrived = ARRIVED / json_rows(1, seed=1)[0]["transaction_id"]
    arrived.unlink(missing_ok=True)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, base, 1)
        deadline = time.monotonic() + 10
        while not arrived.exists():
            assert time.monotonic() < deadline, "request 1 never reached the model"
            time.sleep(0.05)
        rest = [pool.submit(post, base, 2), pool.submit(post, base, 3)]
        finished = [first.result(), *(f.result() for f in rest)]
    assert sorted(s for s, *_ in finished) == [429, 504, 504], finished
    [(_, seconds, headers, body)] = [r for r in finished if r[0] == 429]
    assert body["error"] == "overloaded" and headers["retry-after"] == "3", body
    assert seconds < 1.0, seconds  # refused at once, not after a wait
    held = [t for s, t, *_ in finished if s == 504]
    assert all(TIMEOUT_S - 0.2 < t < TIMEOUT_S + 2.0 for t in held), finished
    after = stats(base)  # the ingress replica's metrics (sluice_online_*)
    assert after["errors"].get("overload") == 1 and after["errors"].get("timeout") == 2, after
    assert after["by_status"].get("429") == 1 and after["by_status"].get("504") == 2, after


def test_a_flood_is_answered_fast_and_nothing_hangs(base):
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: post(base, i), range(20)))
    statuses = sorted(s for s, *_ in results)
    assert set(statuses) <= {429, 504}, statuses
    rejected = [(t, h) for s, t, h, _ in results if s == 429]
    assert len(rejected) >= 14, statuses  # at most 4 admitted + 2 queued at the ingress
    assert all(h.get("retry-after") == "3" for _, h in rejected)
    fast = sorted(t for t, _ in rejected)
    assert fast[len(fast) // 2] < 1.0, fast  # refused at once, not after a wait
    slowest = max(t for _, t, *_ in results)
    assert slowest < TIMEOUT_S + 3.0, slowest  # admitted ones end at the timeout (504)


def test_a_model_replica_dying_mid_request_is_answered_at_once(base):
    """The model is called by value (its reply comes back on the replica's gRPC channel):
    a replica killed while it holds a request still ends that request with the overload
    answer, at once, never a 500 or the request timeout."""
    arrived = ARRIVED / json_rows(1, seed=7)[0]["transaction_id"]
    arrived.unlink(missing_ok=True)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, base, 7)
        deadline = time.monotonic() + 10
        while not arrived.exists() or not arrived.read_text():  # the request is in the model
            assert time.monotonic() < deadline, "the request never reached the model"
            time.sleep(0.05)
        t_kill = time.perf_counter()
        ray.kill(ray.get_actor(arrived.read_text(), namespace="serve"), no_restart=False)
        status, _, headers, body = held.result(timeout=30)
        answered_after = time.perf_counter() - t_kill
    assert (status, body.get("error")) == (429, "overloaded"), (status, body)
    assert headers["retry-after"] == "3"
    assert answered_after < TIMEOUT_S - 1.0, answered_after  # not the timeout's 504
