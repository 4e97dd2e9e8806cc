"""Helpers shared by the store integration tests."""

from __future__ import annotations


def count_rows(session, keyspace: str, table: str, key: str, splits: int = 16) -> int:
    """COUNT(*) per token range (concurrently): a whole-table COUNT can time out."""
    from cassandra.concurrent import execute_concurrent_with_args

    lo, hi = -(2**63), 2**63 - 1
    starts = [lo + (hi - lo) // splits * i for i in range(splits)]
    ranges = [(a, b - 1) for a, b in zip(starts, starts[1:], strict=False)] + [(starts[-1], hi)]
    stmt = session.prepare(
        f"SELECT COUNT(*) FROM {keyspace}.{table} WHERE token({key}) >= ? AND token({key}) <= ?"
    )
    results = execute_concurrent_with_args(session, stmt, ranges, concurrency=splits)
    return sum(r.result_or_exc.one()[0] for r in results)
