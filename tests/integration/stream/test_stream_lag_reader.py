"""The lag reader after the topic's metadata changes under it: partitions added while a job
runs are read, not refused for the rest of the job (the cluster fault test saw the same
refusal after a broker restart)."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
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
