"""Type expectations as GX evaluates them on the pandas frame the gx engine builds.

GX answers ``expect_column_values_to_be_of_type`` / ``..._in_type_list`` from
the *pandas dtype* of the column (``table.to_pandas()``), and only for
object-dtype columns value by value (``isinstance``). So the compiled engine
must know which dtype pandas would give an Arrow column: an int64 column with
nulls becomes float64, a bool column with nulls becomes object, strings become
``StringDtype``. Rather than keep a hand-written table that drifts with pandas,
we ask pyarrow to convert a two-value sample of the column's type and apply
GX's own resolution rules (copied from GX 1.24, ``type_comparison.py`` and the
two expectations) to the result. The answer depends only on (Arrow type, has
nulls, arguments), so it is computed once and cached: no pandas on the per-call
path after the first call for a column type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa

__all__ = ["TypeVerdict", "type_verdict"]

_OBJECT_NAMES = ("object", "object_", "O", None)


@dataclass(frozen=True)
class TypeVerdict:
    """``mode="map"``: non-null rows pass iff ``value_passes`` (nulls pass), GX counts
    with ``mostly``. ``mode="aggregate"``: every row gets ``success`` (the column's
    dtype is right or wrong as a whole)."""

    mode: str
    value_passes: bool
    success: bool
    observed: str
    error: str | None = None


def _native_type_type_map(type_: str) -> tuple[type, ...] | None:
    # great_expectations/expectations/type_comparison.py::native_type_type_map
    name = type_.lower()
    table: dict[str, tuple[type, ...]] = {
        "none": (type(None),),
        "bool": (bool,),
        "int": (int,),
        "long": (int,),
        "float": (float,),
        "bytes": (bytes,),
        "complex": (complex,),
        "str": (str,),
        "string_types": (str,),
        "list": (list,),
        "dict": (dict,),
    }
    return table.get(name)


def _comp_types(type_: str, *, with_dtypes: bool) -> list[Any]:
    """GX's list of types a name stands for; ``with_dtypes`` adds dtype objects as
    ``expect_column_values_to_be_in_type_list``'s aggregate check does."""
    import numpy as np
    import pandas as pd

    comp: list[Any] = []
    try:
        comp.append(np.dtype(type_).type)
        if with_dtypes:
            comp.append(np.dtype(type_))
    except TypeError:
        try:
            pd_type = getattr(pd, type_)
        except AttributeError:
            pass
        else:
            if isinstance(pd_type, type):
                comp.append(pd_type)
                if with_dtypes:
                    try:
                        if isinstance(pd_type(), pd.core.dtypes.base.ExtensionDtype):
                            comp.append(pd_type())
                    except TypeError:
                        pass
        try:
            pd_type = getattr(pd.core.dtypes.dtypes, type_)
            if isinstance(pd_type, type):
                comp.append(pd_type)
        except AttributeError:
            pass
    native = _native_type_type_map(type_)
    if native is not None:
        comp.extend(native)
    return comp


def _map_comp_types(names: tuple[str, ...]) -> list[Any]:
    # the column_values.of_type / in_type_list map metrics (no dtype objects)
    comp: list[Any] = []
    for name in names:
        comp.extend(_comp_types(name, with_dtypes=False))
    return comp


@lru_cache(maxsize=256)
def _dtype(arrow_type: pa.DataType, has_nulls: bool) -> Any:
    """The pandas dtype ``to_pandas`` gives a column of this type (nulls can change it)."""
    values = [None] if has_nulls else []
    return pa.array(values, type=arrow_type).to_pandas().dtype


_HELD_TYPES: dict[pa.DataType, type] = {}


def _held_type(arrow_type: pa.DataType, sample: Any) -> type:
    """Python type of a non-null value in an object-dtype column of this Arrow type.

    Arrow columns are homogeneous, so one sample decides it for the type.
    """
    held = _HELD_TYPES.get(arrow_type)
    if held is None:
        series = pa.array([sample, None], type=arrow_type).to_pandas()
        held = _HELD_TYPES[arrow_type] = type(series.iloc[0])
    return held


NO_SAMPLE = object()


def type_verdict(
    expectation_type: str,
    arrow_type: pa.DataType,
    has_nulls: bool,
    sample: Any,
    argument: str | tuple[str, ...] | None,
) -> TypeVerdict:
    """Verdict of a type expectation on a column of ``arrow_type``.

    ``sample`` is one non-null value of the column as a Python object, or
    ``NO_SAMPLE`` when it has none; ``argument`` is ``type_``, or ``type_list``
    as a tuple.
    """
    dtype = _dtype(arrow_type, has_nulls)
    observed = dtype.type.__name__
    is_object = observed == "object_"
    if expectation_type == "expect_column_values_to_be_of_type":
        if is_object and argument not in _OBJECT_NAMES:
            return _map_verdict((argument,), arrow_type, sample, observed)
        return _aggregate(dtype, argument, observed, with_dtypes=False)
    # expect_column_values_to_be_in_type_list
    if is_object and argument is not None:
        return _map_verdict(argument, arrow_type, sample, observed)
    return _aggregate(dtype, argument, observed, with_dtypes=True)


@lru_cache(maxsize=1024)
def _aggregate(
    dtype: Any, argument: str | tuple[str, ...] | None, observed: str, with_dtypes: bool
) -> TypeVerdict:
    if argument is None:
        return TypeVerdict("aggregate", True, True, observed)
    if not with_dtypes:
        # of_type: GX compares the dtype's scalar type with the names' types
        success = dtype.type in _comp_types(argument, with_dtypes=False)
    else:
        # in_type_list: GX compares the dtype itself with types *and* dtypes
        comp: list[Any] = []
        for name in argument:
            comp.extend(_comp_types(name, with_dtypes=True))
        success = dtype in comp
    return TypeVerdict("aggregate", success, success, observed)


def _map_verdict(
    names: tuple[str, ...], arrow_type: pa.DataType, sample: Any, observed: str
) -> TypeVerdict:
    comp = _map_comp_types(names)
    if not comp:
        return TypeVerdict("map", False, False, observed, error=f"unrecognized type(s) {names!r}")
    if sample is NO_SAMPLE:
        return TypeVerdict("map", True, True, observed)
    passes = issubclass(_held_type(arrow_type, sample), tuple(comp))
    return TypeVerdict("map", passes, passes, observed)
