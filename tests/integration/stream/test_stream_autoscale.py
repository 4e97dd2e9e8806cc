"""Lag-driven consumer autoscaling: a backlog builds, the job adds consumers up to its max,
the lag drains, it stops them one at a time back to its min; nothing lost or doubled."""

from __future__ import annotations

import threading

import pytest
from stream_helpers import (
    feature_event_keys,
    group_members,
    make_messages,
    new_topic,
    predictions,
    produce,
    quarantine,
    wait_for,
)

from pipelines.stream_score import run as stream_run
from sluice.jobs import StreamJob
from sluice.stream import GroupLag

pytestmark = pytest.mark.integration


def test_consumers_follow_the_lag_up_and_back_down(stream_env):
    cfg = stream_env.cfg("sluice_test_stream_scale")
    topic = new_topic(cfg, partitions=4)
    produced = make_messages(20_000, seed=71, invalid=0.01, wrong_types=0.0, malformed=0.01,
                             topic=topic)  # fmt: skip
    produce(cfg, produced)  # the backlog is there before the job starts
    job = StreamJob(
        name="test_scale", contract="fraud", topic=topic, consumers=1, max_batch_messages=300,
        max_batch_wait_ms=200, session_timeout_ms=6000, num_cpus_per_consumer=0.5,
        autoscale={"min_consumers": 1, "max_consumers": 3, "lag_per_consumer": 2000,
                   "check_interval_s": 0.5, "scale_up_after_s": 0, "scale_down_after_s": 3},
    )  # fmt: skip
    group = GroupLag(cfg.kafka, job.group, topic)
    stop = threading.Event()
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(summary=stream_run(
        job, cfg, max_seconds=400, stop=stop, poll_s=0.2)))  # fmt: skip
    runner.start()
    try:
        wait_for(lambda: group_members(cfg, job.group) == 3, 180,
                 "the group to grow to three consumers")  # fmt: skip
        wait_for(lambda: sum(max(o, 0) for o in group.committed().values())
                 == len(produced.payloads), 240, "the backlog to drain")  # fmt: skip
        wait_for(lambda: group_members(cfg, job.group) == 1, 120,
                 "the group to shrink back to one consumer")  # fmt: skip
    finally:
        stop.set()
        runner.join(timeout=120)
        lag = group.lag()
        group.close()
    summary = box["summary"]
    steps = [(s["from"], s["to"]) for s in summary.scaling]
    assert steps[0] == (1, 3), summary.scaling  # straight to the want, capped at max
    assert steps[-2:] == [(3, 2), (2, 1)], summary.scaling  # down one at a time
    assert summary.scaling[0]["lag"] >= 4000
    assert lag == {p: 0 for p in range(4)}
    got = predictions(cfg)
    assert set(got) == produced.valid_keys
    keys = [k for k, _ in quarantine(cfg, "stream:test_scale")]
    assert len(keys) == len(set(keys)) and set(keys) == produced.invalid_keys | \
        produced.malformed_keys  # fmt: skip
    assert sorted(feature_event_keys(cfg)) == sorted(produced.valid_keys)
