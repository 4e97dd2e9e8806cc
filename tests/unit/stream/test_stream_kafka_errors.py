"""Which Kafka errors the lag reader retries (the group coordinator moving, not a bad topic),
and the stream driver going on while the lag cannot be read."""

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


class _Lag:
    """GroupLag's ``lag`` as the driver sees it: answers, or raises while a broker is down."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def lag(self):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_the_stream_driver_reads_lag_through_a_broker_outage():
    """A lag read that fails (a SIGKILLed broker held the group coordinator, then the
    leaders moved) is 'unknown', not the end of the job; caught up only at 0 everywhere."""
    from pipelines.stream_score import _lag
    from sluice.errors import StreamError

    lag = _Lag(StreamError("reading offsets of group g: coordinator not available"),
               {0: 3, 1: 0}, {0: 0, 1: 0})  # fmt: skip
    assert _lag(lag) is None
    assert _lag(lag) == {0: 3}
    assert _lag(lag) == {}


def test_a_stopped_job_ends_cleanly_when_its_final_lag_cannot_be_read():
    """The consumers have committed and stopped: an unreadable final lag is reported as
    unknown (None), not a failed job (the cluster fault test once ended with exit 1 so)."""
    from pipelines.stream_score import _final_lag
    from sluice.errors import StreamError

    assert _final_lag(_Lag(StreamError("reading the end offsets of t: unknown partition"))) is None
    assert _final_lag(_Lag({0: 0, 1: 2})) == {0: 0, 1: 2}
