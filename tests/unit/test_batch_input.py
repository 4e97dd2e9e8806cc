"""A batch job's input files and how CSV is read, without Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from pipelines.batch_input import csv_convert_options, resolve_inputs
from sluice.contract import load_contract
from sluice.errors import ConfigError
from sluice.jobs import BatchJob, InputSpec


def job(*paths: str) -> BatchJob:
    return BatchJob(name="j", contract="fraud", input=InputSpec(paths=paths))


def test_a_file_matched_twice_is_refused(tmp_path):
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"")
    files, _ = resolve_inputs(job(str(tmp_path / "*.parquet")))
    assert files == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    with pytest.raises(ConfigError, match=r"matches .*a.parquet again; list each file once"):
        resolve_inputs(job(str(tmp_path / "*.parquet"), str(tmp_path / "a.parquet")))


def test_csv_string_columns_are_read_as_text(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("transaction_id,card_id,amount\n00042,007,12.5\n10,8,3\n")
    table = pacsv.read_csv(path, convert_options=csv_convert_options(load_contract("fraud")))
    assert table["transaction_id"].to_pylist() == ["00042", "10"]
    assert table["card_id"].to_pylist() == ["007", "8"]
    assert table.schema.field("amount").type == pa.float64()  # others: inferred, cast per row
