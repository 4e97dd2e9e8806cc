"""Alert rows for unit tests: ``sluice.store.alert_rows`` of a few alerting scored rows."""

from __future__ import annotations

import json
from datetime import datetime

import pyarrow as pa

from sluice.contract import load_contract
from sluice.store import alert_rows


def alerts(keys: list[str], when: datetime, source: str, *, score: float = 0.95,
           reasons: list[dict] | None = None) -> pa.Table:  # fmt: skip
    """One ``block`` alert of contract fraud per key, from card_1 at ``when``."""
    n = len(keys)
    scored = pa.table({
        "key": keys, "entity": ["card_1"] * n,
        "event_time": pa.array([when] * n, pa.timestamp("us", tz="UTC")),
        "score": [score] * n, "model_version": ["fraud/2"] * n, "decision": ["block"] * n,
        "policy_id": ["dp-1"] * n, "reasons": [json.dumps(reasons or [])] * n,
    })  # fmt: skip
    return alert_rows(load_contract("fraud"), scored, source, when)
