"""A stream job scores with the version its alias meant at start, until told to reload.

A champion promoted mid-stream changes nothing — not even for the replacement of a
consumer killed after the promotion, which builds its Scorer anew — until the explicit
reload (SIGHUP sets the same event): then every consumer finishes its batch, commits and
comes back on the new version.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
from fixture_models import train_champion
from stream_helpers import consumer_actor_pids, make_messages, new_topic, produce, wait_for

from pipelines.stream_score import run as stream_run
from pipelines.train import TrainConfig
from sluice.jobs import StreamJob
from sluice.models import ModelRegistry
from sluice.store import session_for
from sluice.stream import GroupLag

pytestmark = pytest.mark.integration


def versions_by_key(cfg) -> dict[str, str]:
    rows = session_for(cfg.cassandra).execute(
        f"SELECT transaction_id, model_version FROM {cfg.cassandra.keyspace}.predictions",
        timeout=60,
    )
    return {r.transaction_id: r.model_version for r in rows}


def test_a_promotion_mid_stream_waits_for_the_reload(stream_env, tmp_path):
    cfg = stream_env.cfg("sluice_test_stream_pin")
    cfg = cfg.model_copy(update={
        "registry": cfg.registry.model_copy(update={"root_uri": str(tmp_path / "reg")}),
    })  # fmt: skip
    registry = ModelRegistry.from_config(cfg)
    assert train_champion(TrainConfig(rows=2_000, epochs=1), registry).version == 1
    artifact = registry.load_artifact("fraud/1")
    assert registry.register("fraud", artifact.data, artifact.meta) == 2

    topic = new_topic(cfg)
    before = make_messages(3000, seed=61, invalid=0.0, wrong_types=0.0, malformed=0.0,
                           topic=topic)  # fmt: skip
    after = make_messages(600, seed=62, invalid=0.0, wrong_types=0.0, malformed=0.0,
                          topic=topic)  # fmt: skip
    assert not before.valid_keys & after.valid_keys
    produce(cfg, before)
    job = StreamJob(name="test_pin", contract="fraud", topic=topic, consumers=1,
                    max_batch_messages=200, max_batch_wait_ms=200, session_timeout_ms=6000,
                    num_cpus_per_consumer=0.5)  # fmt: skip
    group = GroupLag(cfg.kafka, job.group, topic)
    stop, reload = threading.Event(), threading.Event()
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(summary=stream_run(
        job, cfg, max_seconds=300, stop=stop, reload=reload, poll_s=0.2)))  # fmt: skip
    runner.start()
    try:
        def committed() -> int:
            return sum(max(o, 0) for o in group.committed().values())

        wait_for(lambda: committed() > 0 and consumer_actor_pids(), 180, "a first commit")
        assert committed() < len(before.payloads), "the stream finished before the promotion"
        registry.promote("fraud", 2)
        first = consumer_actor_pids()
        for pid in first:  # the replacement builds its Scorer after the promotion
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not any(group.lag().values()), 240, "the first events to be scored")

        old = set(consumer_actor_pids())
        reload.set()  # what SIGHUP does to `python -m pipelines.stream_score`
        wait_for(lambda: not reload.is_set() and set(consumer_actor_pids()) - old, 120,
                 "the consumers to come back after the reload")  # fmt: skip
        produce(cfg, after)
        wait_for(lambda: committed() == len(before.payloads) + len(after.payloads)
                 and not any(group.lag().values()), 240, "the later events")  # fmt: skip
    finally:
        stop.set()
        runner.join(timeout=120)
        group.close()
    summary = box["summary"]
    assert summary.restarts == 1, summary
    assert summary.model_versions == ["fraud/1", "fraud/2"] and summary.model_version == "fraud/2"
    versions = versions_by_key(cfg)
    assert set(versions) == before.valid_keys | after.valid_keys
    assert {versions[k] for k in before.valid_keys} == {"fraud/1"}
    assert {versions[k] for k in after.valid_keys} == {"fraud/2"}
