"""A second consumer joins mid-stream: partitions move, nothing is lost or counted twice."""

from __future__ import annotations

import signal
import threading
import time

import pytest
from stream_helpers import (
    Driver,
    feature_event_keys,
    group_members,
    make_messages,
    new_topic,
    predictions,
    produce,
    quarantine,
    reference_scores,
    wait_for,
    write_job,
)

from sluice.stream import GroupLag

pytestmark = pytest.mark.integration

UPFRONT = 3000
RATE = 500.0  # messages/s while the second consumer joins
AFTER_JOIN = 2500  # messages sent once the group has two members


def test_second_consumer_joining_mid_stream_loses_and_duplicates_nothing(stream_env):
    """Consumer process A (one actor) scores a topic that keeps receiving events; process B
    joins the group mid-stream, the group rebalances (A's revoke callback commits what is
    done) and both share the partitions. Production stops 2.5k messages after B joined;
    once the lag is 0 both get SIGTERM, finish their batch, commit and exit 0."""
    ks = "sluice_test_stream_rebalance"
    cfg = stream_env.cfg(ks)
    topic = new_topic(cfg)
    planned = make_messages(16_000, seed=45, invalid=0.02, wrong_types=0.005, malformed=0.01,
                            topic=topic)  # fmt: skip
    produce(cfg, planned, 0, UPFRONT)
    job = write_job(stream_env.root, "test_rebalance", topic, consumers=1, max_batch_messages=500)
    env, group_id = stream_env.env(ks), "sluice-test_rebalance"
    group = GroupLag(cfg.kafka, group_id, topic)
    a = Driver(job, env, stream_env.root / "rebalance_a.log", "--max-seconds", "400")
    b = None
    try:
        wait_for(lambda: a.alive() and sum(max(o, 0) for o in group.committed().values()) > 0,
                 180, "consumer A to commit")  # fmt: skip

        sent = UPFRONT
        joined_at: list[int] = []

        def keep_producing() -> None:
            nonlocal sent
            step = 250
            while sent < len(planned.payloads):
                if not joined_at and group_members(cfg, group_id) >= 2:
                    joined_at.append(sent)
                if joined_at and sent >= joined_at[0] + AFTER_JOIN:
                    return
                end = min(sent + step, len(planned.payloads))
                produce(cfg, planned, sent, end, rate=RATE)
                sent = end

        producer = threading.Thread(target=keep_producing)
        producer.start()
        b = Driver(job, env, stream_env.root / "rebalance_b.log", "--max-seconds", "400")
        producer.join(timeout=120)
        assert not producer.is_alive()
        assert joined_at, "consumer B never joined while events were flowing"
        produced = planned.prefix(sent)
        total = len(produced.payloads)

        def drained() -> bool:
            assert a.alive() and b.alive(), f"A:\n{a.tail()}\nB:\n{b.tail()}"
            return sum(max(o, 0) for o in group.committed().values()) == total

        wait_for(drained, 180, "the lag to reach 0", every=0.5)
        time.sleep(1.0)
        a.signal(signal.SIGTERM)
        b.signal(signal.SIGTERM)
        assert a.wait(timeout=120) == 0, a.tail()
        assert b.wait(timeout=120) == 0, b.tail()
        lag = group.lag()
    finally:
        group.close()
        for d in (a, b):
            if d is not None and d.alive():
                d.kill()

    sa, sb = a.summary(), b.summary()
    assert sa["stopped_by"] == sb["stopped_by"] == "signal"
    assert sa["messages"] > 0 and sb["messages"] > 0, (sa, sb)
    assert sa["revocations"] >= 2, sa  # its first assignment, then B's arrival
    assert sa["messages"] + sb["messages"] >= total  # replays after the move are allowed ...
    assert lag == {p: 0 for p in range(4)}

    got = predictions(cfg)  # ... but results are exact
    assert set(got) == produced.valid_keys
    keys = [k for k, _ in quarantine(cfg, "stream:test_rebalance")]
    assert len(keys) == len(set(keys))
    assert set(keys) == produced.invalid_keys | produced.malformed_keys
    assert sorted(feature_event_keys(cfg)) == sorted(produced.valid_keys)
    ref = reference_scores(stream_env.registry, produced.valid_table)
    assert {k: (got[k][2], got[k][4]) for k in ref} == ref
