"""Table-level expectation results of a batch job: per-batch counts totalled over the input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.batch_expectations import Totals, check_supported, table_results
from sluice.errors import ConfigError
from sluice.scoring import Split
from sluice.validation import parse_suite, validate

SUITE = parse_suite({"name": "t", "expectations": [
    {"type": "expect_column_to_exist", "kwargs": {"column": "amount"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "amount", "mostly": 0.8}},
    {"type": "expect_column_values_to_be_between",
     "kwargs": {"column": "amount", "min_value": 0, "mostly": 0.76}},
    {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}},
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 25}},
]})  # fmt: skip


def batch_split(amounts: list[float | None], first_id: int) -> Split:
    table = pa.table({"id": [f"t{first_id + i}" for i in range(len(amounts))],
                      "amount": pa.array(amounts, pa.float64())})  # fmt: skip
    report = validate(table, SUITE, "compiled")
    return Split(table, table.slice(0, 0), np.empty(0, np.int64), table, report)


def test_mostly_is_judged_over_the_whole_input_not_per_batch():
    # batch a: 1 null of 10, 2 negatives of 9 non-null; batch b: 3 nulls (one NaN),
    # 2 negatives of 7 non-null
    a = batch_split([None, -1.0, -2.0, 1, 2, 3, 4, 5, 6, 7], 0)
    b = batch_split([None, float("nan"), None, -1.0, -2.0, 1, 2, 3, 4, 5], 10)
    by_type = lambda rs: {r.expectation: r for r in rs}  # noqa: E731
    per_batch = [by_type(table_results(SUITE, Totals.of(SUITE, s), duplicated_rows=0,
                                       keyed_rows=10, params={})) for s in (a, b)]  # fmt: skip
    not_null = "expect_column_values_to_not_be_null"
    assert [p[not_null].success for p in per_batch] == [True, False]  # 90%, 70%

    totals = Totals.from_json((Totals.of(SUITE, a) + Totals.of(SUITE, b)).to_json())
    assert totals.rows == 20
    results = by_type(table_results(SUITE, totals, duplicated_rows=2, keyed_rows=20, params={}))
    assert results["expect_column_to_exist"].success
    assert results[not_null].success  # 16 of 20 = 80% >= mostly 0.8
    assert results[not_null].unexpected_count == 4
    between = results["expect_column_values_to_be_between"]
    # 4 unexpected of the 16 non-null rows: 75% < 0.76 (over all 20 rows it would pass)
    assert not between.success and between.unexpected_count == 4
    assert between.unexpected_percent == 25.0 and between.mostly == 0.76
    unique = results["expect_column_values_to_be_unique"]
    assert not unique.success and unique.unexpected_count == 2 and unique.unexpected_percent == 10
    count = results["expect_table_row_count_to_be_between"]
    assert not count.success and count.observed_value == 20
    assert count.label == "expect_table_row_count_to_be_between"
    assert unique.label == "expect_column_values_to_be_unique:id"


def test_an_input_without_rows_gets_results_not_an_error():
    # Empty Parquet files or a header-only CSV: no batch reaches the record pass.
    results = table_results(SUITE, Totals(), duplicated_rows=0, keyed_rows=0, params={})
    by_type = {r.expectation: r for r in results}
    assert by_type["expect_column_values_to_not_be_null"].success
    assert by_type["expect_column_values_to_not_be_null"].unexpected_count == 0
    assert not by_type["expect_table_row_count_to_be_between"].success  # 0 rows < 25


def test_expectations_a_job_cannot_total_are_refused_before_it_reads():
    check_supported(SUITE, "id")
    with pytest.raises(ConfigError, match=r"uniqueness over its whole input for the key "
                                          r"column \(tx\) only"):  # fmt: skip
        check_supported(SUITE, "tx")
    conditioned = parse_suite({"name": "c", "expectations": [
        {"type": "expect_column_values_to_not_be_null",
         "kwargs": {"column": "amount", "mostly": 0.5, "row_condition": 'id == "a"',
                    "condition_parser": "pandas"}},
    ]})  # fmt: skip
    with pytest.raises(ConfigError, match="cannot total `mostly` of an expectation with a "
                                          "row_condition"):  # fmt: skip
        check_supported(conditioned, "id")
    for exp in ({"type": "expect_table_row_count_to_equal", "kwargs": {"value": 1}},
                {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "id"}}):
        exp["kwargs"] |= {"row_condition": "amount > 100", "condition_parser": "pandas"}
        suite = parse_suite({"name": "c", "expectations": [exp]})
        with pytest.raises(ConfigError, match=f"{exp['type']}.*counts rows and duplicate keys "
                                              "over its whole input, not over a row_condition"):
            check_supported(suite, "id")
