"""Regexes: a pattern Great Expectations cannot run is refused at load, for both engines.

GX 1.24's pandas metric is ``column.astype(str).str.contains(regex)``; pandas
hands the pattern to pyarrow's RE2 unless it needs Python ``re``, and RE2
refuses inline flags other than ``i m s U``, conditionals, atomic groups,
possessive quantifiers, comments and counts over 1000. Each case here is run
through GX itself (not through our loader) on a few one-column tables, so the
test states what GX really does and checks the loader refuses exactly those.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from validation_testkit import all_paths, assert_paths_agree, suite_of

from sluice.errors import ConfigError, UnsupportedExpectation
from sluice.validation import _gx

pytestmark = pytest.mark.filterwarnings("ignore")

# GX raises on at least one of these columns for the first group, on none for the second
PROBES = [["a", "b"], ["é"], ["ab\n"], [1, 2]]
GX_RAISES = [
    "(?x)a",  # inline flag RE2 lacks
    "(?a)a",
    "(?u)a",
    "(?x:a)",  # scoped flag RE2 lacks
    "(a)?(?(1)a|b)",  # conditional
    "(?>a)",  # atomic group
    "a++",  # possessive quantifiers
    "a*+",
    "a{1001}",  # repetition count over 1000
    r"\w{1001}",  # ...raised on ASCII text only: pandas uses re for non-ASCII rows
    "(?#note)a",  # comment
    "(",
]
GX_RUNS = [
    "(?i)a",
    "(?i:a)b",
    "(?-i:a)",
    "(?m)^a",
    "(?s)a.b",
    "(?=a)a{1001}",  # a lookahead sends the whole pattern to Python re
    "(?P<n>a)(?P=n)",
    r"\u0061",
    r"\d+$",
]


def gx_raises(pattern: str) -> bool:
    """Whether Great Expectations itself reports an exception for the pattern on any probe."""
    import great_expectations as gx

    runtime = _gx._get_runtime()
    suite = gx.ExpectationSuite(
        name="probe",
        expectations=[gx.expectations.ExpectColumnValuesToMatchRegex(column="s", regex=pattern)],
    )
    for values in PROBES:
        frame = pd.DataFrame({"s": values})
        with _gx._lock:
            batch = runtime.batch_definition.get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        if _gx._error_message(result.results[0].exception_info) is not None:
            return True
    return False


@pytest.mark.parametrize(
    "type_", ["expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"]
)
@pytest.mark.parametrize("pattern", GX_RAISES)
def test_a_pattern_gx_cannot_run_is_refused_at_load(pattern, type_):
    assert gx_raises(pattern), f"GX runs {pattern!r}: the case list is wrong"
    with pytest.raises(ConfigError) as caught:
        suite_of((type_, {"column": "s", "regex": pattern}))
    message = str(caught.value)
    assert f"expectations[0] ({type_})" in message
    assert "Great Expectations raises on it" in message
    assert "Invalid regular expression" in message or "missing" in message  # RE2's reason


@pytest.mark.parametrize("pattern", GX_RUNS)
def test_a_pattern_gx_runs_is_accepted_and_answered_alike(pattern):
    assert not gx_raises(pattern), f"GX raises on {pattern!r}: the case list is wrong"
    suite = suite_of(("expect_column_values_to_match_regex", {"column": "s", "regex": pattern}))
    for values in PROBES + [["a", None, "A", "aa", "é\n"]]:
        table = pa.table({"s": values})
        assert_paths_agree(all_paths(table, suite), f"{pattern!r} on {values}")


def test_re2_syntax_that_python_rejects_is_named_as_a_compiled_engine_limit():
    # GX answers \pL (RE2 runs it); Python re cannot compile it, so the compiled engine
    # refuses it at load rather than calling it an invalid regex
    assert not gx_raises(r"\pL")
    with pytest.raises(UnsupportedExpectation, match=r"RE2 syntax that Python re rejects"):
        suite_of(("expect_column_values_to_match_regex", {"column": "s", "regex": r"\pL"}))


def test_a_parameter_regex_gx_cannot_run_is_refused_by_both_engines_on_any_table():
    suite = suite_of(
        ("expect_column_values_to_match_regex", {"column": "s", "regex": {"$PARAMETER": "rx"}})
    )
    for values in (["a"], [None], []):  # GX alone would answer the last two
        table = pa.table({"s": pa.array(values, pa.string())})
        results = all_paths(table, suite, {"rx": "(?>a)"})
        for path, (kind, message) in results.items():
            assert kind == "error", (path, values, message)
            assert "Great Expectations raises on it" in message, (path, message)
