"""Entity aggregates: one pure, vectorized function over (history, queries).

The rule (see ``AggregateSpec``): for a query event (entity e, time t, key k) a
window of w seconds covers e's history events x with ``t - w <= x.time`` and
``(x.time, x.key) < (t, k)`` — strictly before the query in (time, key) order.

How it is computed without a per-row loop:
1. Entities become integer codes, times dense ranks and keys dense ranks in
   string order, so (entity, time) packs into one sortable int64 and the key
   rank breaks ties.
2. History is sorted by (entity, time, key). ``searchsorted`` then gives, for
   each query, the number of history rows before (e, t, k) — the window's upper
   end — and, per window, the number before (e, t - w) — its lower end.
3. A window is then the history slice [lower, upper): the count is the
   difference, and the sum is ``np.add.reduceat`` over exactly that slice.
   Summing only the slice (rather than differencing a running total) makes the
   sum independent of whatever other history the store returned, so batch,
   stream and online get bit-identical features.
The answer does not depend on history outside [t - horizon, t], on history
order, or on duplicated history rows (the last row of a key wins, as in the
store).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.features._spec import AggregateSpec

__all__ = ["entity_aggregates"]

_US = 1_000_000


def _int64(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("us", tz=col.type.tz), safe=False)
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _dense_rank(values: pa.Array) -> np.ndarray:
    """Rank of each string in sorted order; equal strings share a rank.

    Hashing first and sorting only the distinct values halves the sort when
    queries repeat history keys (a recorded batch scored against its store).
    """
    encoded = pc.dictionary_encode(values)
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order), dtype=np.int64)
    return rank_of[encoded.indices.to_numpy(zero_copy_only=False)]


def _strings(col: pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks().cast(pa.string())


def _check_not_null(table: pa.Table, names: tuple[str, ...], what: str) -> None:
    for name in names:
        if name not in table.column_names:
            raise ValueError(f"{what} table lacks column {name!r}")
        nulls = table.column(name).null_count
        if nulls:
            raise ValueError(f"{what} column {name!r} has {nulls} null(s)")


def entity_aggregates(history: pa.Table, queries: pa.Table, spec: AggregateSpec) -> np.ndarray:
    """Aggregates of ``queries`` over ``history``: float64 ``[len(queries), n]``.

    Both tables use ``STORE_SCHEMA`` column names (``entity``, ``event_time``,
    ``key``; ``amount`` in history). Columns come out in
    ``spec.feature_names`` order. A mean over an empty window is 0.0; seconds
    since the previous event is capped at ``spec.max_lookback_s`` (and is that
    cap when there is none), so a history that reaches back ``spec.horizon_s``
    before each query is enough for an exact answer.
    """
    _check_not_null(queries, ("entity", "event_time", "key"), "query")
    _check_not_null(history, ("entity", "event_time", "key"), "history")
    n_h, n_q = history.num_rows, queries.num_rows
    n_out = len(spec.feature_names)
    if n_q == 0:
        return np.zeros((0, n_out), dtype=np.float64)

    entities = pa.concat_arrays([_strings(history["entity"]), _strings(queries["entity"])])
    codes = pc.dictionary_encode(entities).indices.to_numpy(zero_copy_only=False)
    ranks = _dense_rank(pa.concat_arrays([_strings(history["key"]), _strings(queries["key"])]))
    h_ent, q_ent = codes[:n_h].astype(np.int64), codes[n_h:].astype(np.int64)
    h_rank, q_rank = ranks[:n_h], ranks[n_h:]
    h_t, q_t = _int64(history["event_time"]), _int64(queries["event_time"])
    h_amt = (
        history["amount"].combine_chunks().cast(pa.float64()).to_numpy(zero_copy_only=False)
        if n_h
        else np.zeros(0)
    )

    # A key stored twice (a store without upserts) counts once: keep its last row.
    if n_h:
        _, last_rev = np.unique(h_rank[::-1], return_index=True)
        keep = np.sort(n_h - 1 - last_rev)
        if len(keep) != n_h:
            h_ent, h_t, h_rank, h_amt = h_ent[keep], h_t[keep], h_rank[keep], h_amt[keep]
            n_h = len(keep)
    # Times become dense ranks so (entity, time) packs into one int64 that sorts
    # in (entity, time) order: n_entities * n_distinct_times stays far below 2**63.
    windows_us = [w * _US for w in spec.windows_s]
    k = len(windows_us)
    times, t_rank = np.unique(
        np.concatenate([h_t, q_t, *(q_t - w for w in windows_us)]), return_inverse=True
    )
    n_t = np.int64(len(times))
    h_pack = h_ent * n_t + t_rank[:n_h]
    q_pack = q_ent * n_t + t_rank[n_h : n_h + n_q]
    lo_pack = np.tile(q_ent, k) * n_t + t_rank[n_h + n_q :]

    order = np.lexsort((h_rank, h_pack))
    h_pack, h_rank, h_ent, h_t, h_amt = (a[order] for a in (h_pack, h_rank, h_ent, h_t, h_amt))
    # Upper bound: history rows before (entity, time, key). Within a run of equal
    # (entity, time) the key rank decides, so rows carry (run index, rank + 1).
    run_start = np.ones(n_h, dtype=bool)
    run_start[1:] = h_pack[1:] != h_pack[:-1]
    run_of = np.cumsum(run_start) - 1
    runs = h_pack[run_start]
    width = np.int64(max(int(ranks.max(initial=0)) + 2, 2))
    h_key2 = run_of * width + h_rank + 1
    # Probes are searched in (entity, time) order: numpy's searchsorted narrows
    # each search from the previous one, several times faster than random order.
    # Within an entity t - w is monotone in t, so one order serves every window.
    by_pack = np.argsort(q_pack, kind="stable")
    q_pack_s = q_pack[by_pack]
    q_run = np.searchsorted(runs, q_pack_s, side="left")
    same = q_run < len(runs)
    same[same] = runs[q_run[same]] == q_pack_s[same]
    probe = q_run * width + np.where(same, q_rank[by_pack] + 1, 0)
    upper = np.empty(n_q, dtype=np.int64)
    upper[by_pack] = np.searchsorted(h_key2, probe, side="left")
    # Lower bound: history rows before (entity, t - w) — time alone, key ignored.
    lower = np.empty((k, n_q), dtype=np.int64)
    for i in range(k):
        lower[i, by_pack] = np.searchsorted(h_pack, lo_pack[i * n_q : (i + 1) * n_q][by_pack])

    out = np.zeros((n_q, n_out), dtype=np.float64)
    sums = _window_sums(h_amt, np.tile(upper, k), lower.ravel()).reshape(k, n_q)
    col = 0
    for i in range(k):
        count = (upper - lower[i]).astype(np.float64)
        for fn in spec.functions:
            if fn == "count":
                out[:, col] = count
            elif fn == "sum":
                out[:, col] = sums[i]
            else:
                out[:, col] = np.divide(sums[i], count, out=np.zeros(n_q), where=count > 0)
            col += 1
    if spec.seconds_since_previous:
        out[:, col] = _seconds_since_previous(h_ent, h_t, q_ent, q_t, upper, spec.max_lookback_s)
    return out


def _window_sums(values: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Sum of ``values[lower[i]:upper[i]]`` for each i, summing only that slice."""
    m = len(upper)
    if m == 0 or len(values) == 0:
        return np.zeros(m)
    padded = np.append(values, 0.0)  # reduceat indices must be < len(padded)
    # Sorted by start, the odd (between-slice) reductions of reduceat cover
    # disjoint gaps, so the whole call is O(len(values) + total slice length).
    by_start = np.argsort(lower, kind="stable")
    idx = np.empty(2 * m, dtype=np.int64)
    idx[0::2] = lower[by_start]
    idx[1::2] = upper[by_start]
    reduced = np.add.reduceat(padded, idx)[0::2]
    reduced[idx[0::2] == idx[1::2]] = 0.0  # reduceat yields values[i] for an empty slice
    sums = np.empty(m)
    sums[by_start] = reduced
    return sums


def _seconds_since_previous(
    h_ent: np.ndarray,
    h_t: np.ndarray,
    q_ent: np.ndarray,
    q_t: np.ndarray,
    upper: np.ndarray,
    cap_s: int,
) -> np.ndarray:
    prev = upper - 1
    has_prev = prev >= 0
    prev_safe = np.where(has_prev, prev, 0)
    if len(h_ent):
        has_prev &= h_ent[prev_safe] == q_ent
        gap_s = (q_t - h_t[prev_safe]) / _US
    else:
        gap_s = np.zeros(len(q_ent))
    return np.where(has_prev, np.minimum(gap_s, float(cap_s)), float(cap_s))
