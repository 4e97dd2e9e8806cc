"""A column as GX's pandas frame would see it, computed lazily once per validate call.

The compiled engine never builds pandas objects, but its answers must equal
GX's on ``table.to_pandas()``. The pandas facts that matter are encoded here:
NaN counts as null in float columns, an integer column with nulls is float64
(so its values print as ``1.0``), a bool column with nulls holds Python bools.

Small tables (``small=True``) are checked on Python lists: one Arrow compute
call costs 5-30 µs, more than a Python pass over a few values, and the online
path validates one row at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.validation._bytes import StringBuffers

__all__ = ["ColumnView", "canonical_array", "canonical_table", "canonical_type", "column_kind"]


def canonical_type(t: pa.DataType) -> pa.DataType | None:
    """The type both engines see a column of type ``t`` as, or None when it is ``t`` itself.

    Dictionary encoding is a storage choice of the file (Parquet writes strings that
    way), so a dictionary column is validated as its values; ``string_view`` as
    ``string`` (Arrow has few kernels for views, and pandas reads both as ``str``).
    """
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type) or t.value_type
    if pa.types.is_string_view(t):
        return pa.string()
    return None


def canonical_table(table: pa.Table) -> pa.Table:
    """``table`` with every column cast to its `canonical_type` (itself when none needs it)."""
    for i, f in enumerate(table.schema):
        target = canonical_type(f.type)
        if target is not None:
            table = table.set_column(i, f.with_type(target), canonical_array(table.column(i)))
    return table


def canonical_array(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """``values`` as their `canonical_type`: decoded by a take from the (canonical)
    dictionary, since Arrow has no take kernel for a dictionary of string views."""
    target = canonical_type(values.type)
    if target is None:
        return values
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([canonical_array(c) for c in values.chunks], target)
    if pa.types.is_dictionary(values.type):
        return canonical_array(values.dictionary).take(values.indices)
    return values.cast(target)


def column_kind(t: pa.DataType) -> str:
    """The compiled engine's coarse class of an Arrow type."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "uint64" if t == pa.uint64() else "int"
    if pa.types.is_floating(t):
        return "float" if t == pa.float64() else "float32"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_nested(t) or pa.types.is_union(t):
        return "nested"
    return "other"  # decimal, date, time, duration, binary...


_FLOATS = ("float", "float32")
_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False


class ColumnView:
    __slots__ = (
        "arr",
        "n",
        "kind",
        "small",
        "_null",
        "_null_rows",
        "_py",
        "_floats",
        "_texts",
        "_strings",
    )

    def __init__(self, arr: pa.Array, kind: str, small: bool) -> None:
        self.arr = arr
        self.n = len(arr)
        self.kind = kind
        self.small = small
        self._null: np.ndarray | None = None
        self._null_rows: list[int] | None = None
        self._py: list | None = None
        self._floats: np.ndarray | None = None
        self._texts: pa.Array | None = None
        self._strings: StringBuffers | None | bool = False

    @property
    def strings(self) -> StringBuffers | None:
        """Byte-level view of a string column (None for other types), shared by its checks."""
        if self._strings is False:
            self._strings = StringBuffers.of(self.arr)
        return self._strings  # type: ignore[return-value]

    @property
    def has_arrow_nulls(self) -> bool:
        return self.arr.null_count > 0

    @property
    def null(self) -> np.ndarray:
        """pandas ``isnull`` as a mask: Arrow nulls, plus NaN in float columns."""
        if self._null is None:
            if self.kind in _FLOATS:
                self._null = np.isnan(self.floats)
            elif self.kind == "null":
                self._null = np.ones(self.n, dtype=bool)
            elif self.arr.null_count == 0:
                self._null = np.zeros(self.n, dtype=bool)
            else:
                self._null = self.arr.is_null().to_numpy(zero_copy_only=False)
        return self._null

    @property
    def maybe_null(self) -> bool:
        """False when no row can be null to pandas (then masks need no null filtering)."""
        return self.kind in _FLOATS or self.kind == "null" or self.arr.null_count > 0

    @property
    def null_rows(self) -> list[int] | np.ndarray:
        """Row numbers where pandas sees null (a list on small tables)."""
        if self._null_rows is None:
            if not self.maybe_null:
                self._null_rows = _NO_ROWS if not self.small else []
            elif not self.small:
                self._null_rows = np.flatnonzero(self.null)
            elif self.kind in _FLOATS:
                self._null_rows = [i for i, v in enumerate(self.py) if v is None or v != v]
            elif self.arr.null_count == 0:
                self._null_rows = []
            else:
                self._null_rows = np.flatnonzero(self.null).tolist()
        return self._null_rows

    @property
    def nonnull_count(self) -> int:
        return self.n - len(self.null_rows)

    @property
    def py(self) -> list:
        """Values as Python objects; timestamps as integers in the column's unit."""
        if self._py is None:
            arr = self.arr.view(pa.int64()) if self.kind == "timestamp" else self.arr
            self._py = arr.to_pylist()
        return self._py

    @property
    def floats(self) -> np.ndarray:
        """Numeric (or bool) values as float64, NaN where null."""
        if self._floats is None:
            arr = self.arr.cast(pa.float64()) if self.kind == "bool" else self.arr
            self._floats = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        return self._floats

    def timestamps(self) -> np.ndarray:
        """Timestamp values as int64 in the column's unit (0 where null)."""
        return self.arr.view(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)

    def held_value(self, value: Any) -> Any:
        """A value as pandas holds it: ints in a column with nulls are float64."""
        if self.kind in ("int", "uint64") and self.arr.null_count and value is not None:
            return float(value)
        return value

    def texts(self) -> pa.Array:
        """``astype(str)`` of the values, as GX applies before regex and length checks.

        Strings are themselves; numbers and bools print as pandas prints the values
        it holds (``1``, ``1.0``, ``True``). One ``str`` call per distinct value.
        """
        if self._texts is None:
            if self.kind == "string":
                self._texts = self.arr
            else:
                uniques = pc.unique(self.arr.drop_null())
                printed = pa.array(
                    [str(self.held_value(v)) for v in uniques.to_pylist()], type=pa.string()
                )
                self._texts = printed.take(pc.index_in(self.arr, uniques))
        return self._texts

    def sample(self) -> Any:
        """One non-null value as a Python object, or None."""
        if self.arr.null_count == self.n:
            return None
        return self.arr.drop_null()[0].as_py()


class ColumnLayout:
    """Where a suite's columns sit in tables of one schema, and their kinds.

    Computed once per schema (a stream of requests shares one), not per call.
    ``recast`` says whether tables of this schema need `canonical_table` first.
    """

    __slots__ = ("schema", "columns", "recast")

    def __init__(self, schema: pa.Schema, names: list[str]) -> None:
        self.schema = schema
        self.recast = any(canonical_type(t) is not None for t in schema.types)
        self.columns: list[tuple[str, int, str]] = []
        for name in names:
            i = schema.get_field_index(name)
            if i >= 0:
                t = schema.field(i).type
                kind = column_kind(canonical_type(t) or t)
            else:
                kind = ""
            self.columns.append((name, i, kind))

    def views(self, table: pa.Table, small: bool) -> dict[str, ColumnView | None]:
        batches = table.to_batches()
        if len(batches) != 1:
            batches = table.combine_chunks().to_batches() if table.num_rows else []
        out: dict[str, ColumnView | None] = {}
        arrays = batches[0].columns if batches else []  # one call for all wrappers
        for name, i, kind in self.columns:
            if i < 0:
                out[name] = None
            elif arrays:
                out[name] = ColumnView(arrays[i], kind, small)
            else:
                t = self.schema.field(i).type
                out[name] = ColumnView(pa.array([], canonical_type(t) or t), kind, small)
        return out
