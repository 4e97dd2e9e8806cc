"""How many consumers a stream job wants from its Kafka lag: ``LagScaler``.

    scaler = LagScaler(job.autoscale, partitions)
    want = scaler.decide(now, total_lag, current)   # None: keep the count

Pure (no Kafka, no Ray), so unit tests drive it with made-up lags and clocks; the driver
(``pipelines.stream_score``) reads the lag, asks, and starts or stops consumer actors.
Hysteresis: the count goes up once the want has stayed above it for ``scale_up_after_s``
(to the want, at once) and down once the want has stayed below it for
``scale_down_after_s`` (one consumer at a time: each stop is a rebalance).
"""

from __future__ import annotations

import math

from sluice.jobs import ConsumerScaling

__all__ = ["LagScaler"]


class LagScaler:
    """The consumer count a job's autoscale section wants, with hysteresis."""

    def __init__(self, spec: ConsumerScaling, partitions: int) -> None:
        self.spec = spec
        self.high = max(1, min(spec.max_consumers, partitions))  # an extra one idles
        self.low = min(spec.min_consumers, self.high)
        self._above_since: float | None = None
        self._below_since: float | None = None

    def clamp(self, n: int) -> int:
        return max(self.low, min(self.high, n))

    def want(self, lag: int) -> int:
        return self.clamp(math.ceil(lag / self.spec.lag_per_consumer))

    def decide(self, now: float, lag: int | None, current: int) -> int | None:
        """The count to move to now, or None to keep `current` (also while lag is unknown)."""
        if lag is None:
            return None
        want = self.want(lag)
        if want > current:
            self._below_since = None
            self._above_since = now if self._above_since is None else self._above_since
            if now - self._above_since >= self.spec.scale_up_after_s:
                self._above_since = None
                return want
        elif want < current:
            self._above_since = None
            self._below_since = now if self._below_since is None else self._below_since
            if now - self._below_since >= self.spec.scale_down_after_s:
                self._below_since = None
                return current - 1
        else:
            self._above_since = self._below_since = None
        return None
