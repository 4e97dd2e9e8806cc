"""Which tables a suite runs on: one rule for both engines, checked before either runs.

A user's Parquet can carry columns of many Arrow types. Both engines first see
the table through `canonical_table` (dictionary-encoded columns decoded,
``string_view`` as ``string``), then `check_fit` holds every expectation to the
column types it is evaluated on identically by both (GX on the pandas frame, the
compiled engine on Arrow). A column of another type — ``decimal128``, ``date32``,
binary, nested — is refused by both with a `ConfigError` naming the expectation,
the column, its Arrow type and the types it supports, never answered by one
engine and refused (or failed with an Arrow kernel error) by the other. So is a
table with duplicate column names: GX's frame and the compiled engine's columns
would each pick a different one.

Presence, null and type expectations run on any flat column.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from sluice.errors import ConfigError
from sluice.validation._columns import canonical_type, column_kind
from sluice.validation._suite import Expectation, Suite

__all__ = ["check_fit"]

_NUMBERS = frozenset({"int", "float", "float32", "bool"})
_TEXT = frozenset({"string", "int", "uint64", "float", "bool", "null"})
_FLAT = frozenset({"string", "int", "uint64", "float", "float32", "bool", "timestamp", "null"})

# expectation type -> column kinds (`column_kind` of the canonical type) it runs on;
# None: any kind. uint64 ranges are refused: beyond 2**53 pandas compares inexactly.
_KINDS: dict[str, frozenset[str] | None] = {
    "expect_column_to_exist": None,
    "expect_column_values_to_not_be_null": None,
    "expect_column_values_to_be_null": None,
    "expect_column_values_to_be_between": _NUMBERS | {"timestamp", "string", "null"},
    "expect_column_values_to_be_in_set": _TEXT,
    "expect_column_values_to_not_be_in_set": _TEXT,
    "expect_column_values_to_match_regex": _TEXT,
    "expect_column_values_to_not_match_regex": _TEXT,
    "expect_column_value_lengths_to_be_between": _TEXT,
    "expect_column_value_lengths_to_equal": _TEXT,
    "expect_column_values_to_be_of_type": _FLAT | {"other"},
    "expect_column_values_to_be_in_type_list": _FLAT | {"other"},
    "expect_column_values_to_be_unique": _FLAT,
}
# row_condition columns: compared with literals (see _conditions)
_CONDITION_KINDS = _NUMBERS | {"uint64", "string", "null"}


def check_fit(suite: Suite, schema: pa.Schema) -> None:
    """Raise `ConfigError` unless every expectation runs on its columns' types in both engines.

    The answer depends on the schema alone (the compiled engine checks once per schema).
    """
    duplicated = sorted(name for name, count in Counter(schema.names).items() if count > 1)
    if duplicated:
        raise ConfigError(
            f"suite {suite.source}: the table has duplicate column names {duplicated}; "
            "rename or drop the duplicates before validating"
        )
    for exp in suite.expectations:
        kinds = _KINDS.get(exp.type)
        if exp.column is not None and kinds is not None:
            _check_column(suite, exp, schema, exp.column, kinds, "")
        if exp.condition is not None:
            for column in sorted(exp.condition.columns):
                _check_column(suite, exp, schema, column, _CONDITION_KINDS, "row_condition ")


def _check_column(
    suite: Suite,
    exp: Expectation,
    schema: pa.Schema,
    column: str,
    kinds: frozenset[str],
    role: str,
) -> None:
    i = schema.get_field_index(column)
    if i < 0:
        return  # a missing column fails the expectation (or the condition raises)
    t = schema.field(i).type
    kind = column_kind(canonical_type(t) or t)
    if kind not in kinds:
        raise ConfigError(
            f"suite {suite.source}: {exp.describe()} cannot be evaluated on {role}column "
            f"{column!r} of Arrow type {t}: it runs on {_describe(kinds)} columns in both "
            "engines; cast the column first"
        )


_NAMES = {
    "string": "string",
    "int": "integer",
    "uint64": "uint64",
    "float": "float64",
    "float32": "float32",
    "bool": "bool",
    "timestamp": "timestamp",
    "null": "null",
    "other": "other flat (decimal, date, binary...)",
}


def _describe(kinds: frozenset[str]) -> str:
    return ", ".join(_NAMES[k] for k in _NAMES if k in kinds)
