"""The alert relay on the real Kafka: each transaction's alert on the alert topic once,
whatever was proposed twice, aborted, or replayed after the relay was SIGKILLed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from stream_helpers import wait_for

from pipelines.alert_relay import run as relay
from sluice.config import REPO_ROOT
from sluice.stream import (
    AlertPublisher,
    alert_messages,
    alert_topic,
    candidate_topic,
    pending_messages,
    read_topic,
)
from tests.unit.alert_tables import alerts

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KILLS = 3


def propose_in_aborted_transaction(kafka, topic: str, keys: list[str]) -> None:
    """Candidates a stream consumer produced and then aborted (it crashed mid-commit)."""
    from confluent_kafka import Producer

    producer = Producer(kafka.client_settings() | {"transactional.id": f"t-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for key, value in alert_messages(alerts(keys, WHEN, "stream:aborted")):
        producer.produce(topic, key=key, value=value)
    producer.flush(30)
    producer.abort_transaction(30)


def test_a_sigkilled_relay_publishes_each_alert_once(local_services, platform_config, tmp_path):
    """4,000 transactions' alerts proposed twice each (a batch re-run, an online retry),
    plus 50 in an aborted transaction. The relay (20 candidates per transaction) is
    SIGKILLed three times while candidates remain, then run until caught up: the alert
    topic holds each proposed alert once and no aborted one."""
    template = f"test-relay-{uuid.uuid4().hex[:8]}-{{contract}}-alerts"
    kafka = platform_config.kafka.model_copy(update={"alerts_topic": template})
    cfg = platform_config.model_copy(update={"kafka": kafka})
    keys = [f"tx_{i:05d}" for i in range(4000)]
    publisher = AlertPublisher(kafka, "fraud")
    publisher.publish(alerts(keys, WHEN, "batch:first"))
    propose_in_aborted_transaction(kafka, candidate_topic(kafka, "fraud"),
                                   [f"tx_aborted_{i}" for i in range(50)])  # fmt: skip
    publisher.publish(alerts(keys[::-1], WHEN, "online:retry"))
    group = f"{alert_topic(kafka, 'fraud')}-relay"
    assert pending_messages(kafka, group, candidate_topic(kafka, "fraud")) == 2 * len(keys)

    env = {**os.environ, "SLUICE_KAFKA__ALERTS_TOPIC": template, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "relay.log", "ab")  # noqa: SIM115 - closed below
    left_at_kill: list[int] = []
    try:
        for _ in range(KILLS):
            before = pending_messages(kafka, group, candidate_topic(kafka, "fraud"))
            proc = subprocess.Popen([sys.executable, "-m", "pipelines.alert_relay",
                                     "--contract", "fraud", "--batch-messages", "20"],
                                    cwd=REPO_ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip

            def progressed(proc=proc, before=before) -> bool:
                assert proc.poll() is None, (tmp_path / "relay.log").read_text()[-3000:]
                return pending_messages(kafka, group, candidate_topic(kafka, "fraud")) < before

            wait_for(progressed, 120, "the relay to commit a transaction", every=0.05)
            proc.kill()
            proc.wait(30)
            left_at_kill.append(pending_messages(kafka, group, candidate_topic(kafka, "fraud")))
    finally:
        log.close()
    assert all(left > 0 for left in left_at_kill), f"a relay finished before its kill: " \
        f"{left_at_kill}"  # fmt: skip

    summary = relay(cfg, "fraud", until_caught_up=True, max_seconds=180)
    assert summary.stopped_by == "caught-up" and summary.candidates == left_at_kill[-1]
    on_topic = [json.loads(m.value()) for m in read_topic(kafka, alert_topic(kafka, "fraud"))]
    counts = Counter(m["key"] for m in on_topic)
    assert sorted(counts) == keys, "an alert was lost, or an aborted one published"
    assert max(counts.values()) == 1, "an alert was published twice"
    # The first proposal of each wins: the batch's (the retry's came later on its partition).
    assert {m["path"] for m in on_topic} == {"batch:first"}
