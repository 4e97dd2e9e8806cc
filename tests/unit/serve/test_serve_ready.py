"""Readiness of the real model deployment class: its model loaded, Cassandra answering."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

from serve_apps.scoring.deployments import ModelSettings, ScoringModel
from sluice.config import PlatformConfig
from sluice.contract import load_contract


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_model_replica_is_not_ready_while_cassandra_does_not_answer(serve_registry):
    platform = PlatformConfig.model_validate({
        "registry": {"root_uri": serve_registry.root_uri},
        "cassandra": {"port": _closed_port(), "connect_timeout_s": 1, "request_timeout_s": 1},
    })  # fmt: skip
    replica = ScoringModel.func_or_class(
        ModelSettings(load_contract("fraud"), platform, platform.cassandra))
    got = asyncio.run(replica.ready())
    assert got == {"model": "fraud/1", "cassandra": False}


REPLICA_PROBE = """
import sys
import sluice.models._runtime as runtime
runtime._gpu_device_present = lambda: False  # as on a host without a GPU (this one)
from serve_apps.scoring.deployments import ModelSettings, ScoringModel
from sluice.config import PlatformConfig
from sluice.contract import load_contract
platform = PlatformConfig.model_validate({
    "registry": {"root_uri": sys.argv[1]},
    "cassandra": {"port": int(sys.argv[3]), "connect_timeout_s": 1, "request_timeout_s": 1},
})
replica = ScoringModel.func_or_class(ModelSettings(
    load_contract("fraud"), platform, platform.cassandra, torch_threads=int(sys.argv[2])))
model = replica.core.champion.model
print(model.meta.format, "torch" in sys.modules,
      model.runner.session.get_session_options().intra_op_num_threads)
"""


def test_a_model_replica_serving_an_onnx_model_never_imports_torch(serve_registry):
    """The replica gives the model's runtime its thread budget (`torch_threads`, here 2,
    over the 1 Ray set for its CPU) without importing torch: with it, a replica serving
    an ONNX model took 1.0 s longer to build and held ~470 MB more (RSS 723 -> 251 MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", REPLICA_PROBE, serve_registry.root_uri, "2",
                          str(_closed_port())], env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["onnx", "False", "2"], out.stdout + out.stderr[-3000:]


def test_the_thread_budget_reaches_torch_when_torch_is_loaded():
    import torch

    from sluice.models import set_thread_budget

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        set_thread_budget(3 if before != 3 else 2)
        assert torch.get_num_threads() == (3 if before != 3 else 2)
        assert os.environ["OMP_NUM_THREADS"] == str(torch.get_num_threads())
    finally:
        torch.set_num_threads(before)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env
