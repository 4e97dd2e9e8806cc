"""Stream scoring: a Kafka topic -> consumer actors -> the contract's Scorer -> Cassandra.

    python -m pipelines.stream_score --job configs/jobs/fraud_stream.yaml [--until-caught-up]
    ray job submit --working-dir . -- python -m pipelines.stream_score --job ...
    sluice stream --job configs/jobs/fraud_stream.yaml

A long-lived driver: it checks the job (contract, model, topic), applies the schema,
starts ``consumers`` StreamConsumer actors (at most one per partition) in the job's
consumer group, and supervises them — a consumer that dies is replaced (up to
``max_consumer_restarts`` within any ``restart_window_s``) and the new one resumes from
the group's committed offsets. With an ``autoscale`` section the consumer count follows
the group's lag within ``[min_consumers, max_consumers]`` (``sluice.stream.LagScaler``):
the driver starts more consumers when the lag is high and stops one at a time (its batch
in flight finished and committed) when it is low; each change is a rebalance, which the
commit protocol makes lossless. A Cassandra outage does not end the job: each consumer
retries its batch in flight with backoff, committing nothing, for up to
``store_outage_max_s``.
Each actor polls micro-batches, scores them, writes every output, waits for the writes,
then commits (sluice.stream.ConsumerLoop): at-least-once delivery, and, because every
write is an idempotent upsert keyed by the event id, exactly-once results.

The contract's model alias is resolved once, when the job starts: every consumer, a
replacement included, scores with that version (``name/N``), which the summary and every
prediction row report. SIGHUP is the explicit reload: the driver resolves the alias again
and, if it moved, stops each consumer (its batch in flight finished and committed) and
starts it again on the new version.

It runs until SIGTERM/SIGINT (each consumer finishes and commits its batch in flight,
then leaves the group), ``--max-seconds``, or, with ``--until-caught-up``, until the
group's lag is 0 on every partition. It prints a summary; its last line is one JSON
object ``{"stream_summary": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from sluice.config import PlatformConfig, load_platform_config
from sluice.contract import load_contract
from sluice.errors import ConfigError, SluiceError, StreamError
from sluice.jobs import StreamJob, load_stream_job
from sluice.stream import (
    GroupLag,
    LagScaler,
    LoopStats,
    RestartBudget,
    StreamConsumer,
    install_stop_signals,
)

log = logging.getLogger("sluice.stream")

_PROGRESS_EVERY_S = 10.0


@dataclass
class StreamSummary:
    job: str
    contract: str
    model_version: str  # the version in use at the end
    topic: str
    group: str
    partitions: int
    consumers: int
    stopped_by: str = ""
    messages: int = 0
    scored: int = 0
    quarantined: int = 0
    malformed: int = 0
    late_events: int = 0  # arrived after a later event of their card was scored
    batches: int = 0
    commits: int = 0
    revocations: int = 0
    restarts: int = 0
    store_retries: int = 0
    store_wait_s: float = 0.0
    elapsed_s: float = 0.0
    busy_s: float = 0.0
    last_commit_at: float | None = None  # epoch seconds of the job's last commit
    events_per_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    final_lag: dict[int, int] | None = field(default_factory=dict)  # None: Kafka did not say
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    engines: dict[str, int] = field(default_factory=dict)
    model_versions: list[str] = field(default_factory=list)  # in order, reloads included
    scaling: list[dict[str, float]] = field(default_factory=list)  # autoscale: each change


class _Member:
    """One consumer actor slot: its actor, the pending ``run`` call, its restarts."""

    def __init__(self, name: str, actor_cls, cfg: PlatformConfig, job: StreamJob,
                 model_ref: str) -> None:  # fmt: skip
        self.name, self.actor_cls, self.cfg, self.job = name, actor_cls, cfg, job
        self.model_ref = model_ref
        self.generation = 0
        self.start()

    def start(self) -> None:
        self.actor = self.actor_cls.remote(self.cfg, self.job, f"{self.name}.{self.generation}",
                                           self.model_ref)  # fmt: skip
        self.ref = self.actor.run.remote()

    def restart_on(self, model_ref: str) -> None:
        """Start again on ``model_ref``, once the old actor has stopped (`stop` was sent)."""
        self.model_ref, self.generation = model_ref, self.generation + 1
        self.start()


def run(
    job: StreamJob,
    cfg: PlatformConfig,
    *,
    until_caught_up: bool = False,
    max_seconds: float | None = None,
    stop: threading.Event | None = None,
    poll_s: float = 1.0,
    latency_after: float | None = None,
    reload: threading.Event | None = None,
) -> StreamSummary:
    """Run the job until stopped (see the module doc). ``latency_after`` (epoch seconds)
    leaves messages produced earlier out of the latency percentiles (a warm-up); setting
    ``reload`` (SIGHUP does) re-resolves the model alias."""
    import ray

    from sluice.models import ModelRegistry
    from sluice.store import check_schema, session_for
    from sluice.stream import ensure_alert_topics, topic_partitions

    started = time.monotonic()
    stop = stop or threading.Event()
    contract = load_contract(job.contract)
    registry = ModelRegistry.from_config(cfg)
    model_version = "{}/{}".format(*registry.resolve(str(contract.model)))
    partitions = topic_partitions(cfg.kafka, job.topic)
    if partitions is None:
        raise ConfigError(
            f"job {job.name}: topic {job.topic!r} does not exist on "
            f"{','.join(cfg.kafka.bootstrap_servers)}; create it (`sluice produce` does) or fix "
            "the job's topic"
        )
    scaler = None if job.autoscale is None else LagScaler(job.autoscale, partitions)
    n = min(job.consumers, partitions) if scaler is None else scaler.clamp(job.consumers)
    if scaler is None and n < job.consumers:
        log.warning("job %s asks for %d consumers but %s has %d partitions: starting %d",
                    job.name, job.consumers, job.topic, partitions, n)  # fmt: skip
    check_schema(session_for(cfg.cassandra), cfg.cassandra, [contract])  # `sluice schema apply`'s
    if contract.decision is not None:  # the consumers propose its alerts, in transactions
        ensure_alert_topics(cfg.kafka, contract.name, partitions)

    connect_ray(cfg)
    # The driver's SLUICE_TESTING_* fault-injection variables (crash tests) reach its
    # consumers; without any, the actors run in the cluster's own environment.
    testing = {k: v for k, v in os.environ.items() if k.startswith("SLUICE_TESTING_")}
    actor_cls = ray.remote(StreamConsumer).options(
        num_cpus=job.num_cpus_per_consumer, max_concurrency=2, max_restarts=0,
        **({"runtime_env": {"env_vars": testing}} if testing else {}),
    )
    members = [_Member(f"c{i}", actor_cls, cfg, job, model_version) for i in range(n)]
    lag = GroupLag(cfg.kafka, job.group, job.topic)
    summary = StreamSummary(job=job.name, contract=contract.name, model_version=model_version,
                            topic=job.topic, group=job.group, partitions=partitions,
                            consumers=n, model_versions=[model_version])  # fmt: skip
    log.info("job %s: %d consumer(s) on %s (%d partitions), group %s, model %s",
             job.name, n, job.topic, partitions, job.group, model_version)  # fmt: skip
    finished: dict[str, LoopStats] = {}
    retired: list[LoopStats] = []  # consumers stopped by a reload
    budget = RestartBudget(job.max_consumer_restarts, job.restart_window_s)
    next_progress = time.monotonic() + _PROGRESS_EVERY_S
    next_check, started_members = time.monotonic(), n
    try:
        while not summary.stopped_by:
            waiting = {m.ref: m for m in members if m.name not in finished}
            ready, _ = ray.wait(list(waiting), num_returns=1, timeout=poll_s)
            for ref in ready:
                member = waiting[ref]
                try:
                    finished[member.name] = ray.get(ref)  # it returns only once stopped
                except ray.exceptions.RayError as exc:
                    if not budget.spend():
                        raise StreamError(
                            f"job {job.name}: consumer {member.name} failed and the restart "
                            f"budget ({job.max_consumer_restarts} within "
                            f"{job.restart_window_s:g} s) is spent: {exc}"
                        ) from exc
                    summary.restarts += 1
                    log.error("consumer %s failed (%s); starting a replacement that resumes "
                              "from the committed offsets", member.name, exc)  # fmt: skip
                    ray.kill(member.actor, no_restart=True)
                    member.generation += 1
                    member.start()
            if reload is not None and reload.is_set() and not stop.is_set():
                reload.clear()
                moved = "{}/{}".format(*registry.resolve(str(contract.model)))
                if moved != summary.model_version:
                    log.info("job %s: reload: model %s -> %s", job.name, summary.model_version,
                             moved)  # fmt: skip
                    running = [m for m in members if m.name not in finished]
                    for m in running:  # all at once: each finishes and commits its batch
                        m.actor.stop.remote()
                    for m in running:
                        retired.extend(_collect(m, job, budget, summary, "a reload"))
                        m.restart_on(moved)
                    summary.model_version = moved
                    summary.model_versions.append(moved)
            if scaler is not None and time.monotonic() >= next_check and not stop.is_set():
                next_check = time.monotonic() + scaler.spec.check_interval_s
                behind = _lag(lag)
                running = [m for m in members if m.name not in finished]
                want = scaler.decide(time.monotonic(), None if behind is None
                                     else sum(behind.values()), len(running))  # fmt: skip
                if want is not None:
                    summary.scaling.append({"at_s": round(time.monotonic() - started, 2),
                                            "lag": sum((behind or {}).values()),
                                            "from": len(running), "to": want})  # fmt: skip
                    log.info("job %s: lag %d: consumers %d -> %d", job.name,
                             sum((behind or {}).values()), len(running), want)  # fmt: skip
                    for _ in range(want - len(running)):  # up: new members join the group
                        members.append(_Member(f"c{started_members}", actor_cls, cfg, job,
                                               summary.model_version))  # fmt: skip
                        started_members += 1
                    if want < len(running):  # down: the newest finishes its batch and leaves
                        running[-1].actor.stop.remote()
                        retired.extend(_collect(running[-1], job, budget, summary, "scale-down"))
                        members.remove(running[-1])
            if stop.is_set():
                summary.stopped_by = "signal"
            elif len(finished) == len(members):
                summary.stopped_by = "consumers ended"
            elif max_seconds is not None and time.monotonic() - started >= max_seconds:
                summary.stopped_by = "max_seconds"
            elif until_caught_up and _lag(lag) == {}:
                summary.stopped_by = "caught up"
            if time.monotonic() >= next_progress:
                next_progress += _PROGRESS_EVERY_S
                log.info("job %s: lag %s", job.name, _lag(lag))
    finally:
        for m in members:
            if m.name not in finished:
                m.actor.stop.remote()
        for m in members:
            if m.name in finished:
                continue
            try:
                finished[m.name] = ray.get(m.ref, timeout=job.max_poll_interval_ms / 1000)
            except ray.exceptions.RayError as exc:  # e.g. killed while stopping
                log.error("consumer %s did not stop cleanly: %s", m.name, exc)
        for m in members:  # done: each frees its CPUs now, not once the driver's GC drops
            ray.kill(m.actor, no_restart=True)  # its handle (a CI run hung on one held)
        try:
            summary.final_lag = _final_lag(lag)
        finally:
            lag.close()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    _add_up(summary, [*retired, *finished.values()], latency_after)
    return summary


def _collect(member: _Member, job: StreamJob, budget: RestartBudget, summary: StreamSummary,
             why: str) -> list[LoopStats]:  # fmt: skip
    """The stats of a consumer that was told to stop (it finishes and commits its batch in
    flight, then leaves the group), or [] when it did not stop cleanly: one too slow to stop
    is killed (its uncommitted batch replays elsewhere); one that died while stopping spends
    the restart budget, as any crash does. Either way its actor is ended."""
    import ray

    stats: list[LoopStats] = []
    try:
        stats = [ray.get(member.ref, timeout=job.max_poll_interval_ms / 1000)]
    except ray.exceptions.GetTimeoutError:
        log.warning("consumer %s did not stop within %d ms during %s; killing it",
                    member.name, job.max_poll_interval_ms, why)  # fmt: skip
    except ray.exceptions.RayError as exc:  # died while stopping: its work replays
        if not budget.spend():
            raise StreamError(f"job {job.name}: consumer {member.name} failed during {why}: "
                              f"{exc}") from exc  # fmt: skip
        summary.restarts += 1
    ray.kill(member.actor, no_restart=True)  # stopped or not: its CPUs are freed now
    return stats


def _lag(lag: GroupLag) -> dict[int, int] | None:
    """The partitions still behind (empty: caught up), or None while Kafka cannot say (a
    broker down, the group coordinator moving): the job goes on and asks again later. A
    progress report must never end the job its consumers are keeping alive."""
    try:
        return {p: n for p, n in lag.lag().items() if n}
    except Exception as exc:  # noqa: BLE001 - logged; the consumers carry on regardless
        log.warning("reading the group's lag failed (%s); asking again later", exc)
        return None


def _final_lag(lag: GroupLag) -> dict[int, int] | None:
    """Every partition's lag when the job ends, or None when Kafka cannot say: the consumers
    have committed and stopped, so only the report lacks it; the job still ends cleanly."""
    try:
        return lag.lag()
    except StreamError as exc:
        log.warning("the final lag could not be read (%s)", exc)
        return None


def connect_ray(cfg: PlatformConfig) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.ray.address, namespace=cfg.ray.namespace, log_to_driver=False)


def _add_up(summary: StreamSummary, stats: list[LoopStats], latency_after: float | None) -> None:
    reasons: Counter[str] = Counter()
    engines: Counter[str] = Counter()
    latencies: list[float] = []
    for s in stats:
        for name in ("messages", "scored", "quarantined", "malformed", "late_events",
                     "batches", "commits",
                     "revocations", "store_retries", "store_wait_s"):  # fmt: skip
            setattr(summary, name, getattr(summary, name) + getattr(s, name))
        reasons.update(s.reasons)
        engines.update(s.engines)
        latencies.extend(lat for lat, sent in zip(s.latencies_s, s.sent_at_s, strict=True)
                         if latency_after is None or sent >= latency_after)  # fmt: skip
    summary.store_wait_s = round(summary.store_wait_s, 3)
    summary.quarantined_by_reason = dict(reasons.most_common())
    summary.engines = dict(engines)
    firsts = [s.first_batch_at for s in stats if s.first_batch_at]
    lasts = [s.last_commit_at for s in stats if s.last_commit_at]
    if firsts and lasts:
        summary.busy_s = round(max(lasts) - min(firsts), 3)
        summary.last_commit_at = max(lasts)
        if summary.busy_s > 0:
            summary.events_per_s = round(summary.messages / summary.busy_s, 1)
    if latencies:
        p50, p99 = np.percentile(np.array(latencies), [50, 99])
        summary.latency_p50_s, summary.latency_p99_s = round(float(p50), 4), round(float(p99), 4)


def print_summary(summary: StreamSummary) -> None:
    print(f"\n== stream job {summary.job} (contract {summary.contract}, model "
          f"{summary.model_version}) — stopped: {summary.stopped_by} ==")  # fmt: skip
    rows = (
        ("topic", f"{summary.topic} ({summary.partitions} partitions), group {summary.group}"),
        ("consumers", f"{summary.consumers} at the start (restarts: {summary.restarts}; "
                      f"autoscale changes: {len(summary.scaling)})"),
        ("messages", summary.messages), ("scored", summary.scored),
        ("quarantined", summary.quarantined), ("malformed", summary.malformed),
        ("late events", summary.late_events),
        ("batches", f"{summary.batches} (engines: {summary.engines})"),
        ("commits", summary.commits), ("revocations", summary.revocations),
        ("Cassandra retries", f"{summary.store_retries} ({summary.store_wait_s} s waiting)"),
        ("busy s / elapsed s", f"{summary.busy_s} / {summary.elapsed_s}"),
        ("events/s", summary.events_per_s),
        ("latency p50 / p99 s", f"{summary.latency_p50_s} / {summary.latency_p99_s}"),
        ("final lag", summary.final_lag),
    )  # fmt: skip
    for label, value in rows:
        print(f"  {label:<20} {value}")
    for reason, count in summary.quarantined_by_reason.items():
        print(f"    quarantined: {reason:<55} {count}")
    print(json.dumps({"stream_summary": asdict(summary)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True,
                        help="Job file, e.g. configs/jobs/fraud_stream.yaml")  # fmt: skip
    parser.add_argument("--config", default=None, help="Platform config (configs/platform.yaml)")
    parser.add_argument("--until-caught-up", action="store_true",
                        help="Exit once the group's lag is 0 on every partition.")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="Exit after this many seconds.")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stop, reload = threading.Event(), threading.Event()
    restore = None
    try:
        cfg = load_platform_config(args.config)
        job = load_stream_job(args.job)
        connect_ray(cfg)
        # After ray.init, which installs a SIGTERM handler of its own (it would exit at once).
        restore = install_stop_signals(stop)
        hup = signal.signal(signal.SIGHUP, lambda *_: reload.set())  # re-resolve the alias
        summary = run(job, cfg, until_caught_up=args.until_caught_up,
                      max_seconds=args.max_seconds, stop=stop, reload=reload)  # fmt: skip
    except SluiceError as exc:
        print(f"stream job failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if restore is not None:
            restore()
            signal.signal(signal.SIGHUP, hup)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
