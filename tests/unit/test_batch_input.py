"""A batch job's input files and how CSV is read, without Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines.batch_input import (
    check_input_schema,
    csv_header,
    read_csv_text,
    resolve_inputs,
    text_nulls,
)
from sluice.contract import load_contract
from sluice.datagen import generate_dataset
from sluice.errors import ConfigError
from sluice.jobs import BatchJob, InputSpec
from sluice.validation import conform


def job(*paths: str) -> BatchJob:
    return BatchJob(name="j", contract="fraud", input=InputSpec(paths=paths))


def test_a_file_matched_twice_is_refused(tmp_path):
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"")
    files, _ = resolve_inputs(job(str(tmp_path / "*.parquet")))
    assert files == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    with pytest.raises(ConfigError, match=r"matches .*a.parquet again; list each file once"):
        resolve_inputs(job(str(tmp_path / "*.parquet"), str(tmp_path / "a.parquet")))


def test_csv_cells_are_read_as_text_and_null_tokens_null_only_in_typed_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("transaction_id,card_id,amount,extra\n00042,007,12.5,NA\n,8,NA,x\n")
    contract = load_contract("fraud")
    names = csv_header(pafs.LocalFileSystem(), str(path))
    table = text_nulls(pa.Table.from_batches(list(read_csv_text(str(path), names))), contract)
    assert table["transaction_id"].to_pylist() == ["00042", ""]  # text: an id, "" kept
    assert table["card_id"].to_pylist() == ["007", "8"]
    assert table["amount"].to_pylist() == ["12.5", None]  # cast per row by the Scorer
    assert table["extra"].to_pylist() == ["NA", "x"]  # unknown to the contract: as written


def test_a_bad_cell_past_the_first_block_quarantines_its_row_not_the_file(tmp_path):
    contract = load_contract("fraud")
    rows = generate_dataset(12_000, seed=3).table.drop(["is_fraud"])
    path = tmp_path / "a.csv"
    pacsv.write_csv(rows, path)
    text = path.read_text().splitlines()
    assert len("\n".join(text)) > 2**20  # past the reader's first block (1 MiB)
    cells = text[-1].split(",")
    cells[names_index(text[0], "amount")] = "abc"
    path.write_text("\n".join([*text[:-1], ",".join(cells)]) + "\n")
    names = csv_header(pafs.LocalFileSystem(), str(path))
    table = text_nulls(pa.Table.from_batches(list(read_csv_text(str(path), names))), contract)
    conformed, rejected = conform(table, contract.scoring_schema)
    assert conformed.num_rows == 12_000
    assert [(row, [(r.expectation, r.column, r.value) for r in reasons])
            for row, reasons in rejected] == [
        (11_999, [("expect_column_values_to_be_of_type", "amount", "'abc'")])]


def names_index(header: str, name: str) -> int:
    return [h.strip('"') for h in header.split(",")].index(name)


def test_a_parquet_column_no_value_of_which_casts_is_a_job_error_before_any_write(tmp_path):
    contract = load_contract("fraud")
    rows = generate_dataset(20, seed=2).table
    pq.write_table(rows, tmp_path / "good.parquet")
    check_input_schema(job(str(tmp_path / "good.parquet")), contract,
                       [str(tmp_path / "good.parquet")], pafs.LocalFileSystem())  # fmt: skip
    naive = rows.set_column(rows.schema.get_field_index("event_time"), "event_time",
                            rows["event_time"].cast(pa.timestamp("us")))  # no time zone
    pq.write_table(naive, tmp_path / "naive.parquet")
    with pytest.raises(ConfigError, match=r"naive.parquet column event_time is timestamp\[us\], "
                                          r"but contract fraud wants timestamp\[us, tz=UTC\]"):
        check_input_schema(job(str(tmp_path / "naive.parquet")), contract,
                           [str(tmp_path / "naive.parquet")], pafs.LocalFileSystem())  # fmt: skip
    text = rows.set_column(rows.schema.get_field_index("amount"), "amount",
                           rows["amount"].cast(pa.string()))  # text: CSV's form, not Parquet's
    pq.write_table(text, tmp_path / "text.parquet")
    with pytest.raises(ConfigError, match="column amount is string, but contract fraud wants "
                                          "double: Parquet carries types"):  # fmt: skip
        check_input_schema(job(str(tmp_path / "text.parquet")), contract,
                           [str(tmp_path / "text.parquet")], pafs.LocalFileSystem())  # fmt: skip

