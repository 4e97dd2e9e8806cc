"""Regex search with Python ``re`` semantics, vectorized with RE2 where that is safe.

GX evaluates ``expect_column_values_to_match_regex`` as pandas
``str.contains(regex)``, i.e. ``re.search`` semantics: pandas runs it through
pyarrow's RE2 kernel unless the pattern uses a feature whose meaning differs
between the two engines, and then falls back to ``re``. We do the same, per row
rather than per column: RE2 answers the rows where it provably agrees with
``re``, and ``re`` answers the rest (rows with non-ASCII text for ``\\w \\d \\b``,
rows containing a newline for ``$``), so one odd row does not slow a batch down.
Small inputs skip Arrow entirely: a precompiled ``re`` is faster than one RE2
call (which compiles the pattern each time).

Which patterns are accepted is decided once, at suite load, for both engines
(`check_pattern`): one that GX raises on for some column (RE2 refuses it) is
refused, so no suite answers online and fails in batch.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from re import _parser  # type: ignore[attr-defined]  # the parser pandas also relies on

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.errors import ConfigError, UnsupportedExpectation
from sluice.validation._bytes import FixedWidthPattern, StringBuffers

__all__ = ["RegexMatcher", "check_pattern", "gx_refusal", "portability_problem"]

_PYTHON_ONLY_OPS = {
    _parser.ASSERT,
    _parser.ASSERT_NOT,
    _parser.GROUPREF,
    _parser.GROUPREF_EXISTS,
    _parser.ATOMIC_GROUP,
    _parser.POSSESSIVE_REPEAT,
}
# Nodes are compared as (op, arg) pairs: the parser's AT and CATEGORY codes are
# small ints numbered independently, so a bare arg would match the wrong kind.
# RE2's \s misses "\x0b" even in ASCII text: never hand these to RE2.
_SPACE = {
    (_parser.CATEGORY, _parser.CATEGORY_SPACE),
    (_parser.CATEGORY, _parser.CATEGORY_NOT_SPACE),
}
# ASCII-only in RE2, Unicode-aware in re: RE2 only for ASCII rows.
_UNICODE_SENSITIVE = {
    (_parser.CATEGORY, _parser.CATEGORY_WORD),
    (_parser.CATEGORY, _parser.CATEGORY_NOT_WORD),
    (_parser.CATEGORY, _parser.CATEGORY_DIGIT),
    (_parser.CATEGORY, _parser.CATEGORY_NOT_DIGIT),
    (_parser.AT, _parser.AT_BOUNDARY),
    (_parser.AT, _parser.AT_NON_BOUNDARY),
}
# re's "$" also matches before a final newline; RE2's only at the very end.
_NEWLINE_SENSITIVE = {(_parser.AT, _parser.AT_END)}
_UNICODE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\[uUN]")
_END_ANCHOR = re.compile(r"(?<!\\)((?:\\\\)*)\\Z")
_OPEN_COUNT = re.compile(r"(?<!\\)(?:\\\\)*\{,")


@lru_cache(maxsize=256)  # a parameterized regex is checked on every call
def portability_problem(pattern: str) -> str | None:
    """Why ``pattern`` reads differently in Python ``re`` and in RE2, or None.

    GX (through pandas) may run a pattern with either engine, so a pattern whose
    meaning depends on the engine has no single right answer: the suite loader
    refuses it and asks for an unambiguous spelling.
    """
    if _OPEN_COUNT.search(pattern):
        return "'{,n}' means {0,n} in Python but a literal '{,n}' in RE2; write {0,n}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        try:
            _parser.parse(pattern)
        except FutureWarning as exc:
            return f"{exc} (RE2 reads '[[:name:]]' as a POSIX class); escape the bracket"
    return None


def check_pattern(pattern: str, where: str) -> None:
    """Refuse, for both engines, a pattern one of them cannot run as the other does.

    `ConfigError` when GX raises on it (`gx_refusal`) or when its meaning depends
    on the regex engine (`portability_problem`); `UnsupportedExpectation` for RE2
    syntax that Python ``re`` cannot compile (GX runs it, the compiled engine not).
    """
    refusal = gx_refusal(pattern)
    if refusal is not None:
        raise ConfigError(
            f"{where}: invalid regex {pattern!r}: Great Expectations raises on it ({refusal})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "possible nested set": below
            re.compile(pattern)
    except re.error as exc:
        raise UnsupportedExpectation(
            f"{where}: regex {pattern!r} is RE2 syntax that Python re rejects ({exc}): Great "
            "Expectations runs it with RE2, the compiled engine does not support it"
        ) from None
    problem = portability_problem(pattern)
    if problem:
        raise ConfigError(f"{where}: regex {pattern!r}: {problem}")


@lru_cache(maxsize=256)
def gx_refusal(pattern: str) -> str | None:
    """Why Great Expectations 1.24 raises on ``pattern`` for some column, or None.

    GX's pandas metric is ``column.astype(str).str.contains(regex)``. pandas hands
    the pattern to pyarrow's RE2 kernel unless it needs Python ``re`` (lookarounds,
    backreferences, ``\\s``, ``\\u``; ``\\w \\d \\b`` only for non-ASCII data, ``$``
    only for data holding a newline), and RE2 refuses what it does not know:
    inline flags other than ``i m s U``, conditionals, atomic groups, possessive
    quantifiers, comments, counts over 1000. An empty or all-null column never
    reaches the kernel, so GX fails on some tables and answers on others. We run
    GX's own call on two one-value columns, ASCII text (the RE2 route wherever
    pandas may take it) and non-ASCII text with a newline (the ``re`` route), and
    return the first error.
    """
    import pandas as pd  # GX's own dependency; only suites with a regex pay for it

    for probe in ("a", "\u00e9\n"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                pd.Series([probe], dtype=object).astype(str).str.contains(pattern)
        except Exception as exc:  # whatever GX would report as the metric's exception
            return f"{type(exc).__name__}: {exc}"
    return None


class RegexMatcher:
    """``re.search(pattern, value) is not None`` over string arrays."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.compiled = re.compile(pattern)
        self.re2_pattern: str | None = None
        self.needs_ascii = False
        self.needs_no_newline = False
        self._analyse()
        self.fixed = _fixed_width(self.pattern, self.compiled)

    def _analyse(self) -> None:
        if self.compiled.flags & ~re.UNICODE or _UNICODE_ESCAPE.search(self.pattern):
            return
        nodes = list(_walk(_parser.parse(self.pattern)))
        ops = {op for op, _ in nodes}
        if any(op == _parser.SUBPATTERN and (arg[1] or arg[2]) for op, arg in nodes):
            return  # scoped flags such as (?i:...)
        args = {(op, arg) for op, arg in nodes if op in (_parser.CATEGORY, _parser.AT)}
        if ops & _PYTHON_ONLY_OPS or args & _SPACE:
            return
        if any(
            op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT)
            and arg[1] != _parser.MAXREPEAT
            and arg[1] > 1000
            for op, arg in nodes
        ):
            return  # RE2 refuses counted repeats above 1000
        candidate = _END_ANCHOR.sub(r"\1\\z", self.pattern)
        try:
            pc.match_substring_regex(pa.array([""]), candidate)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return
        self.re2_pattern = candidate
        self.needs_ascii = bool(args & _UNICODE_SENSITIVE)
        self.needs_no_newline = bool(args & _NEWLINE_SENSITIVE)

    def search_list(self, values: list) -> np.ndarray:
        """Match mask for Python strings; None gives False (callers mask nulls)."""
        search = self.compiled.search
        return np.fromiter(
            (v is not None and search(v) is not None for v in values), dtype=bool, count=len(values)
        )

    def search_array(self, arr: pa.Array, strings: StringBuffers | None = None) -> np.ndarray:
        """Match mask for an Arrow string array; nulls give False."""
        if strings is None:
            strings = StringBuffers.of(arr)
        if self.fixed is not None and strings is not None:
            out, redo = self.fixed.match(strings)
        elif self.re2_pattern is None:
            return self._search_unique(arr)
        else:
            out = pc.match_substring_regex(arr, self.re2_pattern).fill_null(False)
            out = out.to_numpy(zero_copy_only=False).astype(bool, copy=False)
            redo_mask = np.zeros(len(arr), dtype=bool)
            # buffer-wide checks first: the per-row masks are rarely needed
            if self.needs_ascii and (strings is None or not strings.is_ascii()):
                redo_mask |= ~pc.fill_null(pc.string_is_ascii(arr), True).to_numpy(
                    zero_copy_only=False
                )
            if self.needs_no_newline and (strings is None or strings.contains_byte(0x0A)):
                redo_mask |= pc.fill_null(pc.match_substring(arr, "\n"), False).to_numpy(
                    zero_copy_only=False
                )
            redo = np.flatnonzero(redo_mask)
        if redo.size:
            out[redo] = self.search_list(arr.take(pa.array(redo)).to_pylist())
        return out

    def _search_unique(self, arr: pa.Array) -> np.ndarray:
        # Python-only pattern: one re.search per distinct value, spread back by index.
        uniques = pc.unique(arr)
        hits = self.search_list(uniques.to_pylist())
        codes = pc.index_in(arr, uniques).to_numpy(zero_copy_only=False)
        out = np.zeros(len(arr), dtype=bool)
        present = ~np.isnan(codes) if codes.dtype.kind == "f" else np.ones(len(arr), dtype=bool)
        out[present] = hits[codes[present].astype(np.int64)]
        return out


def _walk(tokens):
    repeats = (_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT)
    for op, arg in tokens:
        yield op, arg
        if op == _parser.SUBPATTERN:
            yield from _walk(arg[3])
        elif op == _parser.BRANCH:
            for branch in arg[1]:
                yield from _walk(branch)
        elif op in repeats:
            yield from _walk(arg[2])
        elif op in (_parser.ATOMIC_GROUP, _parser.IN):
            yield from _walk(arg)
        elif op == _parser.GROUPREF_EXISTS:
            yield from _walk(arg[1])
            if arg[2] is not None:
                yield from _walk(arg[2])


def _fixed_width(pattern: str, compiled: re.Pattern) -> FixedWidthPattern | None:
    """The pattern as a `FixedWidthPattern` if it is one (``^tx_[0-9a-f]{16}$``), else None."""
    if compiled.flags & ~re.UNICODE:
        return None
    tokens = list(_parser.parse(pattern))
    if len(tokens) < 2 or tokens[0] not in (
        (_parser.AT, _parser.AT_BEGINNING),
        (_parser.AT, _parser.AT_BEGINNING_STRING),
    ):
        return None
    if tokens[-1] == (_parser.AT, _parser.AT_END):
        dollar = True
    elif tokens[-1] == (_parser.AT, _parser.AT_END_STRING):
        dollar = False
    else:
        return None
    classes: list[list[tuple[int, int]]] = []
    for op, arg in tokens[1:-1]:
        if op in (_parser.MAX_REPEAT, _parser.MIN_REPEAT):
            low, high, sub = arg
            if low != high or len(sub) != 1:
                return None
            one = _ascii_class(*list(sub)[0])
            if one is None:
                return None
            classes.extend([one] * low)
        else:
            one = _ascii_class(op, arg)
            if one is None:
                return None
            classes.append(one)
    if not 0 < len(classes) <= 64:
        return None
    return FixedWidthPattern(classes, dollar)


def _ascii_class(op, arg) -> list[tuple[int, int]] | None:
    if op == _parser.LITERAL:
        return [(arg, arg)] if arg < 0x80 else None
    if op != _parser.IN:
        return None
    ranges = []
    for item_op, item in arg:
        if item_op == _parser.LITERAL and item < 0x80:
            ranges.append((item, item))
        elif item_op == _parser.RANGE and item[1] < 0x80:
            ranges.append(item)
        else:
            return None  # NEGATE, CATEGORY, non-ASCII: leave it to RE2 / re
    return ranges
