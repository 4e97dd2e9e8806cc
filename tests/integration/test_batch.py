"""Batch scoring end to end: files -> Ray Data -> Scorer -> real Cassandra."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipelines.alert_relay import run as relay
from pipelines.batch_score import main as batch_main
from pipelines.batch_score import run
from pipelines.train import TrainConfig, train
from sluice import metrics
from sluice.cli import app as cli
from sluice.contract import load_contract
from sluice.datagen import generate_dataset, write_csv, write_parquet
from sluice.errors import ConfigError, RowsUnaccounted, ValidationFailed
from sluice.features import InMemoryFeatureStore
from sluice.jobs import ActorPool, BatchJob, InputFormat, InputSpec
from sluice.models import SCORE_TOLERANCE, ModelRegistry
from sluice.scoring import Scorer
from sluice.store import apply_schema, schema_change, session_for
from sluice.stream import alert_topic, candidate_topic, read_topic

pytestmark = pytest.mark.integration

ROWS = 12_000


@pytest.fixture(scope="module")
def env(local_services, platform_config, ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    cfg = platform_config.model_copy(update={
        "cassandra": platform_config.cassandra.model_copy(update={"keyspace": "sluice_test_batch"}),
        "registry": platform_config.registry.model_copy(update={"root_uri": str(root / "reg")}),
        "kafka": platform_config.kafka.model_copy(update={
            "alerts_topic": f"test-batch-{uuid.uuid4().hex[:8]}-{{contract}}-alerts"}),
    })  # fmt: skip
    session = session_for(cfg.cassandra)
    schema_change(session, "DROP KEYSPACE IF EXISTS sluice_test_batch")
    apply_schema(session, cfg.cassandra, [load_contract("fraud")])  # jobs only check it
    registry = ModelRegistry.from_config(cfg)
    train(TrainConfig(rows=10_000, epochs=2), registry)
    data = generate_dataset(ROWS, seed=11, invalid_fraction=0.03)
    (root / "in").mkdir()
    write_parquet(data.table.slice(0, ROWS // 2), root / "in" / "part-0.parquet")
    write_parquet(data.table.slice(ROWS // 2), root / "in" / "part-1.parquet")
    return cfg, registry, data, root, session


def job_for(root: Path, name: str = "test_batch", **kw) -> BatchJob:
    return BatchJob(
        name=name, contract="fraud",
        input=InputSpec(paths=(str(root / "in" / "*.parquet"),)),
        batch_rows=2048, actors=ActorPool(min_actors=1, max_actors=1),
        summary_path=str(root / f"{name}.json"), **kw,
    )  # fmt: skip


def predictions(session) -> dict[str, tuple]:
    rows = session.execute(
        "SELECT transaction_id, score, model_version, features FROM sluice_test_batch.predictions",
        timeout=60,
    )
    return {r.transaction_id: (r.score, r.model_version, dict(r.features)) for r in rows}


def alerts(session) -> tuple[list[tuple], dict[str, tuple]]:
    """Every row of the alerts table (a list: a second row for a key would show) and of
    alerts_by_key: (key, decision, score, day, event_time)."""
    cols = "key, decision, score, day, event_time"
    by_day = [tuple(r) for r in session.execute(
        f"SELECT {cols} FROM sluice_test_batch.alerts", timeout=60)]  # fmt: skip
    by_key = {r[0]: tuple(r) for r in session.execute(
        f"SELECT {cols} FROM sluice_test_batch.alerts_by_key", timeout=60)}  # fmt: skip
    return by_day, by_key


def quarantine_keys(session, source: str) -> set[str]:
    rows = session.execute("SELECT source, key FROM sluice_test_batch.quarantine", timeout=60)
    return {r.key for r in rows if r.source == source}


def quarantine_days(session, source: str) -> list[tuple]:
    """(day, key, row_id) of every quarantine row of ``source``, checking that each row's
    day is its event's (its raw event_time), or its file's modification day when it has
    none: days a re-run gives again, whatever the job's clock."""
    out = []
    for r in session.execute("SELECT source, day, key, row_id, raw "
                             "FROM sluice_test_batch.quarantine", timeout=60):  # fmt: skip
        if r.source != source:
            continue
        when = json.loads(r.raw).get("event_time")
        path = r.row_id.rsplit("#", 1)[0]
        want = (datetime.fromisoformat(when).astimezone(UTC).date() if when else
                datetime.fromtimestamp(os.stat(path).st_mtime, UTC).date())  # fmt: skip
        assert r.day.date() == want, (r.key, r.row_id, r.day, when)
        out.append((r.day.date(), r.key, r.row_id))
    return sorted(out)


def valid_keys(data) -> set[str]:
    return set(data.table["transaction_id"].filter(pa.array(data.valid_mask)).to_pylist())


def test_batch_job_scores_valid_rows_and_quarantines_invalid_ones(env):
    cfg, registry, data, root, session = env
    summary = run(job_for(root), cfg)

    got = predictions(session)
    assert set(got) == valid_keys(data)
    assert quarantine_keys(session, "batch:test_batch") == data.invalid_keys
    stored = quarantine_days(session, "batch:test_batch")
    assert len(stored) == len(data.invalid_rows)  # one row per refused input row
    assert summary.rows_read == ROWS
    assert summary.rows_quarantined == len(data.invalid_rows)
    assert summary.rows_scored == ROWS - len(data.invalid_rows)
    assert summary.quarantined_by_reason and summary.rows_per_s > 0

    # The same rows scored by the contract's Scorer directly, in one go, in memory.
    direct = Scorer(load_contract("fraud"), registry, InMemoryFeatureStore()).score(data.table)
    want = dict(zip(direct.scored["key"].to_pylist(), direct.scored["score"].to_pylist(),
                    strict=True))  # fmt: skip
    assert set(want) == set(got)
    diffs = np.array([abs(got[k][0] - want[k]) for k in want])
    # Parity as documented (README "Bring your own model"): within SCORE_TOLERANCE.
    assert diffs.max() <= SCORE_TOLERANCE, f"batch scores differ from the Scorer's by {diffs.max()}"
    some = next(iter(got.values()))
    assert some[1] == "fraud/1" and len(some[2]) == len(load_contract("fraud").feature_names)

    # One alert per review or block decision, in both alert tables.
    policy = load_contract("fraud").decision
    decided = {k: policy.label_of(v[0]).value for k, v in got.items()}
    alerting = {k for k, d in decided.items() if d in ("review", "block")}
    by_day, by_key = alerts(session)
    assert alerting and alerting != set(got), "the decisions are vacuous"
    assert sorted(r[0] for r in by_day) == sorted(alerting) == sorted(by_key)
    assert {r[0]: r for r in by_day} == by_key
    assert all(r[1] == decided[r[0]] and r[3] == r[4].date() for r in by_day)

    # A re-run changes no prediction, no quarantine row and no alert, and adds none.
    again = run(job_for(root), cfg)
    assert predictions(session) == got
    assert quarantine_days(session, "batch:test_batch") == stored
    assert again.rows_read == summary.rows_read
    again_day, again_key = alerts(session)
    assert sorted(again_day) == sorted(by_day) and again_key == by_key
    # Each run proposed every alert to the relay; the alert topic holds each once.
    proposed = Counter(m.key().decode() for m in read_topic(cfg.kafka, candidate_topic(
        cfg.kafka, "fraud")))  # fmt: skip
    assert set(proposed) == alerting and min(proposed.values()) >= 2
    relayed = relay(cfg, "fraud", until_caught_up=True, max_seconds=120)
    assert (relayed.published, relayed.duplicates) == (len(alerting), sum(proposed.values())
                                                       - len(alerting))  # fmt: skip
    on_topic = [json.loads(m.value()) for m in read_topic(cfg.kafka, alert_topic(cfg.kafka,
                                                                                 "fraud"))]
    assert sorted(m["key"] for m in on_topic) == sorted(alerting)
    assert all((m["decision"], m["path"]) == (decided[m["key"]], "batch:test_batch")
               for m in on_topic)  # fmt: skip

    # What an analyst runs: a day's alerts newest first, and one transaction's alert.
    env = {"SLUICE_CASSANDRA__KEYSPACE": "sluice_test_batch"}
    newest = max(by_day, key=lambda r: (r[4], r[0]))
    listed = CliRunner().invoke(cli, ["alerts", "list", "--day", str(newest[3]), "--limit", "2"],
                                env=env)  # fmt: skip
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert 1 <= len(lines) <= 2 and newest[0] in lines[0] and newest[1] in lines[0]
    shown = CliRunner().invoke(cli, ["alerts", "show", newest[0]], env=env)
    assert shown.exit_code == 0 and newest[0] in shown.output, shown.output
    assert "reasons (feature" in shown.output and "none computed" not in shown.output
    missing = CliRunner().invoke(cli, ["alerts", "show", "tx_nope"], env=env)
    assert missing.exit_code == 2 and "no alert for transaction 'tx_nope'" in missing.output


def _actor_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_sigkilled_scoring_actor_does_not_lose_or_duplicate_rows(env):
    cfg, registry, data, root, session = env
    session.execute("TRUNCATE sluice_test_batch.predictions", timeout=60)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 240
        while not killed and time.monotonic() < deadline:
            for pid in _actor_pids("ScoreStage"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = run(job_for(root, name="test_batch_kill"), cfg)
    thread.join(timeout=5)
    assert killed, "no scoring actor was seen, so none was killed"
    assert set(predictions(session)) == valid_keys(data)
    assert quarantine_keys(session, "batch:test_batch_kill") == data.invalid_keys
    assert summary.rows_read == ROWS


def _no_keyspace(session, name: str) -> bool:
    return session.cluster.metadata.keyspaces.get(name) is None


@pytest.mark.parametrize("case", ["missing-input", "unknown-contract", "unreadable", "wrong-type"])
def test_bad_job_fails_clearly_before_any_write(env, tmp_path, case):
    cfg, _, data, _, session = env
    cfg = cfg.model_copy(update={
        "cassandra": cfg.cassandra.model_copy(update={"keyspace": "sluice_test_batch_bad"}),
    })  # fmt: skip
    (tmp_path / "in").mkdir()
    contract, expected = "fraud", ""
    if case == "missing-input":
        expected = "matches no file"
    elif case == "unknown-contract":
        write_parquet(data.table.slice(0, 10), tmp_path / "in" / "a.parquet")
        contract, expected = "nope", "nope"
    elif case == "unreadable":
        (tmp_path / "in" / "a.parquet").write_bytes(b"this is not parquet")
        expected = "cannot read"
    else:
        bad = data.table.slice(0, 10).set_column(
            data.table.schema.get_field_index("amount"), "amount",
            pa.array(["12.5"] * 10, pa.string()),
        )  # fmt: skip
        pq.write_table(bad, tmp_path / "in" / "a.parquet")
        expected = "column amount is string, but contract fraud wants double"
    job = job_for(tmp_path).model_copy(update={"contract": contract})
    with pytest.raises(ConfigError, match=expected):
        run(job, cfg)
    assert _no_keyspace(session, "sluice_test_batch_bad")


def test_main_exits_non_zero_with_the_cause(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("name: j\ncontract: fraud\ninput: {paths: [/nonexistent/*.parquet]}\n")
    assert batch_main(["--job", str(job)]) == 1
    assert "matches no file" in capsys.readouterr().err


@pytest.mark.parametrize("rows_per_bucket", [1_000_000, 2, 1])  # one bucket, 3, 5
def test_conflicting_keys_are_found_across_blocks_and_copies_are_not(ray_session,
                                                                     rows_per_bucket):  # fmt: skip
    import ray

    from pipelines.batch_keys import conflicting_keys

    table = pa.table({"transaction_id": ["a", "b", "a", "c", "c"], "v": [1, 2, 3, 4, 4]})
    ds = ray.data.from_arrow(table).repartition(5)  # every row in its own block
    found = conflicting_keys(ds, "transaction_id", table.num_rows, rows_per_bucket,
                             columns=table.column_names)
    assert found.conflicting == frozenset({"a"})
    assert (found.duplicated_rows, found.keyed_rows) == (4, 5)  # a twice, c twice


def test_key_check_reads_values_not_types_and_skips_null_keys(ray_session):
    import ray

    from pipelines.batch_keys import conflicting_keys

    # the same row read as an integer from one file and as a double from another is a
    # copy; null keys are the not-null rule's to quarantine, not a conflict
    ints = pa.table({"transaction_id": ["a", None, "b"], "v": pa.array([5, 1, 7], pa.int64())})
    floats = pa.table({"transaction_id": ["a", None, "b"], "v": [5.0, 2.0, 7.5]})
    ds = ray.data.from_arrow([ints, floats])
    found = conflicting_keys(ds, "transaction_id", 6, rows_per_bucket=2,
                             columns=ints.column_names)
    assert found.conflicting == frozenset({"b"}) and found.keyed_rows == 4


def test_the_sort_by_card_orders_every_row_in_map_tasks_of_bounded_input(ray_session,
                                                                        monkeypatch):  # fmt: skip
    """The score pass's sort: every row, ordered by card, and no map task sorting more
    than SORT_TASK_INPUT_BYTES of input (plus one block). Ray Data's default coalesced up
    to 1 GiB of blocks into one task: the 5M-row job's peak memory grew with its input."""
    import re

    import ray

    import pipelines.batch_input as batch_input

    monkeypatch.setattr(batch_input, "SORT_TASK_INPUT_BYTES", 1)  # each block a task
    table = generate_dataset(4_000, seed=8, invalid_fraction=0.0).table
    ds = ray.data.from_arrow([table.slice(i * 500, 500) for i in range(8)])
    ordered = batch_input.by_entity(ds, load_contract("fraud")).materialize()
    rows = pa.concat_tables(ray.get(ordered.to_arrow_refs()))
    entities = rows.column(batch_input.ENTITY_COLUMN).to_pylist()
    assert entities == sorted(entities) and rows.num_rows == table.num_rows
    assert sorted(rows.column("transaction_id").to_pylist()) == sorted(
        table.column("transaction_id").to_pylist())
    # Ray 2.60's stats give the sort's map side "1 tasks executed" whatever their number,
    # and one block produced per map task (1 here with Ray Data's default).
    tasks = re.search(r"SortShuffleMap\(partitions=\d+\): \d+ tasks executed, (\d+) blocks",
                      ordered.stats())  # fmt: skip
    assert tasks is not None, ordered.stats()
    assert int(tasks.group(1)) == 8, ordered.stats()


@pytest.mark.parametrize("ahead", [True, False])
def test_the_sort_runs_ahead_in_its_own_thread_only_when_asked_and_is_waited_for(ray_session,
                                                                                 ahead):
    """A small input's sort begins beside the record pass (`EntityOrder(ahead=True)`, in a
    thread of its own, before anyone asks for it); leaving the block waits for it, so a job
    failing meanwhile leaves no execution running. Not ahead, it is made when asked for."""
    import ray

    import pipelines.batch_input as batch_input

    table = generate_dataset(2_000, seed=9, invalid_fraction=0.0).table
    read_in: list[str] = []
    began = threading.Event()

    def read():
        read_in.append(threading.current_thread().name)
        began.set()
        return ray.data.from_arrow([table.slice(0, 1_000), table.slice(1_000)])

    with batch_input.EntityOrder(read, load_contract("fraud"), ahead=ahead) as order:
        # Begun at once only when ahead; otherwise nothing has called read (no thread can).
        assert (began.wait(60) if ahead else began.is_set()) is ahead
        rows = pa.concat_tables(ray.get(order.result().to_arrow_refs()))
    assert not [t for t in threading.enumerate() if t.name.startswith("sluice-sort")]
    assert read_in == (["sluice-sort_0"] if ahead else [threading.current_thread().name])
    entities = rows.column(batch_input.ENTITY_COLUMN).to_pylist()
    assert entities == sorted(entities) and rows.num_rows == table.num_rows


def quarantine_rows_of(session, source: str) -> list:
    rows = session.execute("SELECT source, key, row_id, raw FROM sluice_test_batch.quarantine",
                           timeout=60)  # fmt: skip
    return [r for r in rows if r.source == source]


def test_every_refused_row_is_its_own_quarantine_row_and_every_row_is_counted(env, tmp_path):
    """Rows whose key carries different contents (across files), and identical refused
    copies, each keep their own quarantine row; the summary's counts are the tables'."""
    cfg, _, _, _, session = env
    base = generate_dataset(300, seed=5).table
    ids = base["transaction_id"].to_pylist()
    amount = base.schema.get_field_index("amount")
    conflict = pa.concat_tables([base.slice(0, 1)] * 3)
    conflict = conflict.set_column(amount, "amount", pa.array([10.0, 20.0, 30.0]))
    copy = base.slice(1, 1).set_column(amount, "amount", pa.array([None], pa.float64()))
    (tmp_path / "in").mkdir()
    write_parquet(pa.concat_tables([base.slice(2, 148), conflict.slice(0, 2), copy]),
                  tmp_path / "in" / "a.parquet")  # fmt: skip
    write_parquet(pa.concat_tables([base.slice(150), conflict.slice(2), copy]),
                  tmp_path / "in" / "b.parquet")  # fmt: skip
    job = job_for(tmp_path, name="test_batch_rows")
    summary = run(job, cfg)

    rows = quarantine_rows_of(session, "batch:test_batch_rows")
    assert summary.rows_read == 298 + 3 + 2
    assert len(rows) == summary.rows_quarantined == 5
    conflicting = [r for r in rows if r.key == ids[0]]
    assert sorted(json.loads(r.raw)["amount"] for r in conflicting) == [10.0, 20.0, 30.0]
    assert len({r.row_id for r in rows if r.key == ids[1]}) == 2  # two copies, two rows
    assert summary.rows_scored == 298 == len(set(predictions(session)) & set(ids[2:]))

    # Table-level results over the whole input: the key repeats (5 rows share 2 keys).
    unique = next(r for r in summary.expectations
                  if r["expectation"] == "expect_column_values_to_be_unique")  # fmt: skip
    assert not unique["success"] and unique["unexpected_count"] == 5
    assert summary.expectations_failed >= 2  # the null amount fails not_be_null too
    assert metrics.BATCH_EXPECTATION_SUCCESS.value(
        source="batch:test_batch_rows", expectation="expect_column_values_to_be_unique") == 0

    again = run(job, cfg)  # a re-run upserts the same rows
    assert len(quarantine_rows_of(session, "batch:test_batch_rows")) == 5
    assert again.rows_quarantined == 5 and again.rows_scored == 298

    strict = job.model_copy(update={"name": "test_batch_strict",
                                    "fail_on_failed_expectations": True})  # fmt: skip
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_unique:"
                       "transaction_id: 5 unexpected rows"):  # fmt: skip
        run(strict, cfg)


def test_csv_ids_that_look_numeric_stay_strings(env, tmp_path):
    """CSV cells are read with the contract's types: an id of digits is the text it is
    (quarantined by the id rule, under its own key), never the number it looks like."""
    cfg, _, _, _, session = env
    table = generate_dataset(200, seed=6).table
    numeric = [f"{i:08d}" for i in range(50)]  # "00000007" is an id, not the number 7
    ids = numeric + table["transaction_id"].to_pylist()[50:]
    table = table.set_column(0, "transaction_id", pa.array(ids, pa.string()))
    write_csv(table.slice(0, 50), tmp_path / "in" / "a.csv")  # only digits in this file's ids
    write_csv(table.slice(50), tmp_path / "in" / "b.csv")
    job = job_for(tmp_path, name="test_batch_csv").model_copy(update={
        "input": InputSpec(paths=(str(tmp_path / "in" / "*.csv"),), format=InputFormat.CSV),
    })  # fmt: skip
    summary = run(job, cfg)
    assert (summary.rows_read, summary.rows_scored, summary.rows_quarantined) == (200, 150, 50)
    regex = "expect_column_values_to_match_regex:transaction_id"
    assert summary.quarantined_by_reason == {regex: 50}
    assert quarantine_keys(session, "batch:test_batch_csv") == set(numeric)
    assert set(ids[50:]) <= set(predictions(session))


def test_a_score_pass_disagreeing_with_the_record_pass_fails_naming_the_key(env):
    """The real score stage on Ray, told that the record pass refused a row it accepts
    (an injected disagreement): the job's error names the key and the expectation."""
    import ray

    from pipelines.batch_score import _cause
    from pipelines.batch_stages import ScoreStage

    cfg, _, data, _, _ = env
    rows = data.table.filter(pa.array(data.valid_mask)).slice(0, 50)
    key = rows["transaction_id"][7].as_py()
    args = dict(cfg=cfg, contract_name="fraud", model_ref="fraud/1", engine="gx",
                batch_rows=64, source="batch:test_batch_disagree", now=datetime.now(UTC),
                conflicting_keys=frozenset(), files=[], file_days=[],
                refused=pa.table({"key": [key], "expectations": [
                    "expect_column_values_to_be_between:amount"]}),
                record_engine="gx")  # fmt: skip
    ds = ray.data.from_arrow(rows).map_batches(
        ScoreStage, fn_constructor_kwargs=args, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=1),
    )  # fmt: skip
    with pytest.raises(Exception) as err:
        ds.materialize()
    found = _cause(err.value, RowsUnaccounted)
    assert found is not None, err.value
    assert f"key {key!r} was refused by the record pass (gx engine: " in str(found)
    assert "expect_column_values_to_be_between:amount) but the score pass" in str(found)
