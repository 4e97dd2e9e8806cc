"""Prometheus metrics of the stream consumers (one set per process; exporting them is the
job of whoever serves ``prometheus_client``'s registry — a later issue).

- ``sluice_stream_consumer_lag{job,topic,partition}``: high watermark - committed offset of
  each partition this process consumes, after every micro-batch;
- ``sluice_stream_events_total{job,outcome}``: messages by outcome (scored, quarantined,
  malformed); ``sluice_stream_events_per_second{job}``: their rate over the last 10 s;
- ``sluice_stream_batch_seconds{job,engine}``: micro-batch latency, poll end to commit;
- ``sluice_stream_event_latency_seconds{job}``: producer timestamp to rows written;
- ``sluice_stream_quarantined_total{job,reason}``: quarantined messages by reason
  (``malformed:not_json``, ``expect_column_values_to_be_between:amount``, ...).
"""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SECONDS",
    "CONSUMER_LAG",
    "EVENTS",
    "EVENTS_PER_SECOND",
    "EVENT_LATENCY_SECONDS",
    "QUARANTINED",
    "RateWindow",
]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

CONSUMER_LAG = Gauge(
    "sluice_stream_consumer_lag",
    "Messages not yet committed per partition (high watermark - committed offset).",
    ["job", "topic", "partition"],
)
EVENTS = Counter(
    "sluice_stream_events_total",
    "Messages consumed, by outcome (scored, quarantined, malformed).",
    ["job", "outcome"],
)
EVENTS_PER_SECOND = Gauge(
    "sluice_stream_events_per_second", "Messages committed per second over the last 10 s.", ["job"]
)
BATCH_SECONDS = Histogram(
    "sluice_stream_batch_seconds",
    "Micro-batch latency: end of polling to offsets committed.",
    ["job", "engine"],
    buckets=_LATENCY_BUCKETS,
)
EVENT_LATENCY_SECONDS = Histogram(
    "sluice_stream_event_latency_seconds",
    "End-to-end latency: the message's producer timestamp to its rows written in Cassandra.",
    ["job"],
    buckets=_LATENCY_BUCKETS,
)
QUARANTINED = Counter(
    "sluice_stream_quarantined_total",
    "Quarantined messages by reason (malformed:<kind> or <expectation>:<column>).",
    ["job", "reason"],
)


class RateWindow:
    """Events per second over a sliding window of ``window_s`` seconds."""

    def __init__(self, window_s: float = 10.0, clock=time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._points: deque[tuple[float, int]] = deque()
        self._started = clock()

    def add(self, n: int) -> float:
        now = self._clock()
        self._points.append((now, n))
        while self._points and self._points[0][0] < now - self.window_s:
            self._points.popleft()
        span = min(self.window_s, max(now - self._started, 1e-9))
        return sum(k for _, k in self._points) / span
