"""The byte-level fast paths agree with plain Python on any string array.

These paths (fixed-width regexes checked eight bytes at a time, short codes
packed into integers, hashed uniqueness) only apply to particular layouts, so
they get their own property test: equal-width columns, nulls, sliced arrays,
large_string, non-ASCII bytes and trailing newlines, compared with ``re``,
``in`` and ``Counter``. No GX here, so it runs many examples.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.validation._bytes import StringBuffers, short_key, short_keys, word_hashes
from sluice.validation._checks import _distinct_by_hash
from sluice.validation._regex import RegexMatcher

WORDS = [
    "tx_0123456789abcdef",
    "tx_0123456789abcdeF",
    "tx_0123456789abcdef\n",
    "US",
    "GB",
    "pos",
    "online",
    "é",
    "Ü",
    "",
    "a\n",
    "card_123456",
    "card_12345é",
    "m_00001",
    "abc",
]
PATTERNS = [
    "^tx_[0-9a-f]{16}$",
    r"^tx_[0-9a-f]{16}\Z",
    "^card_[0-9]{6}$",
    "^[A-Z]{2}$",
    "^m_[0-9]{5}$",
    "^a$",
    r"\A[a-c]{3}\Z",
    "^(?:US|GB)$",
]


@st.composite
def string_arrays(draw) -> pa.Array:
    width = draw(st.sampled_from([None, 2, 19]))
    if width is None:
        values = st.one_of(st.none(), st.sampled_from(WORDS), st.text(max_size=9))
    else:
        alphabet = st.sampled_from(list("tx_0123456789abcdefUSGB"))
        values = st.one_of(st.none(), st.text(alphabet, min_size=width, max_size=width))
    items = draw(st.lists(values, max_size=40))
    arr = pa.array(items, draw(st.sampled_from([pa.string(), pa.large_string()])))
    start = draw(st.integers(0, len(items)))
    return arr.slice(start, draw(st.integers(0, len(items) - start)))


@settings(max_examples=300, deadline=None)
@given(string_arrays(), st.sampled_from(PATTERNS))
def test_regex_fast_paths_match_python_re(arr, pattern):
    matcher = RegexMatcher(pattern)
    want = [v is not None and re.search(pattern, v) is not None for v in arr.to_pylist()]
    assert matcher.search_array(arr).tolist() == want
    assert matcher.search_list(arr.to_pylist()).tolist() == want


@settings(max_examples=300, deadline=None)
@given(string_arrays(), st.lists(st.sampled_from(WORDS + ["longer than seven"]), max_size=6))
def test_short_keys_membership_matches_python(arr, members):
    keys = short_keys(StringBuffers(arr))
    values = arr.to_pylist()
    if keys is None:
        assert not values or any(v is not None and len(v.encode()) > 7 for v in values)
        return
    wanted = np.array(sorted({short_key(m) for m in members} - {None}), dtype=np.uint64)
    assert np.isin(keys, wanted).tolist() == [v is not None and v in members for v in values]


@settings(max_examples=300, deadline=None)
@given(string_arrays())
def test_hash_only_proves_distinct_when_distinct(arr):
    values = arr.to_pylist()
    strings = StringBuffers(arr)
    if _distinct_by_hash(strings):
        assert None not in values and max(Counter(values).values(), default=1) == 1
    hashes = word_hashes(strings)
    if hashes is not None:
        for i, j in zip(*np.nonzero(np.equal.outer(values, values)), strict=True):
            assert hashes[i] == hashes[j]


def test_fixed_width_patterns_are_recognised():
    assert RegexMatcher("^tx_[0-9a-f]{16}$").fixed is not None
    assert RegexMatcher("^[a-c]+$").fixed is None  # variable width: RE2
    assert RegexMatcher(r"^\d{3}$").fixed is None  # \d is Unicode-aware in re
    assert RegexMatcher("^é$").fixed is None
