"""The lag reader after the topic's metadata changes under it: partitions added while a job
runs are read, not refused for the rest of the job (the cluster fault test saw the same
refusal after a broker restart). And beside a transaction left open (a consumer SIGKILLed
between sending its offsets and committing): it answers at once with the last committed
offsets, not after the transaction times out (a CI run's crash test once waited past the
request timeout)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from stream_helpers import new_topic, wait_for

from sluice.stream import GroupLag
from sluice.stream._kafka import topic_partitions

pytestmark = pytest.mark.integration


def test_the_lag_reader_sees_partitions_added_while_it_runs(local_services, platform_config):
    kafka = platform_config.kafka
    topic = new_topic(platform_config, partitions=2)
    lag = GroupLag(kafka, f"lag-{topic}", topic)
    try:
        assert lag.lag() == {0: 0, 1: 0}  # the client now holds the topic's metadata
        admin = AdminClient(kafka.client_settings())
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result()
        wait_for(lambda: topic_partitions(kafka, topic) == 4, 30, "4 partitions")
        producer = Producer(kafka.client_settings())
        for i in range(3):
            producer.produce(topic, value=b"x", key=str(i).encode(), partition=3)
        assert producer.flush(30) == 0
        assert lag.lag() == {0: 0, 1: 0, 2: 0, 3: 3}
    finally:
        lag.close()


def test_the_lag_reader_answers_beside_an_open_transaction(local_services, platform_config):
    kafka = platform_config.kafka
    topic = new_topic(platform_config, partitions=1)
    group = f"lag-{topic}"
    plain = Producer(kafka.client_settings())
    for i in range(10):
        plain.produce(topic, value=b"x", key=str(i).encode())
    assert plain.flush(30) == 0
    consumer = Consumer(kafka.client_settings() | {
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })  # fmt: skip
    producer = Producer(kafka.client_settings() | {"transactional.id": f"t-{topic}"})
    lag = GroupLag(kafka, group, topic)
    try:
        consumer.subscribe([topic])
        wait_for(lambda: (m := consumer.poll(1)) is not None and m.error() is None, 30,
                 "a message")  # fmt: skip
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, 5)],
                                             consumer.consumer_group_metadata(), 30)  # fmt: skip
        # Left open, as by a consumer killed before its commit.
        t0 = time.monotonic()
        assert lag.committed() == {0: 3}
        assert lag.lag() == {0: 7}
        assert time.monotonic() - t0 < kafka.request_timeout_s / 2
        producer.abort_transaction(30)
    finally:
        lag.close()
        consumer.close()
