"""Validation: one Great Expectations suite, two engines that agree row by row.

- ``load_suite(path)`` reads a GX 1.x suite JSON and refuses, at load, any
  expectation type or feature the compiled engine cannot evaluate
  (`UnsupportedExpectation` names it) — nothing is ever skipped.
- ``validate(table, suite, engine, params)`` runs it with ``engine="gx"``
  (Great Expectations itself, ~45 ms a call: batches) or ``"compiled"``
  (vectorized Arrow/NumPy, tens of µs for one row: online and small batches).
- ``conform(raw, schema)`` casts raw JSON/CSV input to the schema first,
  rejecting cells of the wrong type with a reason.

Semantics (identical in both engines, proven by a property test against GX):
- a row is invalid when it fails any row-level expectation; its reasons name
  the expectation, the column and the offending value. ``mostly`` changes only
  the expectation's summary, never a row's verdict, so a row gets the same
  verdict whatever batch it arrives in (online, stream or batch). One exception,
  GX's own: type, regex and length expectations on an *integer* column see it with
  pandas' dtype, which is float64 when the table holds a null in that column, so a
  ``5`` reads as ``5.0`` beside a null (the shipped suite has none; keep them to
  text columns).
- batch-level expectations (``expect_column_values_to_be_unique``, row counts)
  are computed over the table given — vectorized in the compiled engine too —
  and reported in ``report.expectations`` only; they never invalidate rows
  (a duplicate key is a replay, which idempotent upserts absorb) and are
  ``applicable=False`` for a table of fewer than two rows (a single request).
- NaN counts as null (pandas semantics): NaN amounts fail ``not_be_null``;
  ±Inf fail ``be_between``. A column missing from the table fails
  ``expect_column_to_exist`` and every expectation on it, for every row.
- when GX cannot evaluate an expectation on a column (numeric bounds on a
  string column), both engines raise `ConfigError`; a regex GX raises on for
  some column (one RE2 refuses: inline flags other than ``i m s U``,
  conditionals, atomic groups, possessive quantifiers, counts over 1000) is
  refused when the suite loads.

- ``row_condition`` (``condition_parser="pandas"``) is supported for a column
  compared with literals (``== != < <= > >=``, ``in``), combined with
  ``& | ~ and or not``, with pandas' null semantics.
- arguments are parsed once, by the suite loader (suite parameters, per call,
  by the same parse), and both engines run the parsed values.
- both engines see a table the same way: dictionary-encoded columns decoded,
  ``string_view`` as ``string``; an expectation on a column of a type it does
  not run on in both (`_schema`: e.g. ``decimal128``, ``date32`` outside
  presence, null and type checks) and a table with duplicate column names are
  refused by both with `ConfigError`, before either runs.

Limits of the compiled engine, all explicit (`UnsupportedExpectation` at load,
or `ConfigError` from both engines naming the expectation, the column and its
Arrow type): other row_condition syntax or parsers; suite parameter
expressions (only plain names); regexes whose meaning differs between Python
``re`` and RE2 (``{,n}``, ``[[:alpha:]]``) or that only RE2 compiles
(``\\pL``); regex and length checks on float32, timestamp, decimal, date or
nested columns; value sets on float32, timestamp, decimal or date columns; row
conditions on timestamp columns; ranges on uint64, decimal or date columns.
"""

from sluice.validation._api import Engine, load_suite, parse_suite, validate
from sluice.validation._conform import castable, conform
from sluice.validation._report import (
    MISSING_COLUMN,
    ExpectationSummary,
    Reason,
    ValidationReport,
)
from sluice.validation._suite import SUPPORTED_EXPECTATIONS, Expectation, Suite

__all__ = [
    "MISSING_COLUMN",
    "SUPPORTED_EXPECTATIONS",
    "Engine",
    "Expectation",
    "ExpectationSummary",
    "Reason",
    "Suite",
    "ValidationReport",
    "castable",
    "conform",
    "load_suite",
    "parse_suite",
    "validate",
]
