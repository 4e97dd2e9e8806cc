"""Byte-level views of Arrow string arrays, for checks faster than one kernel call per row.

Identifiers and codes (``tx_…``, ``card_…``, ``US``) are short ASCII strings,
usually all of one length. Seen as an (rows × width) byte matrix they can be
checked eight bytes at a time (`FixedWidthPattern`) or packed into integers
for set membership (`packed_keys`) — several times faster than RE2 or a hash
lookup per row. Everything here works on the array's own buffers, without
copying when the layout allows it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "FixedWidthPattern",
    "StringBuffers",
    "word_hashes",
    "packed_keys",
    "short_key",
    "short_keys",
]

_HIGH = np.uint64(0x8080808080808080)


class StringBuffers:
    """Offsets, lengths (in bytes) and data of a string / large_string array."""

    __slots__ = ("n", "offsets", "lengths", "data", "valid", "_matrices")

    def __init__(self, arr: pa.Array) -> None:
        self.n = len(arr)
        width = 8 if pa.types.is_large_string(arr.type) else 4
        validity, offsets, data = arr.buffers()[:3]
        self.offsets = np.frombuffer(
            offsets,
            dtype=np.int64 if width == 8 else np.int32,
            count=self.n + 1,
            offset=arr.offset * width,
        )
        self.lengths = np.diff(self.offsets)
        self.data = (
            np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        )
        self.valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
        self._matrices: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def of(cls, arr: pa.Array) -> StringBuffers | None:
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            return cls(arr)
        return None

    def region(self) -> np.ndarray:
        return self.data[int(self.offsets[0]) : int(self.offsets[-1])]

    def contains_byte(self, value: int) -> bool:
        region = self.region()
        return bool(region.size) and bool(np.any(region == value))

    def is_ascii(self) -> bool:
        region = self.region()
        return not region.size or int(region.max()) < 0x80

    def matrix(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, bytes) of the non-null rows exactly ``width`` bytes long."""
        if width not in self._matrices:
            fits = self.lengths == width
            if self.valid is not None:
                fits &= self.valid
            rows = np.flatnonzero(fits)
            start = int(self.offsets[0])
            if rows.size == self.n and int(self.offsets[-1]) - start == self.n * width:
                block = self.data[start : start + self.n * width].reshape(self.n, width)
            elif rows.size == 0 or width == 0:
                block = np.zeros((rows.size, width), np.uint8)
            else:
                block = sliding_window_view(self.data, width)[self.offsets[rows]]
            self._matrices[width] = (rows, block)
        return self._matrices[width]


def word_hashes(strings: StringBuffers) -> np.ndarray | None:
    """A 64-bit hash per row when every row is non-null and of one width, else None.

    Equal strings get equal hashes, so distinct hashes prove distinct strings; a
    repeated hash only means "look closer".
    """
    if strings.n == 0 or strings.valid is not None:
        return None
    width = int(strings.lengths[0])
    rows, block = strings.matrix(width)
    if rows.size != strings.n:
        return None
    padded = np.zeros((strings.n, -(-width // 8) * 8 or 8), np.uint8)
    padded[:, :width] = block
    words = padded.view("<u8")
    hashes = np.full(strings.n, np.uint64(0xCBF29CE484222325))
    for k in range(words.shape[1]):
        hashes ^= words[:, k]
        hashes *= np.uint64(0x100000001B3)  # FNV-1a's prime, on 8-byte words
    return hashes


def packed_keys(block: np.ndarray) -> np.ndarray:
    """Each row of a (rows × width ≤ 8) byte matrix as one integer (bytes little-endian)."""
    rows, width = block.shape
    if width in (1, 2, 4, 8) and block.flags.c_contiguous:
        return block.view(f"<u{width}").ravel().astype(np.uint64, copy=False)
    padded = np.zeros((rows, 8), np.uint8)
    padded[:, :width] = block
    return padded.view("<u8").ravel()


_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)], dtype=np.uint64)


def short_keys(strings: StringBuffers) -> np.ndarray | None:
    """Every row as one uint64 (its bytes, then its length in the top byte) when every
    string is at most 7 bytes long; None otherwise. Null rows get an impossible key."""
    if strings.n == 0 or int(strings.lengths.max()) > 7:
        return None
    start, end = int(strings.offsets[0]), int(strings.offsets[-1])
    padded = np.zeros(end - start + 8, np.uint8)
    padded[: end - start] = strings.data[start:end]
    # an overlapping uint64 view: word i holds the 8 bytes starting at byte i
    words = np.ndarray(shape=(end - start + 1,), dtype="<u8", buffer=padded, strides=(1,))
    keys = words[strings.offsets[:-1] - start] & _LOW_BYTES[strings.lengths]
    keys |= strings.lengths.astype(np.uint64) << np.uint64(56)
    if strings.valid is not None:
        keys[~strings.valid] = np.uint64(0xFF << 56)
    return keys


def short_key(text: str) -> int | None:
    """`short_keys` of one string (None if longer than 7 bytes)."""
    raw = text.encode()
    if len(raw) > 7:
        return None
    return int.from_bytes(raw.ljust(8, b"\0"), "little") | (len(raw) << 56)


class FixedWidthPattern:
    """A regex that is ``^`` + ASCII characters or classes, each once or ``{k}`` times, + ``$``.

    Such a pattern matches exactly the strings of its width whose i-th byte is in
    the i-th class, so it is checked as a byte matrix, eight bytes per uint64:
    for ASCII bytes, ``x + (0x80 - lo)`` has its high bit set iff ``x >= lo`` and
    ``x + (0x7f - hi)`` has it clear iff ``x <= hi``, with no carry between bytes.
    """

    def __init__(self, classes: list[list[tuple[int, int]]], dollar: bool) -> None:
        self.width = len(classes)
        self.dollar = dollar  # "$": re also matches before one final "\n"
        padded = classes + [[(0, 0x7F)]] * (-len(classes) % 8)
        self.words = [_word_constants(padded[i : i + 8]) for i in range(0, len(padded), 8)]

    def match(self, strings: StringBuffers) -> tuple[np.ndarray, np.ndarray]:
        """(match mask over all rows, rows that need Python ``re``: width+1 ending in "\\n")."""
        out = np.zeros(strings.n, dtype=bool)
        rows, block = strings.matrix(self.width)
        if rows.size:
            padded = np.zeros((rows.size, 8 * len(self.words)), np.uint8)
            padded[:, : self.width] = block
            words = padded.view("<u8")
            ok = np.ones(rows.size, dtype=bool)
            for k, constants in enumerate(self.words):
                w = np.ascontiguousarray(words[:, k])
                hit = np.zeros_like(w)
                for add_lo, add_hi in constants:
                    hit |= (w + add_lo) & ~(w + add_hi)
                ok &= (hit & ~w & _HIGH) == _HIGH
            out[rows] = ok
        redo = np.zeros(0, np.int64)
        if self.dollar:
            longer = np.flatnonzero(strings.lengths == self.width + 1)
            if longer.size:
                last = strings.data[strings.offsets[longer] + self.width]
                redo = longer[last == 0x0A]
        return out, redo


def _word_constants(classes: list[list[tuple[int, int]]]) -> list[tuple[np.uint64, np.uint64]]:
    """Per-range (add_lo, add_hi) words for eight byte positions."""
    count = max(len(c) for c in classes)
    constants = []
    for r in range(count):
        lo = bytes(0x80 - c[min(r, len(c) - 1)][0] for c in classes)
        hi = bytes(0x7F - c[min(r, len(c) - 1)][1] for c in classes)
        constants.append((np.frombuffer(lo, "<u8")[0], np.frombuffer(hi, "<u8")[0]))
    return constants
