"""Bring your own model, on the stream and batch paths: one test per artifact format.

The registry holds the built-in MLP exported to ONNX, the same trainer's MLP as a
torch.export program, and a LightGBM model (300 trees) exported to ONNX by onnxmltools,
each registered by `pipelines.train` through the contract's trainer hook. For each, the
same events go through the stream job (Kafka) and the batch job (Parquet), each into a
keyspace of its own. Parity, as documented in README "Bring your own model": features,
keys and model versions bit-identical; scores equal within SCORE_TOLERANCE.
"""

from __future__ import annotations

import dataclasses

import pytest
from stream_helpers import make_messages, new_topic, predictions, produce

from pipelines.batch_score import run as batch_run
from pipelines.stream_score import run as stream_run
from pipelines.train import TrainConfig, train
from sluice.datagen import write_parquet
from sluice.jobs import ActorPool, BatchJob, InputSpec, StreamJob
from sluice.models import SCORE_TOLERANCE, ModelRegistry

pytestmark = pytest.mark.integration

EVENTS = 600
MODELS = {
    "mlp-onnx": TrainConfig(rows=4000, epochs=2, seed=11),
    "mlp-torch-export": TrainConfig(rows=4000, epochs=2, seed=11, export_format="torch-export"),
    "lightgbm-onnx": TrainConfig(rows=4000, seed=11,
                                 trainer="pipelines.train_gbm:fit_lightgbm_candidate"),
}  # fmt: skip


@pytest.fixture(scope="module")
def formats_env(stream_env, tmp_path_factory):
    """A registry of its own (promotions here must not move the package's champion)."""
    root = tmp_path_factory.mktemp("formats") / "registry"
    registry = ModelRegistry(root)
    versions = {kind: train(config, registry).version for kind, config in MODELS.items()}
    env = dataclasses.replace(stream_env, registry=registry, registry_root=root)
    return env, versions


@pytest.mark.parametrize("kind", list(MODELS))
def test_stream_and_batch_agree_for_each_model_format(formats_env, kind, tmp_path):
    env, versions = formats_env
    version = versions[kind]
    meta = env.registry.show(f"fraud/{version}").meta
    expected_format = "torch-export" if kind == "mlp-torch-export" else "onnx"
    assert meta.format == expected_format and meta.architecture["family"] == kind.split("-")[0]
    env.registry.promote("fraud", version)  # the jobs resolve fraud@champion once, to this

    cfg_stream, cfg_batch = env.cfg("sluice_test_fmt_stream"), env.cfg("sluice_test_fmt_batch")
    topic = new_topic(cfg_stream, partitions=2)
    produced = make_messages(EVENTS, seed=version, invalid=0.02, wrong_types=0.0,
                             malformed=0.0, topic=topic)  # fmt: skip
    produce(cfg_stream, produced)
    job = StreamJob(name=f"test_fmt_{version}", contract="fraud", topic=topic, consumers=1,
                    max_batch_messages=250, max_batch_wait_ms=200, gx_min_rows=10_000,
                    session_timeout_ms=6000, num_cpus_per_consumer=0.5)  # fmt: skip
    summary = stream_run(job, cfg_stream, until_caught_up=True, max_seconds=240)
    assert summary.stopped_by == "caught up" and summary.messages == EVENTS, summary

    write_parquet(produced.data.table, tmp_path / "in" / "events.parquet")
    batch = BatchJob(name=f"test_fmt_batch_{version}", contract="fraud",
                     input=InputSpec(paths=(str(tmp_path / "in" / "*.parquet"),)),
                     batch_rows=512, actors=ActorPool(min_actors=1, max_actors=1),
                     validation_engine="compiled",
                     summary_path=str(tmp_path / "summary.json"))  # fmt: skip
    batch_run(batch, cfg_batch)

    from_stream, from_batch = predictions(cfg_stream), predictions(cfg_batch)
    assert set(from_stream) == produced.valid_keys == set(from_batch)
    worst = 0.0
    for key, (card, at, score, model_version, features, decision, policy) in from_stream.items():
        b_card, b_at, b_score, b_version, b_features, b_decision, b_policy = from_batch[key]
        assert (card, at, features) == (b_card, b_at, b_features), key  # bit-identical
        assert (decision, policy) == (b_decision, b_policy), key
        assert model_version == b_version == f"fraud/{version}", key
        worst = max(worst, abs(score - b_score))
    assert worst <= SCORE_TOLERANCE, f"{kind}: scores differ by up to {worst}"
    print(f"{kind}: {len(from_stream)} events, max |score stream - batch| = {worst:.3g}")
