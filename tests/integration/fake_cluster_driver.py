"""Driver of tests/integration/test_fake_cluster.py, run in its own process (the test's
own process is connected to the session's Ray): joins the fake autoscaling cluster, deploys
the scoring app from a Serve config (its model replicas ask for ``num_gpus: 1``), drives
load, and records when the autoscaler added and removed fake GPU nodes and when Serve added
and removed model replicas. Writes the timeline as JSON to ``--out``.

    python tests/integration/fake_cluster_driver.py --address 127.0.0.1:PORT \
        --config serve.yaml --http-port PORT --api-key KEY --out timeline.json
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

MODEL = "ScoringModel"


class Watch:
    """Samples (alive fake GPU nodes, running model replicas) twice a second; keeps changes."""

    def __init__(self, app: str, t0: float) -> None:
        self.app, self.t0 = app, t0
        self.events: list[dict[str, Any]] = []
        self.now = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[int, int]:
        import ray
        from ray import serve

        gpus = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)
        replicas = 0
        app = serve.status().applications.get(self.app)
        if app is not None and MODEL in app.deployments:
            replicas = app.deployments[MODEL].replica_states.get("RUNNING", 0)
        return gpus, replicas

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = self._sample()
            except Exception:  # noqa: BLE001 - the controller may be busy; sample again
                now = self.now
            if now != self.now or not self.events:
                self.events.append({"t": round(time.monotonic() - self.t0, 1),
                                    "gpu_nodes": now[0], "replicas": now[1]})  # fmt: skip
                self.now = now
            time.sleep(0.5)

    def wait(self, what: str, cond, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not cond(*self.now):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout_s} s; timeline {self.events}")
            time.sleep(0.2)
        return round(time.monotonic() - self.t0, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def rows(n: int) -> list[dict[str, Any]]:
    from sluice.datagen import generate_dataset

    out = generate_dataset(n, seed=11).table.drop(["is_fraud"]).to_pylist()
    return [{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}
            for r in out]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--config", required=True, help="Serve config (serve deploy's document)")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--clients", type=int, default=24)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import ray
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(Path(args.config).read_text())
    app = doc["applications"][0]["name"]
    t0 = time.monotonic()
    ray.init(address=args.address, namespace="sluice-fake-cluster", log_to_driver=False)
    # As `serve deploy` would start Serve with the file's proxy_location.
    serve.start(proxy_location=doc.get("proxy_location"),
                http_options={"host": "127.0.0.1", "port": args.http_port})  # fmt: skip
    watch = Watch(app, t0)
    times: dict[str, float] = {}
    try:
        # What `serve deploy <file>` does (the REST endpoint calls this controller method).
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(doc))
        times["first_gpu_node"] = watch.wait("a GPU node", lambda g, r: g >= 1, 180)
        times["first_replica"] = watch.wait("a model replica", lambda g, r: r >= 1, 240)

        stop = threading.Event()
        body = rows(64)
        codes: dict[str, int] = {}

        def client_loop(i: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{args.http_port}", timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post("/v1/fraud/predict", json=body[i % 64:i % 64 + 4],
                                   headers={"X-API-Key": args.api_key})  # fmt: skip
                        code = str(r.status_code)
                    except httpx.HTTPError as exc:
                        code = type(exc).__name__
                    codes[code] = codes.get(code, 0) + 1

        times["load_start"] = round(time.monotonic() - t0, 1)
        with ThreadPoolExecutor(args.clients) as pool:
            for i in range(args.clients):
                pool.submit(client_loop, i)
            try:
                times["second_gpu_node"] = watch.wait("a second GPU node",
                                                      lambda g, r: g >= 2, 240)  # fmt: skip
                times["second_replica"] = watch.wait("a second replica",
                                                     lambda g, r: r >= 2, 240)  # fmt: skip
                time.sleep(3)  # both replicas serve for a moment
            finally:
                stop.set()
        times["load_stop"] = round(time.monotonic() - t0, 1)
        times["replicas_back_to_one"] = watch.wait("scale-down to one replica",
                                                   lambda g, r: r == 1, 180)  # fmt: skip
        times["gpu_nodes_back_to_one"] = watch.wait("the idle GPU node removed",
                                                    lambda g, r: g == 1, 180)  # fmt: skip
        serve.delete(app)
        times["app_deleted"] = round(time.monotonic() - t0, 1)
        result = {"times_s": times, "timeline": watch.events, "http_codes": codes}
    except TimeoutError as exc:
        result = {"error": str(exc), "times_s": times, "timeline": watch.events}
    finally:
        watch.stop()
    Path(args.out).write_text(json.dumps(result, indent=2))
    serve.shutdown()
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    raise SystemExit(main())
