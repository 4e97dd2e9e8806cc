"""Synthetic card transactions, deterministic from a seed, with a learnable fraud label.

The world: cards with a home country and an activity level; merchants with a
category and a country (the transaction's country and currency). Most spending
is domestic and spread over the time range; fraud comes in bursts — a
compromised card makes several larger, mostly foreign, mostly card-not-present
payments a few minutes apart. ``is_fraud`` is drawn from a logistic model of
amount, country mismatch, channel and burst membership, so a model can learn it
from amount, ``country != card_country`` and per-card velocity features.

Everything is vectorized numpy/Arrow (1M rows in about a second); only the
JSON encoder loops over rows. Invalid rows of every kind the expectation suite
catches can be injected (``InvalidKind``); their keys come back in
``GeneratedData.invalid_keys``. Wrong *types* exist only in raw outputs (JSON
messages, CSV), never in an Arrow table. ``DriftShift`` changes the world after
training (dearer amounts, another country mix, night-time activity) for drift
tests and demos; without it the rows are exactly those of the same seed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "COUNTRIES",
    "CURRENCIES",
    "DEFAULT_START",
    "MALFORMED_PAYLOADS",
    "DriftShift",
    "TRANSACTION_SCHEMA",
    "GeneratedData",
    "InvalidKind",
    "Messages",
    "generate_dataset",
    "generate_transactions",
    "to_json_messages",
    "write_csv",
    "write_parquet",
]

CATEGORIES = (
    "grocery",
    "fuel",
    "restaurant",
    "travel",
    "electronics",
    "fashion",
    "gaming",
    "pharmacy",
    "utilities",
    "cash",
)
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "JP", "IN")
CURRENCIES = ("USD", "EUR", "GBP", "SEK", "PLN", "BRL", "JPY", "INR")
CHANNELS = ("online", "pos", "atm", "moto")
_COUNTRY_CURRENCY = (
    "USD",
    "GBP",
    "EUR",
    "EUR",
    "EUR",
    "EUR",
    "EUR",
    "SEK",
    "PLN",
    "BRL",
    "JPY",
    "INR",
)
_COUNTRY_P = np.array([20, 10, 10, 9, 7, 7, 5, 4, 6, 8, 6, 8], dtype=np.float64)
_CATEGORY_P = np.array([20, 10, 15, 4, 5, 10, 6, 8, 7, 15], dtype=np.float64)
# log-amount location per category: travel and electronics are dear, pharmacy cheap.
_CATEGORY_MU = np.array([3.4, 3.8, 3.3, 5.6, 5.0, 4.2, 3.2, 3.1, 4.5, 4.6])
_AMOUNT_SIGMA = 0.9
_MAX_VALID_AMOUNT = 20_000.0  # keeps the lognormal tail inside the suite's (0, 50000]

TRANSACTION_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("merchant_category", pa.string()),
        ("country", pa.string()),
        ("card_country", pa.string()),
        ("currency", pa.string()),
        ("amount", pa.float64()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("channel", pa.string()),
        ("is_fraud", pa.int8()),
    ]
)
DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
_US = 1_000_000


class InvalidKind(StrEnum):
    """One kind of invalid row per rule of the transactions suite."""

    NULL = "null"  # a null in one required column (never the key)
    NEGATIVE_AMOUNT = "negative_amount"
    ZERO_AMOUNT = "zero_amount"
    ABSURD_AMOUNT = "absurd_amount"  # above 50000
    NAN_AMOUNT = "nan_amount"
    INF_AMOUNT = "inf_amount"  # +inf and -inf alternate
    UNKNOWN_CURRENCY = "unknown_currency"
    UNKNOWN_CATEGORY = "unknown_category"
    UNKNOWN_COUNTRY = "unknown_country"  # in country or card_country
    UNKNOWN_CHANNEL = "unknown_channel"
    MALFORMED_CARD_ID = "malformed_card_id"
    MALFORMED_MERCHANT_ID = "malformed_merchant_id"
    MALFORMED_TRANSACTION_ID = "malformed_transaction_id"
    FUTURE_EVENT_TIME = "future_event_time"  # in 2099: in the future for any `now`
    PRE_2020_EVENT_TIME = "pre_2020_event_time"
    DUPLICATE_KEY = "duplicate_key"  # both rows sharing the key are invalid


_NULLABLE = (
    "card_id",
    "merchant_id",
    "merchant_category",
    "country",
    "card_country",
    "currency",
    "amount",
    "event_time",
    "channel",
)
_BAD_VALUES = {
    InvalidKind.UNKNOWN_CURRENCY: ("XXX", "usd", "BTC", ""),
    InvalidKind.UNKNOWN_CATEGORY: ("crypto", "Grocery", ""),
    InvalidKind.UNKNOWN_COUNTRY: ("XX", "us", "GBR", ""),
    InvalidKind.UNKNOWN_CHANNEL: ("phone", "POS", ""),
    InvalidKind.MALFORMED_CARD_ID: ("card_12345", "card_1234567", "CARD_000123", "card_00012a"),
    InvalidKind.MALFORMED_MERCHANT_ID: ("m_1234", "M_01234", "merchant_01234", "m_123456"),
}


@dataclass(frozen=True)
class DriftShift:
    """How the world has moved since training: a distribution shift for drift tests.

    - ``amount_scale``: every amount is multiplied by it (clipped to the valid range).
      The label is drawn first, so the fraud mechanism is unchanged: only what the
      model sees moves (prices rose, or another currency mix).
    - ``country_weights``: relative weights of card home and merchant countries;
      countries left out keep their training weight.
    - ``active_hours``: ``(start, end)`` UTC hours; each event's time of day is squeezed
      into ``[start, end)`` on its own day (training activity spans the whole day).
    """

    amount_scale: float = 1.0
    country_weights: Mapping[str, float] = field(default_factory=dict)
    active_hours: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not (self.amount_scale > 0 and math.isfinite(self.amount_scale)):
            raise ValueError(f"amount_scale must be a positive number, got {self.amount_scale}")
        unknown = sorted(set(self.country_weights) - set(COUNTRIES))
        if unknown:
            raise ValueError(f"country_weights: unknown countries {unknown}; use {COUNTRIES}")
        if any(not (w >= 0 and math.isfinite(w)) for w in self.country_weights.values()):
            raise ValueError(f"country_weights must be >= 0, got {dict(self.country_weights)}")
        if self.active_hours is not None:
            start, end = self.active_hours
            if not 0 <= start < end <= 24:
                raise ValueError(f"active_hours must satisfy 0 <= start < end <= 24, got "
                                 f"{self.active_hours}")  # fmt: skip

    def country_p(self) -> np.ndarray:
        """Probabilities of ``COUNTRIES`` (the training mix overridden by the weights)."""
        weights = _COUNTRY_P.copy()
        for country, w in self.country_weights.items():
            weights[COUNTRIES.index(country)] = w
        if weights.sum() <= 0:
            raise ValueError("country_weights leave every country at weight 0")
        return weights / weights.sum()

    def squeeze_hours(self, micros: np.ndarray) -> np.ndarray:
        """Event times with their time of day moved into ``active_hours`` (same UTC day)."""
        if self.active_hours is None:
            return micros
        start, end = self.active_hours
        day = 86_400 * _US
        of_day = micros % day
        return micros - of_day + start * 3600 * _US + of_day * (end - start) // 24


@dataclass(frozen=True)
class GeneratedData:
    """A generated table and what was made invalid on purpose.

    ``invalid_rows`` maps row index -> kind (both rows of a duplicated key are
    listed); ``invalid_keys`` are the ``transaction_id`` values of those rows.
    """

    table: pa.Table
    invalid_rows: dict[int, InvalidKind]

    @property
    def invalid_keys(self) -> frozenset[str]:
        keys = self.table["transaction_id"]
        return frozenset(keys[i].as_py() for i in self.invalid_rows)

    @property
    def valid_mask(self) -> np.ndarray:
        mask = np.ones(self.table.num_rows, dtype=bool)
        mask[list(self.invalid_rows)] = False
        return mask


def _strings(chars: np.ndarray) -> pa.Array:
    """Rows of a (n, width) uint8 ASCII matrix as an Arrow string array, no Python loop."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(chars, dtype=np.uint8).tobytes()
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    return arr.cast(pa.string())


def _prefixed_digits(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (numbers.astype(np.int64)[:, None] // powers) % 10 + ord("0")
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    return _strings(np.hstack([np.broadcast_to(head, (len(numbers), len(head))), digits]))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijection of uint64: distinct inputs give distinct, random-looking outputs."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _transaction_ids(seed: int, n: int) -> pa.Array:
    # (seed, row) -> one uint64 -> splitmix64: unique within a data set, and across
    # data sets of different seeds below 2**24 (rows below 2**40).
    base = np.uint64((seed % (1 << 24)) << 40)
    x = _splitmix64(base + np.arange(n, dtype=np.uint64))
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((x[:, None] >> shifts) & np.uint64(0xF)).astype(np.uint8)
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    head = np.broadcast_to(np.frombuffer(b"tx_", dtype=np.uint8), (n, 3))
    return _strings(np.hstack([head, hexchars]))


def _take(values: Sequence[str], idx: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(idx))


def _to_micros(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"start must be timezone-aware (UTC), got {when!r}")
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def generate_transactions(
    n: int,
    seed: int,
    invalid_fraction: float = 0.0,
    *,
    invalid_kinds: Sequence[InvalidKind | str] | None = None,
    start: datetime = DEFAULT_START,
    duration_s: int = 30 * 86_400,
    n_cards: int | None = None,
    n_merchants: int | None = None,
    burst_fraction: float = 0.03,
    shift: DriftShift | None = None,
) -> pa.Table:
    """``generate_dataset(...).table``: the same rows, without the invalid-row record."""
    return generate_dataset(
        n,
        seed,
        invalid_fraction=invalid_fraction,
        invalid_kinds=invalid_kinds,
        start=start,
        duration_s=duration_s,
        n_cards=n_cards,
        n_merchants=n_merchants,
        burst_fraction=burst_fraction,
        shift=shift,
    ).table


def generate_dataset(
    n: int,
    seed: int,
    *,
    invalid_fraction: float = 0.0,
    invalid_kinds: Sequence[InvalidKind | str] | None = None,
    start: datetime = DEFAULT_START,
    duration_s: int = 30 * 86_400,
    n_cards: int | None = None,
    n_merchants: int | None = None,
    burst_fraction: float = 0.03,
    shift: DriftShift | None = None,
) -> GeneratedData:
    """``n`` transactions (``TRANSACTION_SCHEMA``), sorted by event time.

    The same arguments give the identical table. Event times fall in
    ``[start, start + duration_s)``; cards default to ``n // 20`` (about 20
    events per card) and ``burst_fraction`` of the rows are fraud-burst events.
    ``invalid_fraction`` of the rows (rounded) are made invalid, cycling through
    ``invalid_kinds`` (default: every ``InvalidKind``) so that each kind appears
    once there are at least as many invalid rows as kinds. ``shift`` (a ``DriftShift``)
    moves amounts, countries and hours; ``None`` is the training world.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= invalid_fraction <= 1.0:
        raise ValueError(f"invalid_fraction must be in [0, 1], got {invalid_fraction}")
    if duration_s <= 3600:
        raise ValueError(f"duration_s must exceed one hour, got {duration_s}")
    rng = np.random.default_rng(seed)
    n_cards = n_cards or int(np.clip(n // 20, 1, 999_999))
    n_merchants = n_merchants or int(np.clip(n // 50, len(COUNTRIES), 99_999))
    t0, span = _to_micros(start), duration_s * _US
    country_p = _COUNTRY_P / _COUNTRY_P.sum() if shift is None else shift.country_p()

    # Cards: number, home country, activity (a few cards are very busy).
    card_no = rng.choice(1_000_000, size=n_cards, replace=False)
    card_home = rng.choice(len(COUNTRIES), size=n_cards, p=country_p)
    activity = rng.gamma(0.8, size=n_cards)
    # Merchants: number, category, country; at least one merchant per country.
    m_no = rng.choice(100_000, size=n_merchants, replace=False)
    m_cat = rng.choice(len(CATEGORIES), size=n_merchants, p=_CATEGORY_P / _CATEGORY_P.sum())
    m_country = rng.choice(len(COUNTRIES), size=n_merchants, p=country_p)
    m_country[: len(COUNTRIES)] = np.arange(len(COUNTRIES))
    by_country = np.argsort(m_country, kind="stable")
    first = np.searchsorted(m_country[by_country], np.arange(len(COUNTRIES)))
    size = np.bincount(m_country, minlength=len(COUNTRIES))

    # Fraud bursts: runs of 3-8 events on one card, minutes apart.
    n_burst = min(n, int(round(n * burst_fraction)))
    sizes = rng.integers(3, 9, size=n_burst // 3 + 1)
    ends = np.cumsum(sizes)
    n_runs = int(np.searchsorted(ends, n_burst) + 1) if n_burst else 0
    run_of = np.repeat(np.arange(n_runs), sizes[:n_runs])[:n_burst]
    run_card = rng.integers(0, n_cards, size=n_runs)
    run_start = t0 + rng.integers(0, span - 3600 * _US, size=n_runs)
    gaps = rng.exponential(150 * _US, size=n_burst).astype(np.int64)
    run_first = np.searchsorted(run_of, np.arange(n_runs))
    offset = np.cumsum(gaps) - np.cumsum(gaps)[run_first[run_of]] if n_burst else gaps
    b_time = np.minimum(run_start[run_of] + offset, t0 + span - 1)

    n_norm = n - n_burst
    card = np.concatenate(
        [rng.choice(n_cards, size=n_norm, p=activity / activity.sum()), run_card[run_of]]
    )
    time = np.concatenate([t0 + rng.integers(0, span, size=n_norm), b_time])
    burst = np.concatenate([np.zeros(n_norm, bool), np.ones(n_burst, bool)])
    # Normal spending is domestic 95% of the time; bursts use any merchant.
    home = card_home[card]
    domestic = ~burst & (rng.random(n) < 0.95)
    pick = rng.random(n)
    local_merchant = by_country[first[home] + (pick * size[home]).astype(np.int64)]
    merchant = np.where(domestic, local_merchant, (pick * n_merchants).astype(np.int64))
    channel = np.where(
        burst,
        rng.choice(4, size=n, p=[0.6, 0.15, 0.05, 0.2]),
        rng.choice(4, size=n, p=[0.3, 0.55, 0.1, 0.05]),
    )
    cat = m_cat[merchant]
    log_amount = rng.normal(_CATEGORY_MU[cat] + 1.0 * burst, _AMOUNT_SIGMA)
    amount = np.round(np.clip(np.exp(log_amount), 0.5, _MAX_VALID_AMOUNT), 2)
    country = m_country[merchant]
    mismatch = country != home
    logit = (
        -5.0
        + 0.6 * (log_amount - _CATEGORY_MU[cat])
        + 1.9 * mismatch
        + 3.0 * burst
        + 0.6 * np.isin(channel, (0, 3))
    )
    is_fraud = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    if shift is not None:  # after the label: the fraud mechanism itself does not move
        amount = np.round(np.clip(amount * shift.amount_scale, 0.5, _MAX_VALID_AMOUNT), 2)
        time = np.clip(shift.squeeze_hours(time), t0, t0 + span - 1)

    order = np.argsort(time, kind="stable")
    cols: dict[str, object] = {
        "transaction_id": _transaction_ids(seed, n),
        "card_id": _prefixed_digits("card_", card_no, 6).take(pa.array(card[order])),
        "merchant_id": _prefixed_digits("m_", m_no, 5).take(pa.array(merchant[order])),
        "merchant_category": _take(CATEGORIES, cat[order]),
        "country": _take(COUNTRIES, country[order]),
        "card_country": _take(COUNTRIES, home[order]),
        "currency": _take(_COUNTRY_CURRENCY, country[order]),
        "amount": amount[order],
        "event_time": time[order],
        "channel": _take(CHANNELS, channel[order]),
        "is_fraud": is_fraud[order],
    }
    kinds = [InvalidKind(k) for k in (invalid_kinds or list(InvalidKind))]
    invalid_rows = _inject(cols, rng, n, int(round(n * invalid_fraction)), kinds)
    table = pa.Table.from_arrays(
        [
            pa.array(cols[f.name], f.type) if isinstance(cols[f.name], np.ndarray) else cols[f.name]
            for f in TRANSACTION_SCHEMA
        ],
        schema=TRANSACTION_SCHEMA,
    )
    return GeneratedData(table=table, invalid_rows=invalid_rows)


def _replace(cols: dict, name: str, rows: np.ndarray, values: Sequence[str]) -> None:
    mask = np.zeros(len(cols[name]), dtype=bool)
    mask[rows] = True
    picked = [values[i % len(values)] for i in range(len(rows))]
    # replace_with_mask consumes replacements in row order.
    cols[name] = pc.replace_with_mask(cols[name], pa.array(mask), pa.array(picked, pa.string()))


def _inject(
    cols: dict, rng: np.random.Generator, n: int, n_bad: int, kinds: list[InvalidKind]
) -> dict[int, InvalidKind]:
    """Break ``n_bad`` rows in place, cycling through ``kinds``; row -> kind."""
    if n_bad == 0 or not kinds:
        return {}
    rows = np.sort(rng.choice(n, size=n_bad, replace=False))
    assigned = np.array(kinds, dtype=object)[rng.permutation(n_bad) % len(kinds)]
    out: dict[int, InvalidKind] = {int(r): k for r, k in zip(rows, assigned, strict=True)}
    amount, time = cols["amount"], cols["event_time"]
    nulls: dict[str, list[int]] = {}
    for kind in kinds:
        at = rows[assigned == kind]
        if len(at) == 0:
            continue
        if kind is InvalidKind.NULL:
            for i, r in enumerate(at):
                nulls.setdefault(_NULLABLE[i % len(_NULLABLE)], []).append(int(r))
        elif kind is InvalidKind.NEGATIVE_AMOUNT:
            amount[at] = -np.abs(amount[at])
        elif kind is InvalidKind.ZERO_AMOUNT:
            amount[at] = 0.0
        elif kind is InvalidKind.ABSURD_AMOUNT:
            amount[at] = np.round(rng.uniform(50_000.01, 1e8, size=len(at)), 2)
        elif kind is InvalidKind.NAN_AMOUNT:
            amount[at] = np.nan
        elif kind is InvalidKind.INF_AMOUNT:
            amount[at] = np.where(np.arange(len(at)) % 2 == 0, np.inf, -np.inf)
        elif kind is InvalidKind.FUTURE_EVENT_TIME:
            time[at] = _to_micros(datetime(2099, 1, 1, tzinfo=UTC)) + rng.integers(
                0, 365 * 86_400 * _US, size=len(at)
            )
        elif kind is InvalidKind.PRE_2020_EVENT_TIME:
            time[at] = _to_micros(datetime(2015, 1, 1, tzinfo=UTC)) + rng.integers(
                0, 4 * 365 * 86_400 * _US, size=len(at)
            )
        elif kind is InvalidKind.UNKNOWN_COUNTRY:
            _replace(cols, "country", at[0::2], _BAD_VALUES[kind])
            _replace(cols, "card_country", at[1::2], _BAD_VALUES[kind])
        elif kind is InvalidKind.MALFORMED_TRANSACTION_ID:
            ids = cols["transaction_id"].take(pa.array(at)).to_pylist()
            forms = (lambda s: s[3:], lambda s: "tx-" + s[3:], lambda s: s + "0")
            _replace(cols, "transaction_id", at, [forms[i % 3](s) for i, s in enumerate(ids)])
        elif kind is InvalidKind.DUPLICATE_KEY:
            # Pair the chosen rows (the second takes the first's key) so exactly
            # n_bad rows are invalid; an odd last row joins the previous pair, and
            # a lone row copies the key of a clean row, which becomes invalid too.
            if len(at) == 1:
                clean = np.setdiff1d(np.arange(n), rows)
                if len(clean) == 0:
                    del out[int(at[0])]
                    continue
                sources, targets = rng.choice(clean, size=1), at
                out[int(sources[0])] = kind
            else:
                targets, sources = at[1::2], at[0::2][: len(at) // 2]
                if len(at) % 2:
                    targets, sources = np.append(targets, at[-1]), np.append(sources, at[-3])
            ids = cols["transaction_id"].take(pa.array(sources)).to_pylist()
            _replace(cols, "transaction_id", targets, ids)
        else:
            column = {
                InvalidKind.UNKNOWN_CURRENCY: "currency",
                InvalidKind.UNKNOWN_CATEGORY: "merchant_category",
                InvalidKind.UNKNOWN_CHANNEL: "channel",
                InvalidKind.MALFORMED_CARD_ID: "card_id",
                InvalidKind.MALFORMED_MERCHANT_ID: "merchant_id",
            }[kind]
            _replace(cols, column, at, _BAD_VALUES[kind])
    for name, at_rows in nulls.items():
        mask = np.zeros(n, dtype=bool)
        mask[at_rows] = True
        typ = TRANSACTION_SCHEMA.field(name).type
        col = cols[name]
        cols[name] = (
            pa.array(col, typ, mask=mask)
            if isinstance(col, np.ndarray)
            else pc.if_else(pa.array(mask), pa.scalar(None, typ), col)
        )
    return out


# --- Raw outputs: Parquet, CSV, JSON messages ---------------------------------

MALFORMED_PAYLOADS: tuple[bytes, ...] = (
    b"not json at all",
    b'{"transaction_id": "tx_00',  # truncated
    b"\xff\xfe\x00\x01",  # not UTF-8
    b"[1, 2, 3]",  # JSON, but not an object
    b'"a string"',
    b"42",
    b"null",
    b"",
)
"""Stream payloads that are not a JSON object: each must be quarantined as raw bytes."""

# Values that cannot be cast to the column's type, as JSON values.
_WRONG_TYPES: tuple[tuple[str, object], ...] = (
    ("amount", "abc"),
    ("event_time", "not-a-time"),
    ("amount", [12.5]),
    ("event_time", True),
    ("amount", {"value": 3}),
)
_WRONG_CSV: tuple[tuple[str, str], ...] = (
    ("amount", "abc"),
    ("event_time", "not-a-time"),
    ("amount", "12,50 EUR"),
    ("event_time", "2024-13-45T99:00:00Z"),
)


@dataclass(frozen=True)
class Messages:
    """JSON messages, one per event, plus what was broken on purpose.

    ``partition_keys`` (the card id, so one card's events stay in order) is None
    for malformed payloads; ``malformed_positions`` index into ``payloads``.
    """

    payloads: list[bytes]
    partition_keys: list[bytes | None]
    wrong_type_keys: frozenset[str]
    malformed_positions: frozenset[int]


def _pick(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return np.sort(rng.choice(n, size=int(round(n * fraction)), replace=False))


def _iso_times(table: pa.Table) -> pa.Array:
    """ISO 8601 UTC texts ``2024-01-01T00:00:07.846336Z`` (nulls stay null).

    Casting the UTC instants as a naive timestamp to string is several times
    faster than ``strftime`` (no time-zone lookup per value).
    """
    col = table["event_time"].combine_chunks()
    naive = col.cast(pa.timestamp("us", tz=col.type.tz), safe=False).cast(pa.int64())
    text = naive.cast(pa.timestamp("us")).cast(pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def to_json_messages(
    table: pa.Table,
    *,
    wrong_type_fraction: float = 0.0,
    malformed_fraction: float = 0.0,
    seed: int = 0,
) -> Messages:
    """One UTF-8 JSON object per row (event_time as ISO 8601 with ``Z``).

    ``wrong_type_fraction`` of the rows get a value of the wrong type (e.g.
    ``"amount": "abc"``); their keys are in ``wrong_type_keys``.
    ``malformed_fraction`` is the share of the returned payloads that are not a
    JSON object at all (``MALFORMED_PAYLOADS``), inserted at random positions
    without dropping any event. NaN and infinite amounts are written as
    ``NaN``/``Infinity``, which Python's ``json`` reads back.
    """
    if not 0.0 <= malformed_fraction < 1.0:
        raise ValueError(f"malformed_fraction must be in [0, 1), got {malformed_fraction}")
    rng = np.random.default_rng(seed)
    n = table.num_rows
    values = {name: _json_values(table, name) for name in table.column_names}
    wrong = _pick(rng, n, wrong_type_fraction)
    for column in {c for c, _ in _WRONG_TYPES}:
        chosen = [
            (int(r), json.dumps(v))
            for i, r in enumerate(wrong)
            for c, v in [_WRONG_TYPES[i % len(_WRONG_TYPES)]]
            if c == column
        ]
        if chosen and column in values:
            mask = np.zeros(n, dtype=bool)
            mask[[r for r, _ in chosen]] = True
            replacement = pa.array([v for _, v in chosen], pa.string())
            values[column] = pc.replace_with_mask(values[column], pa.array(mask), replacement)
    # '{"a":1,"b":"x"}' assembled column-wise by Arrow: no Python loop over rows.
    fragments = [
        pc.binary_join_element_wise(json.dumps(name) + ":", v, "") for name, v in values.items()
    ]
    objects = pc.binary_join_element_wise(
        "{", pc.binary_join_element_wise(*fragments, ","), "}", ""
    )
    payloads = np.empty(n, dtype=object)
    payloads[:] = objects.cast(pa.binary()).to_pylist()
    keys = np.empty(n, dtype=object)
    keys[:] = table["card_id"].combine_chunks().cast(pa.binary()).to_pylist()

    n_bad = int(round(n * malformed_fraction / (1.0 - malformed_fraction)))
    bad_at = np.sort(rng.choice(n + n_bad, size=n_bad, replace=False))
    is_bad = np.zeros(n + n_bad, dtype=bool)
    is_bad[bad_at] = True
    out_payloads = np.empty(n + n_bad, dtype=object)
    out_payloads[~is_bad] = payloads
    out_payloads[bad_at] = [MALFORMED_PAYLOADS[j % len(MALFORMED_PAYLOADS)] for j in bad_at]
    out_keys = np.full(n + n_bad, None, dtype=object)
    out_keys[~is_bad] = keys
    wrong_keys = table["transaction_id"].take(pa.array(wrong, pa.int64())).to_pylist()
    return Messages(
        payloads=out_payloads.tolist(),
        partition_keys=out_keys.tolist(),
        wrong_type_keys=frozenset(wrong_keys),
        malformed_positions=frozenset(int(j) for j in bad_at),
    )


_JSON_SAFE = r"^[ !#-\[\]-~]*$"  # printable ASCII without '"' and '\\': quoting is enough
_JSON_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _json_values(table: pa.Table, name: str) -> pa.Array:
    """The column as JSON value texts ("null" for nulls), computed column-wise."""
    col = table[name].combine_chunks()
    if pa.types.is_timestamp(col.type):
        col = _iso_times(table.select([name]).rename_columns(["event_time"]))
    if pa.types.is_string(col.type):
        safe = pc.fill_null(pc.match_substring_regex(col, _JSON_SAFE), True)
        text = pc.binary_join_element_wise('"', col, '"', "")
        if not pc.all(safe).as_py():
            # Rare (only odd injected values): escape those few the slow, sure way.
            needs = pc.invert(safe)
            escaped = [json.dumps(v) for v in col.filter(needs).to_pylist()]
            text = pc.replace_with_mask(text, needs, pa.array(escaped, pa.string()))
    elif pa.types.is_floating(col.type):
        text = col.cast(pa.string())  # shortest round-trip form, as Python's repr
        for arrow_text, json_text in _JSON_FLOATS.items():
            text = pc.replace_substring_regex(text, f"^{re.escape(arrow_text)}$", json_text)
    elif pa.types.is_integer(col.type) or pa.types.is_boolean(col.type):
        text = col.cast(pa.string())  # booleans cast to "true"/"false" already
    else:
        raise ValueError(f"column {name!r} of type {col.type} has no JSON encoding here")
    return pc.fill_null(text, "null")


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write the table as one Parquet file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_csv(
    table: pa.Table, path: str | Path, *, wrong_type_fraction: float = 0.0, seed: int = 0
) -> frozenset[str]:
    """Write the table as CSV (event_time in ISO 8601 with ``Z``).

    ``wrong_type_fraction`` of the rows get an uncastable amount or event time
    (``"abc"``, ``"not-a-time"``...); returns their keys.
    """
    rng = np.random.default_rng(seed)
    amount = table["amount"].combine_chunks().cast(pa.string())
    when = _iso_times(table)
    wrong = _pick(rng, table.num_rows, wrong_type_fraction)
    for column in ("amount", "event_time"):
        chosen = [
            (int(r), v)
            for i, r in enumerate(wrong)
            for c, v in [_WRONG_CSV[i % len(_WRONG_CSV)]]
            if c == column
        ]
        if chosen:
            mask = np.zeros(table.num_rows, dtype=bool)
            mask[[r for r, _ in chosen]] = True
            values = pa.array([v for _, v in chosen], pa.string())
            if column == "amount":
                amount = pc.replace_with_mask(amount, pa.array(mask), values)
            else:
                when = pc.replace_with_mask(when, pa.array(mask), values)
    out = table.set_column(table.schema.get_field_index("amount"), "amount", amount)
    out = out.set_column(out.schema.get_field_index("event_time"), "event_time", when)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(out, path)
    return frozenset(table["transaction_id"].take(pa.array(wrong, pa.int64())).to_pylist())
