from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
import torch

from sluice.contract import Device, load_contract
from sluice.datagen import InvalidKind, generate_dataset, to_json_messages
from sluice.errors import ConfigError
from sluice.features import InMemoryFeatureStore
from sluice.models import ModelRegistry, _runtime, select_device
from sluice.scoring import QUARANTINE_SCHEMA, Scorer, scored_schema

NOW = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def contract():
    return load_contract("fraud")


@pytest.fixture
def scorer(trained, contract) -> Scorer:
    registry, _ = trained
    return Scorer(contract, registry, InMemoryFeatureStore())


def _keys(table: pa.Table, column: str = "key") -> list[str]:
    return table[column].to_pylist()


def test_scores_valid_rows_and_quarantines_invalid_ones(scorer, contract):
    data = generate_dataset(3000, seed=21, invalid_fraction=0.05)
    result = scorer.score(data.table, now=NOW, source="test")

    assert set(_keys(result.quarantined)) == data.invalid_keys
    assert result.scored.num_rows + result.quarantined.num_rows == data.table.num_rows
    valid_keys = data.table["transaction_id"].filter(pa.array(data.valid_mask)).to_pylist()
    assert _keys(result.scored) == valid_keys  # input order kept
    assert result.scored.schema == scored_schema(contract.feature_names)
    scores = result.scored["score"].to_numpy()
    assert np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0
    assert set(result.scored["model_version"].to_pylist()) == {"fraud/1"}
    # Every scored row carries the contract's decision for its score and the policy's id.
    assert result.scored["decision"].to_pylist() == contract.decision.decide(scores).to_pylist()
    assert set(result.scored["policy_id"].to_pylist()) == {contract.decision.policy_id}

    assert result.quarantined.schema == QUARANTINE_SCHEMA
    assert set(result.quarantined["source"].to_pylist()) == {"test"}
    assert set(result.quarantined["quarantined_at"].to_pylist()) == {NOW}
    by_key = {}
    for row in result.quarantined.to_pylist():
        raw, reasons = json.loads(row["raw"]), json.loads(row["reasons"])
        assert raw["transaction_id"] == row["key"] and reasons
        by_key.setdefault(row["key"], []).extend(reasons)
    expected = {
        InvalidKind.NAN_AMOUNT: ("expect_column_values_to_not_be_null", "amount"),
        InvalidKind.FUTURE_EVENT_TIME: ("expect_column_values_to_be_between", "event_time"),
        InvalidKind.MALFORMED_CARD_ID: ("expect_column_values_to_match_regex", "card_id"),
        InvalidKind.DUPLICATE_KEY: ("expect_column_values_to_be_unique", "transaction_id"),
    }
    keys = data.table["transaction_id"].to_pylist()
    for row, kind in data.invalid_rows.items():
        if kind in expected:
            want = dict(zip(("expectation", "column"), expected[kind], strict=True))
            assert any(want.items() <= r.items() for r in by_key[keys[row]]), (kind, by_key)


def test_gx_engine_gives_the_same_result(trained, contract):
    registry, _ = trained
    table = generate_dataset(400, seed=5, invalid_fraction=0.1).table
    compiled = Scorer(contract, registry, InMemoryFeatureStore()).score(table, now=NOW)
    gx = Scorer(contract, registry, InMemoryFeatureStore(), engine="gx").score(table, now=NOW)
    assert gx.scored.equals(compiled.scored)
    assert _keys(gx.quarantined) == _keys(compiled.quarantined)
    assert gx.quarantined["reasons"].to_pylist() == compiled.quarantined["reasons"].to_pylist()


def test_a_time_past_year_9999_is_quarantined_not_a_failed_batch(scorer):
    # A seconds column holding milliseconds, say: the suite refuses the event from the
    # future; its raw row keeps the number, and the other rows are scored.
    table = generate_dataset(20, seed=23).table
    times = table["event_time"].cast(pa.int64()).to_numpy().copy()
    times[4] = 2**62  # microseconds: year ~148,000
    table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                             pa.array(times, pa.timestamp("us", tz="UTC")))  # fmt: skip
    result = scorer.score(table, now=NOW)
    key = table["transaction_id"][4].as_py()
    assert _keys(result.quarantined) == [key] and result.scored.num_rows == 19
    raw = json.loads(result.quarantined["raw"][0].as_py())
    assert raw["event_time"] == f"{2**62} us since 1970-01-01 (past datetime's range)"


def test_a_time_past_datetimes_range_keeps_its_own_unit():
    from sluice.scoring import _cells

    far = {pa.timestamp("s"): "s", pa.date64(): "ms", pa.date32(): "day"}
    for typ, unit in far.items():
        n = 2**31 - 1 if typ == pa.date32() else 2**62 // 1000
        got = _cells(pa.chunked_array([pa.array([n, None], typ)]))
        assert got == [f"{n} {unit} since 1970-01-01 (past datetime's range)", None], typ


def test_json_records_with_wrong_types_are_quarantined_with_the_raw_value(scorer):
    table = generate_dataset(500, seed=8).table
    messages = to_json_messages(table, wrong_type_fraction=0.04, seed=1)
    records = [json.loads(p) for p in messages.payloads]
    result = scorer.score(records, now=NOW, source="kafka")
    assert set(_keys(result.quarantined)) == messages.wrong_type_keys
    assert result.scored.num_rows == 500 - len(messages.wrong_type_keys)
    for row in result.quarantined.to_pylist():
        reasons = json.loads(row["reasons"])
        assert reasons[0]["expectation"] == "expect_column_values_to_be_of_type"
        assert json.loads(row["raw"])[reasons[0]["column"]] is not None


def test_batches_replays_and_one_big_batch_give_the_same_scores(trained, contract):
    """Same row, same features and score: whole table vs time-ordered micro-batches."""
    registry, _ = trained
    table = generate_dataset(1200, seed=13).table
    whole = Scorer(contract, registry, InMemoryFeatureStore()).score(table, now=NOW).scored
    stream = Scorer(contract, registry, InMemoryFeatureStore())
    parts = [stream.score(table.slice(i, 100), now=NOW).scored for i in range(0, 1200, 100)]
    assert pa.concat_tables(parts).equals(whole)
    replay = stream.score(table.slice(300, 100), now=NOW).scored  # at-least-once redelivery
    assert replay.equals(parts[3])
    assert whole["card_count_24h"].to_numpy().max() > 0  # aggregates really looked back


def test_identical_copies_are_scored_but_conflicting_keys_are_quarantined(scorer):
    table = generate_dataset(50, seed=2).table
    replayed = pa.concat_tables([table.slice(0, 10), table.slice(0, 1)])  # row 0 twice
    result = scorer.score(replayed, now=NOW)
    assert result.quarantined.num_rows == 0 and result.scored.num_rows == 11
    assert _keys(result.scored).count(table["transaction_id"][0].as_py()) == 2

    clash = table.slice(20, 1).set_column(0, "transaction_id", table.slice(21, 1)["transaction_id"])
    result = scorer.score(pa.concat_tables([table.slice(21, 1), clash]), now=NOW)
    assert result.scored.num_rows == 0
    assert json.loads(result.quarantined["reasons"][0].as_py())[0]["expectation"] == (
        "expect_column_values_to_be_unique"
    )


def test_empty_input(scorer, contract):
    result = scorer.score(generate_dataset(0, seed=1).table, now=NOW)
    assert result.scored.schema == scored_schema(contract.feature_names)
    assert (result.scored.num_rows, result.quarantined.num_rows) == (0, 0)
    assert result.quarantined.schema == QUARANTINE_SCHEMA


def test_models_are_loaded_once_and_a_scorer_keeps_its_version(trained, contract, tmp_path):
    source, _ = trained
    root = tmp_path / "registry"
    shutil.copytree(source.root_uri, root)
    registry = ModelRegistry(root)
    first = Scorer(contract, registry, InMemoryFeatureStore())
    assert Scorer(contract, registry, InMemoryFeatureStore()).model is first.model
    artifact = registry.load_artifact("fraud/1")
    registry.promote("fraud", registry.register("fraud", artifact.data, artifact.meta))
    assert first.model.version == 1  # one scorer, one version ...
    assert Scorer(contract, registry, InMemoryFeatureStore()).model.version == 2  # a new one


def test_a_model_of_another_feature_spec_is_refused(trained, contract, tmp_path):
    source, _ = trained
    artifact = source.load_artifact("fraud/1")
    stats = artifact.meta.feature_stats.model_copy(update={"spec_hash": "f" * 16})
    meta = artifact.meta.model_copy(update={"feature_spec_hash": "f" * 16, "feature_stats": stats})
    registry = ModelRegistry(tmp_path / "registry")
    registry.promote("fraud", registry.register("fraud", artifact.data, meta))
    with pytest.raises(ConfigError, match="fraud/1 was trained on feature spec ffff"):
        Scorer(contract, registry, InMemoryFeatureStore())


def test_device_cuda_falls_back_to_cpu(trained, contract, monkeypatch):
    registry, _ = trained
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    scorer = Scorer(
        contract.model_copy(update={"device": Device.CUDA}), registry, InMemoryFeatureStore()
    )
    assert scorer.device == "cpu" and scorer.model.device == "cpu"
    assert scorer.score(generate_dataset(20, seed=4).table, now=NOW).scored.num_rows == 20
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_runtime, "_gpu_device_present", lambda: True)  # a GPU host
    assert select_device("auto") == "cuda" and select_device("cuda") == "cuda"
    assert select_device("cpu") == "cpu"


# Builds the batch record pass's Scorer on an ONNX model, splits and records a batch,
# then prints which model libraries the process imported and onnxruntime's thread count.
NO_TORCH_PROBE = """
import sys
import numpy as np
import sluice.models._runtime as runtime
runtime._gpu_device_present = lambda: False  # as on a host without a GPU (this one)
from datetime import UTC, datetime
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.features import InMemoryFeatureStore
from sluice.models import ModelRegistry
from sluice.scoring import Scorer
scorer = Scorer(load_contract("fraud"), ModelRegistry(sys.argv[1]), InMemoryFeatureStore(),
                record_events=False)
split = scorer.split(generate_dataset(200, seed=5).table, now=datetime(2025, 6, 1, tzinfo=UTC))
scorer.record(split.valid)
scored = scorer.score(generate_dataset(200, seed=6).table, now=datetime(2025, 6, 1, tzinfo=UTC))
names = scorer.model.meta.feature_names
matrix = np.column_stack([scored.scored.column(n).to_numpy() for n in names])
assert len(scorer.explainer.reasons(matrix[:5])) == 5  # what an alerting row gets
options = scorer.model.runner.session.get_session_options()
print(scorer.model.meta.format, "torch" in sys.modules, "onnxruntime" in sys.modules,
      options.intra_op_num_threads)
"""


def test_validating_recording_and_scoring_with_an_onnx_model_never_import_torch(trained):
    """Without a GPU device file, torch could not see a GPU either: the CPU is chosen
    without importing torch (~0.9 s in every batch actor's start), alerting rows are
    explained without it, and onnxruntime gets the thread budget Ray gives an actor
    (OMP_NUM_THREADS) as torch would have read it."""
    registry, _ = trained
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE, registry.root_uri], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["onnx", "False", "True", "1"], out.stdout + out.stderr


def test_record_pass_then_score_equals_score_in_one_go(trained, contract):
    """The batch job's two passes (split + record everything, then score without
    recording) give the same rows and scores as scoring with recording in one go."""
    registry, _ = trained
    data = generate_dataset(2000, seed=33, invalid_fraction=0.04)
    halves = [data.table.slice(0, 1000), data.table.slice(1000)]

    two_pass = Scorer(contract, registry, InMemoryFeatureStore(), record_events=False)
    quarantined = []
    for half in reversed(halves):  # pass 1 in any order: aggregates only look back
        valid, q, *_ = two_pass.split(half, now=NOW)
        two_pass.record(valid)
        quarantined.append(q)
    scored = pa.concat_tables([two_pass.score(h, now=NOW).scored for h in halves])

    one_go = Scorer(contract, registry, InMemoryFeatureStore()).score(data.table, now=NOW)
    assert scored.equals(one_go.scored)
    assert sorted(k for q in quarantined for k in _keys(q)) == sorted(_keys(one_go.quarantined))
