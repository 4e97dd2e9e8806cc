"""A late event (arriving after a later event of its card was scored) on both paths."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from stream_helpers import make_messages, new_topic, predictions, produce

from pipelines.batch_score import run as batch_run
from pipelines.stream_score import run as stream_run
from sluice.contract import load_contract
from sluice.datagen import write_parquet
from sluice.jobs import ActorPool, BatchJob, InputSpec, StreamJob

pytestmark = pytest.mark.integration

EVENTS = 300


def test_a_late_event_is_counted_scored_exactly_and_documented_where_paths_differ(
    stream_env, tmp_path
):
    """300 events in event-time order, but for one card's second event, which is sent
    last, after the stream has scored everything else. The README's "Late events" rule:
    the late event itself gets the same features on both paths (it sees every earlier
    event of its card); the card's later events whose windows span it (and the next one,
    whose previous event it is) were scored before it arrived, so the stream's features
    for them miss it while the batch job, which sees its whole input, counts it; every
    other event is identical. The stream counts one
    late event; a replay of the topic, with the late event stored, gives the batch's."""
    agg = load_contract("fraud").features.aggregates
    window = timedelta(seconds=max(agg.windows_s))
    cfg_stream = stream_env.cfg("sluice_test_late_s")
    cfg_batch = stream_env.cfg("sluice_test_late_b")
    topic = new_topic(cfg_stream)
    produced = make_messages(EVENTS, seed=7, invalid=0.0, wrong_types=0.0, malformed=0.0,
                             topic=topic)  # fmt: skip
    table = produced.data.table
    cards = table["card_id"].to_pylist()
    card = max(set(cards), key=cards.count)
    rows = [i for i, c in enumerate(cards) if c == card]
    assert len(rows) >= 3
    late_row = rows[1]  # datagen's rows are in event-time order: its second event
    order = [i for i in range(EVENTS) if i != late_row] + [late_row]
    produced = replace(produced, payloads=[produced.payloads[i] for i in order],
                       keys=[produced.keys[i] for i in order])  # fmt: skip

    job = StreamJob(name="test_late", contract="fraud", topic=topic, consumers=1,
                    max_batch_messages=1000, max_batch_wait_ms=300, session_timeout_ms=6000,
                    num_cpus_per_consumer=0.5)  # fmt: skip
    produce(cfg_stream, produced, 0, EVENTS - 1)
    first = stream_run(job, cfg_stream, until_caught_up=True, max_seconds=240)
    assert first.stopped_by == "caught up" and first.late_events == 0, first
    produce(cfg_stream, produced, EVENTS - 1, EVENTS)
    second = stream_run(job, cfg_stream, until_caught_up=True, max_seconds=240)
    assert second.messages == 1 and second.late_events == 1, second

    write_parquet(table, tmp_path / "in" / "events.parquet")
    batch_run(BatchJob(name="test_late_batch", contract="fraud",
                       input=InputSpec(paths=(str(tmp_path / "in" / "events.parquet"),)),
                       batch_rows=1024, actors=ActorPool(min_actors=1, max_actors=1),
                       summary_path=str(tmp_path / "summary.json")), cfg_batch)  # fmt: skip

    from_stream, from_batch = predictions(cfg_stream), predictions(cfg_batch)
    assert set(from_stream) == set(from_batch) == set(table["transaction_id"].to_pylist())
    ids, times = table["transaction_id"].to_pylist(), table["event_time"].to_pylist()
    late_id, late_t = ids[late_row], times[late_row]
    # Those the late event would count in (a window spans it), and the card's next event
    # (the late one is its previous event: seconds since the previous one changes).
    after = [i for i in rows if times[i] > late_t]
    expected = {ids[i] for i in after if times[i] <= late_t + window} | {ids[after[0]]}
    assert from_stream[late_id] == from_batch[late_id]  # the late event itself: exact
    differ = {k for k in from_stream if from_stream[k][4] != from_batch[k][4]}
    assert differ == expected
    for k in differ:  # each misses exactly the late event in the counts that span it
        stream_f, batch_f = from_stream[k][4], from_batch[k][4]
        gaps = {n: batch_f[n] - stream_f[n] for n in stream_f if "_count_" in n}
        assert set(gaps.values()) <= {0.0, 1.0}, (k, gaps)

    # A replay of the whole topic (a new group): each card is loaded from Cassandra, which
    # now holds the late event, so the events it missed now count it — the batch's answer.
    again = stream_run(job.model_copy(update={"name": "test_late_replay"}), cfg_stream,
                       until_caught_up=True, max_seconds=240)  # fmt: skip
    assert again.messages == EVENTS and again.late_events == 0, again
    replayed = predictions(cfg_stream)
    assert {k for k in replayed if replayed[k][4] != from_batch[k][4]} == set()
