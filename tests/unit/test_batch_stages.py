"""The batch job's passes without Ray: pass 1's output rows, pass 2's agreement check."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from pipelines.batch_expectations import Totals
from pipelines.batch_input import FILE_COLUMN, ROW_COLUMN
from pipelines.batch_score import _cause
from pipelines.batch_stages import (
    RecordStage,
    ScoreStage,
    _quarantine_rows,
    _totals_rows,
    refusals,
)
from sluice.contract import load_contract
from sluice.errors import RowsUnaccounted
from sluice.scoring import QUARANTINE_SCHEMA, Split
from sluice.validation import parse_suite, validate

NOW = datetime(2025, 6, 1, tzinfo=UTC)
SUITE = parse_suite({"name": "t", "expectations": [
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "amount", "min_value": 0}},
]})  # fmt: skip


def quarantined(keys: list[str], expectation: str = "expect_column_values_to_be_between"):
    n = len(keys)
    reasons = json.dumps([{"expectation": expectation, "column": "amount", "value": "-1.0"}])
    return pa.table({
        "key": keys, "raw": [json.dumps({"transaction_id": k}) for k in keys],
        "reasons": [reasons] * n, "source": ["batch:j"] * n,
        "quarantined_at": pa.array([NOW] * n, pa.timestamp("us", tz="UTC")),
    }, schema=QUARANTINE_SCHEMA)  # fmt: skip


class FakeScorer:
    """Splits by the given verdicts: input rows in ``refuse`` are quarantined."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.suite = SUITE
        self.model = SimpleNamespace(ref="fraud/1")

    def split(self, rows: pa.Table, engine=None, **_) -> Split:
        assert FILE_COLUMN not in rows.column_names  # positions are no part of a row
        bad = np.array([i in self.refuse for i in range(rows.num_rows)])
        refused = np.flatnonzero(bad)
        keys = rows.column("transaction_id").to_pylist()
        conformed = pa.table({"transaction_id": keys, "amount": rows.column("amount"),
                              "event_time": rows.column("event_time")})
        return Split(conformed.filter(pa.array(~bad)), quarantined([keys[i] for i in refused]),
                     refused, conformed, validate(conformed, SUITE, "compiled"))  # fmt: skip

    def record(self, valid: pa.Table) -> None:
        pass


def stage(cls, refuse: set[int], **kw):
    s = cls.__new__(cls)
    s.contract, s.scorer = load_contract("fraud"), FakeScorer(refuse)
    s.source, s.now, s.conflicting_keys = "batch:j", NOW, frozenset()
    s.files = ["in/a.parquet", "in/b.parquet"]
    s.file_days = [date(2025, 5, 30), date(2025, 5, 31)]
    for k, v in kw.items():
        setattr(s, k, v)
    return s


EVENT = datetime(2024, 3, 9, 23, 59, tzinfo=UTC)
BATCH = pa.table({"transaction_id": ["t0", "t1", "t2", "t3"], "amount": [1.0, -1.0, 2.0, -3.0],
                  "event_time": pa.array([EVENT, EVENT, EVENT, None], pa.timestamp("us", "UTC")),
                  FILE_COLUMN: pa.array([0, 0, 1, 1], pa.int32()),
                  ROW_COLUMN: pa.array([7, 8, 0, 1], pa.int64())})  # fmt: skip


def test_record_pass_returns_each_refused_row_with_its_position_and_the_batch_counts():
    out = stage(RecordStage, {1, 3})(BATCH)
    rows = _quarantine_rows(out)
    assert rows["key"].to_pylist() == ["t1", "t3"]
    assert rows["row_id"].to_pylist() == ["in/a.parquet#8", "in/b.parquet#1"]
    # The event's day; t3 has no event time: its file's day. Never the job's clock (NOW).
    assert rows["day"].to_pylist() == [date(2024, 3, 9), date(2025, 5, 31)]
    [text] = _totals_rows(out).column(0).to_pylist()
    totals = Totals.from_json(text)
    assert totals.rows == 4 and totals.unexpected == {0: 2} and totals.counted == {0: 4}
    assert refusals([rows]).to_pylist() == [
        {"key": "t1", "expectations": "expect_column_values_to_be_between:amount"},
        {"key": "t3", "expectations": "expect_column_values_to_be_between:amount"}]


def test_refusals_are_each_refused_key_once_sorted_with_its_first_rows_expectations():
    first = quarantined(["t9", "t2"], "expect_column_values_to_not_be_null")
    again = quarantined(["t2", None, "t5"])  # t2's second row: another expectation
    got = refusals(iter([first, again]))
    assert got.to_pylist() == [
        {"key": "t2", "expectations": "expect_column_values_to_not_be_null:amount"},
        {"key": "t5", "expectations": "expect_column_values_to_be_between:amount"},
        {"key": "t9", "expectations": "expect_column_values_to_not_be_null:amount"},
        {"key": None, "expectations": "expect_column_values_to_be_between:amount"}]
    assert refusals(iter([])).num_rows == 0


def score_stage(refuse: set[int], refused: dict[str, str] | pa.Table) -> ScoreStage:
    if isinstance(refused, dict):
        refused = pa.table({"key": list(refused), "expectations": list(refused.values())})
    return stage(ScoreStage, refuse, refused=refused.sort_by("key"), record_engine="gx")


def test_score_pass_refusing_a_row_the_record_pass_accepted_fails_naming_key_and_rule():
    s = score_stage({1, 2}, {"t1": "expect_column_values_to_be_between:amount"})
    split = s.split(BATCH, "compiled")
    with pytest.raises(RowsUnaccounted, match=r"key 't2' passed the record pass \(gx engine\) "
                       r"but the score pass \(compiled engine\) refuses it: "
                       r"expect_column_values_to_be_between:amount"):  # fmt: skip
        s.check_agreement(split.quarantined, split.valid)


def test_score_pass_accepting_a_row_the_record_pass_refused_fails_naming_key_and_rule():
    s = score_stage({1}, {"t1": "expect_column_values_to_be_between:amount",
                          "t3": "expect_column_values_to_not_be_null:amount"})  # fmt: skip
    split = s.split(BATCH, "compiled")
    with pytest.raises(RowsUnaccounted, match=r"key 't3' was refused by the record pass \(gx "
                       r"engine: expect_column_values_to_not_be_null:amount\) but the score "
                       r"pass \(compiled engine\) accepts it"):  # fmt: skip
        s.check_agreement(split.quarantined, split.valid)


def test_passes_that_agree_pass_the_check():
    s = score_stage({1, 3}, {"t1": "x:amount", "t3": "x:amount"})
    split = s.split(BATCH, "compiled")
    s.check_agreement(split.quarantined, split.valid)
    none = score_stage(set(), refusals(iter([])))  # nothing refused by either pass
    split = none.split(BATCH, "compiled")
    none.check_agreement(split.quarantined, split.valid)


def test_keys_too_long_to_store_whole_are_matched_as_the_quarantine_stores_them():
    long_key = "t" * 5_000  # stored as its start plus a digest (storable_key)
    batch = BATCH.set_column(0, "transaction_id", pa.array([long_key, "t1", "t2", "t3"]))
    rows = _quarantine_rows(stage(RecordStage, {0, 1})(batch))
    agree = score_stage({0, 1}, refusals([rows]))
    split = agree.split(batch, "compiled")
    agree.check_agreement(split.quarantined, split.valid)  # the passes agree: no error
    differ = score_stage({1}, refusals([rows]))
    split = differ.split(batch, "compiled")
    with pytest.raises(RowsUnaccounted, match="was refused by the record pass"):
        differ.check_agreement(split.quarantined, split.valid)


def test_the_job_finds_the_disagreement_inside_rays_wrapping():
    class Wrapped(RowsUnaccounted):  # how Ray re-raises a task's error: a derived class
        pass

    try:
        try:
            raise RowsUnaccounted("key 't2' ...")
        except RowsUnaccounted as inner:
            raise RuntimeError("task failed") from Wrapped("traceback text", inner)
    except RuntimeError as exc:
        found = _cause(exc, RowsUnaccounted)
    assert type(found) is RowsUnaccounted and found.args == ("key 't2' ...",)


def test_the_job_rebuilds_the_disagreement_from_ray_datas_traceback_text():
    # Ray Data hands the driver the task's traceback as text, not the error object
    text = ("ray::MapWorker(MapBatches(ScoreStage)).submit()\n"
            "sluice.errors.RowsUnaccounted: the row with key 't2' passed ...: rule:col\n\n"
            "ray.exceptions.UserCodeException: UDF failed to process a data block.")  # fmt: skip
    found = _cause(RuntimeError(text), RowsUnaccounted)
    assert type(found) is RowsUnaccounted
    assert found.args == ("the row with key 't2' passed ...: rule:col",)
    assert _cause(RuntimeError("something else"), RowsUnaccounted) is None
