"""Which Kafka errors the lag reader retries: the group coordinator moving, not a bad topic."""

import pytest
from confluent_kafka import KafkaError, KafkaException

from sluice.stream._kafka import _transient


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (KafkaError.NOT_COORDINATOR, True),
        (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, True),
        (KafkaError.COORDINATOR_NOT_AVAILABLE, True),
        (KafkaError._TIMED_OUT, True),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, False),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, False),
    ],
)
def test_transient_kafka_errors(code, transient):
    assert _transient(KafkaException(KafkaError(code))) is transient


def test_other_exceptions_are_not_transient():
    assert _transient(ValueError("no")) is False
