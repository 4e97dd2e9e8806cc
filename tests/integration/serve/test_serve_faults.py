"""The prediction log's Cassandra is unreachable: the endpoint keeps answering, bounded."""

from __future__ import annotations

import time

import pytest

from .serve_live import AUTH, client, json_rows, wait_until

pytestmark = pytest.mark.integration


def test_log_store_down_still_serves_and_counts_failures(serve_world):
    with client(serve_world.base) as http:
        assert http.get("/faults/v1/health").status_code == 200  # public behind a prefix too
        assert http.get("/faults/v1/stats").status_code == 401
        latencies = []
        for row in json_rows(40, seed=12):
            t0 = time.perf_counter()
            r = http.post("/faults/v1/fraud/predict", json=row, headers=AUTH)
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        stats = wait_until(
            lambda: (s := http.get("/faults/v1/stats", headers=AUTH).json()["prediction_log"])
            and s["queued"] == 0 and s["failed"] + s["dropped"] == 40 and s, 30, "log counts")
    assert stats["written"] == 0 and stats["accepted"] == stats["failed"]
    assert "StoreUnavailable" in stats["last_error"]
    assert stats["queue_size"] == 4
    latencies.sort()
    assert latencies[len(latencies) // 2] < 1.0, latencies  # the log is off the request path
