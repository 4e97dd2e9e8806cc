"""A refused row too large for Cassandra is still stored, and never takes others with it.

Cassandra refuses a key component over 65,535 bytes ("Key length ... is longer than
maximum"): such a row's key is stored as its start plus a digest of the whole, and a raw
row over 1 MiB as its start plus its length and digest, on the real server.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pyarrow as pa

from sluice.contract import load_contract
from sluice.store import (
    CassandraWriter,
    WriteOptions,
    apply_schema,
    quarantine_rows,
    session_for,
)

WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_oversized_refused_rows_are_stored_beside_the_others(store_cfg):
    fraud = load_contract("fraud")
    session = session_for(store_cfg)
    apply_schema(session, store_cfg, [fraud])
    huge_key, huge_raw = "k" * 70_000, '{"note": "' + "x" * 3_000_000 + '"}'
    keys = [huge_key, "tx_big_raw", "tx_plain"]
    refused = pa.table({
        "key": keys, "raw": ['{"amount": -1}', huge_raw, '{"amount": -2}'],
        "reasons": ['[{"expectation": "between"}]'] * 3, "source": ["online:fraud"] * 3,
        "quarantined_at": pa.array([WHEN] * 3, pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    rows = quarantine_rows(fraud, refused)
    writer = CassandraWriter(session, store_cfg.keyspace, fraud.output.quarantine_table,
                             rows.column_names, WriteOptions(retries=0))  # fmt: skip
    assert writer.write(rows) == 3  # nothing refused, nothing failed

    stored = {r.key: r.raw for r in session.execute(
        f"SELECT key, raw FROM {store_cfg.keyspace}.{fraud.output.quarantine_table}")}  # fmt: skip
    digest = hashlib.sha256(huge_key.encode()).hexdigest()
    (long_key,) = [k for k in stored if k.endswith(digest)]
    assert long_key.startswith("kkkk") and len(long_key.encode()) <= 1024
    assert stored["tx_plain"] == '{"amount": -2}'
    raw_digest = hashlib.sha256(huge_raw.encode()).hexdigest()
    assert stored["tx_big_raw"].endswith(f"[truncated: {len(huge_raw)} bytes, sha256 {raw_digest}]")
