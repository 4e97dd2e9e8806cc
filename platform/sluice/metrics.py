"""Sluice's Prometheus metrics: every family of every path, defined here once.

Recorded with ``ray.util.metrics``, so Ray's own metrics export serves them: each node's
metrics agent answers ``http://<node>:<metrics_export_port>/metrics`` (``ray start
--metrics-export-port``; Prometheus finds the nodes through Ray's file service discovery,
``/tmp/ray/prom_metrics_service_discovery.json``). Ray prefixes each name with ``ray_`` and
adds ``NodeAddress``, ``WorkerId`` and ``SessionName`` labels, so one series comes per
worker process: sum over ``WorkerId`` in queries (configs/monitoring/ does).

Each family also keeps this process's values in memory (``value()``), which is what
``/v1/stats`` answers and what unit tests read; outside a Ray worker only that copy is kept.

A histogram is counted here (``observe``, ``observe_many``: buckets, count, sum) and reaches
Ray as three gauges of this process's running totals, ``<name>_bucket{le}``, ``<name>_count``
and ``<name>_sum``: the series a Prometheus histogram has, under the same names, so
``histogram_quantile`` and ``rate`` read them as they would a histogram (a worker's restart
starts its totals at 0 again, as a counter's). Each call sets the totals it changed; the
stream counts a batch's event latencies in one call (``observe_many``). Ray drops a gauge
series its worker has not set for ~20 s (a gauge set once left the scrape after 20–21 s,
Ray 2.60), where a Prometheus gauge or histogram lasts as long as its process: a thread of
each process sets every gauge and histogram series again, unchanged, every ``REFRESH_S``,
until the series is retired (``Family.retire``: set to 0, no longer refreshed, so Ray drops
it ~20 s later; a Ray series cannot be removed). Not
``ray.util.metrics.Histogram``: Ray 2.60's metrics agent re-records every observation of a
histogram's buckets, one OpenTelemetry call each (ray-project/ray#64852), and the stream's
one observation an event made the agent take 0.7 of a core for half a second every 10 s,
over the consumers (docs/benchmarks.md).

Families (exported names are ``ray_`` + these)::

    sluice_rows_scored_total{path,source,contract,model_version}   rows scored
    sluice_rows_quarantined_total{path,source,contract,reason}     rows quarantined
    sluice_decisions_total{path,source,contract,decision}      scored rows by decision
    sluice_model_in_use{path,contract,model_version}           1 per model version a
                                                               worker has loaded to score
    sluice_score_batch_seconds{path,contract}                  validate+featurize+predict
                                                               of one batch (histogram)
    sluice_online_requests_total{contract,code}                HTTP answers by status code
    sluice_online_request_seconds{contract}                    request latency (histogram)
    sluice_online_errors_total{contract,error_class}           auth, validation, overload,
                                                               store_unavailable, timeout,
                                                               internal, cancelled
    sluice_stream_consumer_lag{job,topic,partition}            high watermark - committed
    sluice_stream_event_latency_seconds{job}                   producer time -> written
    sluice_stream_late_events_total{source,contract}           events after a later one
                                                               of their card was scored
    sluice_shadow_rows_total{contract,outcome}                 rows sent to the shadow
    sluice_cassandra_write_seconds{table}                      one chunk of upserts
    sluice_cassandra_rows_written_total{table}
    sluice_cassandra_write_failures_total{table,error}         rows given up on, by error
    sluice_batch_expectation_success{source,contract,expectation,column}
                                     1 when an expectation holds over a batch job's input
    sluice_batch_expectation_unexpected_rows{source,contract,expectation,column}

``path`` is ``batch``, ``stream`` or ``online``; ``source`` names the job (``batch:<job>``,
``stream:<job>``, ``online:<contract>``), as in the quarantine table.

Drift gauges (``DRIFT_GAUGES``, no prefix) are written by ``sluice drift``, a command rather
than a Ray worker, for node_exporter's textfile collector (``sluice.drift.write_metrics``)::

    sluice_drift_psi{contract,feature}, sluice_drift_ks{contract,feature},
    sluice_drift_rows{contract}, sluice_drift_detected{contract},
    sluice_drift_last_run_timestamp_seconds{contract}
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "BATCH_EXPECTATION_SUCCESS",
    "BATCH_EXPECTATION_UNEXPECTED",
    "CASSANDRA_ROWS_WRITTEN",
    "CASSANDRA_WRITE_FAILURES",
    "CASSANDRA_WRITE_SECONDS",
    "CONSUMER_LAG",
    "DRIFT_GAUGES",
    "EVENT_LATENCY_SECONDS",
    "DECISIONS",
    "FAMILIES",
    "LATE_EVENTS",
    "MODEL_IN_USE",
    "models_in_use",
    "ONLINE_ERRORS",
    "ONLINE_REQUESTS",
    "ONLINE_REQUEST_SECONDS",
    "ROWS_QUARANTINED",
    "ROWS_SCORED",
    "SCORE_BATCH_SECONDS",
    "Family",
    "CLIENT_CLOSED",
    "STORE_UNAVAILABLE",
    "error_class",
    "record_rows",
]

Kind = Literal["counter", "gauge", "histogram"]

REFRESH_S = 5.0
"""How often a process sets its gauges' and histograms' series again (Ray drops a gauge
series not set for ~20 s: module doc)."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)  # fmt: skip


class Family:
    """One metric family: a Ray metric (in a Ray worker) plus this process's values."""

    def __init__(self, kind: Kind, name: str, doc: str, tags: Iterable[str],
                 buckets: Iterable[float] = LATENCY_BUCKETS) -> None:  # fmt: skip
        self.kind, self.name, self.doc = kind, name, doc
        self.tags = tuple(tags)
        self.buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], list[float]] = {}  # counter/gauge [v]; hist counts
        self._ray: Any = None
        self._le = [repr(float(b)) for b in self.buckets] + ["+Inf"]

    @property
    def exported_name(self) -> str:
        """The name Prometheus sees through Ray's export."""
        return "ray_" + self.name

    def inc(self, value: float = 1.0, **tags: Any) -> None:
        assert self.kind == "counter", self.name
        if value <= 0:
            return
        key = self._key(tags)
        with self._lock:
            self._values.setdefault(key, [0.0])[0] += value
        self._record(value, key)

    def set(self, value: float, **tags: Any) -> None:
        assert self.kind == "gauge", self.name
        key = self._key(tags)
        with self._lock:
            self._values[key] = [float(value)]
        self._record(value, key)

    def retire(self, **tags: Any) -> None:
        """Set a gauge series to 0 and stop refreshing it, so Ray drops it ~20 s later (a
        partition another consumer owns now, a model version no longer scored with)."""
        assert self.kind == "gauge", self.name
        key = self._key(tags)
        with self._lock:
            if self._values.pop(key, None) is None:
                return
        self._record(0.0, key)

    def observe(self, value: float, **tags: Any) -> None:
        assert self.kind == "histogram", self.name
        self._add(self._key(tags), 1, value, {bisect.bisect_left(self.buckets, value): 1})

    def observe_many(self, values: Iterable[float], **tags: Any) -> None:
        """``observe`` of each value, counted in one pass and pushed once (a stream batch's
        event latencies)."""
        assert self.kind == "histogram", self.name
        key = self._key(tags)
        v = np.fromiter(values, np.float64)
        if v.size:
            counts = np.bincount(np.searchsorted(self.buckets, v, side="left"),
                                 minlength=len(self.buckets) + 1)  # fmt: skip
            hits = {int(i): int(counts[i]) for i in np.flatnonzero(counts)}
            self._add(key, int(v.size), float(v.sum()), hits)

    def value(self, **tags: Any) -> float:
        """This process's value (a histogram's count) summed over the labels not given."""
        want = {k: str(v) for k, v in tags.items()}
        unknown = set(want) - set(self.tags)
        if unknown:
            raise ValueError(f"{self.name} has no label(s) {sorted(unknown)}")
        with self._lock:
            return sum(
                v[0] for key, v in self._values.items()
                if all(key[self.tags.index(k)] == x for k, x in want.items())
            )  # fmt: skip

    def series(self) -> dict[tuple[str, ...], float]:
        """This process's series: label values (in ``tags`` order) -> value or count."""
        with self._lock:
            return {k: v[0] for k, v in self._values.items()}

    def _key(self, tags: Mapping[str, Any]) -> tuple[str, ...]:
        if set(tags) != set(self.tags):
            raise ValueError(f"{self.name} takes labels {list(self.tags)}, got {sorted(tags)}")
        return tuple(str(tags[t]) for t in self.tags)

    def _add(self, key: tuple[str, ...], n: int, total: float, hits: dict[int, int]) -> None:
        """Count ``n`` observations summing to ``total`` into a histogram series, ``hits``
        of them in each bucket (index -> count), then push what changed."""
        gauges = self._ray_metric()
        with self._lock:
            # [count, sum, per-bucket counts (the last +Inf)...]
            slot = self._values.get(key)
            lowest = min(hits)  # the lowest bucket whose cumulative count changes
            if slot is None:  # a new series: every bucket is pushed once
                slot = self._values[key] = [0.0, 0.0] + [0.0] * (len(self.buckets) + 1)
                lowest = 0
            slot[0] += n
            slot[1] += total
            for i, c in hits.items():
                slot[2 + i] += c
            self._push(gauges, key, slot, lowest)

    def _record(self, value: float, key: tuple[str, ...]) -> None:
        metric = self._ray_metric()
        if metric is None:
            return
        tags = dict(zip(self.tags, key, strict=True))
        if self.kind == "counter":
            metric.inc(value, tags=tags)
        else:
            metric.set(value, tags=tags)

    def refresh(self) -> None:
        """Set every series of a gauge or histogram again with its current value or totals
        (``REFRESH_S``)."""
        metric = self._ray_metric()
        if metric is None or self.kind == "counter":
            return
        with self._lock:
            for key, slot in self._values.items():
                if self.kind == "gauge":
                    self._record(slot[0], key)
                else:
                    self._push(metric, key, slot, 0)

    def _push(self, gauges: Any, key: tuple[str, ...], slot: list[float], lowest: int) -> None:
        """Set a histogram series' Ray gauges from bucket ``lowest`` up (lock held, so a
        gauge never steps back to an older total)."""
        if gauges is None:
            return
        bucket, count, total = gauges
        tags = dict(zip(self.tags, key, strict=True))
        n = sum(slot[2:2 + lowest])
        for i in range(lowest, len(self._le)):
            n += slot[2 + i]
            bucket.set(n, tags={**tags, "le": self._le[i]})
        count.set(slot[0], tags=tags)
        total.set(slot[1], tags=tags)

    def _ray_metric(self) -> Any:
        """The Ray metric (a histogram's three gauges), made on first use in a process
        connected to Ray (else None)."""
        if self._ray is None:
            import ray

            if not ray.is_initialized():
                return None
            from ray.util import metrics

            with self._lock:
                if self._ray is None:
                    if self.kind == "histogram":
                        self._ray = (
                            metrics.Gauge(f"{self.name}_bucket", self.doc,
                                          tag_keys=(*self.tags, "le")),
                            metrics.Gauge(f"{self.name}_count", self.doc, tag_keys=self.tags),
                            metrics.Gauge(f"{self.name}_sum", self.doc, tag_keys=self.tags),
                        )  # fmt: skip
                    else:
                        cls = metrics.Counter if self.kind == "counter" else metrics.Gauge
                        self._ray = cls(self.name, self.doc, tag_keys=self.tags)
                    if self.kind != "counter":
                        _keep_alive(self)
        return self._ray


_refreshed: list[Family] = []  # this process's gauges and histograms with Ray gauges
_refresh_lock = threading.Lock()


def _keep_alive(family: Family) -> None:
    """Refresh ``family`` every ``REFRESH_S`` from now on (the thread starts with the first)."""
    with _refresh_lock:
        _refreshed.append(family)
        if len(_refreshed) == 1:
            threading.Thread(target=_refresh_forever, name="sluice-metrics-refresh",
                             daemon=True).start()  # fmt: skip


def _refresh_forever() -> None:
    while True:
        time.sleep(REFRESH_S)  # a period, not a wait for anything
        with _refresh_lock:
            families = list(_refreshed)
        for family in families:
            try:
                family.refresh()
            except Exception:  # Ray shut down in this process: nothing to keep alive
                return


ROWS_SCORED = Family("counter", "sluice_rows_scored_total",
                     "Rows scored and written, by path (batch, stream, online).",
                     ["path", "source", "contract", "model_version"])  # fmt: skip
DECISIONS = Family("counter", "sluice_decisions_total",
                   "Scored rows by the contract's decision (approve, review, block) and path.",
                   ["path", "source", "contract", "decision"])  # fmt: skip
ROWS_QUARANTINED = Family("counter", "sluice_rows_quarantined_total",
                          "Rows quarantined, by path and reason (<expectation>:<column>, "
                          "malformed:<kind>).",
                          ["path", "source", "contract", "reason"])  # fmt: skip
MODEL_IN_USE = Family("gauge", "sluice_model_in_use",
                      "1 for each model version a worker has loaded to score with (a "
                      "champion, a canary); a version swapped out is 0, then gone.",
                      ["path", "contract", "model_version"])  # fmt: skip
SCORE_BATCH_SECONDS = Family("histogram", "sluice_score_batch_seconds",
                             "Validate, featurize and predict one batch (a Ray Data batch, a "
                             "micro-batch, one @serve.batch call).",
                             ["path", "contract"])  # fmt: skip
ONLINE_REQUESTS = Family("counter", "sluice_online_requests_total",
                         "HTTP requests answered by the scoring endpoint, by status code.",
                         ["contract", "code"])  # fmt: skip
ONLINE_REQUEST_SECONDS = Family("histogram", "sluice_online_request_seconds",
                                "Latency of the scoring endpoint, request in to answer out.",
                                ["contract"])  # fmt: skip
ONLINE_ERRORS = Family("counter", "sluice_online_errors_total",
                       "Requests answered with an error, by class (auth, validation, "
                       "overload, store_unavailable, timeout, internal, cancelled).",
                       ["contract", "error_class"])  # fmt: skip
CONSUMER_LAG = Family("gauge", "sluice_stream_consumer_lag",
                      "Messages not yet committed per partition (high watermark - committed "
                      "offset); 0 once another consumer owns the partition, then gone.",
                      ["job", "topic", "partition"])  # fmt: skip
LATE_EVENTS = Family("counter", "sluice_stream_late_events_total",
                     "Events that arrived after a later event of their card was scored "
                     "(sluice.features.KeyedFeatureStore): the events scored before one "
                     "did not see it, the batch job's would.",
                     ["source", "contract"])  # fmt: skip
EVENT_LATENCY_SECONDS = Family("histogram", "sluice_stream_event_latency_seconds",
                               "A message's producer timestamp to its rows written.",
                               ["job"])  # fmt: skip
CASSANDRA_WRITE_SECONDS = Family("histogram", "sluice_cassandra_write_seconds",
                                 "One chunk of concurrent upserts (retries included).",
                                 ["table"])  # fmt: skip
CASSANDRA_ROWS_WRITTEN = Family("counter", "sluice_cassandra_rows_written_total",
                                "Rows upserted into Cassandra.", ["table"])  # fmt: skip
CASSANDRA_WRITE_FAILURES = Family("counter", "sluice_cassandra_write_failures_total",
                                  "Rows whose upsert failed for good, by the last error's type.",
                                  ["table", "error"])  # fmt: skip

BATCH_EXPECTATION_SUCCESS = Family("gauge", "sluice_batch_expectation_success",
                                   "1 when an expectation of the suite holds over a batch "
                                   "job's whole input (GX's verdict, `mostly` included), "
                                   "else 0; set after the job's record pass.",
                                   ["source", "contract", "expectation", "column"])  # fmt: skip
BATCH_EXPECTATION_UNEXPECTED = Family("gauge", "sluice_batch_expectation_unexpected_rows",
                                      "Rows of a batch job's whole input an expectation "
                                      "finds unexpected (duplicates, for uniqueness).",
                                      ["source", "contract", "expectation",
                                       "column"])  # fmt: skip
SHADOW_ROWS = Family("counter", "sluice_shadow_rows_total",
                     "Online rows sent to the shadow model, by outcome: scored (logged), "
                     "dropped (too many shadow requests in flight) or failed.",
                     ["contract", "outcome"])  # fmt: skip

FAMILIES: tuple[Family, ...] = (
    ROWS_SCORED, ROWS_QUARANTINED, MODEL_IN_USE, SCORE_BATCH_SECONDS, ONLINE_REQUESTS,
    ONLINE_REQUEST_SECONDS, ONLINE_ERRORS, CONSUMER_LAG, EVENT_LATENCY_SECONDS,
    CASSANDRA_WRITE_SECONDS, CASSANDRA_ROWS_WRITTEN, CASSANDRA_WRITE_FAILURES,
    BATCH_EXPECTATION_SUCCESS, BATCH_EXPECTATION_UNEXPECTED, DECISIONS, LATE_EVENTS,
    SHADOW_ROWS,
)  # fmt: skip

DRIFT_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (help, labels)
    "sluice_drift_psi": ("PSI of recent inputs against the training reference",
                         ("contract", "feature")),
    "sluice_drift_ks": ("Binned KS statistic (largest CDF gap at the training bin edges)",
                        ("contract", "feature")),
    "sluice_drift_rows": ("Recent rows compared with the training reference", ("contract",)),
    "sluice_drift_detected": ("1 when a feature's PSI is above the contract's threshold, "
                              "else 0", ("contract",)),
    "sluice_drift_last_run_timestamp_seconds": ("When the drift check last ran", ("contract",)),
}  # fmt: skip

COMPARE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {  # name -> (help, labels)
    "sluice_compare_rows": ("Live rows scored by both versions of a pair (prediction log)",
                            ("contract", "a", "b")),
    "sluice_compare_score_correlation": ("Pearson correlation of the pair's scores",
                                         ("contract", "a", "b")),
    "sluice_compare_decision_agreement": ("Share of the pair's rows with the same decision",
                                          ("contract", "a", "b")),
    "sluice_compare_mean_abs_score_delta": ("Mean |score of a - score of b| over the pair's rows",
                                            ("contract", "a", "b")),
    "sluice_compare_auc": ("A version's AUC on the pair's compared rows that have labels",
                           ("contract", "a", "b", "version")),
    "sluice_compare_last_run_timestamp_seconds": ("When `sluice models compare` last ran",
                                                  ("contract",)),
}  # fmt: skip
"""Written by `sluice models compare --metrics-file` (sluice.drift._compare), like the drift
gauges: textfile gauges for node_exporter, not Ray metrics."""


def record_rows(source: str, contract: str, model_version: str, scored: int,
                reasons: Mapping[str, int],
                decisions: Mapping[str, int] | None = None) -> None:  # fmt: skip
    """One batch's outcome on any path: rows scored with a version, quarantined by reason,
    decided by label (``sluice.decisions.decision_counts``). ``source`` is
    ``<path>:<name>`` (``batch:fraud_batch``)."""
    path = source.split(":", 1)[0]
    if scored:
        ROWS_SCORED.inc(scored, path=path, source=source, contract=contract,
                        model_version=model_version)  # fmt: skip
    for reason, n in reasons.items():
        ROWS_QUARANTINED.inc(n, path=path, source=source, contract=contract, reason=reason)
    for label, n in (decisions or {}).items():
        DECISIONS.inc(n, path=path, source=source, contract=contract, decision=label)


def models_in_use(path: str, contract: str, versions: Iterable[str]) -> None:
    """``MODEL_IN_USE``: the model versions this worker has loaded to score ``contract`` on
    ``path`` with (``fraud/3``), set where a worker loads or swaps them; the versions it
    held before and no longer does are retired."""
    keep = set(versions)
    for p, c, v in MODEL_IN_USE.series():
        if p == path and c == contract and v not in keep:
            MODEL_IN_USE.retire(path=p, contract=c, model_version=v)
    for v in sorted(keep):
        MODEL_IN_USE.set(1, path=path, contract=contract, model_version=v)


STORE_UNAVAILABLE = "store_unavailable"
"""The error class of a 503 answered because Cassandra (the feature store) is unreachable;
the app names it on the request (``error_class`` in the ASGI scope's state), since its
status alone reads as overload."""


CLIENT_CLOSED = 499
"""The status counted for a request cancelled before its answer started (nginx's "client
closed request"; Serve logs it too): the client hung up, or Serve cancelled the request."""


def error_class(status: int) -> str | None:
    """The class of an HTTP answer's status: None for a success. ``overload`` covers the
    "retry later" answers of a full queue (429, 503); a 503 for an unreachable store is
    ``store_unavailable``, which only the app can tell (see ``STORE_UNAVAILABLE``)."""
    if status < 400:
        return None
    if status == 401 or status == 403:
        return "auth"
    if status in (429, 503):
        return "overload"
    if status == 504:
        return "timeout"
    if status == CLIENT_CLOSED:
        return "cancelled"
    return "validation" if status < 500 else "internal"
