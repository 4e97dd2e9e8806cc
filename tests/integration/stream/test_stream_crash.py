"""SIGKILL the stream job three times mid-stream: nothing lost, nothing counted twice."""

from __future__ import annotations

import math
import os
import signal
import threading
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from stream_helpers import (
    Driver,
    alert_rows,
    consumer_actor_pids,
    feature_event_keys,
    make_messages,
    new_topic,
    prediction_keys,
    predictions,
    produce,
    quarantine,
    reference_scores,
    topic_alerts,
    wait_for,
    write_job,
)
from typer.testing import CliRunner

from pipelines.alert_relay import run as relay
from sluice.cli import app as cli
from sluice.contract import load_contract
from sluice.features import AggregateSpec
from sluice.models import SCORE_TOLERANCE
from sluice.stream import HOLD_COMMITS_ENV, GroupLag, alert_topic, candidate_topic

pytestmark = pytest.mark.integration

EVENTS = 20_000  # the 200k is load, not proof: bench/stream.py carries the load
KILLS = 3


def python_aggregates(valid: pa.Table, agg: AggregateSpec) -> dict[str, list[float]]:
    """The aggregates' definition, written out plainly: for each event, its card's events
    strictly before it in (time, key) order, within each window."""
    times = valid["event_time"].cast(pa.int64()).to_pylist()  # microseconds
    by_card: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    for card, t, key, amount in zip(valid["card_id"].to_pylist(), times,
                                    valid["transaction_id"].to_pylist(),
                                    valid["amount"].to_pylist(), strict=True):  # fmt: skip
        by_card[card].append((t, key, amount))
    out = {}
    for events in by_card.values():
        events.sort()
        for j, (t, key, _) in enumerate(events):
            before = events[:j]
            values: list[float] = []
            for w in agg.windows_s:
                window = [a for (u, _, a) in before if u >= t - w * 1_000_000]
                total = 0.0
                for a in window:
                    total += a
                stats = {"count": float(len(window)), "sum": total,
                         "mean": total / len(window) if window else 0.0}  # fmt: skip
                values += [stats[fn] for fn in agg.functions]
            if agg.seconds_since_previous:
                gap = (t - before[-1][0]) / 1_000_000 if before else math.inf
                values.append(min(gap, float(agg.max_lookback_s)))
            out[key] = values
    return out


def produce_in_slices(cfg, produced, size: int = 500, rate: float = 600.0) -> None:
    for start in range(0, len(produced.payloads), size):
        produce(cfg, produced, start, min(start + size, len(produced.payloads)), rate=rate)


def test_sigkilled_stream_job_loses_and_duplicates_nothing(stream_env):
    """20k events (1% malformed messages, 2% invalid events: 1.5% breaking the suite, 0.5%
    of the wrong JSON type) on 4 partitions, consumed by two consumer actors. The driver and
    its actors are SIGKILLed three times, each time while a batch's rows are written but not
    yet committed, and restarted; the last run goes until the lag is 0. That moment is made,
    not raced for: once the commits pass a mark, the test's hold file makes every consumer
    stop before its next commit (``$SLUICE_TESTING_HOLD_COMMITS``), the test waits until
    rows beyond the committed offsets are in Cassandra, then kills.

    Events are produced while the job runs (slices at a bounded rate), as a live stream
    would be, so that each kill lands with events still arriving behind the held batch and
    the restarted job replays into a stream that is still growing."""
    ks = "sluice_test_stream_crash"
    cfg = stream_env.cfg(ks)
    topic = new_topic(cfg)
    produced = make_messages(EVENTS, seed=41, invalid=0.015, wrong_types=0.005, malformed=0.01,
                             topic=topic)  # fmt: skip
    total = len(produced.payloads)
    produced.positions[:] = [(-1, -1)] * total  # filled slice by slice as they are sent
    producer = threading.Thread(target=produce_in_slices, args=(cfg, produced), daemon=True)
    producer.start()
    job = write_job(stream_env.root, "test_crash", topic, consumers=2)
    env, log = stream_env.env(ks), stream_env.root / "test_crash.log"
    hold = stream_env.root / "test_crash.hold"
    env[HOLD_COMMITS_ENV] = str(hold)
    group = GroupLag(cfg.kafka, "sluice-test_crash", topic)

    def progress() -> tuple[int, int]:
        """(messages committed, events written to predictions but not yet committed)."""
        committed = {p: max(o, 0) for p, o in group.committed().items()}
        offset_of = produced.offset_of()  # (-1, -1): a slice still being sent
        beyond = sum(1 for k in prediction_keys(cfg)
                     if offset_of[k][0] >= 0
                     and offset_of[k][1] >= committed.get(offset_of[k][0], 0))  # fmt: skip
        return sum(committed.values()), beyond

    kills: list[tuple[int, int]] = []
    try:
        for i in range(KILLS):
            driver = Driver(job, env, log, "--max-seconds", "600")
            target = (i + 1) * total // (KILLS + 3)

            def past(driver=driver, target=target) -> bool:
                assert driver.alive(), f"the stream job ended early:\n{driver.tail()}"
                return progress()[0] >= target

            def written_not_committed(driver=driver) -> bool:
                assert driver.alive(), f"the stream job ended early:\n{driver.tail()}"
                return progress()[1] > 0

            wait_for(past, 240, f"commits past {target}")
            hold.touch()  # the consumers' next batches are written, then wait uncommitted
            wait_for(written_not_committed, 120, "rows written beyond the committed offsets")
            driver.kill()
            for pid in consumer_actor_pids():
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not consumer_actor_pids(), 60, "the consumer actors to die")
            hold.unlink()
            kills.append(progress())
        assert kills[-1][0] < total, "the stream finished before the last kill"
        producer.join(timeout=120)
        assert not producer.is_alive(), "producing the events took over 2 minutes"
        final = Driver(job, env, log, "--until-caught-up", "--max-seconds", "400")
        assert final.wait(timeout=420) == 0, final.tail()
        lag, committed = group.lag(), group.committed()
        ends = group.end_offsets(sorted(committed))
    finally:
        group.close()
    assert all(beyond for _, beyond in kills), f"a kill caught no rows uncommitted: {kills}"

    # Committed offsets == log end offsets on every partition.
    assert lag == {p: 0 for p in range(4)}
    assert {p: o for p, o in committed.items()} == {p: high for p, (_, high) in ends.items()}
    assert sum(committed.values()) == total

    # Predictions: exactly the valid events, 0 lost, 0 extra.
    got = predictions(cfg)
    assert set(got) == produced.valid_keys

    # Alerts: one row per review or block decision in each alert table, none for the rest.
    by_day, by_key = alert_rows(cfg)
    alerting = {k: (k, r[5], r[6]) for k, r in got.items() if r[5] in ("review", "block")}
    assert alerting, "no event was decided review or block: the alert check is vacuous"
    assert len(by_day) == len(set(by_day)) == len(alerting), "an alert was stored twice"
    assert {r[0]: r for r in by_day} == by_key == alerting
    # ... and on Kafka, for a read_committed reader: each alert proposed exactly once
    # (each batch's candidates and offsets commit in one transaction; the kills abort
    # some), then relayed to the alert topic once.
    proposed = topic_alerts(cfg, candidate_topic(cfg.kafka, "fraud"))
    assert sorted(m["key"] for m in proposed) == sorted(alerting), "proposed twice, or lost"
    relayed = relay(cfg, "fraud", until_caught_up=True, max_seconds=120)
    assert (relayed.published, relayed.duplicates) == (len(alerting), 0)
    on_topic = topic_alerts(cfg, alert_topic(cfg.kafka, "fraud"))
    keys_on_topic = [m["key"] for m in on_topic]
    assert len(keys_on_topic) == len(set(keys_on_topic)), "an alert was published twice"
    assert set(keys_on_topic) == set(alerting)
    assert all((m["decision"], m["policy_id"]) == alerting[m["key"]][1:] for m in on_topic)
    tailed = CliRunner().invoke(cli, ["alerts", "tail", "--since", "1d", "--max", "3",
                                      "--idle-exit-s", "30"], env=env)  # fmt: skip
    assert tailed.exit_code == 0, tailed.output
    lines = tailed.output.strip().splitlines()
    assert len(lines) == 3 and all(line.split()[3] in alerting for line in lines), lines

    # Quarantine: exactly the invalid events and malformed messages, one row each.
    rows = quarantine(cfg, "stream:test_crash")
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)), "a quarantined message was stored twice"
    assert set(keys) == produced.invalid_keys | produced.malformed_keys
    assert len(produced.malformed_keys) == total - EVENTS

    # Feature events: each valid event recorded exactly once despite the replays.
    events = feature_event_keys(cfg)
    assert sorted(events) == sorted(produced.valid_keys)

    # Features equal the in-memory reference exactly, scores within SCORE_TOLERANCE ...
    ref = reference_scores(stream_env.registry, produced.valid_table)
    assert set(ref) == set(got)
    assert all(abs(got[k][2] - ref[k][0]) <= SCORE_TOLERANCE for k in ref), "a score differs"
    assert all(got[k][4] == ref[k][1] for k in ref), "a feature differs from the reference"
    # ... and the aggregates their plain-Python definition (float32 storage: rtol 1e-6).
    agg = load_contract("fraud").features.aggregates
    plain = python_aggregates(produced.valid_table, agg)
    keys = sorted(plain)
    want = np.array([plain[k] for k in keys])
    have = np.array([[got[k][4][n] for n in agg.feature_names] for k in keys])
    np.testing.assert_allclose(have, want, rtol=1e-6, atol=1e-6)
