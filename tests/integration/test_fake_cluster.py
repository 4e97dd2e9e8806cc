"""Autoscaling without a cloud: configs/cluster.local.yaml on Ray's fake multi-node provider.

A head started the way the config's comment says (RAY_FAKE_CLUSTER=1, `ray start --head
--autoscaling-config=configs/cluster.local.yaml`, its own ports and process group); the
scoring app deployed from configs/serve.yaml with a CUDA contract, so each model replica
asks for ``num_gpus: 1``, which only the fake ``gpu_worker`` nodes offer. Under load the
autoscaler adds a second GPU node and Serve a second replica; after the load both go away
(the idle node by the autoscaler's idle timeout, the app still deployed). The last GPU node
leaving after the app is deleted is the same idle removal (measured once: 44 s after the
delete, README "Autoscaling"), so the test ends at the delete instead of waiting for it.
tests/integration/fake_cluster_driver.py drives it from its own process and records the
times.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from fixture_models import train_champion

from pipelines.train import TrainConfig
from serve_apps.scoring.auth import hash_key
from sluice.config import REPO_ROOT
from sluice.contract import load_contract
from sluice.local import _jvm
from sluice.models import ModelRegistry
from sluice.store import apply_schema, schema_change, session_for

pytestmark = pytest.mark.integration

KEYSPACE = "sluice_test_fake_cluster"
KEY = "sk_test_fake_cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_doc(root: Path, cfg) -> dict:
    """configs/serve.yaml with this test's config, key and quick autoscaling."""
    (root / "platform.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    contract = yaml.safe_load((REPO_ROOT / "configs/contracts/fraud.yaml").read_text())
    contract["device"] = "cuda"  # -> model replicas ask for num_gpus: 1
    (root / "fraud_cuda.yaml").write_text(yaml.safe_dump(contract))
    doc = yaml.safe_load((REPO_ROOT / "configs/serve.yaml").read_text())
    # One proxy, the head's: the fake nodes share this host, and every node's proxy binds
    # the same port with SO_REUSEPORT, so the kernel would hand a client's connection to a
    # proxy just started on a new fake GPU node, which answers 404 until its route table
    # arrives (a CI run saw 11 of 1,442). On real nodes each proxy has its own address.
    doc["proxy_location"] = "HeadOnly"
    app = doc["applications"][0]
    app["args"].update(contract=str(root / "fraud_cuda.yaml"),
                       platform_config=str(root / "platform.yaml"),
                       api_keys={"sha256": {"test": hash_key(KEY)}})  # fmt: skip
    app["args"]["resources"].update(ingress_num_cpus=0, model_num_cpus=0, model_num_gpus=1)
    app["args"]["prediction_log"]["enabled"] = False
    for dep in app["deployments"]:
        quick = {"upscale_delay_s": 2, "downscale_delay_s": 5, "look_back_period_s": 5,
                 "min_replicas": 1}  # fmt: skip
        if dep["name"] == "ScoringModel":
            quick.update(max_replicas=2, target_ongoing_requests=2)
        else:
            quick.update(max_replicas=1)
        dep["autoscaling_config"].update(quick)
    return doc


@pytest.fixture(scope="module")
def fake_head(local_services, platform_config):
    """The fake cluster's head in its own process group (never `ray stop`: that would stop
    the test session's Ray too); every port its own."""
    tmp = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))  # short: unix socket path limit
    ray = Path(sys.executable).parent / "ray"
    port, agent, agent_grpc, metrics, runtime_env, client = (free_port() for _ in range(6))
    # The fake provider starts its nodes against GCS port 6379 unless told otherwise.
    from ray._private.services import get_node_ip_address

    config = yaml.safe_load((REPO_ROOT / "configs/cluster.local.yaml").read_text())
    config["provider"]["gcs_address"] = f"{get_node_ip_address()}:{port}"
    (tmp / "cluster.yaml").write_text(yaml.safe_dump(config))
    cmd = [str(ray), "start", "--head", "--block", f"--port={port}",
           f"--autoscaling-config={tmp / 'cluster.yaml'}",
           "--num-cpus=1", "--num-gpus=0", "--object-store-memory=200000000",
           "--include-dashboard=false", f"--temp-dir={tmp}",
           f"--ray-client-server-port={client}", "--min-worker-port=13000",
           "--max-worker-port=13999", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={runtime_env}"]  # fmt: skip
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'platform'}"}  # fmt: skip
    rec = _jvm.spawn("ray-fake-head", cmd, tmp / "head.log", cwd=tmp, env=env)
    try:
        deadline = time.monotonic() + 120
        while not _jvm.port_open(port):
            assert rec.alive(), _jvm.log_tail(tmp / "head.log")
            assert time.monotonic() < deadline, "the fake cluster's head did not start"
            time.sleep(1)
        yield f"127.0.0.1:{port}", env, tmp
    finally:
        # The group: head, monitor and the fake nodes it started. A test's own throwaway
        # cluster: what outlives 10 s of SIGTERM (some process of it held on for 33 s) is
        # SIGKILLed; stop() returns once none of the group is left.
        _jvm.stop(rec, timeout_s=10)
        shutil.rmtree(tmp, ignore_errors=True)


def test_load_adds_gpu_nodes_and_replicas_which_go_when_it_stops(fake_head, platform_config,
                                                                tmp_path):  # fmt: skip
    address, env, tmp = fake_head
    cfg = platform_config.model_copy(update={
        "cassandra": platform_config.cassandra.model_copy(update={"keyspace": KEYSPACE}),
        "registry": platform_config.registry.model_copy(update={"root_uri": str(tmp_path / "r")}),
    })  # fmt: skip
    session = session_for(cfg.cassandra)
    schema_change(session, f"DROP KEYSPACE IF EXISTS {KEYSPACE}")
    apply_schema(session, cfg.cassandra, [load_contract("fraud")])
    train_champion(TrainConfig(rows=3000, epochs=1, seed=5), ModelRegistry.from_config(cfg))
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(serve_doc(tmp_path, cfg)))

    out = tmp_path / "timeline.json"
    driver = [sys.executable, str(REPO_ROOT / "tests/integration/fake_cluster_driver.py"),
              "--address", address, "--config", str(tmp_path / "serve.yaml"),
              "--http-port", str(free_port()), "--api-key", KEY, "--out", str(out)]  # fmt: skip
    proc = subprocess.run(driver, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    print("fake cluster timeline:", json.dumps(result))  # for the issue note (pytest -s)
    assert "error" not in result, result
    assert proc.returncode == 0, proc.stderr[-3000:]

    t = result["times_s"]
    order = ["first_gpu_node", "first_replica", "load_start", "second_gpu_node",
             "second_replica", "load_stop", "replicas_back_to_one", "gpu_nodes_back_to_one",
             "app_deleted"]  # fmt: skip
    assert [t[k] for k in order] == sorted(t[k] for k in order), t
    peak = max((e["gpu_nodes"], e["replicas"]) for e in result["timeline"])
    assert peak == (2, 2), result["timeline"]  # max_workers of gpu_worker, max_replicas
    codes = result["http_codes"]
    assert codes.get("200", 0) > 0 and set(codes) <= {"200", "429", "503"}, codes
