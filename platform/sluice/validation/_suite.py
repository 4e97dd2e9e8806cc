"""Loading a Great Expectations 1.x suite file into a typed, checked `Suite`.

The suite file is GX's own JSON (``{"name", "expectations": [{"type", "kwargs",
"meta"}], "meta"}``), so GX can run it unchanged. Loading checks every
expectation against the set the compiled engine can evaluate: anything else is
refused here, with its name, rather than skipped at validation time.

Keyword arguments are coerced exactly as GX 1.24 coerces them: GX's expectation
models are pydantic v1 models, and the field types below are copied from them
(a test compares them with GX's own). That matters for parity — GX turns
``min_value: 0`` into ``0.0`` and ``"2020-01-01T00:00:00+00:00"`` into a
``datetime`` before comparing, and so must the compiled engine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic.v1 import (
    BaseModel,
    Extra,
    Field,
    StrictStr,
    ValidationError,
    confloat,
    root_validator,
)

from sluice.errors import ConfigError, UnsupportedExpectation
from sluice.validation._conditions import RowCondition, UnsupportedCondition
from sluice.validation._regex import check_pattern

__all__ = [
    "SUPPORTED_EXPECTATIONS",
    "Expectation",
    "Suite",
    "load_suite",
    "parse_suite",
    "resolve_params",
]

Scope = Literal["row", "batch"]

# GX core/types.py: Comparable = Union[float, SuiteParameterDict, date, datetime]
# (SuiteParameterDict is a plain dict). The order matters: pydantic v1 tries float first.
_Comparable = float | dict | date | datetime
_Mostly = confloat(ge=0.0, le=1.0) | dict
_Flag = bool | dict


class _Kwargs(BaseModel):
    """Arguments every GX expectation accepts and the engines ignore."""

    result_format: Any = None
    catch_exceptions: bool | None = None
    include_config: bool | None = None

    class Config:
        extra = Extra.forbid


class _ColumnKwargs(_Kwargs):
    column: StrictStr = Field(min_length=1)


class _ColumnExistKwargs(_ColumnKwargs):
    column_index: int | dict | None = None


class _MapKwargs(_ColumnKwargs):
    mostly: _Mostly = 1.0
    row_condition: Any = None
    condition_parser: Any = None


class _BetweenKwargs(_MapKwargs):
    min_value: _Comparable | None = None
    max_value: _Comparable | None = None
    strict_min: _Flag = False
    strict_max: _Flag = False

    @root_validator(skip_on_failure=True)
    def _one_bound(cls, values: dict) -> dict:
        if values.get("min_value") is None and values.get("max_value") is None:
            raise ValueError("min_value and max_value cannot both be None")
        if values.get("min_value") == {} or values.get("max_value") == {}:
            raise ValueError("values cannot be empty strings")
        return values


class _SetKwargs(_MapKwargs):
    value_set: list | dict


class _MatchRegexKwargs(_MapKwargs):
    regex: str | dict = "(?s).*"


class _NotMatchRegexKwargs(_MapKwargs):
    regex: str | dict


class _LengthsBetweenKwargs(_MapKwargs):
    min_value: int | dict | None = None
    max_value: int | dict | None = None
    strict_min: _Flag = False
    strict_max: _Flag = False

    @root_validator(skip_on_failure=True)
    def _one_bound(cls, values: dict) -> dict:
        if values.get("min_value") is None and values.get("max_value") is None:
            raise ValueError("min_value and max_value cannot both be None")
        return values


class _LengthsEqualKwargs(_MapKwargs):
    value: float | dict


class _OfTypeKwargs(_MapKwargs):
    type_: str | dict


class _InTypeListKwargs(_MapKwargs):
    type_list: list[str] | dict | None = None


class _RowCountBetweenKwargs(_Kwargs):
    min_value: int | dict | datetime | None = None
    max_value: int | dict | datetime | None = None
    strict_min: _Flag = False
    strict_max: _Flag = False
    row_condition: Any = None
    condition_parser: Any = None

    @root_validator(skip_on_failure=True)
    def _ordered(cls, values: dict) -> dict:
        # GX's own model refuses it (ExpectTableRowCountToBeBetween._root_validate)
        lo, hi = values.get("min_value"), values.get("max_value")
        if isinstance(lo, int | datetime) and isinstance(hi, int | datetime) and lo > hi:
            raise ValueError(f"min_value ({lo}) must be less than or equal to max_value ({hi})")
        return values


class _RowCountEqualKwargs(_Kwargs):
    value: int | dict
    row_condition: Any = None
    condition_parser: Any = None


# type -> (kwargs model, scope). "row": a row's verdict depends on that row alone;
# "batch": on the whole table (uniqueness, row count), so a single row cannot fail it.
SUPPORTED_EXPECTATIONS: dict[str, tuple[type[_Kwargs], Scope]] = {
    "expect_column_to_exist": (_ColumnExistKwargs, "row"),
    "expect_column_values_to_not_be_null": (_MapKwargs, "row"),
    "expect_column_values_to_be_null": (_MapKwargs, "row"),
    "expect_column_values_to_be_between": (_BetweenKwargs, "row"),
    "expect_column_values_to_be_in_set": (_SetKwargs, "row"),
    "expect_column_values_to_not_be_in_set": (_SetKwargs, "row"),
    "expect_column_values_to_match_regex": (_MatchRegexKwargs, "row"),
    "expect_column_values_to_not_match_regex": (_NotMatchRegexKwargs, "row"),
    "expect_column_value_lengths_to_be_between": (_LengthsBetweenKwargs, "row"),
    "expect_column_value_lengths_to_equal": (_LengthsEqualKwargs, "row"),
    "expect_column_values_to_be_of_type": (_OfTypeKwargs, "row"),
    "expect_column_values_to_be_in_type_list": (_InTypeListKwargs, "row"),
    "expect_column_values_to_be_unique": (_MapKwargs, "batch"),
    "expect_table_row_count_to_be_between": (_RowCountBetweenKwargs, "batch"),
    "expect_table_row_count_to_equal": (_RowCountEqualKwargs, "batch"),
}

_IGNORED = frozenset({"result_format", "catch_exceptions", "include_config"})
_PARAMETER = "$PARAMETER"
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, eq=False)
class Expectation:
    """One checked expectation of a suite.

    ``kwargs`` are GX-coerced, with ``{"$PARAMETER": name}`` left in place where a
    suite parameter is used; ``resolve_params`` substitutes them per call.
    """

    index: int
    type: str
    column: str | None
    kwargs: Mapping[str, Any]
    scope: Scope
    parameters: frozenset[str] = frozenset()
    meta: Mapping[str, Any] = field(default_factory=dict)
    condition: RowCondition | None = None  # row_condition (pandas parser), parsed

    def describe(self) -> str:
        on = f" on column {self.column!r}" if self.column is not None else ""
        return f"expectation #{self.index} {self.type}{on}"


@dataclass(frozen=True, eq=False)
class Suite:
    """A loaded suite. Engines cache their per-suite state in ``_cache``."""

    name: str
    expectations: tuple[Expectation, ...]
    source: str
    document: Mapping[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def row_expectations(self) -> tuple[Expectation, ...]:
        """The expectations that give a verdict per row (the columns of `verdicts`)."""
        return tuple(e for e in self.expectations if e.scope == "row")

    @property
    def parameters(self) -> frozenset[str]:
        return frozenset().union(*(e.parameters for e in self.expectations))


def load_suite(path: str | Path) -> Suite:
    """Read and check a GX 1.x suite JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"suite {p}: cannot read the file ({exc.strerror})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"suite {p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    return parse_suite(document, source=str(p))


def parse_suite(document: Any, source: str = "<suite>") -> Suite:
    """Check a suite given as the decoded JSON document."""
    if not isinstance(document, dict):
        raise ConfigError(f"suite {source}: top level must be an object, got {_kind(document)}")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"suite {source}: 'name' must be a non-empty string, got {name!r}")
    raw = document.get("expectations")
    if not isinstance(raw, list):
        raise ConfigError(f"suite {source}: 'expectations' must be a list, got {_kind(raw)}")
    expectations = tuple(_parse_expectation(i, item, source) for i, item in enumerate(raw))
    return Suite(name=name, expectations=expectations, source=source, document=document)


def _parse_expectation(index: int, item: Any, source: str) -> Expectation:
    where = f"suite {source}: expectations[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be an object, got {_kind(item)}")
    type_ = item.get("type", item.get("expectation_type"))
    if not isinstance(type_, str):
        raise ConfigError(f"{where}: 'type' must be a string, got {type_!r}")
    if type_ not in SUPPORTED_EXPECTATIONS:
        raise UnsupportedExpectation(
            f"{where}: expectation type {type_!r} is not supported by the compiled engine "
            f"(supported: {', '.join(sorted(SUPPORTED_EXPECTATIONS))})"
        )
    kwargs = item.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where} ({type_}): 'kwargs' must be an object, got {_kind(kwargs)}")
    model, scope = SUPPORTED_EXPECTATIONS[type_]
    if "column" in model.__fields__ and "column" not in kwargs:
        raise ConfigError(f"{where} ({type_}): missing required argument 'column'")
    parameters = frozenset(_parameters_in(kwargs, f"{where} ({type_})"))
    coerced = _coerce(model, kwargs, f"{where} ({type_})")
    condition = _condition(coerced, f"{where} ({type_})")
    check_values(type_, coerced, f"{where} ({type_})")
    if type_.endswith("_in_set") and isinstance(coerced.get("value_set"), list):
        for value in coerced["value_set"]:
            if not isinstance(value, str | int | float | bool | None):
                raise ConfigError(
                    f"{where} ({type_}): value_set items must be strings, numbers, booleans or "
                    f"null, got {value!r}"
                )
    meta = item.get("meta") or {}
    return Expectation(
        index=index,
        type=type_,
        column=coerced.get("column"),
        kwargs={k: v for k, v in coerced.items() if k not in _IGNORED},
        scope=scope,
        parameters=parameters,
        meta=meta if isinstance(meta, dict) else {},
        condition=condition,
    )


_PARSERS = ("great_expectations", "great_expectations__experimental__", "pandas", "spark")


def _condition(kwargs: Mapping[str, Any], where: str) -> RowCondition | None:
    """The row_condition, parsed; GX's own rules first, then the supported subset."""
    text, parser = kwargs.get("row_condition"), kwargs.get("condition_parser")
    if parser is not None and parser not in _PARSERS:
        raise ConfigError(
            f"{where}: condition_parser {parser!r} is not a valid enumeration member "
            f"(one of {', '.join(_PARSERS)})"
        )
    if text is None:
        return None
    if not isinstance(text, str):
        raise UnsupportedExpectation(
            f"{where}: row_condition must be a string for the compiled engine, got {text!r}"
        )
    if parser is None:
        raise ConfigError(f"{where}: row_condition needs condition_parser (GX requires it)")
    if parser != "pandas":
        raise UnsupportedExpectation(
            f"{where}: row_condition with condition_parser {parser!r} is not supported by "
            "the compiled engine (only 'pandas')"
        )
    try:
        return RowCondition(text)
    except UnsupportedCondition as exc:
        raise UnsupportedExpectation(
            f"{where}: row_condition {text!r} is not supported by the compiled engine: {exc}"
        ) from None


def _coerce(model: type[_Kwargs], kwargs: Mapping[str, Any], where: str) -> dict[str, Any]:
    try:
        parsed = model(**kwargs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: invalid arguments: {problems}") from exc
    # Keep only what the file set (plus coerced defaults GX would apply anyway).
    return {name: getattr(parsed, name) for name in model.__fields__ if name in kwargs} | {
        name: getattr(parsed, name)
        for name in ("mostly", "strict_min", "strict_max", "regex")
        if name in model.__fields__ and name not in kwargs
    }


def _parameters_in(kwargs: Mapping[str, Any], where: str) -> set[str]:
    found: set[str] = set()
    for key, value in kwargs.items():
        if isinstance(value, dict):
            name = value.get(_PARAMETER)
            if set(value) != {_PARAMETER} or not isinstance(name, str):
                raise ConfigError(
                    f"{where}: argument {key!r} is an object but not a suite parameter "
                    f'{{"$PARAMETER": "<name>"}}: {value!r}'
                )
            if not _PARAM_NAME.match(name):
                raise ConfigError(
                    f"{where}: argument {key!r} uses suite parameter {name!r}; only plain "
                    "parameter names are supported, not expressions"
                )
            found.add(name)
    return found


def check_bound_order(lo: Any, hi: Any, where: str) -> None:
    try:
        inverted = lo > hi
    except TypeError:
        raise ConfigError(
            f"{where}: min_value {lo!r} and max_value {hi!r} cannot be compared"
        ) from None
    if inverted:
        raise ConfigError(f"{where}: min_value {lo!r} is greater than max_value {hi!r}")


def resolve_params(
    expectation: Expectation, params: Mapping[str, Any], suite_source: str
) -> Mapping[str, Any]:
    """The expectation's kwargs with suite parameters substituted and GX-coerced (its
    kwargs as they are when it names no parameter: checked once, at load)."""
    if not expectation.parameters:
        return expectation.kwargs
    raw = dict(expectation.kwargs)
    plain_datetimes = True
    for key, value in expectation.kwargs.items():
        if isinstance(value, dict):
            name = value[_PARAMETER]
            if name not in params:
                where = f"suite {suite_source}: {expectation.describe()}"
                raise ConfigError(f"{where}: suite parameter {name!r} was not given")
            raw[key] = params[name]
            plain_datetimes = plain_datetimes and isinstance(raw[key], datetime)
    if plain_datetimes:
        # pydantic v1 passes a datetime through Union[float, dict, date, datetime]
        # unchanged (it is a date instance): skip the model, ~15 us a call.
        resolved = raw
    else:
        model, _ = SUPPORTED_EXPECTATIONS[expectation.type]
        resolved = _coerce(model, raw, f"suite {suite_source}: {expectation.describe()}")
    check_values(expectation.type, resolved, f"suite {suite_source}: {expectation.describe()}")
    return resolved


def check_values(type_: str, kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse values GX would raise on when it runs them (on some tables, for some): the
    same check at load and, for suite parameters, per call, whichever engine runs."""
    if type_ == "expect_column_values_to_be_between":
        check_bound_order_if_any(kwargs, where)
    if type_.startswith("expect_table_row_count"):  # a time as a count: as the loader says
        for key in ("value", "min_value", "max_value"):
            if isinstance(kwargs.get(key), datetime):
                raise ConfigError(f"{where}: {key} must be an integer, got a datetime")
    regex = kwargs.get("regex")
    if type_.endswith("match_regex") and isinstance(regex, str):
        check_pattern(regex, where)


def check_bound_order_if_any(kwargs: Mapping[str, Any], where: str) -> None:
    """Between only: GX raises when min_value > max_value or they cannot be compared."""
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is None or hi is None or isinstance(lo, dict) or isinstance(hi, dict):
        return
    check_bound_order(lo, hi, where)


def default_params() -> dict[str, Any]:
    """Parameters every suite may use without the caller passing them."""
    return {"now": datetime.now(UTC)}


def _kind(value: Any) -> str:
    return type(value).__name__
