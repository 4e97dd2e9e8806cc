"""Stream job throughput and latency in one run, against the raw Cassandra write ceiling.

    .venv/bin/python bench/stream.py [--events 60000] [--consumers 2] [--latency-s 20]

Against the Kafka and Cassandra of configs/platform.yaml, on a local Ray (2 CPUs), it
measures:
- R, the raw Cassandra ceiling: bench/cassandra_write.py's ``raw_ceiling`` (the driver's
  ``execute_concurrent_with_args`` into the predictions table, best concurrency), rows/s;
- the maximum sustained rate of the stream job: a backlog of --events generated events
  (1% invalid) drained by ``pipelines.stream_score.run`` with --consumers actors, events/s
  from the moment every consumer holds partitions (Kafka's view of the group) to the last
  commit, counted by the group's committed offsets (each event is two upserts — its feature
  event and its prediction; its card's history is read once per consumer, which keeps it
  in memory). The first consumer drains alone until the others join (~1.5 s): that share
  of the drain ran on one consumer, so the rate over the whole drain ("whole drain")
  understates what the job sustains;
- end-to-end latency, producer timestamp -> rows written in Cassandra, p50/p99, with
  events produced at half and at 80% of that sustained rate for --latency-s seconds each
  (after a warm-up the percentiles leave out: the consumers' start and at least 5 s of
  events).
Keyspace ``sluice_bench_stream`` (recreated); a fresh topic per phase; a small model
trained into a temporary registry. Prints a table, then, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "platform"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from cassandra_write import raw_ceiling, raw_ceiling_max  # noqa: E402  (bench/ is this script's directory)

from pipelines.stream_score import StreamSummary  # noqa: E402
from pipelines.stream_score import run as stream_run  # noqa: E402
from sluice.config import PlatformConfig, load_platform_config  # noqa: E402
from sluice.contract import load_contract  # noqa: E402
from sluice.jobs import StreamJob  # noqa: E402
from sluice.store import apply_schema, close_sessions, schema_change, session_for  # noqa: E402
from sluice.stream import GroupLag, ensure_topic, event_messages, produce_messages  # noqa: E402

TARGETS = {"sustained_vs_raw": 0.5, "sustained_vs_rmax": 0.6, "p99_latency_half_s": 0.25,
           "p99_latency_80pct_s": 1.0}
LOADS = {"half": 0.5, "80pct": 0.8}  # latency phases, as shares of the sustained rate
KEYSPACE = "sluice_bench_stream"
_WARMUP_S = 30.0  # from the latency job's start: consumers join, then >= 5 s of events


def job_for(name: str, topic: str, consumers: int) -> StreamJob:
    return StreamJob(name=name, contract="fraud", topic=topic, consumers=consumers,
                     max_batch_messages=2000, max_batch_wait_ms=200, session_timeout_ms=6000,
                     num_cpus_per_consumer=2 / consumers)  # fmt: skip


def wait_members(cfg: PlatformConfig, group: str, n: int, timeout_s: float = 180,
                 poll_s: float = 0.5) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(cfg.kafka.client_settings())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
        assigned = [m for m in found.members if m.assignment.topic_partitions]
        if len(assigned) >= n:
            return
        time.sleep(poll_s)
    raise SystemExit(f"the stream job's {n} consumers did not join group {group} in time")


@dataclass(frozen=True)
class Sustained:
    """The backlog's drain: the job's summary, and its rate once every consumer held
    partitions (the first consumer drains alone until the others join and the group
    rebalances: ~1.5 s of a 60,000-event drain)."""

    summary: StreamSummary
    joined_s: float  # from the job's start until every consumer held partitions
    events_per_s: float  # events committed from then to the last commit, per second


def sustained(cfg: PlatformConfig, events: int, consumers: int) -> Sustained:
    topic = f"sluice-bench-{uuid.uuid4().hex[:10]}"
    ensure_topic(cfg.kafka, topic, 4)
    payloads, keys, _ = event_messages(events, seed=1, invalid=0.01)
    produce_messages(cfg.kafka, topic, payloads, keys)
    job = job_for("bench_sustained", topic, consumers)
    box: dict[str, StreamSummary] = {}
    started = time.time()
    runner = threading.Thread(target=lambda: box.update(
        s=stream_run(job, cfg, until_caught_up=True)))  # fmt: skip
    runner.start()
    try:
        wait_members(cfg, job.group, consumers, poll_s=0.05)
        joined = time.time()
        group = GroupLag(cfg.kafka, job.group, topic)
        try:
            done = sum(max(offset, 0) for offset in group.committed().values())
        finally:
            group.close()
    finally:
        runner.join()
    s = box["s"]
    if s.last_commit_at is None or s.last_commit_at <= joined or done >= events:
        raise SystemExit(f"the backlog was drained before every consumer joined; "
                         f"rerun with more than {events:,} --events")
    # The topic holds exactly the backlog (offsets 0..n-1 a partition, every delivery
    # confirmed), so committed offsets count events, and a replayed one is not counted twice.
    rate = round((events - done) / (s.last_commit_at - joined), 1)
    return Sustained(summary=s, joined_s=round(joined - started, 2), events_per_s=rate)


def latency(cfg: PlatformConfig, rate: float, seconds: float, consumers: int) -> StreamSummary:
    """Events at ``rate`` for ``seconds``, after a warm-up that lasts until ``_WARMUP_S``
    from the job's start (consumers joining, models and sessions loading) and at least 5 s
    of events; the warm-up's events are left out of the percentiles."""
    topic = f"sluice-bench-{uuid.uuid4().hex[:10]}"
    ensure_topic(cfg.kafka, topic, 4)
    job = job_for("bench_latency", topic, consumers)
    measured_from = time.time() + _WARMUP_S
    stop, box = threading.Event(), {}
    runner = threading.Thread(target=lambda: box.update(
        s=stream_run(job, cfg, stop=stop, latency_after=measured_from)))  # fmt: skip
    runner.start()
    wait_members(cfg, job.group, consumers)
    if time.time() > measured_from - 5:
        stop.set()
        runner.join()
        raise SystemExit(f"the consumers took over {_WARMUP_S - 5:.0f} s to join; rerun")
    n = int(rate * (measured_from + seconds - time.time()))
    payloads, keys, _ = event_messages(n, seed=2, invalid=0.01)
    produce_messages(cfg.kafka, topic, payloads, keys, rate=rate)
    group = GroupLag(cfg.kafka, job.group, topic)
    try:
        deadline = time.monotonic() + 120
        while any(group.lag().values()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        group.close()
    stop.set()
    runner.join()
    return box["s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=60_000, help="backlog for the sustained rate")
    ap.add_argument("--consumers", type=int, default=2, help="consumer actors (4 partitions)")
    ap.add_argument("--latency-s", type=float, default=20.0,
                    help="measured seconds per latency phase (half and 80%% of the rate)")
    ap.add_argument("--raw-rows", type=int, default=60_000, help="rows for the raw ceiling R")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import ray

    from pipelines.train import TrainConfig, train
    from sluice.models import ModelRegistry

    base = load_platform_config()
    print("measuring R (bench/cassandra_write.py, raw driver) ...", flush=True)
    r, r_level = raw_ceiling(args.raw_rows)
    r_max, r_max_k, _ = raw_ceiling_max(args.raw_rows, r_level)
    close_sessions()  # the ceiling's session (keyspace sluice_bench) is not needed again

    registry_dir = tempfile.mkdtemp(prefix="sluice-bench-stream-")
    cfg = base.model_copy(update={
        "cassandra": base.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": base.registry.model_copy(update={"root_uri": registry_dir}),
    })  # fmt: skip
    session = session_for(cfg.cassandra)
    schema_change(session, f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    apply_schema(session, cfg.cassandra, [load_contract("fraud")])
    train(TrainConfig(rows=10_000, epochs=2), ModelRegistry.from_config(cfg))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)  # fmt: skip

    print(f"sustained: draining a backlog of {args.events:,} events ...", flush=True)
    sus = sustained(cfg, args.events, args.consumers)
    s = sus.summary
    lat = {}
    for name, share in LOADS.items():
        rate = share * sus.events_per_s
        print(f"latency ({name}): {rate:,.0f} events/s for {args.latency_s:.0f} s ...", flush=True)
        lat[name] = (rate, latency(cfg, rate, args.latency_s, args.consumers))
    ray.shutdown()
    close_sessions()

    figures = {
        "raw_cassandra_rows_per_s": round(r),
        "R_max_rows_per_s": round(r_max),
        "R_max_processes": r_max_k,
        "sustained_events_per_s": sus.events_per_s,
        "sustained_rows_written_per_s": round(2 * sus.events_per_s),
        "whole_drain_events_per_s": s.events_per_s,
        "consumers_joined_s": sus.joined_s,
        "sustained_batches": s.batches,
        "consumers": s.consumers,
    }
    for name, (rate, summary) in lat.items():
        figures.update({f"latency_{name}_events_per_s": round(rate, 1),
                        f"latency_{name}_events": summary.messages,
                        f"p50_latency_{name}_s": summary.latency_p50_s,
                        f"p99_latency_{name}_s": summary.latency_p99_s,
                        f"latency_{name}_batches": summary.batches})  # fmt: skip
    ratios = {"sustained_vs_raw": round(sus.events_per_s / r, 3),
              "sustained_vs_rmax": round(sus.events_per_s / r_max, 3)}
    print(f"\nStream job on {os.cpu_count()} CPUs (Kafka, Cassandra and Ray on the same machine), "
          f"{s.consumers} consumer actors, 4 partitions")  # fmt: skip
    rows = [
        ("raw Cassandra ceiling R", f"{r:,.0f} rows/s (raw driver, concurrency {r_level})"),
        ("store ceiling R_max", f"{r_max:,.0f} rows/s ({r_max_k} client processes)"),
        ("stream sustained", f"{sus.events_per_s:,.0f} events/s (every consumer in the group, "
                             f"from {sus.joined_s:.1f} s to the last commit)"),
        ("  rows written", f"{2 * sus.events_per_s:,.0f} rows/s (prediction + feature event)"),
        ("  whole drain", f"{s.events_per_s:,.0f} events/s ({s.messages:,} events in "
                          f"{s.busy_s:.1f} s, {s.batches} batches, the join included)"),
    ]  # fmt: skip
    for name, (rate, summary) in lat.items():
        rows += [(f"latency load ({name})", f"{rate:,.0f} events/s, {summary.messages:,} "
                                            f"events in {summary.batches} batches"),
                 ("  p50 / p99", f"{summary.latency_p50_s} s / {summary.latency_p99_s} s")]
    for name, value in rows:
        print(f"  {name:<26} {value}")
    for name, target in TARGETS.items():
        value = ratios.get(name, figures.get(name))
        ok = value is not None and (value <= target if name.endswith("_s") else value >= target)
        print(f"  {name:<26} {value}  (target {target}: {'ok' if ok else 'MISSED'})")
    print(json.dumps({"bench": "stream", "figures": figures, "ratios": ratios,
                      "targets": TARGETS}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
