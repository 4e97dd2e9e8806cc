"""Messages too wide or too large, sent through Kafka: quarantined as such, bounded in Cassandra."""

from __future__ import annotations

import hashlib
import json

import pytest
from stream_helpers import make_messages, new_topic, prediction_keys, produce

from pipelines.stream_score import run as stream_run
from sluice.contract import load_contract
from sluice.jobs import StreamJob
from sluice.store import session_for

pytestmark = pytest.mark.integration

MAX_BYTES = 16_384


def test_wide_and_oversized_messages_are_quarantined_with_bounded_raw_bytes(stream_env):
    """30 valid events, then: one carrying 3 unknown fields (dropped; scored), one with 2000
    unknown fields (~30 kB: too large at 16 kB), one with 1000 (~15 kB: too wide), one of
    300 kB (too large). Each bad one is quarantined under its position with its reason, its
    stored raw bytes cut to max_message_bytes, with the original length and SHA-256."""
    cfg = stream_env.cfg("sluice_test_stream_limits")
    topic = new_topic(cfg, partitions=1)
    produced = make_messages(30, seed=59, invalid=0.0, wrong_types=0.0, malformed=0.0,
                             topic=topic)  # fmt: skip
    event = json.loads(produced.payloads[0])

    def variant(n: int, **fields) -> bytes:
        return json.dumps(dict(event, transaction_id=f"tx_{n:016x}", **fields)).encode()

    extra = variant(1, note="x", tags=[1, 2], source={"app": "pos"})
    too_big_wide = variant(2, **{f"f{i:05d}": i for i in range(2000)})
    wide = variant(3, **{f"f{i:04d}": i for i in range(1000)})
    large = variant(4, pad="y" * 300_000)
    assert len(too_big_wide) > MAX_BYTES > len(wide)
    produced.payloads += [extra, too_big_wide, wide, large]
    produced.keys += [produced.keys[0]] * 4
    produce(cfg, produced)

    job = StreamJob(name="test_limits", contract="fraud", topic=topic, consumers=1,
                    max_batch_wait_ms=300, session_timeout_ms=6000, num_cpus_per_consumer=0.5,
                    max_message_bytes=MAX_BYTES, max_unknown_fields=64)  # fmt: skip
    summary = stream_run(job, cfg, until_caught_up=True, max_seconds=240)
    assert summary.stopped_by == "caught up", summary
    assert summary.messages == 34 and summary.malformed == 3, summary

    assert prediction_keys(cfg) == produced.valid_keys | {"tx_0000000000000001"}
    ks = cfg.cassandra.keyspace
    rows = {r.key: r for r in session_for(cfg.cassandra).execute(
        f"SELECT key, raw, reasons FROM {ks}.quarantine", timeout=60)}  # fmt: skip
    at = {f"{topic}:0:{31 + i}": payload for i, payload in enumerate(produced.payloads[31:])}
    assert set(rows) == set(at)
    for key, payload in at.items():
        raw, reason = json.loads(rows[key].raw), json.loads(rows[key].reasons)[0]["value"]
        kind = "too_wide" if payload is wide else "too_large"
        assert reason.startswith(f"{kind}: "), reason
        assert raw["value_bytes"] == len(payload)
        assert raw["value_sha256"] == hashlib.sha256(payload).hexdigest()
        assert raw["value_truncated"] is (len(payload) > MAX_BYTES)
        assert raw["value"] == payload[:MAX_BYTES].decode()
        assert len(rows[key].raw) < 4 * MAX_BYTES  # text (JSON-escaped) and base64
    unknown = set(json.loads(wide)) - set(load_contract("fraud").scoring_schema.names)
    assert len(unknown) > 1000  # and the label
    assert json.loads(rows[f"{topic}:0:32"].reasons)[0]["value"] == (
        f"too_wide: {len(unknown)} fields outside the contract, over max_unknown_fields (64)"
    )
