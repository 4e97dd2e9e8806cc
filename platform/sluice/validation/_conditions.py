"""``row_condition`` (pandas parser) for the compiled engine: a checked subset of ``df.query``.

GX evaluates ``row_condition="amount > 100"`` with ``condition_parser="pandas"``
as ``df.query(row_condition, parser="pandas")`` and runs the expectation on the
rows that pass. The compiled engine accepts the part of that language a suite
needs — a column compared with a literal (``==  !=  <  <=  >  >=``, ``in`` /
``not in`` a list), combined with ``&  |  ~  and  or  not`` and parentheses —
with pandas' null semantics (a null is unequal to everything and compares
false). Anything else is refused when the suite loads, naming the construct.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.validation._columns import ColumnView

__all__ = ["RowCondition", "UnsupportedCondition"]

_ORDER = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal"}
_NUMPY = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_FLIP = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}
_NUMERIC_KINDS = ("int", "uint64", "float", "float32", "bool")
_LITERAL = (str, int, float, bool)


class UnsupportedCondition(ValueError):
    """The condition uses syntax outside the supported subset."""


class ConditionError(Exception):
    """pandas would raise on this condition for this table (a column is missing, or a
    string is ordered against a number)."""


Evaluate = Callable[[Mapping[str, ColumnView | None], int], np.ndarray]


class RowCondition:
    """A parsed condition; ``mask(views, n)`` gives the rows that pass it."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise UnsupportedCondition(f"not a valid expression: {exc.msg}") from None
        self.columns: set[str] = set()
        self._evaluate = self._compile(tree.body)

    def mask(self, views: Mapping[str, ColumnView | None], n: int) -> np.ndarray:
        return self._evaluate(views, n)

    def _compile(self, node: ast.AST) -> Evaluate:
        if isinstance(node, ast.BoolOp):
            parts = [self._compile(v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return lambda views, n: _fold(combine, [p(views, n) for p in parts])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
            left, right = self._compile(node.left), self._compile(node.right)
            combine = np.logical_and if isinstance(node.op, ast.BitAnd) else np.logical_or
            return lambda views, n: combine(left(views, n), right(views, n))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.Invert):
            inner = self._compile(node.operand)
            return lambda views, n: ~inner(views, n)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self._comparison(node.left, node.ops[0], node.comparators[0])
        raise UnsupportedCondition(f"unsupported syntax {ast.unparse(node)!r}")

    def _comparison(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> Evaluate:
        if isinstance(right, ast.Name) and not isinstance(left, ast.Name):
            if type(op) in (ast.In, ast.NotIn):
                raise UnsupportedCondition("'in' needs the column on the left")
            left, right, op = right, left, _FLIP.get(type(op), type(op))()
        if not isinstance(left, ast.Name):
            raise UnsupportedCondition("a comparison needs a column name on one side")
        column = left.id
        self.columns.add(column)
        if type(op) in (ast.In, ast.NotIn):
            if not isinstance(right, ast.List | ast.Tuple | ast.Set):
                raise UnsupportedCondition("'in' needs a list of literals")
            values = [_literal(e) for e in right.elts]
            negate = isinstance(op, ast.NotIn)
            return lambda views, n: _membership(_view(views, column), values, n) ^ negate
        value = _literal(right)
        if type(op) not in _NUMPY:
            raise UnsupportedCondition(f"unsupported comparison {type(op).__name__}")
        kind = type(op)
        return lambda views, n: _compare(_view(views, column), kind, value, n)


def _fold(combine, masks: list[np.ndarray]) -> np.ndarray:
    out = masks[0]
    for m in masks[1:]:
        out = combine(out, m)
    return out


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value
    if isinstance(node, ast.Constant) and isinstance(node.value, _LITERAL):
        return node.value
    raise UnsupportedCondition(f"{ast.unparse(node)!r} is not a string, number or bool literal")


def _view(views: Mapping[str, ColumnView | None], column: str) -> ColumnView:
    view = views.get(column)
    if view is None:
        raise ConditionError(f"row_condition names column {column!r}, which the table lacks")
    return view


def _compare(view: ColumnView, op: type, value: Any, n: int) -> np.ndarray:
    """pandas' answer for ``column <op> value`` (df.query), nulls included."""
    numeric_literal = not isinstance(value, str)
    ordering = op not in (ast.Eq, ast.NotEq)
    kind = view.kind
    if kind in _NUMERIC_KINDS and numeric_literal:
        with np.errstate(invalid="ignore"):
            return _NUMPY[op](view.floats, float(value))  # NaN: False, but True for !=
    if kind == "string" and not numeric_literal:
        if not ordering:
            equal = pc.equal(view.arr, value).fill_null(False).to_numpy(zero_copy_only=False)
            return equal if op is ast.Eq else ~equal
        result = getattr(pc, _ORDER[op])(view.arr, pa.scalar(value, view.arr.type))
        return result.fill_null(False).to_numpy(zero_copy_only=False)
    if kind not in _NUMERIC_KINDS + ("string", "null"):
        raise ConditionError(
            f"conditions on columns of Arrow type {view.arr.type} are not supported"
        )
    if not ordering:  # a number never equals a string, and a null equals nothing
        return np.full(n, op is ast.NotEq)
    # Ordering a string against a number: pandas raises for a numeric dtype, and for
    # strings or objects (bool with nulls) as soon as one value is not null.
    elementwise = kind in ("string", "null") or (kind == "bool" and view.has_arrow_nulls)
    if not elementwise or view.nonnull_count:
        raise ConditionError(
            f"cannot order a column of Arrow type {view.arr.type} against {value!r}"
        )
    return np.zeros(n, dtype=bool)


def _membership(view: ColumnView, values: list, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for value in values:
        out |= _compare(view, ast.Eq, value, n)
    return out
