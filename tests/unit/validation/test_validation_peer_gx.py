"""Great Expectations' own conformance cases, run against the compiled engine.

The cases live in ``tests/peer/great_expectations/``, carried in the repository
unchanged with their Apache-2.0 license (GX's
``tests/test_definitions/column_map_expectations``, release 1.2.0). Rules
(its README): a test applies when GX's pandas backend would run it
(``only_for`` / ``suppress_test_for``), the dataset is built with its
``pandas`` schema, and with ``exact_match_out: false`` only the listed keys of
``out`` are compared. A case whose column holds mixed Python types cannot be
an Arrow column at all; it is only used by error cases, where that refusal is
the expected error.

Where the compiled engine disagrees with a file, GX 1.24.1 (the pinned
version) must disagree too — `DIVERGENT` lists those cases with the reason,
and each is re-checked against GX here. `NOT_REPRESENTABLE` lists the cases
whose data cannot be an Arrow table at all.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sluice.errors import ConfigError
from sluice.validation import parse_suite, validate

PEER_DIR = Path(__file__).resolve().parents[2] / "peer" / "great_expectations"

pytestmark = pytest.mark.filterwarnings("ignore")

_STRING_DTYPE = (
    "pandas 3 gives an Arrow string column StringDtype, not object: GX 1.24.1 judges the "
    "dtype as a whole and {why}. On the file's pandas frame (object dtype) GX agrees with "
    "the file; on the frame of the Arrow table, the only one Sluice has, it does not."
)
DIVERGENT: dict[tuple[str, str], str] = {
    ("expect_column_value_lengths_to_be_between", "test_error_handling_values_are_integers"): (
        "the file expects an error for lengths of integers; GX 1.24.1 computes the lengths of "
        "str(value) and raises nothing"
    ),
    (
        "expect_column_values_to_be_in_type_list",
        "positive_test_string_values",
    ): _STRING_DTYPE.format(
        why="StringDtype is not in ['str'] resolved as (np.str_, dtype('<U'), str)"
    ),
    ("expect_column_values_to_be_in_type_list", "positive_test_string_and_int_values"): (
        _STRING_DTYPE.format(why="StringDtype is not in ['str', 'int']")
    ),
    **{
        ("expect_column_values_to_be_of_type", title): _STRING_DTYPE.format(
            why="the dtype's type (str) is not object_"
        )
        for title in (
            "dtype_object_and_type_object_still_has_aggregate_semantics",
            "dtype_object_and_type_object_still_has_aggregate_semantics_object_underscore",
            "dtype_object_and_type_object_still_has_aggregate_semantics_big_o",
        )
    },
}
# Cases whose data Sluice cannot hold: an Arrow column has one type.
NOT_REPRESENTABLE: dict[tuple[str, str], str] = {
    ("expect_column_values_to_be_between", title): (
        "the row_condition reads column 'y' = [1, ..., 9, 'abc'], which mixes ints and a "
        "string; no Arrow column can hold it"
    )
    for title in ("test_conditional_expectation_passes", "test_conditional_expectation_fails")
}


def _applies_to_pandas(test: dict) -> bool:
    # great_expectations/self_check/util.py::should_we_generate_this_test, backend "pandas"
    if "pandas" in test.get("suppress_test_for", []):
        return False
    only_for = test.get("only_for")
    if only_for and "pandas" not in only_for:
        return "pandas>=024" in only_for  # pandas is >= 1 here
    return True


def _cases() -> list[Any]:
    out = []
    for path in sorted(PEER_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        type_ = document["expectation_type"]
        for d, dataset in enumerate(document["datasets"]):
            for test in dataset["tests"]:
                if _applies_to_pandas(test):
                    case_id = f"{type_}::{test['title']}::{d}"
                    out.append(pytest.param(type_, dataset, test, id=case_id))
    return out


def _frame(dataset: dict) -> pd.DataFrame:
    """The dataset as GX's test harness builds it for pandas (self_check/util.py)."""
    frame = pd.DataFrame(copy.deepcopy(dataset["data"]))
    schema = (dataset.get("schemas") or {}).get("pandas")
    if not schema:
        return frame
    dtypes = {}
    for key, value in schema.items():
        if value.lower() in ("timestamp", "datetime64[ns, tz]"):
            frame[key] = pd.to_datetime(frame[key], utc=True)
            continue
        if value.lower() in ("datetime", "datetime64", "datetime64[ns]"):
            frame[key] = pd.to_datetime(frame[key])
            continue
        if value.lower() == "date":
            frame[key] = pd.to_datetime(frame[key]).dt.date
            value = "object"
        try:
            dtypes[key] = np.dtype(value)
        except TypeError:
            dtypes[key] = getattr(pd, value)()
    return frame.astype(dtypes)


def _table(frame: pd.DataFrame, kwargs: dict) -> pa.Table:
    """The dataset as an Arrow table. A column mixing Python types (``[1, "2"]``) has no
    Arrow form: if it is the tested column that is the error an error case expects;
    any other such column is left out (a row_condition naming it then fails)."""
    arrays = {}
    for name in frame.columns:
        try:
            arrays[name] = pa.Array.from_pandas(frame[name])
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if name == kwargs.get("column"):
                raise
    return pa.table(arrays)


def _run_compiled(type_: str, dataset: dict, test: dict):
    kwargs = dict(test["in"])
    suite = parse_suite({"name": "peer", "expectations": [{"type": type_, "kwargs": kwargs}]})
    table = _table(_frame(dataset), kwargs)
    return table, validate(table, suite, "compiled")


def _mismatches(table: pa.Table, report, test: dict) -> list[str]:
    out, summary = test["out"], report.expectations[0]
    problems = []
    if "success" in out and out["success"] != summary.success:
        problems.append(f"success {summary.success} != {out['success']}")
    if "unexpected_index_list" in out:
        want = sorted(entry["pk_index"] for entry in out["unexpected_index_list"])
        if summary.unexpected_index.tolist() != want:
            problems.append(f"rows {summary.unexpected_index.tolist()} != {want}")
    if "unexpected_list" in out:
        values = table.column(test["in"]["column"]).to_pylist()
        got = sorted((values[i] for i in summary.unexpected_index), key=str)
        if got != sorted(out["unexpected_list"], key=str):
            problems.append(f"unexpected values {got} != {out['unexpected_list']}")
    if "observed_value" in out and summary.observed_value != out["observed_value"]:
        problems.append(f"observed {summary.observed_value!r} != {out['observed_value']!r}")
    if "observed_value_list" in out and summary.observed_value not in out["observed_value_list"]:
        problems.append(f"observed {summary.observed_value!r} not in {out['observed_value_list']}")
    result = out.get("result", {})
    expected = {
        "element_count": summary.element_count,
        "unexpected_count": summary.unexpected_count,
        "unexpected_percent": 100.0 * summary.unexpected_count / max(summary.element_count, 1),
        "partial_unexpected_list": [
            table.column(test["in"]["column"])[int(i)].as_py()
            for i in summary.unexpected_index[:20]
        ],
    }
    for key, value in result.items():
        if expected[key] != value:
            problems.append(f"result.{key} {expected[key]!r} != {value!r}")
    return problems


def _expects_error(test: dict) -> bool:
    return "error" in test or "traceback_substring" in test["out"]


@pytest.mark.parametrize("type_, dataset, test", _cases())
def test_gx_conformance_case(type_: str, dataset: dict, test: dict):
    if (type_, test["title"]) in DIVERGENT:
        _check_divergence(type_, dataset, test)
        return
    if (type_, test["title"]) in NOT_REPRESENTABLE:
        with pytest.raises(pa.ArrowInvalid):
            pa.Array.from_pandas(_frame(dataset)["y"])
        with pytest.raises(ConfigError, match="row_condition names column 'y'"):
            _run_compiled(type_, dataset, test)
        return
    if _expects_error(test):
        with pytest.raises((ConfigError, pa.ArrowInvalid, pa.ArrowTypeError)):
            _run_compiled(type_, dataset, test)
        return
    table, report = _run_compiled(type_, dataset, test)
    assert _mismatches(table, report, test) == []


def _check_divergence(type_: str, dataset: dict, test: dict) -> None:
    """The compiled engine disagrees with the file, and so does GX 1.24.1: re-prove both."""
    kwargs = dict(test["in"])
    table, report = _run_compiled(type_, dataset, test)
    if _expects_error(test):
        assert report is not None  # compiled raised nothing
        gx_result = _gx_on_harness_frame(type_, dataset, test)
        assert not (gx_result.exception_info or {}).get("raised_exception"), "GX raised after all"
        assert gx_result.success == report.expectations[0].success
        rows = sorted(e["pk_index"] for e in gx_result.result["unexpected_index_list"])
        assert rows == report.expectations[0].unexpected_index.tolist()
        return
    assert _mismatches(table, report, test), "compiled now agrees with the file: drop the entry"
    suite = parse_suite({"name": "peer", "expectations": [{"type": type_, "kwargs": kwargs}]})
    gx_report = validate(table, suite, "gx")  # GX itself, on the frame of the Arrow table
    assert _mismatches(table, gx_report, test), "GX 1.24.1 agrees with the file here"
    assert gx_report.expectations[0].success == report.expectations[0].success
    assert gx_report.verdicts.tolist() == report.verdicts.tolist()
    assert gx_report.expectations[0].observed_value == report.expectations[0].observed_value


def _gx_on_harness_frame(type_: str, dataset: dict, test: dict):
    """GX's own test harness on the file's dataset (the way GX runs these cases)."""
    import great_expectations as gx
    from great_expectations.self_check.util import get_test_validator_with_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        validator = get_test_validator_with_data(
            "pandas",
            copy.deepcopy(dataset["data"]),
            schemas=copy.deepcopy(dataset.get("schemas")),
            pk_column=True,
            context=gx.get_context(mode="ephemeral"),
        )
        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["pk_index"]}
        return getattr(validator, type_)(**test["in"], result_format=result_format)


def test_every_file_is_exercised():
    types = {c.values[0] for c in _cases()}
    assert len(types) == 12, types
    assert len(_cases()) >= 140  # 144 pandas cases in release 1.2.0
