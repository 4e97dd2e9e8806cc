"""Cassandra stopped for 60 s in the middle of a stream: the job waits, nothing lost or doubled.

The job writes to a Cassandra of its own (other ports, its own state dir; the jars the
shared one fetched), never to the shared one on 9042, which other tests use meanwhile.
"""

from __future__ import annotations

import signal
import time

import pytest
from stream_helpers import (
    Driver,
    feature_event_keys,
    make_messages,
    new_topic,
    prediction_keys,
    produce,
    quarantine,
    wait_for,
    write_job,
)

from sluice.store import session_for
from sluice.stream import GroupLag
from tests.integration.store.store_helpers import extra_services, stop_kafka

pytestmark = pytest.mark.integration

CQL_PORT, STORAGE_PORT, KAFKA_PORT = 19342, 17342, 19392
EVENTS = 300  # few: the property is the accounting across the outage, not load
OUTAGE_S = 60.0


@pytest.fixture(scope="module")
def own_cassandra(platform_config, tmp_path_factory):
    services = extra_services(platform_config, tmp_path_factory.mktemp("stream-outage") / "state",
                              CQL_PORT, STORAGE_PORT, KAFKA_PORT)  # fmt: skip
    try:
        services.up()
        stop_kafka(services)  # the job uses the shared Kafka
        yield services
    finally:
        services.down()


def test_a_60_s_cassandra_outage_mid_stream_loses_and_duplicates_nothing(stream_env, own_cassandra):
    """300 events (5% invalid, 2% of the wrong JSON type) plus 5% malformed messages on 4
    partitions, two consumer actors. The first half is scored and committed; Cassandra is
    stopped; the second half is produced; for 60 s the job must stay up and commit nothing;
    Cassandra comes back. Then: every message committed within 30 s, without a consumer
    restart; every valid event in predictions (and the feature events) once, every invalid
    or malformed one in quarantine once; committed offsets = log end offsets."""
    ks = "sluice_test_stream_outage"
    cfg = stream_env.cfg(ks, cassandra_port=CQL_PORT)
    topic = new_topic(cfg)
    produced = make_messages(EVENTS, seed=53, invalid=0.05, wrong_types=0.02, malformed=0.05,
                             topic=topic)  # fmt: skip
    total = len(produced.payloads)
    half = total // 2
    produced.positions[:] = [(-1, -1)] * total
    produce(cfg, produced, 0, half)
    job = write_job(stream_env.root, "test_outage", topic, consumers=2, max_batch_messages=100)
    log = stream_env.root / "test_outage.log"
    driver = Driver(job, stream_env.env(ks, cassandra_port=CQL_PORT), log, "--max-seconds", "900")
    group = GroupLag(cfg.kafka, "sluice-test_outage", topic)

    def committed() -> int:
        assert driver.alive(), f"the stream job ended:\n{driver.tail()}"
        return sum(max(o, 0) for o in group.committed().values())

    try:
        wait_for(lambda: committed() == half, 240, "the first half to be committed")
        assert own_cassandra.down() == ["cassandra"]
        down_at = time.monotonic()
        produce(cfg, produced, half, total)  # consumed, scored, not writable: in flight
        while time.monotonic() - down_at < OUTAGE_S:  # the outage's length, checked each second
            assert committed() == half, "offsets were committed while Cassandra was down"
            time.sleep(1.0)
        own_cassandra.up()
        stop_kafka(own_cassandra)
        back_at = time.monotonic()
        wait_for(lambda: committed() == total, 180, "every message committed after the outage")
        recovered_s = time.monotonic() - back_at
        driver.signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 0, driver.tail()
        summary = driver.summary()
        lag, offsets = group.lag(), group.committed()
        ends = group.end_offsets(sorted(offsets))
    finally:
        if driver.alive():
            driver.kill()
        group.close()

    assert back_at - down_at >= OUTAGE_S
    # Consumers retry every <= 5 s and the driver reconnects every <= 10 s (not the
    # driver's default of up to 10 minutes): the stream resumes soon after Cassandra does.
    assert recovered_s < 30, f"committed {recovered_s:.0f} s after Cassandra came back"
    assert summary["restarts"] == 0, summary  # waited out, not crashed and replaced
    assert summary["store_retries"] > 0 and summary["store_wait_s"] > 0, summary
    assert lag == {p: 0 for p in range(4)}
    assert offsets == {p: high for p, (_, high) in ends.items()}
    assert sum(offsets.values()) == total

    # The test process's own session saw the outage too: read back on a fresh one.
    session_for(cfg.cassandra).cluster.shutdown()
    assert prediction_keys(cfg) == produced.valid_keys
    rows = quarantine(cfg, "stream:test_outage")
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "a quarantined message was stored twice"
    assert set(keys) == produced.invalid_keys | produced.malformed_keys
    assert produced.malformed_keys and produced.invalid_keys
    assert sorted(feature_event_keys(cfg)) == sorted(produced.valid_keys)
