"""The online endpoint (`sluice serve` on the cluster's Ray) under a bounded load while a
Cassandra node is SIGKILLed and restarted: every valid request answers 200. And read-your-
writes on three nodes: a feature the stream wrote is seen by the next online request for
that card, even with the node that coordinated the write killed right after."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
import yaml
from cassandra import OperationTimedOut
from stream.stream_helpers import (  # noqa: I001 - tests/integration/stream, by path
    Driver,
    new_topic,
    reference_scores,
    wait_for,
    write_job,
)

from serve_apps.scoring.auth import hash_key
from sluice.config import REPO_ROOT, PlatformConfig
from sluice.datagen import generate_dataset, to_json_messages
from sluice.models import ModelRegistry
from sluice.store import session_for
from sluice.stream import produce_messages

from .conftest import Cluster

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_online_faults"
KEY = "sk_test_cluster_online"
AUTH = {"Authorization": f"Bearer {KEY}"}
PREDICT = "/v1/fraud/predict"


@dataclass
class Online:
    cfg: PlatformConfig
    url: str
    root: Path


def request_rows(table: pa.Table) -> list[dict]:
    rows = table.drop(["is_fraud"]).to_pylist()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
            for r in rows]  # fmt: skip


@pytest.fixture(scope="module")
def online(cluster: Cluster, tmp_path_factory):
    """`sluice serve` (Serve's proxy on the head only: both nodes share 127.0.0.1) with a
    replica of each deployment, on the cluster's Ray and Cassandra."""
    root = tmp_path_factory.mktemp("cluster-online")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = cluster.config(KEYSPACE)
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": port})})
    (root / "platform.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    doc = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    doc["proxy_location"] = "HeadOnly"
    app = doc["applications"][0]
    app["args"].update(platform_config=str(root / "platform.yaml"),
                       api_keys={"sha256": {"test": hash_key(KEY)}})  # fmt: skip
    app["args"]["resources"].update(ingress_num_cpus=0, model_num_cpus=0)
    for dep in app["deployments"]:
        dep["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    (root / "serve.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    log = (root / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("sluice")), "serve", "--ingress", "proxy",
         "--config", str(root / "serve.yaml")], cwd=REPO_ROOT, env=cluster.env(KEYSPACE),
        start_new_session=True, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/v1/ready", headers=AUTH, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (root / "serve.log").read_text()[-3000:]
            time.sleep(1)
        yield Online(cfg, url, root)
    finally:
        # The first SIGTERM: `serve run` shuts the applications down (a few seconds). Its
        # driver then exited in seconds on a fresh cluster, but took about a minute after the
        # package had killed and restarted a worker raylet; the second signal has
        # `sluice serve` kill it and everything below (its documented second-signal stop).
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def test_online_answers_every_valid_request_with_a_cassandra_node_killed(cluster, online):
    """A bounded loop (at most 10 requests/s, one row each): 60 answers, then cassandra-3
    SIGKILLed, 100 answers on two nodes, the node restarted (the load goes on), 60 answers
    more: 0 errors."""
    rows = request_rows(generate_dataset(2000, seed=71, invalid_fraction=0.0).table)
    answers: list[tuple[float, int, float]] = []  # (sent at, status, latency s)
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=online.url, headers=AUTH, timeout=30) as http:
            for row in rows:
                if stop.is_set():
                    return
                t = time.monotonic()
                try:
                    status = http.post(PREDICT, json=row).status_code
                except httpx.HTTPError:
                    status = 0
                answers.append((t, status, time.monotonic() - t))
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t)))

    loop = threading.Thread(target=load, daemon=True)
    loop.start()
    def answered(n: int, what: str) -> None:
        wait_for(lambda: len(answers) >= n, 120, f"{n} answers {what}")

    answered(60, "before the fault")
    killed = cluster.kill("cassandra-3")
    answered(len(answers) + 100, "with a node down")
    restarting = time.monotonic()
    healed = cluster.restart()
    answered(len(answers) + 60, "after the restart")
    stop.set()
    loop.join(timeout=60)
    end = time.monotonic()

    def phase(t0: float, t1: float) -> dict:
        inside = [(s, lat) for t, s, lat in answers if t0 <= t < t1]
        lat = np.array([x for _, x in inside] or [np.nan]) * 1000
        return {"requests": len(inside), "per_s": round(len(inside) / (t1 - t0), 1),
                "errors": sum(1 for s, _ in inside if s != 200),
                "p50_ms": round(float(np.percentile(lat, 50)), 1),
                "p99_ms": round(float(np.percentile(lat, 99)), 1)}  # fmt: skip

    figures = {"before": phase(answers[0][0], killed), "during": phase(killed, healed),
               "after": phase(healed, end), "restart_s": round(healed - restarting, 1),
               "failed": [(round(t - killed, 1), st, round(lat, 2)) for t, st, lat in answers
                          if st != 200]}  # fmt: skip
    print(json.dumps({"online_fault": figures}))
    statuses = [s for _, s, _ in answers]
    assert figures["during"]["requests"] > 50, figures
    assert statuses.count(200) == len(statuses), f"errors: {set(statuses) - {200}}"


def test_a_feature_the_stream_wrote_is_read_online_after_its_coordinator_dies(cluster, online,
                                                                             tmp_path):
    """R + W > RF: the stream records a card's event (LOCAL_QUORUM: two replicas acked);
    the node that coordinated that write is SIGKILLed; the next online request for the
    card reads (LOCAL_QUORUM, from the two left) the event, so its features count it."""
    cfg = online.cfg
    session = session_for(cfg.cassandra)
    replication = session.execute("SELECT replication FROM system_schema.keyspaces WHERE "
                                  "keyspace_name = %s", (KEYSPACE,)).one().replication
    assert replication["datacenter1"] == "3", replication  # RF 3, from the config
    history = session.prepare(f"SELECT key FROM {KEYSPACE}.fraud_feature_events "
                              "WHERE entity = ? LIMIT 1")  # fmt: skip
    card = next(c for c in (f"card_{n:06d}" for n in range(999_999, 0, -1))
                if session.execute(history, (c,)).one() is None)  # a card with no events yet
    pair = generate_dataset(2, seed=73, invalid_fraction=0.0).table
    t0 = pair["event_time"][0].as_py()
    pair = pair.set_column(pair.schema.get_field_index("card_id"), "card_id",
                           pa.array([card, card]))  # fmt: skip
    pair = pair.set_column(pair.schema.get_field_index("event_time"), "event_time",
                           pa.array([t0, t0 + timedelta(minutes=5)], pair["event_time"].type))
    first, second = pair.slice(0, 1), pair.slice(1, 1)
    key = first["transaction_id"][0].as_py()

    topic = new_topic(cfg, 1)
    driver = Driver(write_job(tmp_path, "ryw", topic), cluster.env(KEYSPACE),
                    tmp_path / "ryw.log", "--max-seconds", "300")  # fmt: skip
    try:
        before = cluster.coordinator_writes(KEYSPACE, "fraud_feature_events")
        msgs = to_json_messages(first, wrong_type_fraction=0.0, malformed_fraction=0.0, seed=1)
        produce_messages(cfg.kafka, topic, msgs.payloads, msgs.partition_keys)
        scored = session.prepare(f"SELECT score FROM {KEYSPACE}.predictions "
                                 "WHERE transaction_id = ?")  # fmt: skip
        scored.is_idempotent = True  # speculative_delay_s applies to it

        def scored_yet() -> bool:
            assert driver.alive(), driver.tail()
            try:
                return session.execute(scored, (key,)).one() is not None
            except OperationTimedOut:  # a loaded moment: ask again
                return False

        wait_for(scored_yet, 240, "the stream to score the card's first event")
    finally:
        driver.kill()
    after = cluster.coordinator_writes(KEYSPACE, "fraud_feature_events")
    took = [h for h, n in after.items() if n > before.get(h, 0)]
    assert len(took) == 1, f"which node coordinated the write? {before} -> {after}"
    node = f"cassandra-{took[0].rsplit('.', 1)[1]}"
    cluster.kill(node)
    try:  # the online request, while the node that took the write is down
        answer = httpx.post(f"{online.url}{PREDICT}", json=request_rows(second)[0],
                            headers=AUTH, timeout=30)  # fmt: skip
    finally:
        cluster.restart()
    assert answer.status_code == 200, answer.text
    # What that request computed, from its prediction log row (written at LOCAL_QUORUM),
    # read once the node is back: the scan (ALLOW FILTERING) asks every token range.
    request_id = answer.json()["request_id"]
    logged = session.prepare(f"SELECT features FROM {KEYSPACE}.prediction_log "
                             "WHERE request_id = ? ALLOW FILTERING")  # fmt: skip
    found: list = []

    def logged_yet() -> bool:
        try:
            found[:] = list(session.execute(logged, (request_id,), timeout=30))
        except OperationTimedOut:
            return False
        return bool(found)

    wait_for(logged_yet, 120, "the online prediction in the log")
    features = dict(found[0].features)
    registry = ModelRegistry(cluster.registry_root)
    want = reference_scores(registry, pair)[second["transaction_id"][0].as_py()][1]
    alone = reference_scores(registry, second)[second["transaction_id"][0].as_py()][1]
    assert want != alone, "the first event changes no feature: the check is vacuous"
    assert features.keys() == want.keys()
    assert all(abs(features[n] - want[n]) <= 1e-4 * max(1.0, abs(want[n])) for n in want), (
        f"{node} killed: the online request did not see the stream's write: {features} vs "
        f"{want}")  # fmt: skip
