"""Helpers of the live serve tests: rows, the test key, deploying a Serve config and waiting."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sluice.datagen import generate_dataset

TEST_KEY = "sk_test_serve_integration"
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def json_rows(n: int, seed: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return table_rows(generate_dataset(n, seed=seed, **kw).table)


def table_rows(table: Any) -> list[dict[str, Any]]:
    """Request rows (no label, ISO times) of a generated table."""
    rows = table.drop(["is_fraud"]).to_pylist()
    for row in rows:
        for k, v in row.items():
            if isinstance(v, datetime):
                row[k] = v.isoformat()
    return rows


def app_status(name: str) -> str | None:
    from ray import serve

    app = serve.status().applications.get(name)
    return None if app is None else str(app.status.value if hasattr(app.status, "value")
                                        else app.status)  # fmt: skip


def wait_running(names: list[str], timeout_s: float = 240.0) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications
        states = {n: (status[n].status if n in status else None) for n in names}
        if all(s == "RUNNING" for s in states.values()):
            return
        failed = {n: status[n].message for n, s in states.items() if s == "DEPLOY_FAILED"}
        assert not failed, f"deploy failed: {failed}"
        assert time.monotonic() < deadline, f"not RUNNING after {timeout_s} s: {states}"
        time.sleep(0.5)


def deploy_config(doc: dict[str, Any], timeout_s: float = 240.0) -> None:
    """What `serve deploy <file>` does: apply the whole document, declaratively.

    (The REST endpoint behind `serve deploy` calls this same controller method; the test
    Ray has no dashboard. Private API, pinned with Ray 2.60.)
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(doc))
    time.sleep(1.0)  # let the controller take the new target before polling its status
    wait_running([a["name"] for a in doc["applications"]], timeout_s)


def wait_until(cond, timeout_s: float, what: str, every_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(every_s)


def client(base_url: str, timeout_s: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=timeout_s)


# -- Ray's metrics export (the node's Prometheus endpoint) ---------------------------------
Samples = list[tuple[str, dict[str, str], float]]


def scrape() -> tuple[str, Samples]:
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text)
               for s in fam.samples]  # fmt: skip
    return text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """A series summed over Ray's per-worker copies (and over the labels not given)."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == x for k, x in labels.items()))  # fmt: skip


def wait_for_metrics(check: Callable[[Samples], list[str]], timeout_s: float = 60.0) -> Samples:
    """Scrape until ``check`` finds nothing wrong (Ray exports every second in tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, samples = scrape()
        wrong = check(samples)
        if not wrong:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("metrics never matched: " + "; ".join(wrong))
        time.sleep(1.0)


def expect(samples: Samples, name: str, want: float, **labels: str) -> list[str]:
    got = total(samples, name, **labels)
    return [] if got == want else [f"{name}{labels} = {got}, want {want}"]
