"""The scoring endpoint live: real Ray Serve (configs/serve.yaml), real Cassandra, real models.

Auth, every bad-input class, features from the Cassandra online table (never recorded
by requests), the prediction log and quarantine rows in Cassandra, the GPU replica on a
logical GPU, the canary split, and a model hot swap under load with zero failures.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from serve_apps.scoring.batch import canary_bucket
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.errors import StreamError
from sluice.features import to_store_events
from sluice.models import SCORE_TOLERANCE
from sluice.scoring import Scorer
from sluice.store import CassandraFeatureStore

from .serve_live import AUTH, TEST_KEY, client, json_rows, table_rows, wait_until

pytestmark = pytest.mark.integration

PREDICT = "/v1/fraud/predict"
CONTRACT = load_contract("fraud")


HISTORY = generate_dataset(300, seed=1).table


@pytest.fixture(scope="module")
def world(serve_world):
    # Card history in the online feature table, as the stream would have recorded it.
    store = CassandraFeatureStore.for_contract(serve_world.cfg.cassandra, CONTRACT)
    store.record(to_store_events(HISTORY, CONTRACT.features))
    return serve_world


@pytest.fixture(scope="module")
def http(world):
    with client(world.base) as c:
        yield c


def test_auth_missing_wrong_and_both_header_styles(http):
    row = json_rows(1)[0]
    assert http.get("/v1/health").status_code == 200
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"},
                    {"Authorization": TEST_KEY}):  # fmt: skip
        for method, path in (("POST", PREDICT), ("GET", "/v1/models"), ("GET", "/docs")):
            r = http.request(method, path, json=row, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
    assert http.post(PREDICT, json=row, headers={"X-API-Key": TEST_KEY}).status_code == 200
    assert http.post(PREDICT, json=row, headers=AUTH).status_code == 200


def test_ready_when_the_model_is_loaded_and_cassandra_answers(http):
    r = http.get("/v1/ready")  # no key: a probe
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"model": True, "cassandra": True}


def test_the_builder_reads_the_host_serve_binds(world):
    """What the demo-key rule of build_app is decided on: the live controller's host."""
    from serve_apps.scoring.app import serve_http_host

    assert serve_http_host() == "127.0.0.1"  # the session's Serve (conftest: serve_base)


def test_one_row_and_a_list_are_scored_with_features_from_cassandra(world, http):
    rows = table_rows(HISTORY.slice(200, 12))  # events whose cards have earlier events
    count_events = "SELECT count(*) FROM sluice_test_serve.fraud_feature_events"
    before = world.session.execute(count_events).one()[0]
    r = http.post(PREDICT, json=rows[0], headers=AUTH)
    assert r.status_code == 200, r.text
    one = r.json()
    many = http.post(PREDICT, json=rows, headers=AUTH).json()
    assert [p["key"] for p in many["predictions"]] == [x["transaction_id"] for x in rows]
    assert one["model_version"] == "fraud/1" and one["request_id"] == r.headers["x-request-id"]

    # The same rows through the contract's Scorer here, reading the same Cassandra table.
    store = CassandraFeatureStore.for_contract(world.cfg.cassandra, CONTRACT)
    local = Scorer(CONTRACT, world.registry, store, record_events=False).score(rows).scored
    # Parity as documented (README "Bring your own model"): scores within SCORE_TOLERANCE.
    served = [p["score"] for p in many["predictions"]]
    assert max(abs(a - b) for a, b in zip(served, local["score"].to_pylist(), strict=True)) \
        <= SCORE_TOLERANCE
    assert abs(one["score"] - local["score"][0].as_py()) <= SCORE_TOLERANCE
    assert local["card_count_24h"].to_numpy().max() > 0  # the history did count
    assert world.session.execute(count_events).one()[0] == before  # nothing recorded


def test_online_equals_batch_on_the_same_events(world, http, tmp_path):
    """The online leg of the three-path parity (issue 7): the batch job and the live
    endpoint give the same features and scores for the same events. The stream leg
    (stream == batch) is tests/integration/stream/test_stream_parity.py."""
    from pipelines.batch_score import run
    from sluice.datagen import write_parquet
    from sluice.jobs import ActorPool, BatchJob, InputSpec

    events = generate_dataset(120, seed=505).table
    write_parquet(events, tmp_path / "in" / "part-0.parquet")
    job = BatchJob(name="online_parity", contract="fraud",
                   input=InputSpec(paths=(str(tmp_path / "in" / "*.parquet"),)),
                   actors=ActorPool(min_actors=1, max_actors=1),
                   summary_path=str(tmp_path / "summary.json"))  # fmt: skip
    summary = run(job, world.cfg)  # records the events in the feature table, then scores
    assert summary.rows_quarantined == 0 and summary.rows_scored == events.num_rows
    select = world.session.prepare(
        "SELECT score, model_version, features, decision, policy_id "
        "FROM sluice_test_serve.predictions WHERE transaction_id = ?"
    )
    log = world.session.prepare(
        "SELECT score, features, decision, policy_id FROM sluice_test_serve.prediction_log "
        "WHERE request_id = ? ALLOW FILTERING"  # request_id is a column; the key is the server's
    )
    online: dict[str, tuple[str, float]] = {}
    decided: dict[str, tuple[str, str]] = {}
    for row in table_rows(events):
        r = http.post(PREDICT, json=row, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        if body["model_version"] == summary.model_version:  # the canary share goes elsewhere
            online[row["transaction_id"]] = (body["request_id"], body["score"])
            decided[row["transaction_id"]] = (body["decision"], body["policy_id"])
    assert len(online) >= events.num_rows // 2

    def logged():
        rows = {k: world.session.execute(log, (rid,)).one() for k, (rid, _) in online.items()}
        return rows if all(rows.values()) else None

    logged_rows = wait_until(logged, 30, "prediction log rows")
    for key, (_, score) in online.items():
        batch = world.session.execute(select, (key,)).one()
        assert abs(batch.score - score) <= SCORE_TOLERANCE, key
        assert dict(batch.features) == dict(logged_rows[key].features), key
        # The same decision under the same policy: in the reply, the log and the batch rows.
        assert decided[key] == (batch.decision, batch.policy_id), key
        assert decided[key] == (logged_rows[key].decision, logged_rows[key].policy_id), key
        assert decided[key][0] == load_contract("fraud").decision.label_of(score), key
    assert any(dict(world.session.execute(select, (k,)).one().features)["card_count_24h"] > 0
               for k in online), "no event had earlier events of its card: parity is vacuous"


def test_an_online_retry_raises_one_alert_in_cassandra_and_on_the_topic(world, http):
    """A client sends the same transactions twice (a retry after a timeout): each alert is
    stored once, proposed to the relay twice, and on the alert topic once."""
    from pipelines.alert_relay import run as relay
    from sluice.features import InMemoryFeatureStore
    from sluice.stream import alert_topic, candidate_topic, read_topic

    # Fraud bursts: the first alerting event of each, after its card's earlier events
    # (recorded as the stream would have; online scoring records none).
    events = generate_dataset(2000, seed=909).table
    full = Scorer(CONTRACT, world.registry, InMemoryFeatureStore()).score(events).scored
    decided = dict(zip(full["key"].to_pylist(), full["decision"].to_pylist(), strict=True))
    keys_in_order = events["transaction_id"].to_pylist()
    alerting = [decided.get(k) in ("review", "block") for k in keys_in_order]
    first = {k for i, k in enumerate(keys_in_order) if alerting[i] and not alerting[i - 1]}
    chosen = pa.array(sorted(first)[:8])
    store = CassandraFeatureStore.for_contract(world.cfg.cassandra, CONTRACT)
    store.record(to_store_events(events.filter(pc.invert(pc.is_in(
        events["transaction_id"], value_set=chosen))), CONTRACT.features))  # fmt: skip
    risky = table_rows(events.filter(pc.is_in(events["transaction_id"], value_set=chosen)))
    replies = []
    for _ in range(2):
        r = http.post(PREDICT, json=risky, headers=AUTH)
        assert r.status_code == 200, r.text
        replies.append({p["key"]: p["decision"] for p in r.json()["predictions"]})
    assert replies[0] == replies[1]
    keys = {k for k, d in replies[0].items() if d in ("review", "block")}
    assert keys, f"no transaction was decided review or block: vacuous ({replies[0]})"

    kafka = world.cfg.kafka

    def proposed_twice() -> bool:
        try:  # the replica creates the topic with its first proposal
            seen = Counter(m.key().decode()
                           for m in read_topic(kafka, candidate_topic(kafka, "fraud")))
        except StreamError:
            return False
        return all(seen[k] >= 2 for k in keys)

    wait_until(proposed_twice, 30, "both attempts' alerts proposed to the relay")
    stored = Counter(r.key for r in world.session.execute(
        "SELECT key FROM sluice_test_serve.alerts", timeout=60) if r.key in keys)  # fmt: skip
    assert stored == dict.fromkeys(keys, 1)
    relay(world.cfg, "fraud", until_caught_up=True, max_seconds=120)
    on_topic = Counter(json.loads(m.value())["key"] for m in read_topic(kafka, alert_topic(
        kafka, "fraud")))  # fmt: skip
    assert {k: on_topic[k] for k in keys} == dict.fromkeys(keys, 1)


def _problems(r) -> set[tuple[str, str]]:
    return {(p["loc"], p["rule"]) for p in r.json()["problems"]}


def test_bad_inputs_get_4xx_naming_the_field_and_the_rule(http):
    row = json_rows(1)[0]
    cases = [
        (row | {"colour": "red"}, 422, ("row.colour", "extra_forbidden")),
        (row | {"amount": "12"}, 422, ("row.amount", "float_type")),
        ({k: v for k, v in row.items() if k != "card_id"}, 422, ("row.card_id", "missing")),
        (row | {"event_time": "2024-01-01T00:00:00"}, 422, ("row.event_time", "timezone_aware")),
    ]
    for body, status, problem in cases:
        r = http.post(PREDICT, json=body, headers=AUTH)
        assert r.status_code == status and problem in _problems(r), r.text
    text = json.dumps(row).replace(json.dumps(row["amount"]), "NaN", 1)
    raw = {**AUTH, "Content-Type": "application/json"}  # raw bytes: declare them JSON
    r = http.post(PREDICT, content=text, headers=raw)
    assert r.status_code == 422 and ("row.amount", "finite_number") in _problems(r)
    r = http.post(PREDICT, json=json_rows(17), headers=AUTH)  # max_rows is 16
    assert r.status_code == 413
    r = http.post(PREDICT, content=b"[" + b" " * 20000 + b"]", headers=raw)  # over 16 KiB
    assert r.status_code == 413
    r = http.post(PREDICT, content=b"{oops", headers=raw)
    assert r.status_code == 422
    r = http.post(PREDICT, content=json.dumps(row), headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type"
    r = http.post("/v1/nope/predict", json=row, headers=AUTH)
    assert r.status_code == 404


def test_rows_failing_expectations_are_422_and_quarantined(world, http):
    rows = json_rows(3, seed=4)
    rows[1]["amount"] = -7.5
    rows[2]["currency"] = "XXX"
    r = http.post(PREDICT, json=rows, headers=AUTH)
    assert r.status_code == 422, r.text
    assert _problems(r) == {("rows[1].amount", "expect_column_values_to_be_between"),
                            ("rows[2].currency", "expect_column_values_to_be_in_set")}
    keys = {rows[1]["transaction_id"], rows[2]["transaction_id"]}
    day = datetime.now(UTC).date()

    def stored():
        found = world.session.execute(
            "SELECT key, reasons FROM sluice_test_serve.quarantine "
            "WHERE source = 'online:fraud' AND day = %s", (day,))
        return {x.key: json.loads(x.reasons) for x in found if x.key in keys}

    got = wait_until(lambda: len(stored()) == 2 and stored(), 20, "quarantine rows")
    assert got[rows[1]["transaction_id"]][0]["column"] == "amount"


def test_predictions_are_logged_to_cassandra(world, http):
    ids, keys = {}, {}
    for row in json_rows(5, seed=7):
        r = http.post(PREDICT, json=row, headers=AUTH)
        assert r.status_code == 200
        ids[r.json()["request_id"]] = r.json()["score"]
        keys[r.json()["request_id"]] = row["transaction_id"]

    def logged():
        rows = {}
        for rid in ids:
            x = world.session.execute(
                "SELECT log_id, request_id, row_key, api_key, contract, model_version, score, "
                "latency_ms, features FROM sluice_test_serve.prediction_log "
                "WHERE request_id = %s ALLOW FILTERING", (rid,)).one()
            if x is not None:
                rows[rid] = x
        return rows if len(rows) == len(ids) else None

    rows = wait_until(logged, 20, "prediction log rows")
    for rid, x in rows.items():
        assert x.score == ids[rid] and x.contract == "fraud" and x.model_version == "fraud/1"
        assert x.latency_ms > 0 and set(x.features) == set(CONTRACT.feature_names)
        assert x.row_key == keys[rid] and x.api_key == "test" and x.log_id != rid
    stats = http.get("/v1/stats", headers=AUTH).json()["prediction_log"]
    assert stats["failed"] == 0 and stats["dropped"] == 0


def test_model_replica_holds_the_logical_gpu_and_scores_on_cpu(http):
    import ray

    serving = http.get("/v1/models", headers=AUTH).json()["serving"]
    assert serving["gpu_ids"] == ["0"]  # scheduled with num_gpus=1
    assert serving["device"] == "cpu"  # no CUDA here: the CPU fallback
    assert ray.available_resources().get("GPU", 0) == 0


def test_models_route_lists_versions_and_aliases(http):
    body = http.get("/v1/models", headers=AUTH).json()
    assert body["registry"]["aliases"] == {"champion": 1, "challenger": 2}
    assert [v["version"] for v in body["registry"]["versions"]] == [1, 2]
    assert body["serving"]["champion"] == "fraud/1"


def test_canary_share_by_key_hash(world, http):
    world.model_user_config()["challenger_share"] = 0.3
    world.redeploy()
    wait_until(lambda: http.get("/v1/models", headers=AUTH).json()["serving"]["challenger"],
               30, "the challenger to load")  # fmt: skip
    rows = json_rows(320, seed=21)
    versions = {}
    for i in range(0, len(rows), 16):
        r = http.post(PREDICT, json=rows[i : i + 16], headers=AUTH)
        assert r.status_code == 200, r.text
        versions |= {p["key"]: p["model_version"] for p in r.json()["predictions"]}
    share = sum(v == "fraud/2" for v in versions.values()) / len(versions)
    assert 0.22 < share < 0.38, share
    assert all(v == ("fraud/2" if canary_bucket(k) < 0.3 else "fraud/1")
               for k, v in versions.items())  # fmt: skip


def test_promote_and_reconfigure_swaps_the_model_with_no_failed_request(world, http):
    rows = json_rows(200, seed=33)
    statuses: Counter[int] = Counter()
    versions: list[tuple[float, str]] = []
    stop = threading.Event()
    errors: list[str] = []

    def load(worker: int) -> None:
        with client(world.base) as c:
            i = worker
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = c.post(PREDICT, json=rows[i % len(rows)], headers=AUTH)
                except Exception as exc:  # noqa: BLE001 - a transport failure is a failure
                    errors.append(repr(exc))
                    continue
                statuses[r.status_code] += 1
                if r.status_code == 200:
                    versions.append((sent, r.json()["model_version"]))
                i += 4

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(versions) >= 20, 60, "answers before the swap")
        world.registry.promote("fraud")  # the challenger (fraud/2) becomes champion
        uc = world.model_user_config()
        uc["model_generation"] += 1
        uc["challenger_share"] = 0.0
        world.redeploy()
        # The one model replica reports the new generation once its scorer is swapped.
        wait_until(lambda: http.get("/v1/models", headers=AUTH).json()["serving"]
                   ["model_generation"] == 2, 60, "the replica to report generation 2")
        swapped = time.monotonic()
        wait_until(lambda: sum(sent > swapped for sent, _ in versions) >= 40, 60,
                   "40 answers to requests sent after the swap")  # fmt: skip
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert set(statuses) == {200}, statuses
    seen = [v for _, v in versions]
    assert "fraud/1" in seen and "fraud/2" in seen
    after = Counter(v for sent, v in versions if sent > swapped)
    assert set(after) == {"fraud/2"} and after.total() >= 40, after
    assert http.get("/v1/models", headers=AUTH).json()["serving"]["model_generation"] == 2
