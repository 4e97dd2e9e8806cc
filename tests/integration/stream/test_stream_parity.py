"""The same events scored by the stream and by the batch job: identical features and scores."""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import (
    alert_reasons,
    make_messages,
    new_topic,
    predictions,
    produce,
    quarantine,
)

from pipelines.batch_score import run as batch_run
from pipelines.stream_score import run as stream_run
from sluice.contract import load_contract
from sluice.datagen import write_parquet
from sluice.jobs import ActorPool, BatchJob, InputSpec, StreamJob
from sluice.models import SCORE_TOLERANCE

pytestmark = pytest.mark.integration

EVENTS = 4000


def test_stream_and_batch_score_the_same_events_identically(stream_env, tmp_path):
    """4k events (3% invalid) go through the stream job (Kafka, two consumer actors; full
    micro-batches validated by GX, the tail by the compiled engine) into one keyspace, and
    through the batch job (pipelines.batch_score.run on a Parquet dump of the same events)
    into another. Features, cards, times, model versions, decisions and the decision policy
    must be bit-identical, scores equal within SCORE_TOLERANCE (README "Bring your own
    model"), each decision the contract's for its score, and the same events quarantined
    for the same reasons. The online leg: serve/test_serve_endpoint.py."""
    cfg_stream = stream_env.cfg("sluice_test_stream_parity")
    cfg_batch = stream_env.cfg("sluice_test_stream_parity_b")
    topic = new_topic(cfg_stream)
    produced = make_messages(EVENTS, seed=43, invalid=0.03, wrong_types=0.0, malformed=0.0,
                             topic=topic)  # fmt: skip
    produce(cfg_stream, produced)

    job = StreamJob(name="test_parity", contract="fraud", topic=topic, consumers=2,
                    max_batch_messages=1000, max_batch_wait_ms=300, gx_min_rows=500,
                    session_timeout_ms=6000, num_cpus_per_consumer=0.5)  # fmt: skip
    summary = stream_run(job, cfg_stream, until_caught_up=True, max_seconds=300)
    assert summary.stopped_by == "caught up", summary
    assert summary.messages == EVENTS and "gx" in summary.engines, summary

    write_parquet(produced.data.table, tmp_path / "in" / "events.parquet")
    batch = BatchJob(name="test_parity_batch", contract="fraud",
                     input=InputSpec(paths=(str(tmp_path / "in" / "*.parquet"),)),
                     batch_rows=2048, actors=ActorPool(min_actors=1, max_actors=1),
                     summary_path=str(tmp_path / "summary.json"))  # fmt: skip
    batch_run(batch, cfg_batch)

    from_stream, from_batch = predictions(cfg_stream), predictions(cfg_batch)
    assert set(from_stream) == produced.valid_keys
    assert set(from_batch) == set(from_stream)
    def differs(a: tuple, b: tuple) -> bool:  # (card, time, score, version, features, ...)
        return a[:2] + a[3:] != b[:2] + b[3:] or abs(a[2] - b[2]) > SCORE_TOLERANCE

    differ = [k for k in from_stream if differs(from_stream[k], from_batch[k])]
    assert not differ, f"{len(differ)} events differ, e.g. {differ[0]}: " \
        f"{from_stream[differ[0]]} vs {from_batch[differ[0]]}"  # fmt: skip
    policy = load_contract("fraud").decision
    keys = sorted(from_stream)
    scores = np.array([from_stream[k][2] for k in keys])
    assert [from_stream[k][5] for k in keys] == policy.decide(scores).to_pylist()
    assert {from_stream[k][6] for k in keys} == {policy.policy_id}
    assert {from_stream[k][5] for k in keys} >= {"approve", "review"}, "decisions are vacuous"

    # The same alerts, with the same explanations: the top features in the same order,
    # their contributions within SCORE_TOLERANCE (as the scores), on both paths.
    alerts_stream, alerts_batch = alert_reasons(cfg_stream), alert_reasons(cfg_batch)
    alerting = {k for k in keys if from_stream[k][5] in ("review", "block")}
    assert set(alerts_stream) == set(alerts_batch) == alerting
    for k in alerting:
        a, b = alerts_stream[k], alerts_batch[k]
        assert len(a) == 5 and [r["feature"] for r in a] == [r["feature"] for r in b], k
        assert all(abs(x["contribution"] - y["contribution"]) <= SCORE_TOLERANCE
                   and x["value"] == y["value"] for x, y in zip(a, b, strict=True)), k

    q_stream = dict(quarantine(cfg_stream, "stream:test_parity"))
    q_batch = dict(quarantine(cfg_batch, "batch:test_parity_batch"))
    assert set(q_stream) == produced.invalid_keys == set(q_batch)
    assert q_stream == q_batch  # the same reasons, value for value
