"""A consumer actor that dies is replaced by the driver and resumes from the last commit."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import ray
from stream_helpers import (
    consumer_actor_pids,
    make_messages,
    new_topic,
    prediction_keys,
    produce,
    quarantine,
    wait_for,
)

from pipelines.stream_score import run as stream_run
from sluice.jobs import StreamJob
from sluice.stream import GroupLag

pytestmark = pytest.mark.integration


def test_a_killed_consumer_actor_is_replaced_and_nothing_is_lost(stream_env):
    """One consumer actor of an in-process driver is SIGKILLed mid-stream (6k events in
    micro-batches of 200); the driver starts a replacement, which resumes from the group's
    committed offsets, and the run ends caught up with every event scored once."""
    cfg = stream_env.cfg("sluice_test_stream_supervisor")
    topic = new_topic(cfg)
    produced = make_messages(6000, seed=47, invalid=0.02, wrong_types=0.0, malformed=0.01,
                             topic=topic)  # fmt: skip
    produce(cfg, produced)
    total = len(produced.payloads)
    job = StreamJob(name="test_supervisor", contract="fraud", topic=topic, consumers=1,
                    max_batch_messages=200, max_batch_wait_ms=200, session_timeout_ms=6000,
                    num_cpus_per_consumer=0.5)  # fmt: skip
    group = GroupLag(cfg.kafka, job.group, topic)
    cpus = ray.available_resources().get("CPU", 0.0)
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(
        summary=stream_run(job, cfg, until_caught_up=True, max_seconds=300)))  # fmt: skip
    runner.start()
    try:
        def started() -> bool:
            done = sum(max(o, 0) for o in group.committed().values())
            assert done < total, "the stream finished before the kill"
            return done > 0 and bool(consumer_actor_pids())

        wait_for(started, 180, "the consumer to commit", every=0.1)
        for pid in consumer_actor_pids():
            os.kill(pid, signal.SIGKILL)
        runner.join(timeout=300)
    finally:
        group.close()
    summary = box["summary"]
    assert summary.restarts == 1 and summary.stopped_by == "caught up", summary
    # The job's actors end with it: their CPUs are free again once run() has returned (a
    # consumer whose handle the driver still held kept 0.5 CPU into the next test, whose
    # batch job then waited for a CPU forever).
    wait_for(lambda: ray.available_resources().get("CPU", 0.0) >= cpus, 30,
             "the consumers' CPUs to be free again")  # fmt: skip
    assert summary.final_lag == {p: 0 for p in range(4)}
    assert prediction_keys(cfg) == produced.valid_keys
    keys = [k for k, _ in quarantine(cfg, "stream:test_supervisor")]
    assert len(keys) == len(set(keys))
    assert set(keys) == produced.invalid_keys | produced.malformed_keys
