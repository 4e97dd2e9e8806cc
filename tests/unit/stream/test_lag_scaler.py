"""LagScaler: the consumer count a job's lag wants, with its hysteresis, on a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sluice.jobs import ConsumerScaling, StreamJob
from sluice.stream import LagScaler


def _scaler(partitions: int = 8, **kw) -> LagScaler:
    spec = {"min_consumers": 1, "max_consumers": 4, "lag_per_consumer": 1000,
            "scale_up_after_s": 2.0, "scale_down_after_s": 10.0, **kw}  # fmt: skip
    return LagScaler(ConsumerScaling(**spec), partitions)


def test_up_to_the_want_after_the_delay_then_down_one_at_a_time():
    s = _scaler()
    assert s.decide(0.0, 3500, 1) is None  # wants 4, not for 2 s yet
    assert s.decide(1.0, 3500, 1) is None
    assert s.decide(2.0, 2500, 1) == 3  # at once to the want
    assert s.decide(3.0, 100, 3) is None  # wants 1: wait 10 s
    assert s.decide(12.9, 100, 3) is None
    assert s.decide(13.0, 100, 3) == 2  # one at a time
    assert s.decide(14.0, 100, 2) is None  # the clock starts again
    assert s.decide(24.0, 0, 2) == 1
    assert s.decide(40.0, 0, 1) is None  # never below min


def test_a_blip_resets_the_wait_and_an_unknown_lag_keeps_the_count():
    s = _scaler()
    assert s.decide(0.0, 5000, 1) is None
    assert s.decide(1.0, 900, 1) is None  # back to 1: the up-wait is forgotten
    assert s.decide(2.5, 5000, 1) is None
    assert s.decide(3.0, None, 1) is None  # Kafka could not say
    assert s.decide(4.5, 5000, 1) == 4


def test_bounds_clamp_to_min_max_and_partitions():
    assert _scaler(partitions=2).decide(0.0, 10**6, 1) is None  # wants 2 after the delay
    s = _scaler(partitions=2, scale_up_after_s=0)
    assert s.decide(0.0, 10**6, 1) == 2  # max 4, but 2 partitions
    assert _scaler(min_consumers=2).clamp(1) == 2
    with pytest.raises(ValidationError, match="max_consumers 1 is below min_consumers 2"):
        ConsumerScaling(min_consumers=2, max_consumers=1)
    job = StreamJob(name="j", contract="fraud", topic="t",
                    autoscale={"max_consumers": 3, "lag_per_consumer": 10})  # fmt: skip
    assert job.autoscale is not None and job.autoscale.min_consumers == 1
